"""`make run`: gunicorn, worker and beat start together and Ctrl-C stops all of them (and the embedded broker)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request

import psutil
import pytest
from django.conf import settings

from masplatform import embedded_broker
from tests import stack
from tests.processes import fresh_platform_env, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(stack.stack() != "embedded", reason="make run is exercised on the embedded default"),
]


def test_ctrl_c_stops_web_worker_beat_and_the_broker(tmp_path):
    env = fresh_platform_env(tmp_path)
    manage = [sys.executable, "manage.py"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(
        [*manage, "runplatform", "--addr", f"127.0.0.1:{port}", "--web-workers", "3", "--web-threads", "4"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def web_up() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/schema/", timeout=2).status == 200
            except OSError:
                return False

        wait_until(web_up, timeout=60, message="the web server")
        wait_until(lambda: " ready." in (tmp_path / "run.log").read_text(), timeout=60, message="the worker")
        wait_until(lambda: "beat: Starting" in (tmp_path / "run.log").read_text(), timeout=60, message="beat")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3
        (web,) = [c for c in psutil.Process(proc.pid).children() if "gunicorn" in " ".join(c.cmdline())]
        assert "--threads" in web.cmdline() and web.cmdline()[web.cmdline().index("--threads") + 1] == "4"
        assert len(web.children()) == 3  # the gunicorn workers asked for
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not embedded_broker.is_running(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_runplatform_refuses_a_web_server_of_no_workers(tmp_path):
    env = fresh_platform_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "runplatform", "--web-workers", "0"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "--web-workers must be at least 1, got 0" in result.stderr
    assert not embedded_broker.is_running(tmp_path)
