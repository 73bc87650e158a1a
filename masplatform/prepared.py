"""Cursors for the statements every call runs: on PostgreSQL, bound and prepared by the server.

Django's psycopg backend binds parameters on the client (``ClientCursor``): each
statement reaches PostgreSQL as new text, parsed and planned every time. The few
statements of a call's hot path (invoke's INSERT, the claim, the recorded
outcome) go through ``cursor()`` instead, a server-binding cursor whose
statements psycopg prepares on first use on each connection (the settings set
the connection's ``prepare_threshold`` to 0; Django's own cursors never
prepare). PostgreSQL then skips parsing and planning them: about 0.1-0.25 ms of
server time per statement on the benchmark machine.

Parameters travel typed: a ``str`` is of unknown type, which PostgreSQL resolves
from a column it is compared with or assigned to, but not in a ``SELECT`` list
(``INSERT ... SELECT %s``): cast those (``typed()``).

Plans: the settings set ``plan_cache_mode = force_generic_plan`` on the connection,
so each of these statements is planned once per connection, with its parameters
unknown. Besides the planning time of each call, this keeps the planner off the
partial indexes on the status (the queued calls of a capability, the running calls'
deadlines): with the status known, it proved their condition and, on a table it had
no statistics for yet (the first minute of a new database, or a burst of calls since
the last ANALYZE), chose to scan all queued calls for the one it claimed, instead of
looking it up by its key: each claim cost O(calls queued) on the benchmark.

``MASP_DB_PREPARED_STATEMENTS=0`` turns this off, for a connection pooler that
cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


def enabled(connection: Any) -> bool:
    return connection.vendor == "postgresql" and settings.MASP_DB_PREPARED_STATEMENTS


def cursor(connection: Any) -> Any:
    """A cursor of ``connection`` (Django's wrapper: execute wrappers and the query log apply) whose
    statements the server prepares, on PostgreSQL with prepared statements on; else ``connection.cursor()``."""
    if not enabled(connection):
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    # as BaseDatabaseWrapper._cursor() does, with the server-binding class
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        return connection._prepare_cursor(ServerBindingCursor(connection.connection))


def typed(field: models.Field, connection: Any) -> str:
    """The placeholder for a value of ``field`` where PostgreSQL cannot infer its type. Strings are
    cast to ``text``, not to the column's ``varchar(n)``: an explicit cast would cut a value that is
    too long, where assigning ``text`` to the column refuses it, as an ORM insert would."""
    if connection.vendor != "postgresql":
        return "%s"
    if isinstance(field, (models.CharField, models.TextField)):
        return "%s::text"
    return f"%s::{field.cast_db_type(connection)}"
