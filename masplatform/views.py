"""Small pieces shared by the apps' API views."""

from __future__ import annotations

import sys
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults
from rest_framework.exceptions import NotFound


class NamedNotFoundMixin:
    """404s that name what was looked for: "No agent 'x'." rather than "No Agent matches the given query."."""

    not_found_noun = "object"

    def get_object(self) -> Any:
        try:
            return super().get_object()
        except Http404:
            key = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field)
            raise NotFound(f"No {self.not_found_noun} '{key}'.") from None


def server_error(request: HttpRequest, template_name: str = "500.html") -> HttpResponse:
    """``handler500``: an overload raised outside a view (a middleware saving the session, say) is a 503
    too. Django calls it while handling the exception, so ``sys.exc_info()`` holds it."""
    from masplatform.overload import is_overload, overload_response

    if is_overload(sys.exc_info()[1]):
        return overload_response()
    return defaults.server_error(request, template_name)
