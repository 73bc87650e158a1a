"""DRF's exception handler, plus the services' errors as 400/404/409/503 JSON answers."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.response import Response
from rest_framework.views import exception_handler

from masplatform.exceptions import ServiceError


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        response = Response(body, status=exc.status_code)
        if exc.status_code == 503:
            response["Retry-After"] = str(settings.MASP_RETRY_AFTER)
        return response
    return exception_handler(exc, context)
