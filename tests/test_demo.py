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
                timeout=420,
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
    coordination = out[out.index("== 10.") : out.index("== Exercise 2's agents")]
    assert "killing compute-" in coordination and "restarting compute-" in coordination
    assert "succeeded 100.0%" in coordination and "compute-1, compute-2, compute-3" in coordination
    assert "'gathered': 3" in coordination
    assert out.count("/admin/workflows/execution/") >= 4
    # Exercise 2 over the message bus, through real agent workers
    assert "8 agent workers ready: weather_pub, stock_pub, weather_sub (weather)" in out
    pub_sub = out[out.index("== 11.") : out.index("== 12.")]
    for subscriber, topics, n in (
        ("weather_sub", "weather", 5),
        ("stock_sub", "stocks", 3),
        ("multi_sub", "weather,stocks", 8),
    ):
        assert f"{subscriber} received {n} messages" in pub_sub
        # its own answer to get_received and its acked deliveries on the platform agree
        assert re.search(rf"^{subscriber}\s+{topics}\s+{n}\s+{n}\s", pub_sub, re.M), pub_sub
    requests = out[out.index("== 12.") : out.index("== 13.")]
    assert "client1 received 3 responses from calc_service" in requests
    assert "client2 received 3 responses from validation_service" in requests
    for result in ("{'sum': 15, 'product': 50}", "{'sum': 23, 'product': 60}", "{'sum': 22, 'product': 105}"):
        assert result in requests
    for result in ("{'valid': True, 'length': 11}", "{'valid': False, 'length': 0}", "{'valid': True, 'length': 7}"):
        assert result in requests
    assert (
        "client1 -> slow_service (timeout 1 s; its handler takes 3 s): RequestTimedOut: no response within 1s"
        in requests
    )
    assert (
        "NoResponders: no responders: agent 'calc_service' has no handler for requests of type 'translate'" in requests
    )
    assert re.search(r"the timed-out request in the admin: \S+/admin/messaging/message/[0-9a-f-]{36}/change/", requests)
    backlog = out[out.index("== 13.") : out.index("== 14.")]
    assert "killed multi_sub (SIGKILL)" in backlog and "multi_sub: offline after" in backlog
    assert "multi_sub's inbox depth: 3 (pending=3)" in backlog
    assert "NoResponders: no responders: agent 'multi_sub' is offline" in backlog
    assert "it received 3 messages since its restart (sequences {'stocks': [4], 'weather': [6, 7]})" in backlog
    assert "inbox depth now 0; acked in all 11 (missed nothing: 8 + 3)" in backlog
    bus = out[out.index("== 14.") : out.index("== Where to look")]
    assert re.search(r"^multi_sub\s+idle\s+\d+\s+13\s+13\s+0\s*$", bus, re.M), bus
    assert "fan-out latency p50 ms" in bus and re.search(r"\backed\s+\d+", bus), bus
    assert "/admin/messaging/message/" in out
    # What the demo started, it stopped, and its last line says so.
    assert not embedded_broker.is_running(tmp_path)
    assert not processes_of(tmp_path)
    last = out.strip().splitlines()[-1]
    assert re.match(r"Done: stopped the 2\d processes it started and the embedded broker; nothing", last), last
