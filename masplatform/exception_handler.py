"""DRF's exception handler, plus the services' errors as 400/404/409/503 JSON answers.

Every error body is a JSON object (see masplatform.schema.ERROR_SCHEMA): a list of
messages becomes ``{"non_field_errors": [...]}``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings
from django.db.models import ProtectedError, RestrictedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from masplatform.exceptions import ServiceError


def _still_referenced(exc: ProtectedError | RestrictedError) -> str:
    objects = exc.protected_objects if isinstance(exc, ProtectedError) else exc.restricted_objects
    counts = Counter(str(obj._meta.verbose_name_plural) for obj in objects)
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        response = Response(body, status=exc.status_code)
        if exc.status_code == 503:
            response["Retry-After"] = str(settings.MASP_RETRY_AFTER)
        return response
    if isinstance(exc, ProtectedError | RestrictedError):
        # A row that history still points at (e.g. a capability past invocations called) stays.
        return Response(
            {"detail": f"cannot delete it: {_still_referenced(exc)} still refer to it"},
            status=status.HTTP_409_CONFLICT,
        )
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, list):
        response.data = {"non_field_errors": response.data}
    return response
