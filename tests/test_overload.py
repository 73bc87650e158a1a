"""Which database errors are overload (a 503 with Retry-After) and which are bugs (a 500)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from django.db import DatabaseError, IntegrityError, OperationalError
from psycopg_pool import PoolTimeout

from masplatform.overload import is_overload, overload_response


def wrapped(django_error: type[DatabaseError], cause: BaseException) -> DatabaseError:
    try:
        raise django_error(str(cause)) from cause
    except DatabaseError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "overload"),
    [
        (wrapped(OperationalError, PoolTimeout("couldn't get a connection after 5.00 sec")), True),
        (wrapped(OperationalError, psycopg.OperationalError("connection refused")), True),
        (wrapped(OperationalError, sqlite3.OperationalError("database is locked")), True),
        (wrapped(OperationalError, sqlite3.OperationalError("no such table: agents_agent")), False),
        (wrapped(IntegrityError, sqlite3.IntegrityError("UNIQUE constraint failed")), False),
        (ValueError("not a database error"), False),
    ],
)
def test_overload_is_told_from_bugs(error, overload):
    assert is_overload(error) is overload


def test_overload_answer_is_json_with_retry_after(settings):
    settings.MASP_RETRY_AFTER = 7
    response = overload_response()
    assert response.status_code == 503 and response["Retry-After"] == "7"
    assert b'"code": "overloaded"' in response.content
