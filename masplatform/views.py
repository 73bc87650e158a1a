"""Small pieces shared by the apps' API views."""

from __future__ import annotations

from typing import Any

from django.http import Http404
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
