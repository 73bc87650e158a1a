"""`make demo` end to end: the real command, in its own var/ folder, on the embedded default."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from masplatform import embedded_broker
from tests import stack
from tests.processes import fresh_platform_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(stack.stack() != "embedded", reason="the demo runs on the embedded default"),
]


def test_demo_runs_the_registry_scenario_and_cleans_up(tmp_path):
    env = fresh_platform_env(tmp_path)

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )

    result = manage("demo", "--port", "0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "HTTP 409: capability 'validation' already exists with another contract" in out
    assert "image_agent_5: offline" in out
    assert "event: went_offline idle -> offline" in out
    assert "revived=True state=idle" in out
    assert "7 agent workers ready" in out
    assert "data_ingestion    process_data   data_agent_" in out and "24 of 24 succeeded" in out
    assert "{'sum': 15, 'product': 50}" in out and "{'valid': False, 'length': 0}" in out
    assert "HTTP 400" in out and "/a: 'ten' is not of type 'number'" in out
    assert "/admin/   (login: admin / admin)" in out and "/api/docs/" in out
    assert not embedded_broker.is_running(tmp_path)  # the demo stops what it started
