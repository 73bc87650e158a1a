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


def test_demo_runs_the_scenarios_and_cleans_up(tmp_path):
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
    assert "10 agent workers ready" in out
    assert "data_ingestion    process_data   data_agent_" in out and "24 of 24 succeeded" in out
    assert "{'sum': 15, 'product': 50}" in out and "{'valid': False, 'length': 0}" in out
    assert "HTTP 400" in out and "/a: 'ten' is not of type 'number'" in out
    assert "/admin/   (login: admin / admin)" in out and "/api/docs/" in out
    # Exercise 1 as a workflow: the diamond completes; Exercise 3: shares on three workers survive a kill
    assert "a definition with a cycle is refused (400)" in out and "a -> b -> a" in out
    complex_part = out[out.index("== 9.") : out.index("== 10.")]
    assert "succeeded 100.0%" in complex_part and "critical path data_ingestion -> text_analysis" in complex_part
    coordination = out[out.index("== 10.") : out.index("== Where to look")]
    assert "killing compute-" in coordination and "restarting compute-" in coordination
    assert "succeeded 100.0%" in coordination and "compute-1, compute-2, compute-3" in coordination
    assert "'gathered': 3" in coordination
    assert out.count("/admin/workflows/execution/") >= 4
    assert not embedded_broker.is_running(tmp_path)  # the demo stops what it started
