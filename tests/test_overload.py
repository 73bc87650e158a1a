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


@pytest.mark.django_db
def test_overload_outside_a_view_is_a_503_too(client, monkeypatch):
    """A middleware that finds the database busy (the session's save, say) is answered by handler500,
    which tells overload from a bug."""
    from django.contrib.sessions.middleware import SessionMiddleware

    def busy(self, request, response):
        raise wrapped(OperationalError, PoolTimeout("couldn't get a connection after 5.00 sec"))

    monkeypatch.setattr(SessionMiddleware, "process_response", busy)
    client.raise_request_exception = False
    response = client.get("/admin/login/")
    assert response.status_code == 503 and response["Retry-After"] == "2"
    assert response.json()["code"] == "overloaded"


@pytest.mark.django_db
def test_a_bug_outside_a_view_stays_a_500(client, monkeypatch):
    from django.contrib.sessions.middleware import SessionMiddleware

    def broken(self, request, response):
        raise wrapped(OperationalError, sqlite3.OperationalError("no such table: django_session"))

    monkeypatch.setattr(SessionMiddleware, "process_response", broken)
    client.raise_request_exception = False
    assert client.get("/admin/login/").status_code == 500
