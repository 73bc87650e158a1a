"""`make demo` end to end: the real command, in its own var/ folder, on the embedded default."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from django.conf import settings

from masplatform import embedded_broker
from tests import stack
from tests.processes import fresh_platform_env, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(stack.stack() != "embedded", reason="the demo runs on the embedded default"),
]


def processes_of(var_dir) -> list[psutil.Process]:
    """Every process (the embedded broker included) started for the platform under ``var_dir``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("MASP_VAR_DIR") == str(var_dir) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_demo_runs_the_scenarios_serves_and_ctrl_c_stops_everything(tmp_path):
    env = fresh_platform_env(tmp_path)
    log_path = tmp_path / "demo.out"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", "0", "--serve"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: "Serving until Ctrl-C" in log_path.read_text() or proc.poll() is not None,
                timeout=240,
                interval=0.5,
                message="the demo to serve",
            )
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert len(processes_of(tmp_path)) > 10  # web, worker, beat, agents, broker
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)  # an impatient second Ctrl-C must not cut the cleanup short
            assert proc.wait(90) == 0, log_path.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    out = log_path.read_text()
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
    # What the demo started, it stopped, and its last line says so.
    assert not embedded_broker.is_running(tmp_path)
    assert not processes_of(tmp_path)
    last = out.strip().splitlines()[-1]
    assert re.match(r"Done: stopped the 1\d processes it started and the embedded broker; nothing", last), last
