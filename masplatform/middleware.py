"""Keep every answer under /api/ JSON: no HTML error page, no stack trace."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse

from masplatform.overload import is_overload, overload_response

logger = logging.getLogger("masplatform.api")

_HTML_PAGES = ("/api/docs/", "/api/redoc/")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") and not request.path.startswith(_HTML_PAGES)


class JsonApiErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            _is_api(request)
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            try:
                phrase = HTTPStatus(response.status_code).phrase
            except ValueError:
                phrase = "Error"
            detail = f"{phrase}: {request.path}" if response.status_code == 404 else phrase
            return JsonResponse({"detail": detail}, status=response.status_code)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_overload(exception):
            logger.warning("event=overloaded method=%s path=%s error=%r", request.method, request.path, exception)
            return overload_response()
        if not _is_api(request):
            return None
        error_id = uuid.uuid4().hex[:12]
        logger.exception("event=api_error error_id=%s method=%s path=%s", error_id, request.method, request.path)
        return JsonResponse(
            {
                "detail": "Internal server error; the operators can find it in the logs by error_id.",
                "error_id": error_id,
            },
            status=500,
        )
