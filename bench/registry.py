#!/usr/bin/env python
"""Benchmark of the agent registry: discovery, heartbeats and the stale sweep.

Not a test: it prints figures and compares them with targets. Run from the
repository root::

    .venv/bin/python bench/registry.py                    # both stacks, one subprocess each
    .venv/bin/python bench/registry.py --stack embedded   # SQLite only
    .venv/bin/python bench/registry.py --stack postgres --agents 10000 --capabilities 200 --sweep-agents 100000

What it measures, per stack (embedded = SQLite, postgres = PostgreSQL):

1. discovery by one capability over ``--agents`` agents and ``--capabilities``
   capabilities: ``selectors.discover_agents`` + ``selectors.with_details``
   evaluating the first page of 50, and GET /api/agents/?capability=NAME through
   Django's test Client in-process (no network, no WSGI server), as a staff
   user with a DRF token; p50/p95/p99/max, target p95 <= 20 ms;
2. heartbeats per second through ``services.heartbeat`` and through
   POST /api/agents/{id}/heartbeat/ with the agent's own token, one client,
   sequential;
3. one ``services.sweep_stale_agents()`` over ``--sweep-agents`` stale agents,
   target <= 1 s on PostgreSQL.

Each stack prints a table (measure, path, result, target, met) and notes: SQL
queries per call, how many timed calls ran a full garbage collection, the
population. ``--json PATH`` also writes the figures as JSON.

It never touches the developer's database: each stack runs in its own process
with MASP_VAR_DIR in a temporary folder, on a database of its own (SQLite: a
file in that folder; PostgreSQL: ``masp_bench``, created on the server of
``--postgres-url`` and dropped at the end).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("embedded", "postgres")
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"
BENCH_DB_NAME = "masp_bench"

DISCOVERY_P95_TARGET_MS = 20.0
SWEEP_TARGET_S = 1.0
PAGE_SIZE = 50
TAGS = 30
# Capability popularity follows a Zipf-like law (weight 1/rank**s): a few
# capabilities are offered by thousands of agents, the rarest by a few dozen.
POPULARITY_EXPONENT = 0.8


# --- Results ------------------------------------------------------------------


@dataclass
class Row:
    """One line of a results table."""

    measure: str
    path: str
    result: str
    target: str = "-"
    met: str = "-"


@dataclass
class StackResult:
    stack: str
    machine: dict[str, str]
    parameters: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
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
        "mean_ms": sum(ms) / len(ms),
    }


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def format_table(rows: Sequence[Row]) -> str:
    headers = ("Measure", "Path", "Result", "Target", "Met")
    cells = [headers, *((r.measure, r.path, r.result, r.target, r.met) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = []
    for n, c in enumerate(cells):
        out.append(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            out.append(line)
    return "\n".join(out)


def print_result(result: StackResult) -> None:
    print(f"\n=== Registry benchmark: {result.stack} stack ===")
    for key, value in result.machine.items():
        print(f"{key + ':':<14} {value}")
    params = ", ".join(f"{k}={v}" for k, v in result.parameters.items())
    print(f"{'parameters:':<14} {params}\n")
    print(format_table(result.rows))
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


def code_version() -> str:
    """The commit measured, with '-dirty' when the working tree has changes."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


# --- One stack, in this process ---------------------------------------------------


def configure_environment(stack: str, var_dir: Path, postgres_url: str) -> None:
    """Point the settings at a throwaway folder and database; must run before django.setup()."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "masplatform.settings"
    os.environ["MASP_DEBUG"] = "1"  # the built-in development key; DEBUG itself is turned off below
    os.environ["MASP_DOTENV"] = "0"  # not the developer's .env: defaults, or MASP_* set in this shell
    os.environ["MASP_VAR_DIR"] = str(var_dir)
    os.environ["MASP_LOG_LEVEL"] = "WARNING"  # no per-event log lines inside the timings
    # No broker is used; memory:// keeps Celery from starting the embedded redis-server.
    os.environ["MASP_BROKER_URL"] = "memory://"
    if stack == "postgres":
        os.environ["MASP_DATABASE_URL"] = postgres_url
    else:
        os.environ["MASP_DATABASE_URL"] = f"sqlite:///{var_dir / 'unused.sqlite3'}"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def require_postgres(url: str) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5432
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        raise SystemExit(
            f"PostgreSQL is not reachable at {host}:{port} ({exc}). Start it (pg_isready -h {host}), "
            "pass --postgres-url, or run --stack embedded."
        ) from None


def token_for(agent_id: str) -> str:
    return f"bench-token-{agent_id}"


def run_stack(stack: str, args: argparse.Namespace) -> StackResult:
    """Create a throwaway database for ``stack``, run every measure on it, drop it."""
    if stack == "postgres":
        require_postgres(args.postgres_url)
    var_dir = Path(tempfile.mkdtemp(prefix=f"masp-bench-{stack}-"))
    configure_environment(stack, var_dir, args.postgres_url)

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment

    if stack == "postgres":
        connection.settings_dict["TEST"]["NAME"] = BENCH_DB_NAME
    else:
        connection.settings_dict["TEST"]["NAME"] = str(var_dir / f"{BENCH_DB_NAME}.sqlite3")
    # DEBUG off, as in production and in a test run (no query log on every cursor),
    # and 'testserver' allowed for the test Client.
    setup_test_environment(debug=False)
    try:
        started = time.perf_counter()
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        try:
            result = StackResult(stack=stack, machine={**machine_info(), **database_info()}, parameters={})
            result.notes.append(f"database created and migrated in {time.perf_counter() - started:.1f} s")
            measure_all(result, args)
            return result
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    finally:
        teardown_test_environment()
        shutil.rmtree(var_dir, ignore_errors=True)


def database_info() -> dict[str, str]:
    import django
    from django.conf import settings
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
            shown = []
            for name in ("shared_buffers", "synchronous_commit", "fsync", "max_connections"):
                cursor.execute(f"SHOW {name}")
                shown.append(f"{name}={cursor.fetchone()[0]}")
        db = f"PostgreSQL {version} on {connection.settings_dict['HOST']}:{connection.settings_dict['PORT']} ({', '.join(shown)})"
    else:
        import sqlite3

        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(cursor.fetchone()[0], "?")
        db = f"SQLite {sqlite3.sqlite_version} (file in a temp dir, journal_mode={journal}, synchronous={sync})"
    return {
        "database": db,
        "django": django.get_version(),
        "settings": (
            f"CONN_MAX_AGE={settings.DATABASES['default']['CONN_MAX_AGE']}, "
            f"MASP_HEARTBEAT_INTERVAL={settings.MASP_HEARTBEAT_INTERVAL:g}s, "
            f"MASP_STALE_TIMEOUT={settings.MASP_STALE_TIMEOUT:g}s, MASP_SWEEP_BATCH_SIZE={settings.MASP_SWEEP_BATCH_SIZE}"
        ),
    }


def analyze() -> None:
    """PostgreSQL: refresh planner statistics, as autovacuum would have on a table this size.

    SQLite: nothing, because nothing in the application runs ANALYZE there either.
    """
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def measure_all(result: StackResult, args: argparse.Namespace) -> None:
    from django.db import connection

    rng = random.Random(args.seed)
    result.parameters = {
        "agents": args.agents,
        "capabilities": args.capabilities,
        "sweep_agents": args.sweep_agents,
        "discovery_samples": args.discovery_samples,
        "http_samples": args.http_samples,
        "heartbeats": args.heartbeats,
        "http_heartbeats": args.http_heartbeats,
        "sweep_runs": args.sweep_runs,
        "gc_freeze": args.gc_freeze,
        "seed": args.seed,
    }
    started = time.perf_counter()
    population = populate(rng, agents=args.agents, capabilities=args.capabilities)
    analyze()
    result.notes.append(
        f"population: {population['agents']} agents ({population['live']} live, {population['offline']} offline, "
        f"{population['unregistered']} unregistered), {population['offers']} offers "
        f"(offerers per capability {population['min_offerers']}..{population['max_offerers']}), "
        f"{population['tag_links']} tag links; bulk-created in {time.perf_counter() - started:.1f} s"
        + (
            ", then ANALYZE"
            if connection.vendor == "postgresql"
            else " (no ANALYZE: nothing runs it on SQLite in production either)"
        )
    )
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
        result.notes.append(
            f"gc.freeze() before measuring: {gc.get_freeze_count():,} objects moved out of the collector's reach"
        )
    bench_discovery(result, rng, population, args)
    bench_heartbeats(result, rng, population, args)
    bench_connection(result)
    bench_sweep(result, rng, args)


def populate(rng: random.Random, *, agents: int, capabilities: int) -> dict[str, Any]:
    """Bulk-create capabilities, tags and agents with offers and tags; returns what the measures need."""
    from django.utils import timezone

    from agents.models import Agent, AgentCapability, AgentState, Capability, Tag
    from agents.services import hash_token

    now = timezone.now()
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    Capability.objects.bulk_create(
        [
            Capability(
                name=f"cap-{i:03d}", description=f"bench capability {i}", input_schema=schema, output_schema=schema
            )
            for i in range(capabilities)
        ]
    )
    caps = list(Capability.objects.order_by("name"))
    Tag.objects.bulk_create([Tag(name=f"tag-{i:02d}") for i in range(TAGS)])
    tags = list(Tag.objects.all())

    states = [AgentState.IDLE, AgentState.BUSY, AgentState.ERROR, AgentState.OFFLINE]
    state_weights = [0.65, 0.20, 0.05, 0.10]
    rows = []
    for i in range(agents):
        agent_id = f"agent-{i:05d}"
        state = rng.choices(states, state_weights)[0]
        unregistered = rng.random() < 0.02
        if unregistered:
            state = AgentState.OFFLINE
        if state == AgentState.OFFLINE:
            last_beat = now - timedelta(seconds=rng.uniform(120, 86400))
        else:
            last_beat = now - timedelta(seconds=rng.uniform(0, 20))
        max_concurrency = rng.choice([1, 1, 2, 4, 8])
        rows.append(
            Agent(
                agent_id=agent_id,
                name=f"Bench agent {i}",
                description="",
                state=state,
                metadata={"region": rng.choice(["eu", "us", "ap"]), "gpu": rng.random() < 0.2},
                host=f"host-{i % 500}",
                pid=1000 + i,
                version=rng.choice(["1.0.0", "1.1.0", "2.0.0"]),
                max_concurrency=max_concurrency,
                registered_at=now - timedelta(days=rng.uniform(0, 30)),
                last_heartbeat_at=last_beat,
                state_changed_at=last_beat,
                unregistered_at=last_beat if unregistered else None,
                health_score=round(rng.uniform(0.2, 1.0), 3),
                cpu_load=round(rng.random(), 3),
                in_flight=0 if state == AgentState.OFFLINE else rng.randint(0, max_concurrency),
                calls_completed=rng.randint(0, 10_000),
                calls_failed=rng.randint(0, 100),
                avg_response_time_ms=round(rng.uniform(5, 500), 1),
                token_hash=hash_token(token_for(agent_id)),
            )
        )
    Agent.objects.bulk_create(rows, batch_size=2000)
    ids = dict(Agent.objects.values_list("agent_id", "id"))

    weights = [1 / (rank + 1) ** POPULARITY_EXPONENT for rank in range(len(caps))]
    offers = []
    tag_links = []
    offerers = [0] * len(caps)
    for row in rows:
        wanted = rng.choice([1, 2, 2, 3, 3, 3, 4, 5])
        chosen: set[int] = set()
        while len(chosen) < min(wanted, len(caps)):
            chosen.add(rng.choices(range(len(caps)), weights)[0])
        for c in chosen:
            offers.append(
                AgentCapability(agent_id=ids[row.agent_id], capability=caps[c], cost=round(rng.uniform(0.1, 5), 2))
            )
            offerers[c] += 1
        for t in rng.sample(tags, rng.randint(0, 3)):
            tag_links.append(Agent.tags.through(agent_id=ids[row.agent_id], tag_id=t.id))
    AgentCapability.objects.bulk_create(offers, batch_size=5000)
    Agent.tags.through.objects.bulk_create(tag_links, batch_size=5000)

    live = [r.agent_id for r in rows if r.unregistered_at is None and r.state != AgentState.OFFLINE]
    return {
        "agents": len(rows),
        "live": len(live),
        "offline": sum(1 for r in rows if r.state == AgentState.OFFLINE and r.unregistered_at is None),
        "unregistered": sum(1 for r in rows if r.unregistered_at is not None),
        "offers": len(offers),
        "tag_links": len(tag_links),
        "capability_names": [c.name for c in caps],
        "offerers": dict(zip((c.name for c in caps), offerers, strict=True)),
        "min_offerers": min(offerers),
        "max_offerers": max(offerers),
        "live_agent_ids": live,
    }


@dataclass
class Timing:
    """Per-call durations, and which calls ran a full (generation 2) garbage collection."""

    seconds: list[float]
    full_gc: list[bool]
    full_gc_seconds: float

    def gc_note(self, label: str) -> str:
        hit = sum(self.full_gc)
        if not hit:
            return f"{label}: no full garbage collection during the timed calls"
        others = [s for s, g in zip(self.seconds, self.full_gc, strict=True) if not g]
        return (
            f"{label}: {hit} of {len(self.seconds)} calls ({hit / len(self.seconds):.1%}) ran a full (gen-2) "
            f"garbage collection, {self.full_gc_seconds / hit * 1000:.0f} ms each on average; "
            f"p95 of the other calls {percentile(others, 95) * 1000:.1f} ms"
        )


def timed(calls: Sequence[Callable[[], object]]) -> Timing:
    """Run ``calls`` one after the other, timing each, and noting full garbage collections."""
    state = {"count": 0, "started": 0.0, "seconds": 0.0}

    def watch(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            state["started"] = time.perf_counter()
        else:
            state["count"] += 1
            state["seconds"] += time.perf_counter() - state["started"]

    seconds, full_gc = [], []
    gc.callbacks.append(watch)
    try:
        for call in calls:
            before = state["count"]
            t0 = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - t0)
            full_gc.append(state["count"] > before)
    finally:
        gc.callbacks.remove(watch)
    return Timing(seconds, full_gc, state["seconds"])


def count_queries(call: Callable[[], object]) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        call()
    return len(ctx.captured_queries)


def bench_discovery(
    result: StackResult, rng: random.Random, population: dict[str, Any], args: argparse.Namespace
) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from agents import selectors
    from agents.models import AgentCapability

    names: list[str] = population["capability_names"]

    # What the API reads of each agent: through the selectors' readers where the code has them,
    # else through the related managers (served from the prefetch cache, so no query either way).
    tags_of = getattr(selectors, "tags_of", lambda agent: [t.name for t in agent.tags.all()])
    offers_of = getattr(selectors, "offers_of", lambda agent: [(o.capability.name, o.cost) for o in agent.offers.all()])

    def first_page(name: str) -> list[Any]:
        page = list(selectors.with_details(selectors.discover_agents(capabilities=[name]))[:PAGE_SIZE])
        for agent in page:
            tags_of(agent)
            offers_of(agent)
        return page

    # Correctness first: the selector's page is the best 50 offerers of the capability.
    sample = names[-1]
    expected = AgentCapability.objects.filter(capability__name=sample, agent__unregistered_at__isnull=True).count()
    got = len(first_page(sample))
    if got != min(expected, PAGE_SIZE):
        raise RuntimeError(
            f"discovery of {sample}: {got} agents on the first page, expected {min(expected, PAGE_SIZE)}"
        )

    for name in names:  # warm-up: one query per capability
        first_page(name)
    order = [names[i % len(names)] for i in range(args.discovery_samples)]
    rng.shuffle(order)
    timing = timed([lambda n=n: first_page(n) for n in order])
    service = timing.seconds
    queries = count_queries(lambda: first_page(names[0]))
    by_cap: dict[str, list[float]] = {}
    for name, seconds in zip(order, service, strict=True):
        by_cap.setdefault(name, []).append(seconds)
    s = latency_summary(service)
    result.raw["discovery_service"] = s
    target = f"p95 <= {DISCOVERY_P95_TARGET_MS:g} ms"
    result.rows.append(
        Row(
            "discovery by capability, first page of 50",
            "service (discover_agents + with_details)",
            f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, p99 {s['p99_ms']:.1f}, max {s['max_ms']:.1f} ({s['n']} queries)",
            target,
            verdict(s["p95_ms"] <= DISCOVERY_P95_TARGET_MS),
        )
    )
    result.notes.append(f"service discovery: {queries} SQL queries per call")
    result.notes.append(timing.gc_note("service discovery"))
    popular = sorted(names, key=lambda n: -population["offerers"][n])
    for label, group in (("20 most-offered", popular[:20]), ("20 least-offered", popular[-20:])):
        values = [v for n in group for v in by_cap.get(n, [])]
        if values:
            g = latency_summary(values)
            offer_range = (
                f"{min(population['offerers'][n] for n in group)}..{max(population['offerers'][n] for n in group)}"
            )
            result.notes.append(
                f"service discovery, {label} capabilities ({offer_range} offerers): "
                f"p50 {g['p50_ms']:.1f} ms, p95 {g['p95_ms']:.1f} ms"
            )

    # HTTP: the same question through the API, in-process.
    staff = get_user_model().objects.create_user("bench-staff", password="x", is_staff=True)
    token = Token.objects.create(user=staff)
    client = Client(headers={"Authorization": f"Token {token.key}"})

    def http_get(name: str) -> None:
        response = client.get("/api/agents/", {"capability": name})
        if response.status_code != 200:
            raise RuntimeError(f"GET /api/agents/?capability={name}: {response.status_code} {response.content[:300]!r}")

    response = client.get("/api/agents/", {"capability": sample})
    body = response.json()
    if response.status_code != 200 or body["count"] != expected or len(body["results"]) != min(expected, PAGE_SIZE):
        raise RuntimeError(
            f"GET /api/agents/?capability={sample}: unexpected answer {response.status_code} {str(body)[:300]}"
        )
    for name in names:
        http_get(name)
    order = [names[i % len(names)] for i in range(args.http_samples)]
    rng.shuffle(order)
    timing = timed([lambda n=n: http_get(n) for n in order])
    http = timing.seconds
    queries = count_queries(lambda: http_get(names[0]))
    h = latency_summary(http)
    result.raw["discovery_http"] = h
    result.rows.append(
        Row(
            "discovery by capability, first page of 50",
            "HTTP (in-process WSGI, no network): GET /api/agents/?capability=",
            f"p50 {h['p50_ms']:.1f} ms, p95 {h['p95_ms']:.1f} ms, p99 {h['p99_ms']:.1f}, max {h['max_ms']:.1f} ({h['n']} requests)",
            target,
            verdict(h["p95_ms"] <= DISCOVERY_P95_TARGET_MS),
        )
    )
    result.notes.append(
        f"HTTP discovery: {queries} SQL queries per request (staff user, DRF token auth; "
        "includes the paginator's COUNT and JSON rendering of 50 agents)"
    )
    result.notes.append(timing.gc_note("HTTP discovery"))


def bench_heartbeats(
    result: StackResult, rng: random.Random, population: dict[str, Any], args: argparse.Namespace
) -> None:
    from django.conf import settings
    from django.test import Client

    from agents import services

    live: list[str] = population["live_agent_ids"]
    if not live:
        raise RuntimeError("no live agent in the population to heartbeat; use more --agents")
    needed = population["agents"] / settings.MASP_HEARTBEAT_INTERVAL
    reference = f"(none set) ref. >= {needed:.0f}/s"
    n = args.heartbeats

    def figures() -> dict[str, Any]:
        return {"cpu_load": round(rng.random(), 3), "in_flight": rng.randint(0, 1)}

    calls = [(live[i % len(live)], figures()) for i in range(n)]

    def beat(agent_id: str, data: dict[str, Any]) -> None:
        outcome = services.heartbeat(agent_id=agent_id, **data)
        if outcome.revived or not outcome.state:
            raise RuntimeError(f"heartbeat of {agent_id}: unexpected {outcome}")

    for agent_id, data in calls[:100]:
        beat(agent_id, data)
    started = time.perf_counter()
    latencies = timed([lambda a=a, d=d: beat(a, d) for a, d in calls]).seconds
    elapsed = time.perf_counter() - started
    queries = count_queries(lambda: beat(*calls[0]))
    s = latency_summary(latencies)
    rate = n / elapsed
    result.raw["heartbeat_service"] = {**s, "per_second": rate}
    result.rows.append(
        Row(
            "heartbeats per second (1 client, sequential)",
            "service (services.heartbeat)",
            f"{rate:,.0f}/s (p50 {s['p50_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms; {n} beats)",
            reference,
            verdict(rate >= needed),
        )
    )
    result.notes.append(f"service heartbeat: {queries} SQL queries per beat (UPDATE, then SELECT of the state)")

    client = Client()

    def http_beat(agent_id: str, data: dict[str, Any]) -> None:
        response = client.post(
            f"/api/agents/{agent_id}/heartbeat/",
            data,
            content_type="application/json",
            headers={"Authorization": f"Agent {token_for(agent_id)}"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"POST heartbeat of {agent_id}: {response.status_code} {response.content[:300]!r}")

    for agent_id, data in calls[:100]:
        http_beat(agent_id, data)
    http_calls = calls[: args.http_heartbeats]
    started = time.perf_counter()
    latencies = timed([lambda a=a, d=d: http_beat(a, d) for a, d in http_calls]).seconds
    elapsed = time.perf_counter() - started
    queries = count_queries(lambda: http_beat(*calls[0]))
    h = latency_summary(latencies)
    rate = len(http_calls) / elapsed
    result.raw["heartbeat_http"] = {**h, "per_second": rate}
    result.rows.append(
        Row(
            "heartbeats per second (1 client, sequential)",
            "HTTP (in-process WSGI, no network): POST /api/agents/{id}/heartbeat/",
            f"{rate:,.0f}/s (p50 {h['p50_ms']:.2f} ms, p95 {h['p95_ms']:.2f} ms; {len(http_calls)} beats)",
            reference,
            verdict(rate >= needed),
        )
    )
    result.notes.append(
        f"HTTP heartbeat: {queries} SQL queries per request (agent token lookup + the service's). "
        f"No heartbeat target was set; the reference is {population['agents']:,} agents / "
        f"MASP_HEARTBEAT_INTERVAL {settings.MASP_HEARTBEAT_INTERVAL:g} s = {needed:.0f} beats/s"
    )


def bench_connection(result: StackResult) -> None:
    """What a new database connection costs: paid per request by a server with CONN_MAX_AGE=0."""
    from django.conf import settings
    from django.db import connection

    def reconnect() -> None:
        connection.close()
        connection.ensure_connection()

    reconnect()
    s = latency_summary(timed([reconnect] * 30).seconds)
    result.raw["new_connection"] = s
    result.rows.append(
        Row(
            "open a new DB connection (information)",
            "django.db connection",
            f"p50 {s['p50_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms",
        )
    )
    if settings.DATABASES["default"]["CONN_MAX_AGE"] == 0:
        result.notes.append(
            "CONN_MAX_AGE=0 (MASP_DB_CONN_MAX_AGE default): a real WSGI server opens one connection per request, "
            "which the in-process test Client does not (it keeps the connection); add the line above to each HTTP figure"
        )


def bench_sweep(result: StackResult, rng: random.Random, args: argparse.Namespace) -> None:
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from agents import services
    from agents.models import Agent, AgentEvent, AgentEventKind, AgentState

    n = args.sweep_agents
    now = timezone.now()
    # The discovery population stays (the sweep must pass over it), fresh, so it is not swept. Its
    # heartbeats are renewed before every sweep: on a slow machine the runs outlast the stale timeout.
    last_discovery_pk = Agent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    discovery_live = Agent.objects.filter(pk__lte=last_discovery_pk, unregistered_at__isnull=True).exclude(
        state=AgentState.OFFLINE
    )

    def keep_discovery_fresh() -> None:
        discovery_live.update(last_heartbeat_at=timezone.now())

    started = time.perf_counter()
    states = [AgentState.IDLE, AgentState.BUSY, AgentState.ERROR]
    rows = []
    for i in range(n):
        agent_id = f"stale-{i:06d}"
        last_beat = now - timedelta(seconds=rng.uniform(300, 7200))
        state = rng.choices(states, [0.7, 0.25, 0.05])[0]
        rows.append(
            Agent(
                agent_id=agent_id,
                name=f"Stale agent {i}",
                state=state,
                registered_at=last_beat - timedelta(days=1),
                last_heartbeat_at=last_beat,
                state_changed_at=last_beat,
                health_score=round(rng.uniform(0.2, 1.0), 3),
                cpu_load=round(rng.random(), 3),
                token_hash=services.hash_token(token_for(agent_id)),
            )
        )
    Agent.objects.bulk_create(rows, batch_size=5000)
    del rows
    vacuum_analyze_sweep_tables()  # as before every other run: freshly bulk-written rows are not a fleet's
    setup = time.perf_counter() - started
    runs = []
    for run in range(args.sweep_runs):
        keep_discovery_fresh()
        if run:
            restore_swept(states)
        events_before = AgentEvent.objects.filter(kind=AgentEventKind.WENT_OFFLINE).count()
        started = time.perf_counter()
        swept = services.sweep_stale_agents()
        runs.append(time.perf_counter() - started)
        events = AgentEvent.objects.filter(kind=AgentEventKind.WENT_OFFLINE).count() - events_before
        if swept != n or events != n:
            raise RuntimeError(f"sweep: {swept} agents marked offline and {events} events, expected {n} of each")
    keep_discovery_fresh()
    started = time.perf_counter()
    again = services.sweep_stale_agents()
    idle = time.perf_counter() - started
    if again:
        raise RuntimeError(f"second sweep marked {again} more agents offline, expected 0")

    elapsed = statistics.median(runs)
    batches = math.ceil(n / settings.MASP_SWEEP_BATCH_SIZE)
    result.raw["sweep"] = {
        "agents": n,
        "runs_seconds": runs,
        "median_seconds": elapsed,
        "per_second": n / elapsed,
        "idle_seconds": idle,
    }
    is_pg = connection.vendor == "postgresql"
    spread = f"; runs: {', '.join(f'{r:.2f}' for r in runs)} s" if len(runs) > 1 else ""
    result.rows.append(
        Row(
            f"stale sweep of {n:,} agents (one call)",
            "service (sweep_stale_agents)",
            f"{'median ' if len(runs) > 1 else ''}{elapsed:.2f} s = {n / elapsed:,.0f} agents/s "
            f"({batches} batch{'' if batches == 1 else 'es'} of {settings.MASP_SWEEP_BATCH_SIZE}{spread})",
            f"<= {SWEEP_TARGET_S:g} s" + ("" if is_pg else " (target is PostgreSQL's)"),
            verdict(elapsed <= SWEEP_TARGET_S) if is_pg else ("(yes)" if elapsed <= SWEEP_TARGET_S else "(no)"),
        )
    )
    result.rows.append(
        Row(
            "stale sweep with nothing stale, just after (information)",
            "service (sweep_stale_agents)",
            f"{idle * 1000:.1f} ms",
        )
    )
    result.notes.append(
        f"sweep: {n:,} stale agents bulk-created in {setup:.1f} s"
        + (" then VACUUM ANALYZE" if is_pg else "")
        + f", beside the {Agent.objects.count() - n:,} agents of the discovery population;"
        " every agent got exactly one went_offline event (checked)"
        + (
            f"; {len(runs)} runs, each after putting the agents back"
            + (" and VACUUM ANALYZE (as autovacuum would between two mass expiries)" if is_pg else "")
            if len(runs) > 1
            else ""
        )
    )


def restore_swept(states: Sequence[str]) -> None:
    """Undo a sweep: give each swept agent back the state its went_offline event recorded, drop the events."""

    from agents.models import Agent, AgentEvent, AgentEventKind

    swept = AgentEvent.objects.filter(kind=AgentEventKind.WENT_OFFLINE)
    for state in states:
        Agent.objects.filter(pk__in=swept.filter(from_state=state).values("agent_id")).update(state=state)
    swept.delete()
    vacuum_analyze_sweep_tables()


def vacuum_analyze_sweep_tables() -> None:
    """PostgreSQL: VACUUM ANALYZE the agents and their events, as autovacuum would have long before a
    mass expiry (it also sets the hint bits and visibility map of rows just bulk-written, which the
    first sweep over them would otherwise do)."""
    from django.db import connection

    from agents.models import Agent, AgentEvent

    if connection.vendor == "postgresql":
        qn = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {qn(Agent._meta.db_table)}, {qn(AgentEvent._meta.db_table)}")


# --- Command line -----------------------------------------------------------------


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
        prog="bench/registry.py",
        description=(
            "Benchmark the agent registry (discovery latency, heartbeats/s, stale sweep) on throwaway databases. "
            "Never touches the developer's database."
        ),
    )
    parser.add_argument(
        "--stack",
        choices=[*STACKS, "both"],
        default="both",
        help="embedded = SQLite, postgres = PostgreSQL, both = each in its own subprocess (default)",
    )
    parser.add_argument("--agents", type=positive_int, default=10_000, help="agents for discovery and heartbeats")
    parser.add_argument("--capabilities", type=positive_int, default=200, help="capabilities for discovery")
    parser.add_argument("--sweep-agents", type=positive_int, default=100_000, help="stale agents for the sweep")
    parser.add_argument("--discovery-samples", type=positive_int, default=1000, help="timed service discovery calls")
    parser.add_argument("--http-samples", type=positive_int, default=1000, help="timed GET /api/agents/ requests")
    parser.add_argument("--heartbeats", type=positive_int, default=3000, help="timed service heartbeats")
    parser.add_argument("--http-heartbeats", type=positive_int, default=1500, help="timed HTTP heartbeats")
    parser.add_argument("--sweep-runs", type=positive_int, default=3, help="timed sweeps (the median is reported)")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="diagnostic: gc.freeze() before measuring, as a server may do after loading the app",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed of the generated population")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"server to create the {BENCH_DB_NAME!r} database on (default {DEFAULT_POSTGRES_URL}; that database itself is not used)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return parser


def forwarded_args(args: argparse.Namespace) -> list[str]:
    out = []
    for name in (
        "agents",
        "capabilities",
        "sweep_agents",
        "discovery_samples",
        "http_samples",
        "heartbeats",
        "http_heartbeats",
        "sweep_runs",
        "seed",
        "postgres_url",
    ):
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.gc_freeze:
        out.append("--gc-freeze")
    return out


def run_both(args: argparse.Namespace) -> int:
    """Each stack in a subprocess of its own (settings are per process); then a summary."""
    results: dict[str, dict[str, Any]] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="masp-bench-") as tmp:
        for stack in STACKS:
            out = Path(tmp) / f"{stack}.json"
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--stack",
                stack,
                *forwarded_args(args),
                "--json",
                str(out),
            ]
            completed = subprocess.run(command, cwd=ROOT, check=False)
            if completed.returncode != 0 or not out.exists():
                failed.append(f"{stack} (exit code {completed.returncode})")
                continue
            results[stack] = json.loads(out.read_text())
    if results:
        print("\n=== Summary ===")
        rows = []
        for stack, data in results.items():
            rows += [
                Row(r["measure"], f"{stack}: {r['path']}", r["result"], r["target"], r["met"]) for r in data["rows"]
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
    started = time.perf_counter()
    result = run_stack(args.stack, args)
    result.notes.append(f"total run time for this stack: {time.perf_counter() - started:.0f} s")
    print_result(result)
    if args.json:
        data = asdict(result)
        Path(args.json).write_text(json.dumps(data, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
