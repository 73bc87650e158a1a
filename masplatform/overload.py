"""Overload answers: a database that is busy or unreachable is a 503 with ``Retry-After``, never a 500.

What counts: the web process's connection pool found no free connection in time
(``MASP_DB_POOL_TIMEOUT``), PostgreSQL refused or dropped the connection (too many
clients, starting up or shutting down, unreachable), or SQLite's write lock stayed
taken past its busy timeout. Every other database error is a bug and stays a 500.
"""

from __future__ import annotations

import sqlite3

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import JsonResponse

# SQLSTATE classes and codes of a connection that could not be had or was lost.
_CONNECTION_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")


def is_overload(exc: BaseException) -> bool:
    """True if ``exc`` (a Django database error, or what caused it) says the database is busy or away."""
    if not isinstance(exc, DatabaseError):
        return False
    if isinstance(exc, InterfaceError):  # a connection that was closed under us
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return "locked" in str(cause) or "busy" in str(cause)
    try:
        import psycopg
        from psycopg_pool import PoolTimeout, TooManyRequests
    except ImportError:  # pragma: no cover - the embedded default may run without them
        return False
    if isinstance(cause, PoolTimeout | TooManyRequests):
        return True
    if isinstance(cause, psycopg.OperationalError):
        sqlstate = getattr(cause, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith(_CONNECTION_SQLSTATES)
    return False


def overload_response() -> JsonResponse:
    response = JsonResponse(
        {
            "detail": "The platform is overloaded or its database is unreachable; "
            f"send the request again in {settings.MASP_RETRY_AFTER} s.",
            "code": "overloaded",
        },
        status=503,
    )
    response["Retry-After"] = str(settings.MASP_RETRY_AFTER)
    return response
