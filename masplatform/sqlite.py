"""SQLite (the embedded default): moving the write-ahead log into the database file off the hot path.

In WAL mode, the commit that takes the log past ``wal_autocheckpoint`` pages copies
the log into the database file and syncs it before it returns: with SQLite's
default of 1000 pages, one call in about 35 paid 3-5 ms for the others on the
benchmark machine. The settings raise that threshold to 10,000 pages (a safety
net), and each agent worker runs ``Checkpointer``, a thread that checkpoints
every ``MASP_SQLITE_CHECKPOINT_INTERVAL`` seconds in PASSIVE mode, which never
waits for readers or writers and never blocks them. Several workers at once are
fine: a checkpoint already running makes the others return at once.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


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
