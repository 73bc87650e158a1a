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
