#!/usr/bin/env python
"""Benchmark of the HTTP API through the real web server (gunicorn), under concurrent clients.

Not a test: it prints figures and compares them with targets. Run from the
repository root::

    .venv/bin/python bench/http.py                      # both stacks, one subprocess each
    .venv/bin/python bench/http.py --stack embedded     # SQLite + embedded broker only
    .venv/bin/python bench/http.py --clients 50,200 --seconds 5 --web-workers 4

What it measures, per stack (embedded = SQLite + the embedded broker;
postgres = PostgreSQL + Redis), for three kinds of request:

- discovery: GET /api/agents/?capability=NAME with a staff DRF token;
- heartbeat: POST /api/agents/{agent_id}/heartbeat/ with body {}, each client
  with its own agent's token (``Authorization: Agent <token>``);
- invoke: POST /api/invocations/ as staff, input {}; no agent worker runs,
  so the calls stay queued.

Each kind runs at ``--clients`` concurrent clients (default 50, 200, 500).
A client is one thread with its own keep-alive connection sending requests
back to back (a closed loop): ``--warmup`` seconds unmeasured, then
``--seconds`` measured. Reported: requests/s, p50/p99 latency, errors (any
non-2xx answer, or a connection error or reset, after which the client
reconnects) and the server's CPU time per request (utime+stime of the
gunicorn master and its workers, from /proc). Targets: 0 errors at every
level; p99 under 1 s at 500 clients.

The server is gunicorn as ``masplatform.procs.web_args`` starts it (its
defaults, or ``--web-workers``/``--web-threads``), on a free port of
127.0.0.1, with MASP_VAR_DIR in a temporary folder and a database of its own
(SQLite: a file in that folder; PostgreSQL: ``masp_bench_http``, created and
dropped; Redis db ``--redis-db``, flushed at the start and the end).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's ``http`` package: take its folder off the module
# path before anything imports ``http``, and import the registry bench as ``bench.registry``.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _HERE) and Path(p).resolve() != Path(_HERE)]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

from bench.registry import (  # noqa: E402
    Row,
    StackResult,
    format_table,
    latency_summary,
    machine_info,
    populate,
    positive_int,
    require_postgres,
    token_for,
    verdict,
)

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("embedded", "postgres")
KINDS = ("discovery", "heartbeat", "invoke")
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
BENCH_DB_NAME = "masp_bench_http"
P99_TARGET_S = 1.0
P99_TARGET_CLIENTS = 500
# A capability whose input schema accepts {} (the populated ones require a field).
INVOKE_CAPABILITY = "bench-open"
# Beyond gunicorn's worker timeout (60 s): a slow answer is counted as slow, not as an error of the client's.
CLIENT_TIMEOUT_S = 90


# --- The server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(stack: str, var_dir: Path, database_url: str, broker_url: str | None) -> dict[str, str]:
    """This environment without MASP_* settings, plus the bench's own (as tests/processes.py does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_")}
    env.update(
        DJANGO_SETTINGS_MODULE="masplatform.settings",
        MASP_DEBUG="1",
        MASP_DOTENV="0",
        MASP_VAR_DIR=str(var_dir),
        MASP_DATABASE_URL=database_url,
        MASP_LOG_LEVEL="WARNING",
    )
    if broker_url:
        env["MASP_BROKER_URL"] = broker_url
    return env


def create_postgres_db(url: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def process_cpu_seconds(master: int) -> float:
    """utime+stime of ``master`` and its children (the gunicorn workers), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, ppid = int(entry), int(fields[1])
        if pid == master or ppid == master:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def wait_until_up(port: int, child: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"gunicorn exited with {child.popen.returncode}:\n{child.log_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/schema/")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"gunicorn did not answer /api/schema/ within {timeout} s:\n{child.log_text()[-3000:]}")


# --- The load ---------------------------------------------------------------------------


class Client(threading.Thread):
    """One closed-loop client: its own keep-alive connection, requests back to back."""

    def __init__(self, port: int, method: str, path: str, headers: dict[str, str], body: bytes | None):
        super().__init__(daemon=True)
        self.port, self.method, self.path, self.headers, self.body = port, method, path, headers, body
        self.measuring = False
        self.stop = False
        self.latencies: list[float] = []
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.started: float | None = None  # of the request in flight

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self.stop:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT_S)
            started = time.perf_counter()
            self.started = started
            try:
                conn.request(self.method, self.path, body=self.body, headers=self.headers)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 300
                kind = str(response.status)
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                ok, kind = False, type(exc).__name__
                conn.close()
                conn = None
            elapsed = time.perf_counter() - started
            self.started = None
            # Counted when it ends inside the measured window, whenever it started: a level
            # slower than the warm-up still counts its answers.
            if self.measuring:
                if ok:
                    self.latencies.append(elapsed)
                else:
                    self.errors += 1
                    self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if conn is not None:
            conn.close()


def run_level(
    port: int, master: int, requests: Sequence[tuple[str, str, dict[str, str], bytes | None]], args: argparse.Namespace
) -> dict[str, Any]:
    clients = [Client(port, *r) for r in requests]
    for c in clients:
        c.start()
    time.sleep(args.warmup)
    cpu_before = process_cpu_seconds(master)
    for c in clients:
        c.measuring = True
    started = time.perf_counter()
    time.sleep(args.seconds)
    for c in clients:
        c.measuring = False
    elapsed = time.perf_counter() - started
    cpu = process_cpu_seconds(master) - cpu_before
    closed = time.perf_counter()
    starts = [c.started for c in clients]  # each read once: a client may be finishing meanwhile
    waits = [closed - t for t in starts if t is not None]
    oldest = max(waits) * 1000 if waits else 0.0
    for c in clients:
        c.stop = True
    for c in clients:
        c.join(CLIENT_TIMEOUT_S + 5)
    latencies = [x for c in clients for x in c.latencies]
    errors = sum(c.errors for c in clients)
    kinds: dict[str, int] = {}
    for c in clients:
        for k, n in c.error_kinds.items():
            kinds[k] = kinds.get(k, 0) + n
    ok = len(latencies)
    summary = latency_summary(latencies) if latencies else {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "clients": len(clients),
        "ok": ok,
        "errors": errors,
        "error_kinds": kinds,
        "rps": ok / elapsed,
        "oldest_wait_ms": oldest,
        # Little's law for a closed loop: mean latency = clients / throughput. Unlike p50/p99 it
        # includes the requests still waiting when the window closed.
        "little_ms": len(clients) / (ok / elapsed) * 1000 if ok else float("nan"),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "cpu_s": cpu,
        "cpu_ms_per_request": cpu / (ok + errors) * 1000 if ok + errors else float("nan"),
    }


def requests_for(kind: str, n: int, rng: random.Random, staff: str, population: dict[str, Any]):
    staff_headers = {"Authorization": f"Token {staff}", "Accept": "application/json"}
    if kind == "discovery":
        names = population["capability_names"]
        return [("GET", f"/api/agents/?capability={rng.choice(names)}", staff_headers, None) for _ in range(n)]
    if kind == "heartbeat":
        ids = population["heartbeat_ids"]
        if n > len(ids):
            raise SystemExit(f"{n} heartbeat clients need {n} agents; only {len(ids)} can heartbeat (raise --agents)")
        return [
            (
                "POST",
                f"/api/agents/{agent_id}/heartbeat/",
                {"Authorization": f"Agent {token_for(agent_id)}", "Content-Type": "application/json"},
                b"{}",
            )
            for agent_id in ids[:n]
        ]
    body = json.dumps({"capability": INVOKE_CAPABILITY, "input": {}}).encode()
    headers = {**staff_headers, "Content-Type": "application/json"}
    return [("POST", "/api/invocations/", headers, body) for _ in range(n)]


# --- One stack, in this process -------------------------------------------------------------


def prepare(stack: str, var_dir: Path, args: argparse.Namespace) -> tuple[dict[str, str], dict[str, Any], str]:
    """Database, broker and data for ``stack``; returns the server's environment, the population, a staff token."""
    broker_url = None
    if stack == "postgres":
        require_postgres(args.postgres_url)
        create_postgres_db(args.postgres_url, BENCH_DB_NAME)
        database_url = urlparse(args.postgres_url)._replace(path=f"/{BENCH_DB_NAME}").geturl()
        broker_url = f"{args.redis_url.rstrip('/')}/{args.redis_db}"
        flush_redis(broker_url)
    else:
        database_url = f"sqlite:///{var_dir / 'db.sqlite3'}"
    env = server_env(stack, var_dir, database_url, broker_url)
    for k in [k for k in os.environ if k.startswith("MASP_")]:
        del os.environ[k]
    os.environ.update(env)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.authtoken.models import Token

    from agents.models import AgentState, Capability

    call_command("migrate", verbosity=0)
    rng = random.Random(args.seed)
    population = populate(rng, agents=args.agents, capabilities=args.capabilities)
    Capability.objects.create(
        name=INVOKE_CAPABILITY, description="bench: accepts {}", input_schema={"type": "object"}, output_schema={}
    )
    from agents.models import Agent

    # Agents that may heartbeat with body {}: registered and not offline.
    population["heartbeat_ids"] = list(
        Agent.objects.filter(unregistered_at__isnull=True, state__in=[AgentState.IDLE, AgentState.BUSY])
        .order_by("agent_id")
        .values_list("agent_id", flat=True)
    )
    staff = get_user_model().objects.create_user("bench-staff", password="x", is_staff=True)
    token = Token.objects.create(user=staff).key
    connections.close_all()
    if stack == "embedded":
        from django.conf import settings

        from masplatform import embedded_broker

        embedded_broker.ensure_running(settings.VAR_DIR)
    return env, population, token


def cleanup(stack: str, var_dir: Path, args: argparse.Namespace) -> None:
    if stack == "postgres":
        from django.db import connections

        connections.close_all()
        flush_redis(f"{args.redis_url.rstrip('/')}/{args.redis_db}")
        create_postgres_db(args.postgres_url, BENCH_DB_NAME, drop_only=True)
    else:
        from masplatform import embedded_broker

        embedded_broker.stop(var_dir)
    shutil.rmtree(var_dir, ignore_errors=True)


def run_stack(stack: str, args: argparse.Namespace) -> StackResult:
    var_dir = Path(tempfile.mkdtemp(prefix=f"masp-bhttp-{stack}-"))
    started = time.perf_counter()
    try:
        env, population, staff = prepare(stack, var_dir, args)
        from masplatform.procs import ProcessGroup, web_args

        port = free_port()
        server_extra = {"MASP_WEB_ACCESS_LOG": "0"} if args.no_access_log else {}
        group = ProcessGroup(base_env=env, env=server_extra, log_dir=var_dir / "logs")
        result = StackResult(
            stack=stack,
            machine=machine_info(),
            parameters={
                "agents": args.agents,
                "capabilities": args.capabilities,
                "clients": ",".join(map(str, args.clients)),
                "warmup_s": args.warmup,
                "seconds": args.seconds,
                "web_workers": args.web_workers or "default",
                "web_threads": args.web_threads or "default",
                "access_log": "off" if args.no_access_log else "on",
            },
        )
        result.notes.append(f"prepared (migrate, populate) in {time.perf_counter() - started:.0f} s")
        try:
            child = group.start(
                "web", web_args(f"127.0.0.1:{port}", workers=args.web_workers, threads=args.web_threads)
            )
            wait_until_up(port, child)
            rng = random.Random(args.seed)
            levels: list[dict[str, Any]] = []
            for kind in KINDS:
                for n in args.clients:
                    level = run_level(port, child.popen.pid, requests_for(kind, n, rng, staff, population), args)
                    level["kind"] = kind
                    levels.append(level)
                    print(
                        f"[{stack}] {kind} x{n}: {level['rps']:.0f} req/s, p50 {level['p50_ms']:.0f} ms, "
                        f"p99 {level['p99_ms']:.0f} ms, errors {level['errors']}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if not child.alive():
                        raise RuntimeError(f"gunicorn died:\n{child.log_text()[-3000:]}")
        finally:
            group.stop_all()
        result.raw["levels"] = levels
        for level in levels:
            ok = level["errors"] == 0
            target = "0 errors"
            if level["clients"] >= P99_TARGET_CLIENTS:
                ok = ok and level["p99_ms"] < P99_TARGET_S * 1000
                target = "0 errors, p99 < 1 s"
            errors = str(level["errors"])
            if level["error_kinds"]:
                errors += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(level["error_kinds"].items())) + ")"
            level["errors_text"] = errors
            level["target"] = target
            level["met"] = verdict(ok)
            result.rows.append(
                Row(
                    measure=f"{level['kind']} x{level['clients']}",
                    path=stack,
                    result=(
                        f"{level['rps']:.0f} req/s, p50 {level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms, "
                        f"errors {errors}, CPU {level['cpu_ms_per_request']:.1f} ms/req"
                    ),
                    target=target,
                    met=level["met"],
                )
            )
        result.notes.append(f"total run time for this stack: {time.perf_counter() - started:.0f} s")
        return result
    finally:
        cleanup(stack, var_dir, args)


def level_table(stack: str, levels: Sequence[dict[str, Any]]) -> str:
    headers = (
        "Kind",
        "Clients",
        "Req/s",
        "p50 ms",
        "p99 ms",
        "N/X ms",
        "Oldest ms",
        "Errors",
        "CPU ms/req",
        "Target",
        "Met",
    )
    cells = [headers] + [
        (
            lv["kind"],
            str(lv["clients"]),
            f"{lv['rps']:.0f}",
            f"{lv['p50_ms']:.0f}",
            f"{lv['p99_ms']:.0f}",
            f"{lv['little_ms']:.0f}",
            f"{lv['oldest_wait_ms']:.0f}",
            lv["errors_text"],
            f"{lv['cpu_ms_per_request']:.1f}",
            lv["target"],
            lv["met"],
        )
        for lv in levels
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    out = []
    for n, c in enumerate(cells):
        out.append(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            out.append("+".join("-" * (w + 2) for w in widths))
    return "\n".join(out)


def print_result(result: StackResult) -> None:
    print(f"\n=== HTTP benchmark through gunicorn: {result.stack} stack ===")
    for key, value in result.machine.items():
        print(f"{key + ':':<14} {value}")
    print(f"{'parameters:':<14} {', '.join(f'{k}={v}' for k, v in result.parameters.items())}\n")
    print(level_table(result.stack, result.raw["levels"]))
    print(
        "\nN/X ms: clients / requests per second, the mean latency by Little's law (a closed loop), "
        "which counts the requests still waiting; Oldest ms: the longest any client had been waiting "
        "for its answer when the window closed (p50/p99 count only the answers that came)."
    )
    for note in result.notes:
        print(f"- {note}")
    sys.stdout.flush()


# --- Command line ----------------------------------------------------------------------------


def client_levels(text: str) -> list[int]:
    try:
        return [positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"--clients: {exc}") from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/http.py",
        description="Requests/s and p50/p99 latency through gunicorn under concurrent clients, on throwaway data.",
    )
    parser.add_argument("--stack", choices=[*STACKS, "both"], default="both")
    parser.add_argument("--clients", type=client_levels, default=[50, 200, 500], help="levels, e.g. 50,200,500")
    parser.add_argument("--warmup", type=positive_float, default=2.0, help="unmeasured seconds per level")
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="measured seconds per level")
    parser.add_argument("--web-workers", type=positive_int, help="gunicorn workers (default: the platform's)")
    parser.add_argument("--web-threads", type=positive_int, help="threads per worker (default: the platform's)")
    parser.add_argument("--no-access-log", action="store_true", help="run the server with MASP_WEB_ACCESS_LOG=0")
    parser.add_argument("--agents", type=positive_int, default=1000)
    parser.add_argument("--capabilities", type=positive_int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="server to create the bench db on")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis server (without db number)")
    parser.add_argument("--redis-db", type=int, default=9, help="Redis db number, flushed at start and end")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return parser


def forwarded_args(args: argparse.Namespace) -> list[str]:
    out = ["--clients", ",".join(map(str, args.clients))]
    for name in ("warmup", "seconds", "web_workers", "web_threads", "agents", "capabilities", "seed"):
        if getattr(args, name) is not None:
            out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out += ["--postgres-url", args.postgres_url, "--redis-url", args.redis_url, "--redis-db", str(args.redis_db)]
    if args.no_access_log:
        out.append("--no-access-log")
    return out


def run_both(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="masp-bhttp-") as tmp:
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
        rows = [
            Row(r["measure"], r["path"], r["result"], r["target"], r["met"])
            for d in results.values()
            for r in d["rows"]
        ]
        print(format_table(rows))
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
    result = run_stack(args.stack, args)
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
