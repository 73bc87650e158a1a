"""Errors that services raise, and the API's mapping of them to JSON answers.

Services raise these instead of returning error values; the API turns them
into 400/404/409/503 answers (masplatform.exception_handler), the admin into
messages, commands into CLI errors. No web framework is imported here.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request that cannot be carried out; ``detail`` says why, in words for the caller."""

    status_code = 400

    def __init__(self, detail: str | dict[str, Any] | list[Any]):
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail


class InvalidInput(ServiceError):
    """Input that fails validation (400). ``detail`` may map field names to messages."""


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    """A request that clashes with the current state (409); the message names that state."""

    status_code = 409


class Unavailable(ServiceError):
    """Something the request needs is not there now; sending it again may work (503)."""

    status_code = 503
