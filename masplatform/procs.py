"""Run the platform's processes (web, worker, beat) together, and stop them together.

Used by ``manage.py runplatform`` (``make run``) and ``manage.py demo``.
Each child gets its own process group, so Ctrl-C in the terminal reaches
only this supervisor, which then stops the children in order: SIGTERM
(a Celery worker finishes the task in hand), then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from django.conf import settings


@dataclass
class Child:
    name: str
    args: list[str]
    popen: subprocess.Popen
    log_path: Path | None = None
    _log: IO[str] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        """Block until ``text`` appears in the child's log; RuntimeError if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}; log {self.log_path}:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name}: no {text!r} after {timeout}s; log {self.log_path}:\n{self.log_text()[-3000:]}"
        )

    def signal(self, sig: int, *, group: bool = False) -> None:
        """Send ``sig`` to the child, or with ``group`` to its whole process group (a prefork pool too).

        SIGTERM goes to the main process only: a Celery worker then stops taking
        tasks and lets its pool finish the ones in hand (a SIGTERM to the pool's
        processes themselves would kill those tasks).
        """
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig) if group else self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of the child's process group once the child itself has exited."""
        if not self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        if self._log:
            self._log.close()


def web_args(addr: str, *, workers: int | None = None, threads: int | None = None) -> list[str]:
    """gunicorn with the platform's settings (masplatform/gunicorn.py); None keeps its defaults."""
    args = [sys.executable, "-m", "gunicorn", "-c", "python:masplatform.gunicorn", "--bind", addr]
    if workers is not None:
        args += ["--workers", str(workers)]
    if threads is not None:
        args += ["--threads", str(threads)]
    return [*args, "masplatform.wsgi:application"]


def celery_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "masplatform", *args]


def worker_args(
    *, queues: str = "celery", concurrency: int = 2, name: str = "platform", extra: tuple[str, ...] = ()
) -> list[str]:
    return celery_args("worker", "-l", "INFO", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h", *extra)


def beat_args(pidfile: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return celery_args("beat", "-l", "INFO", "-S", "django", "--pidfile", str(pidfile), *extra)


class ProcessGroup:
    """Children started with ``base_env`` (default: this process's environment) updated by ``env``."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        base_env: Mapping[str, str] | None = None,
    ):
        self.env = {**(os.environ if base_env is None else base_env), **(env or {})}
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.stopped = 0  # children stop_all has stopped
        self._started: dict[str, int] = {}  # name -> times started, forgotten children included
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> Child:
        """Start ``args``; ``env`` adds to the group's environment for this child only."""
        log = None
        log_path = None
        taken = self._started.get(name, 0)
        self._started[name] = taken + 1
        if self.log_dir:
            # a restart's log is a new file: the log of the run that was killed is what one wants to read
            log_path = self.log_dir / (f"{name}.log" if not taken else f"{name}-{taken + 1}.log")
            log = open(log_path, "w")
        popen = subprocess.Popen(
            args,
            cwd=settings.BASE_DIR,
            env={**self.env, **(env or {})},
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
        )
        child = Child(name, args, popen, log_path, log)
        self.children.append(child)
        return child

    def wait_for_log(self, child: Child, text: str, timeout: float = 60) -> None:
        child.wait_for_log(text, timeout)

    def forget(self, child: Child) -> None:
        """Stop watching ``child`` (one that was killed on purpose)."""
        child.close()
        self.children.remove(child)

    def first_dead(self) -> Child | None:
        return next((c for c in self.children if not c.alive()), None)

    def supervise(self) -> int:
        """Block until Ctrl-C/SIGTERM or until a child dies; then stop everything. Returns an exit code."""
        stop = {"requested": False}

        def request_stop(signum, frame):
            stop["requested"] = True

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop["requested"]:
                dead = self.first_dead()
                if dead:
                    print(f"{dead.name} exited with {dead.popen.returncode}; stopping the others", file=sys.stderr)
                    return 1
                time.sleep(0.3)
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop_all()

    def stop_all(self, grace: float = 15) -> None:
        """SIGTERM every child, SIGKILL those still running after ``grace`` seconds, then whatever is left
        of their process groups (a pool process whose parent died). A second Ctrl-C meanwhile is ignored:
        interrupting this would leave processes running. Safe to call twice."""
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
        try:
            for child in reversed(self.children):
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for child in reversed(self.children):
                try:
                    child.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.signal(signal.SIGKILL, group=True)
                    child.popen.wait(5)
                child.kill_leftovers()
                child.close()
            self.stopped += len(self.children)
            self.children.clear()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
