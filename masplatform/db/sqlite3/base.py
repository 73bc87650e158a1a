"""Django's SQLite backend, waiting for the write lock in short steps instead of SQLite's own.

SQLite lets one connection write at a time. A connection that finds the write
lock taken calls its busy handler, and the one that ``sqlite3.connect(timeout=)``
installs sleeps 1, 2, 5, 10 ... ms between tries (where SQLite was built with
``usleep``; a whole second each where it was not). The platform's writes hold the
lock for a tenth of a millisecond or so: with a client and two agent worker
processes writing at once, a fifth of the transactions found it taken and slept a
millisecond or more for a lock that was free again after 0.1 ms.

This backend turns SQLite's busy handler off once the connection is set up (its
``init_command`` still runs with it) and retries, in Python, what found the lock
taken: the ``BEGIN IMMEDIATE`` that opens an atomic block, and a statement run in
autocommit (outside a transaction, where a statement that finds the lock taken has
changed nothing). It sleeps ``FIRST_WAIT`` seconds, then half as long again each
time up to ``LONGEST_WAIT``, for at most the connection's ``timeout`` (OPTIONS,
5 s by default, as with Django's backend), then raises ``OperationalError``
("database is locked") as Django's backend does. An ``executemany`` in autocommit
runs in a transaction of its own (sqlite3 would commit each row apart, and a retry
would write the first rows twice). Inside a transaction nothing is
retried: there the connection already holds the write lock (``transaction_mode``
IMMEDIATE), and a deferred transaction that cannot upgrade must be rolled back.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from django.db.backends.sqlite3 import base

logger = logging.getLogger("masplatform.db")

FIRST_WAIT = 0.0001
LONGEST_WAIT = 0.002


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "database is locked" in str(exc)


def retry_while_busy(run: Any, connection: sqlite3.Connection, timeout: float) -> Any:
    """``run()``, again after a short sleep each time it finds the database locked, for at most ``timeout``
    seconds. Only outside a transaction (a statement that found the lock taken has written nothing)."""
    deadline = None
    wait = FIRST_WAIT
    while True:
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if connection.in_transaction or not _busy(exc):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            if now + wait > deadline:
                raise
            time.sleep(wait)
            wait = min(wait * 1.5, LONGEST_WAIT)


@contextlib.contextmanager
def write_transaction(connection: Any) -> Iterator[Any]:
    """A cursor of ``connection`` (Django's) whose statements run as one transaction: ``BEGIN IMMEDIATE``
    (waiting for the write lock as above) before them, ``COMMIT`` after them, ``ROLLBACK`` if the block
    raises. For a hot path of a few statements: Django's ``atomic()`` costs four autocommit switches and
    its bookkeeping around them (a fifth of a worker's CPU per call on SQLite), and a block that needs
    none of what it adds (savepoints, ``on_commit`` hooks) can do without.

    Inside the caller's transaction (an atomic block, or autocommit turned off) the statements are part
    of it (no savepoint). A transaction found open while Django believes the connection is in autocommit
    was left by an interrupted block (a time limit's signal between ``BEGIN`` and the block): nothing of
    it was committed, and the connection is closed (rolling it back, releasing the write lock) and
    opened again."""
    raw = connection.connection
    if raw is not None and raw.in_transaction and connection.autocommit and not connection.in_atomic_block:
        logger.warning("event=sqlite_transaction_left_open action=reconnect")
        connection.close()
    with connection.cursor() as cursor:
        if connection.in_atomic_block or not connection.get_autocommit():
            yield cursor
            return
        try:
            cursor.execute("BEGIN IMMEDIATE")
            yield cursor
            cursor.execute("COMMIT")
        except BaseException:
            if connection.connection.in_transaction:
                try:
                    connection.connection.execute("ROLLBACK")
                except sqlite3.Error:
                    connection.close()  # could not roll back: the next statement opens a new connection
            raise


class CursorWrapper(base.SQLiteCursorWrapper):
    busy_timeout = 5.0

    def execute(self, query: str, params: Any = None) -> Any:
        if self.connection.in_transaction:
            return super().execute(query, params)
        return retry_while_busy(
            lambda: super(CursorWrapper, self).execute(query, params), self.connection, self.busy_timeout
        )

    def executemany(self, query: str, param_list: Any) -> Any:
        if self.connection.in_transaction:
            return super().executemany(query, param_list)
        # Outside a transaction sqlite3 commits each row on its own: one that found the lock taken would
        # leave the rows before it written, and a retry would write them again. So, in a transaction of
        # its own, whose BEGIN IMMEDIATE waits for the lock.
        retry_while_busy(lambda: self.connection.execute("BEGIN IMMEDIATE"), self.connection, self.busy_timeout)
        try:
            result = super().executemany(query, param_list)
        except BaseException:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")
        return result


class DatabaseWrapper(base.DatabaseWrapper):
    busy_timeout = 5.0  # seconds; the connection's OPTIONS["timeout"] once connected

    def get_new_connection(self, conn_params: dict[str, Any]) -> sqlite3.Connection:
        conn = super().get_new_connection(conn_params)  # the init_command runs with SQLite's busy handler
        self.busy_timeout = float(conn_params.get("timeout", 5.0))
        conn.execute("PRAGMA busy_timeout = 0")  # from here on, retry_while_busy waits instead
        return conn

    def create_cursor(self, name: str | None = None) -> CursorWrapper:
        cursor = self.connection.cursor(factory=CursorWrapper)
        cursor.busy_timeout = self.busy_timeout
        return cursor
