"""SQLite (the embedded default): moving the write-ahead log into the database file off the hot path.

In WAL mode, the commit that takes the log past ``wal_autocheckpoint`` pages copies
the log into the database file and syncs it before it returns: with SQLite's
default of 1000 pages, one call in about 35 paid 3-5 ms for the others on the
benchmark machine. The settings raise that threshold to 10,000 pages (a safety
net), and each agent worker runs ``Checkpointer``, a thread that checkpoints
every ``MASP_SQLITE_CHECKPOINT_INTERVAL`` seconds in PASSIVE mode, which never
waits for readers or writers and never blocks them. Several workers at once are
fine: a checkpoint already running makes the others return at once.

Threads and the prefork pool: a child forked while another thread of the parent
is inside SQLite would inherit SQLite's mutexes locked, and hang on its first
query. ``fork_guard()`` holds a lock that ``os.fork`` waits for (registered with
``os.register_at_fork``): the checkpointer and the heartbeat thread query inside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


_fork_lock = threading.Lock()
_fork_hooks = False


@contextlib.contextmanager
def fork_guard() -> Iterator[None]:
    """While inside, this process does not fork (on SQLite; elsewhere, a no-op)."""
    global _fork_hooks
    if connection.vendor != "sqlite":
        yield
        return
    if not _fork_hooks:  # once per process: os.fork waits for the lock, and both sides release it
        _fork_hooks = True
        os.register_at_fork(
            before=_fork_lock.acquire, after_in_parent=_fork_lock.release, after_in_child=_fork_lock.release
        )
    with _fork_lock:
        yield


def checkpoint() -> tuple[int, int, int]:
    """One PASSIVE checkpoint on this thread's connection: (busy, log frames, frames checkpointed)."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        busy, frames, done = cursor.fetchone()
    return busy, frames, done


class Checkpointer(threading.Thread):
    """Checkpoints the SQLite log every ``interval`` seconds until ``stop()``."""

    def __init__(self, interval: float | None = None):
        super().__init__(name="masp-sqlite-checkpoint", daemon=True)
        self.interval = settings.MASP_SQLITE_CHECKPOINT_INTERVAL if interval is None else interval
        self.stopping = threading.Event()
        self.checkpoints = 0

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.interval):
                try:
                    with fork_guard():
                        checkpoint()
                    self.checkpoints += 1
                except Exception:
                    logger.warning("event=sqlite_checkpoint_failed", exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()


def start_checkpointer() -> Checkpointer | None:
    """Start a ``Checkpointer`` if the database is SQLite and the interval is positive."""
    if connection.vendor != "sqlite" or settings.MASP_SQLITE_CHECKPOINT_INTERVAL <= 0:
        return None
    checkpointer = Checkpointer()
    checkpointer.start()
    return checkpointer
