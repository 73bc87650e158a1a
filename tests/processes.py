"""Real Celery worker and beat processes for integration tests, on the run's database and broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from masplatform.procs import Child, ProcessGroup, beat_args, web_args, worker_args


def test_database_url() -> str:
    """The URL of the database the tests use right now (pytest-django's test database)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def process_env() -> dict[str, str]:
    """This environment without MASP_* settings, plus the test run's database, broker and var/."""
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
    return env


# Agents in tests heartbeat every second and are stale after three.
AGENT_ENV = {
    "MASP_HEARTBEAT_INTERVAL": "1",
    "MASP_STALE_TIMEOUT": "3",
    "MASP_RETRY_BACKOFF": "0.2",
    "MASP_HARD_TIMEOUT_GRACE": "1",
}


class Processes:
    """Starts worker/beat processes (logs under ``log_dir``) and stops every one of them at teardown."""

    def __init__(self, log_dir: Path):
        self.group = ProcessGroup(log_dir=log_dir, base_env=process_env())
        self.log_dir = log_dir

    def _start(self, name: str, args: list[str], env: dict[str, str], ready: str) -> Child:
        self.group.env = {**process_env(), **env}
        child = self.group.start(name, args)
        child.wait_for_log(ready, timeout=60)
        return child

    def worker(self, *, queues: str = "celery", **env: str) -> Child:
        fast = ("-P", "solo", "--without-gossip", "--without-mingle")
        args = worker_args(queues=queues, concurrency=1, name=f"w{uuid.uuid4().hex[:6]}", extra=fast)
        return self._start("worker", args, env, " ready.")

    def beat(self, **env: str) -> Child:
        pidfile = self.log_dir / f"beat-{uuid.uuid4().hex[:6]}.pid"
        return self._start("beat", beat_args(pidfile, extra=("--max-interval", "1")), env, "beat: Starting")

    def agent(
        self,
        module: str = "tests.sample_agents",
        *,
        agent_id: str,
        concurrency: int = 1,
        pool: str = "prefork",
        **env: str,
    ) -> Child:
        """``manage.py run_agent`` in its own process; returns once its worker is ready."""
        args = [
            sys.executable,
            "manage.py",
            "run_agent",
            module,
            "--agent-id",
            agent_id,
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
        ]
        return self._start(f"agent-{agent_id}", args, {**AGENT_ENV, **env}, " ready.")

    def web(self, *, workers: int = 2, threads: int = 8, **env: str) -> str:
        """The platform's web server (gunicorn, as ``make run`` starts it) on a free port; returns its base
        URL once it answers."""
        port = free_port()
        child = self._start("web", web_args(f"127.0.0.1:{port}", workers=workers, threads=threads), env, "Booting worker")
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if not child.alive():
                raise AssertionError(f"the web server exited:\n{child.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/schema/", timeout=5) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(answers, timeout=60, message="the web server")
        return base

    def stop_all(self) -> None:
        self.group.stop_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def fresh_platform_env(var_dir: Path) -> dict[str, str]:
    """The environment of a platform on the embedded default with its own var/ folder, migrated."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_")}
    env.update(
        MASP_DEBUG="1", MASP_DOTENV="0", MASP_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="masplatform.settings"
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=settings.BASE_DIR, env=env, check=True, timeout=120
    )
    return env
