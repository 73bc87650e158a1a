"""OpenAPI postprocessing: the error answers every operation can give, documented once.

Views document their success answers; the errors come from shared layers (authentication,
permissions, filters and pagination, the services' ServiceErrors, throttles, an overloaded
database pool), so they are added here to every operation that can reach them, all with the
one JSON error shape of masplatform.exception_handler.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "description": (
        "An error: `detail` says why; a validation error maps each field (or `non_field_errors`) to its messages."
    ),
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}

ALWAYS = {
    "400": "Invalid input (a query parameter or the body); the body names each field",
    "401": "No credentials, or credentials that are not valid (any more)",
    "403": "Authenticated, but not allowed to do this",
    "404": "Not found (or a page past the end)",
    "414": "The request line (path and query) is longer than the web server takes (4094 bytes)",
    "429": "Throttled; retry after the Retry-After header's seconds",
    "503": "Overloaded or a service it needs is down; retry after the Retry-After header's seconds",
}
HTML = {"text/html": {"schema": {"type": "string"}}}
CHANGING = {"409": "Not allowed in the current state, which the message names"}
WITH_BODY = {"415": "Unsupported media type: the API takes application/json bodies only"}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOK: add the error answers each operation can give."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            errors = dict(ALWAYS)
            if method in ("post", "put", "patch", "delete"):
                errors.update(CHANGING)
            if "requestBody" in operation:
                errors.update(WITH_BODY)
            for code, description in errors.items():
                content = HTML if code == "414" else ref  # gunicorn's own page, before Django sees the request
                operation["responses"].setdefault(code, {"description": description, "content": content})
    return result


def allow_empty_query_choices(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOK: a choice query parameter given empty (``?state=``) means no
    filter, as django-filter and the browsable API's filter forms have it; say so in its enum."""
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "query":
                    continue
                schema = parameter.get("schema", {})
                target = schema.get("items", schema) if schema.get("type") == "array" else schema
                enum = target.get("enum")
                if enum and all(isinstance(v, str) for v in enum) and "" not in enum:
                    target["enum"] = [*enum, ""]
                    parameter["description"] = (parameter.get("description", "") + "\n\nEmpty: no filter.").strip()
    return result
