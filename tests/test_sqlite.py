"""The embedded default's background checkpoints of SQLite's write-ahead log."""

from __future__ import annotations

import pytest
from django.db import connection

from masplatform import sqlite
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_commits_leave_checkpoints_to_the_background_up_to_ten_thousand_pages():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] == 10000
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA mmap_size")  # pages another process wrote are read from the OS cache, not read()
        assert cursor.fetchone()[0] == 268435456


def test_the_checkpointer_moves_the_log_into_the_database_while_writes_go_on():
    if connection.vendor != "sqlite":
        assert sqlite.start_checkpointer() is None  # nothing to do on PostgreSQL
        return
    checkpointer = sqlite.Checkpointer(interval=0.05)
    checkpointer.start()
    try:
        for i in range(40):
            AgentFactory(agent_id=f"writer-{i}")
        deadline = checkpointer.checkpoints + 2
        while checkpointer.checkpoints < deadline and checkpointer.is_alive():
            checkpointer.stopping.wait(0.05)
        busy, frames, done = sqlite.checkpoint()
        assert busy == 0 and done == frames  # everything written so far is in the database file
    finally:
        checkpointer.stop()
        checkpointer.join(5)
    assert not checkpointer.is_alive() and checkpointer.checkpoints >= 2


def test_a_fork_waits_for_a_thread_inside_sqlite():
    if connection.vendor != "sqlite":
        with sqlite.fork_guard():  # nothing to guard
            return
    import os
    import threading
    import time

    with sqlite.fork_guard():  # registers the fork hooks
        pass
    forked_at: list[float] = []

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forked_at.append(time.monotonic())
        os.waitpid(pid, 0)

    with sqlite.fork_guard():
        forker = threading.Thread(target=fork)
        forker.start()
        time.sleep(0.3)
        released_at = time.monotonic()
    forker.join(10)
    assert forked_at and forked_at[0] >= released_at  # the fork waited for the guard
    with sqlite.fork_guard():  # and released it on both sides
        pass


# --- masplatform.db.sqlite3: waiting for the write lock in short steps -------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO t (who) VALUES ('holder')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


ALIAS = "sqlite_backend_test"


@pytest.fixture(autouse=True)
def _forget_test_connection():
    from django.db import connections

    yield
    if hasattr(connections._connections, ALIAS):
        del connections[ALIAS]


def _sqlite_connection(path, timeout: float):
    """A connection of the platform's SQLite backend to ``path`` (on either stack: it needs no server),
    known to Django as ``ALIAS`` (``transaction.atomic(using=ALIAS)`` works on it) until the test ends."""
    from django.db import connections
    from django.db.utils import ConnectionHandler

    database = {
        "ENGINE": "masplatform.db.sqlite3",
        "NAME": str(path),
        "OPTIONS": {"timeout": timeout, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL"},
    }
    conn = ConnectionHandler({"default": database, ALIAS: database})[ALIAS]
    connections[ALIAS] = conn
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who TEXT)")
    return conn


def _hold_write_lock(path, seconds: float):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_sqlite_backend_turns_the_busy_handler_off_after_setting_up_the_connection(tmp_path):
    conn = _sqlite_connection(tmp_path / "db.sqlite3", timeout=7)
    try:
        with conn.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] == 0  # SQLite's handler (1 ms sleeps and up) is off: the backend waits
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"  # the init_command ran
        assert conn.busy_timeout == 7
    finally:
        conn.close()


def test_sqlite_backend_waits_for_another_process_holding_the_write_lock(tmp_path):
    import time

    from django.db import transaction

    conn = _sqlite_connection(tmp_path / "db.sqlite3", timeout=10)
    try:
        holder = _hold_write_lock(tmp_path / "db.sqlite3", 0.4)
        started = time.monotonic()
        with conn.cursor() as cursor:  # a statement in autocommit
            cursor.execute("INSERT INTO t (who) VALUES ('autocommit')")
        waited = time.monotonic() - started
        holder.wait(10)
        holder = _hold_write_lock(tmp_path / "db.sqlite3", 0.4)
        started = time.monotonic()
        with transaction.atomic(using=conn.alias), conn.cursor() as cursor:  # BEGIN IMMEDIATE waits
            cursor.execute("INSERT INTO t (who) VALUES ('atomic')")
        waited_atomic = time.monotonic() - started
        holder.wait(10)
        with conn.cursor() as cursor:
            cursor.execute("SELECT who FROM t ORDER BY id")
            assert [r[0] for r in cursor.fetchall()] == ["holder", "autocommit", "holder", "atomic"]
        assert waited >= 0.3 and waited_atomic >= 0.3  # each waited for the holder's commit, and then wrote
    finally:
        conn.close()


def test_sqlite_backend_gives_up_after_its_timeout_like_djangos(tmp_path):
    import sqlite3
    import time

    from django.db import OperationalError

    conn = _sqlite_connection(tmp_path / "db.sqlite3", timeout=0.3)
    holder = _hold_write_lock(tmp_path / "db.sqlite3", 3)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked") as raised:
            with conn.cursor() as cursor:
                cursor.execute("INSERT INTO t (who) VALUES ('late')")
        assert 0.25 <= time.monotonic() - started < 2.5
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    finally:
        holder.wait(10)
        conn.close()


def test_sqlite_backend_writes_an_executemany_that_waited_for_the_lock_once(tmp_path):
    conn = _sqlite_connection(tmp_path / "db.sqlite3", timeout=10)
    try:
        holder = _hold_write_lock(tmp_path / "db.sqlite3", 0.3)
        with conn.cursor() as cursor:  # autocommit: its own transaction, which waits at BEGIN
            cursor.executemany("INSERT INTO t (who) VALUES (%s)", [("a",), ("b",), ("c",)])
        holder.wait(10)
        with conn.cursor() as cursor:
            cursor.execute("SELECT who FROM t ORDER BY id")
            assert [r[0] for r in cursor.fetchall()] == ["holder", "a", "b", "c"]
            with pytest.raises(Exception, match="UNIQUE|constraint"):
                cursor.execute("CREATE UNIQUE INDEX t_who ON t (who)")
                cursor.executemany("INSERT INTO t (who) VALUES (%s)", [("d",), ("a",)])  # the second fails
            cursor.execute("SELECT count(*) FROM t WHERE who = 'd'")
            assert cursor.fetchone()[0] == 0  # all or nothing, as one statement would be
    finally:
        conn.close()


def test_a_write_transaction_waits_for_the_lock_and_commits_its_statements_together(tmp_path):
    from masplatform.db.sqlite3.base import write_transaction

    conn = _sqlite_connection(tmp_path / "db.sqlite3", timeout=10)
    try:
        holder = _hold_write_lock(tmp_path / "db.sqlite3", 0.3)
        with write_transaction(conn) as cursor:  # BEGIN IMMEDIATE waits for the holder's commit
            cursor.execute("INSERT INTO t (who) VALUES ('first')")
            assert conn.connection.in_transaction
            cursor.execute("INSERT INTO t (who) VALUES ('second')")
        holder.wait(10)
        assert not conn.connection.in_transaction
        with pytest.raises(TimeoutError):  # an exception in the block (a time limit's, say) rolls back
            with write_transaction(conn) as cursor:
                cursor.execute("INSERT INTO t (who) VALUES ('lost')")
                raise TimeoutError("interrupted between two statements")
        assert not conn.connection.in_transaction
        with conn.cursor() as cursor:
            cursor.execute("SELECT who FROM t ORDER BY id")
            assert [r[0] for r in cursor.fetchall()] == ["holder", "first", "second"]
    finally:
        conn.close()


def test_a_write_transaction_inside_an_atomic_block_is_part_of_it(tmp_path):
    from django.db import transaction

    from masplatform.db.sqlite3.base import write_transaction

    conn = _sqlite_connection(tmp_path / "db.sqlite3", timeout=10)
    try:
        with pytest.raises(RuntimeError):
            with transaction.atomic(using=conn.alias):
                with write_transaction(conn) as cursor:
                    cursor.execute("INSERT INTO t (who) VALUES ('inner')")
                assert conn.connection.in_transaction  # not committed on its own
                raise RuntimeError("the caller's transaction rolls back")
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM t WHERE who = 'inner'")
            assert cursor.fetchone()[0] == 0
    finally:
        conn.close()


def test_a_write_transaction_recovers_a_transaction_left_open_by_an_interrupted_block(tmp_path):
    """A time limit's signal landing between BEGIN and the block leaves SQLite inside a transaction that
    Django does not know of (holding the write lock): the next write_transaction starts afresh."""
    from masplatform.db.sqlite3.base import write_transaction

    conn = _sqlite_connection(tmp_path / "db.sqlite3", timeout=0.5)
    try:
        with conn.cursor() as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("INSERT INTO t (who) VALUES ('never committed')")
        assert conn.connection.in_transaction and conn.get_autocommit()
        with write_transaction(conn) as cursor:
            cursor.execute("INSERT INTO t (who) VALUES ('after')")
        with conn.cursor() as cursor:
            cursor.execute("SELECT who FROM t ORDER BY id")
            assert [r[0] for r in cursor.fetchall()] == ["after"]
    finally:
        conn.close()
