"""Real Celery worker and beat processes for integration tests, on the run's database and broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection


def test_database_url() -> str:
    """The URL of the database the tests use right now (pytest-django's test database)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_")}
    env.update(
        DJANGO_SETTINGS_MODULE="masplatform.settings",
        MASP_DEBUG="1",
        MASP_DOTENV="0",
        MASP_VAR_DIR=str(settings.VAR_DIR),
        MASP_DATABASE_URL=test_database_url(),
        MASP_BROKER_URL=settings.CELERY_BROKER_URL,
        MASP_LOG_LEVEL="INFO",
    )
    env.update(overrides)
    return env


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "w")
        self.popen = subprocess.Popen(
            args, env=env, cwd=settings.BASE_DIR, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no {text!r} within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()


class Processes:
    """Starts worker/beat processes and stops every one of them at teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def worker(self, *, queues: str = "celery", **env: str) -> Proc:
        name = f"w{uuid.uuid4().hex[:6]}"
        proc = Proc(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "masplatform",
                "worker",
                "-l",
                "INFO",
                "-P",
                "solo",
                "-Q",
                queues,
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            process_env(**env),
            self.log_dir,
        )
        self.started.append(proc)
        proc.wait_for(" ready.", timeout=60)
        return proc

    def beat(self, **env: str) -> Proc:
        proc = Proc(
            "beat",
            [
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
                "--max-interval",
                "1",
                "--pidfile",
                str(self.log_dir / f"beat-{uuid.uuid4().hex[:6]}.pid"),
            ],
            process_env(**env),
            self.log_dir,
        )
        self.started.append(proc)
        proc.wait_for("beat: Starting", timeout=60)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


def wait_until(predicate, timeout: float = 30, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
