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
import time
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


def web_args(addr: str) -> list[str]:
    return [sys.executable, "manage.py", "runserver", addr, "--noreload"]


def worker_args(*, queues: str = "celery", concurrency: int = 2, name: str = "platform") -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "masplatform",
        "worker",
        "-l",
        "INFO",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        f"{name}@%h",
    ]


def beat_args(pidfile: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "masplatform",
        "beat",
        "-l",
        "INFO",
        "-S",
        "django",
        "--pidfile",
        str(pidfile),
    ]


class ProcessGroup:
    def __init__(self, *, env: dict[str, str] | None = None, log_dir: Path | None = None):
        self.env = {**os.environ, **(env or {})}
        self.log_dir = log_dir
        self.children: list[Child] = []
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str]) -> Child:
        log = None
        log_path = None
        if self.log_dir:
            log_path = self.log_dir / f"{name}.log"
            log = open(log_path, "w")
        popen = subprocess.Popen(
            args,
            cwd=settings.BASE_DIR,
            env=self.env,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
        )
        child = Child(name, args, popen, log_path, log)
        self.children.append(child)
        return child

    def wait_for_log(self, child: Child, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in child.log_text():
                return
            if not child.alive():
                raise RuntimeError(
                    f"{child.name} exited with {child.popen.returncode}; log {child.log_path}:\n"
                    f"{child.log_text()[-3000:]}"
                )
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} not ready after {timeout}s; see {child.log_path}")

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
        for child in reversed(self.children):
            if child.alive():
                try:
                    os.killpg(child.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.popen.pid, signal.SIGKILL)
                child.popen.wait(5)
            if child._log:
                child._log.close()
