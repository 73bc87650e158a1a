"""Which stack a test run uses, and whether its servers can be reached.

- ``MASP_TEST_STACK`` unset or ``embedded``: SQLite + the embedded Redis broker, under var/test/embedded.
- ``MASP_TEST_STACK=services``: PostgreSQL (``MASP_TEST_DATABASE_URL``, default
  postgres://postgres@127.0.0.1:5432/test; pytest-django creates and drops
  its own ``test_test`` database) and Redis (``MASP_TEST_BROKER_URL``, default
  redis://127.0.0.1:6379/12, a database number of its own, flushed before and after).

When a server of the chosen stack cannot be reached, every test of the run
is skipped and the summary says why, unless ``MASP_REQUIRE_SERVICES=1``,
where the run fails.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def stack() -> str:
    return os.environ.get("MASP_TEST_STACK", "embedded") or "embedded"


def configure_environment(base_dir: Path) -> None:
    """Set the MASP_* variables of the chosen stack (before Django reads settings)."""
    name = stack()
    if name not in {"embedded", "services"}:
        raise SystemExit(f"MASP_TEST_STACK={name!r}: use 'embedded' or 'services'")
    os.environ["MASP_DOTENV"] = "0"  # a developer's .env must not point the tests at their own servers
    os.environ.setdefault("MASP_VAR_DIR", str(base_dir / "var" / "test" / name))
    if name == "services":
        os.environ["MASP_DATABASE_URL"] = os.environ.get("MASP_TEST_DATABASE_URL", DEFAULT_PG)
        os.environ["MASP_BROKER_URL"] = os.environ.get("MASP_TEST_BROKER_URL", DEFAULT_REDIS)
    else:
        os.environ.pop("MASP_DATABASE_URL", None)
        os.environ.pop("MASP_BROKER_URL", None)


def reachable(url: str, timeout: float = 1.0) -> bool:
    parsed = urlparse(url)
    default_ports = {"postgres": 5432, "postgresql": 5432, "redis": 6379, "amqp": 5672}
    port = parsed.port or default_ports.get(parsed.scheme, 0)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable_servers() -> list[str]:
    """The servers of this run's stack that do not answer, as 'name at url'."""
    if stack() != "services":
        return []
    wanted = {"PostgreSQL": os.environ["MASP_DATABASE_URL"], "Redis": os.environ["MASP_BROKER_URL"]}
    return [f"{name} at {url}" for name, url in wanted.items() if not reachable(url)]


def services_required() -> bool:
    return os.environ.get("MASP_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes", "on"}
