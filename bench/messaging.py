#!/usr/bin/env python
"""Benchmark of the message bus beside raw Celery on the same broker.

Not a test: it prints figures and compares them with targets. Run from the repository root::

    .venv/bin/python bench/messaging.py                     # both stacks, one subprocess each
    .venv/bin/python bench/messaging.py --stack embedded    # SQLite + the embedded broker
    .venv/bin/python bench/messaging.py --stack postgres --messages 5000 --roundtrips 300

Per stack (the same throwaway setup as bench/invocations.py: a temporary ``MASP_VAR_DIR``, ``.env``
ignored, a database created and dropped; the postgres stack uses the ``bench`` database on the server of
``--postgres-url`` and Redis db 6 of ``--redis-url``, flushed before and after):

1. Point-to-point throughput. Raw Celery: ``--messages`` no-op tasks to one worker ``-P prefork -c 2``
   (the raw app of bench/invocations.py: JSON, acks_late, prefetch 1), the end time written by the
   last one. The platform: ``manage.py run_agent bench.messaging --agent-id msg_p2p --concurrency 2``
   (two prefork processes) and ``--messages`` direct messages (type ``event``, content ``{"type":
   "p2p"}``, a handler that returns at once) sent by ``messaging.services.send`` from this process, in
   transactions of ``--send-batch`` messages (250 by default: each transaction's deliveries are
   published when it commits, so the workers start while the next batch is being sent). Time: from
   just before the first send to the latest ``Delivery.acked_at``, read from the database. Rounds of
   raw then platform alternate (``--rounds``); the target takes the median of the rounds' ratios.
2. Request/response round trip: ``messaging.services.request`` to that agent (a handler returning
   ``{"ok": true}`` at once), one at a time, beside ``apply_async(...).get()`` with a Redis result
   backend on the same server (on the embedded stack, the embedded broker).
3. Fan-out: one ``send(topic=...)`` to 1, 10, 100 and 1,000 subscribers. For 1 and 10 the
   subscribers are real worker agents (``run_agent --pool solo``, one process each); for 100 and 1,000
   they are HTTP-style agents (registered, subscribed, no worker) whose inboxes ``--drainers`` client
   processes drain with ``messaging.services.claim_batch`` + ``ack`` (what the HTTP inbox's GET and ack
   call), started before the publish and woken by a Redis list push right after it commits.
   Figures: time from ``Message.created_at`` to the last ``acked_at``, that divided by the
   recipients, and per recipient ``acked_at - created_at`` p50/p95 (the median of ``--fan-repeat``
   publishes). Beside it, Celery's broadcast: a ``kombu.common.Broadcast`` queue (a fanout exchange:
   on Redis, a PUBLISH to every connected subscriber) consumed by as many raw Celery workers as the
   platform's real worker agents (1 and 10); the task records its worker's clock; it says how many of
   the copies reached the workers. Then one worker of each side is stopped, one message published,
   the worker started again: the platform's waits in the inbox and is handled, Celery's is lost.

It never touches the developer's database or var/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# run as a script, this folder comes first on sys.path and this file would shadow the messaging app
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.sdk import AgentDefinition  # noqa: E402
from bench.invocations import (  # noqa: E402
    Worker,
    broker_client,
    child_env,
    configure_environment,
    cpu_per_call,
    cpu_snapshot,
    database_url,
    format_table,
    latency_summary,
    lazy_redis,
    machine_busy,
    machine_info,
    percentile,
    raw_celery,
    require_tcp,
    verdict,
    versions_info,
)

STACKS = ("embedded", "postgres")
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/6"
BENCH_DB_NAME = "bench"
RAW_QUEUE = "bench.msg.raw"
BCAST_QUEUE = "bench.msg.bcast"
KEY_PREFIX = "masp-bench-msg:"
P2P_AGENT = "msg_p2p"
SENDER = "bench"
THROUGHPUT_TARGET = 0.5
ROUNDTRIP_TARGET = 2.0
WORKER_SIZES = (1, 10)
HTTP_SIZES = (100, 1000)


# --- The agent the platform's workers run (run_agent bench.messaging) --------------------------------

agent = AgentDefinition("msg_bench", name="Messaging benchmark agent", tags=("bench",))
for _pattern in filter(None, os.environ.get("MASP_BENCH_MSG_SUBSCRIBE", "").split(",")):
    agent.subscribe(_pattern)


@agent.on("p2p")
def p2p(message, ctx):
    return None


@agent.on("echo")
def echo(message, ctx):
    return {"ok": True}


@agent.on("fan")
def fan(message, ctx):
    return None


# --- The raw Celery app (its workers import bench.messaging:raw_app) ------------------------------------


def make_raw_app(broker: str, backend: str | None):
    from kombu import Queue
    from kombu.common import Broadcast

    app = raw_celery("bench_msg_raw", broker, backend, queue=RAW_QUEUE)
    # a fanout exchange; on Redis kombu PUBLISHes to a channel named after the exchange and the routing key
    app.conf.task_queues = (Queue(RAW_QUEUE), Broadcast(BCAST_QUEUE, routing_key=BCAST_QUEUE))
    client = lazy_redis(broker)

    @app.task(name="bench.msg.noop", ignore_result=True, shared=False)
    def noop(x, mark=None):
        if mark:  # the last message of a throughput run: the worker's clock
            client().set(mark, repr(time.time()), ex=3600)
        return x

    @app.task(name="bench.msg.noop_result", ignore_result=False, shared=False)
    def noop_result(x):
        return x

    @app.task(name="bench.msg.fan", ignore_result=True, shared=False, bind=True)
    def fan_task(self, key):
        client().rpush(key, json.dumps([self.request.hostname, time.time()]))
        client().expire(key, 3600)

    return app


raw_app = make_raw_app(
    os.environ.get("MASP_BENCH_RAW_BROKER", "memory://"), os.environ.get("MASP_BENCH_RAW_BACKEND") or None
)


# --- Results --------------------------------------------------------------------------------------------


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
    fan: list[dict[str, Any]] = field(default_factory=list)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def print_result(result: StackResult) -> None:
    print(f"\n=== Messaging benchmark: {result.stack} stack ===")
    for key, value in result.machine.items():
        print(f"{key + ':':<14} {value}")
    print(f"{'parameters:':<14} {', '.join(f'{k}={v}' for k, v in result.parameters.items())}\n")
    print(
        format_table(
            ("Figure", "raw Celery", "platform", "ratio", "target", "met"),
            [(r.figure, r.raw, r.platform, r.ratio, r.target, r.met) for r in result.rows],
        )
    )
    if result.fan:
        print("\nFan-out, one publish (medians of the repeats):\n")
        print(
            format_table(
                (
                    "recipients",
                    "platform subscribers",
                    "to last ack ms",
                    "per recipient ms",
                    "latency p50 / p95 ms",
                    "acked",
                    "Celery broadcast: to last ms",
                    "reached",
                ),
                [
                    (
                        f"{f['n']:,}",
                        f["how"],
                        f"{f['last_ms']:.1f}",
                        f"{f['per_recipient_ms']:.2f}",
                        f"{f['p50_ms']:.1f} / {f['p95_ms']:.1f}",
                        f"{f['acked']}/{f['expected']}",
                        f"{f['celery_last_ms']:.1f}" if f.get("celery_last_ms") is not None else "not run",
                        f"{f['celery_reached']}/{f['celery_expected']}" if f.get("celery_expected") else "-",
                    )
                    for f in result.fan
                ],
            )
        )
    if result.cpu:
        raw, plat = result.cpu.get("raw", {}), result.cpu.get("platform", {})
        names = [k for k in dict.fromkeys([*plat, *raw]) if k != "machine, busy (all CPUs)"]
        names.append("machine, busy (all CPUs)")
        print("\nCPU per message during the point-to-point runs (ms, from /proc, mean of the rounds):\n")
        print(
            format_table(
                ("component", "raw Celery", "platform"),
                [(k, f"{raw.get(k, 0.0):.3f}", f"{plat.get(k, 0.0):.3f}") for k in names],
            )
        )
    if result.notes:
        print()
        for note in result.notes:
            print(f"- {note}")
    sys.stdout.flush()


# --- Raw Celery -------------------------------------------------------------------------------------------


def raw_throughput(noop, broker, n: int) -> dict[str, float]:
    key = f"{KEY_PREFIX}raw-done:{uuid.uuid4().hex}"
    start_wall, start = time.time(), time.perf_counter()
    for i in range(n - 1):
        noop.apply_async((i,))
    noop.apply_async((n - 1,), {"mark": key})
    publish_s = time.perf_counter() - start
    deadline = time.monotonic() + max(120, n / 20)
    while (value := broker.get(key)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw Celery: the last of {n} no-ops did not run in time")
        time.sleep(0.005)
    elapsed = float(value) - start_wall
    return {"n": n, "publish_s": publish_s, "elapsed_s": elapsed, "per_s": n / elapsed}


def raw_roundtrip(noop_result, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        assert noop_result.apply_async((i,)).get(timeout=30) == i
        times.append(time.perf_counter() - t0)
    return times


def raw_broadcast(fan_task, broker, expected: int, wait: float = 3.0) -> dict[str, Any]:
    """One broadcast; the copies' receipt times. Waits up to ``wait`` s for ``expected`` copies."""
    from kombu import Exchange

    exchange = Exchange(BCAST_QUEUE, type="fanout")
    key = f"{KEY_PREFIX}bcast:{uuid.uuid4().hex}"
    sent = time.time()
    fan_task.apply_async((key,), exchange=exchange, routing_key=BCAST_QUEUE, declare=[exchange])
    deadline = time.monotonic() + wait
    while broker.llen(key) < expected and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.3 if broker.llen(key) >= expected else 0)  # late extra copies, if any
    got = [json.loads(v) for v in broker.lrange(key, 0, -1)]
    lat = [(t - sent) * 1000 for _, t in got]
    return {
        "key": key,
        "reached": len(got),
        "hosts": sorted({h for h, _ in got}),
        "last_ms": max(lat) if lat else None,
        "p50_ms": percentile(lat, 50) if lat else None,
    }


# --- The platform -------------------------------------------------------------------------------------------


def bench_sender():
    from messaging import services

    return services.Sender.of_user(SENDER)


def platform_throughput(n: int, batch: int) -> dict[str, Any]:
    from django.db import transaction
    from django.db.models import Count, Max, Sum

    from messaging import services
    from messaging.models import Delivery, DeliveryStatus

    sender = bench_sender()
    tag = uuid.uuid4().hex
    before = Delivery.objects.aggregate(top=Max("pk"))["top"] or 0
    start_wall, start = time.time(), time.perf_counter()
    for lo in range(0, n, batch):
        with transaction.atomic():
            for i in range(lo, min(n, lo + batch)):
                services.send(sender, {"type": "p2p", "i": i, "run": tag}, to=P2P_AGENT)
    publish_s = time.perf_counter() - start
    # this run's deliveries: the ids after ``before`` (only this process sends meanwhile)
    mine = Delivery.objects.filter(pk__gt=before)
    open_ = mine.exclude(status=DeliveryStatus.ACKED)
    deadline = time.monotonic() + max(300, n / 5)
    while open_.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"platform: {open_.count()} of {n} not acked in time")
        time.sleep(0.05)
    detected_s = time.perf_counter() - start
    stats = mine.aggregate(end=Max("acked_at"), attempts=Sum("attempts"), count=Count("pk"))
    elapsed = stats["end"].timestamp() - start_wall
    return {
        "n": n,
        "publish_s": publish_s,
        "elapsed_s": elapsed,
        "detected_s": detected_s,
        "per_s": n / elapsed,
        "acked": stats["count"],
        "attempts": stats["attempts"],
    }


def platform_roundtrip(n: int) -> list[float]:
    from messaging import services

    sender = bench_sender()
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        outcome = services.request(sender, P2P_AGENT, {"type": "echo", "i": i}, timeout=30)
        times.append(time.perf_counter() - t0)
        if not outcome.ok or outcome.response.content != {"ok": True}:
            raise RuntimeError(f"platform round trip: {outcome.status} {outcome.response and outcome.response.content}")
    return times


def fan_topic(n: int) -> str:
    return f"bench.fan.n{n}"


def fan_once(n: int, broker, drainers: int, http: bool, timeout: float = 120) -> dict[str, Any]:
    """One publish to ``n`` subscribers; per-recipient latencies from the database."""
    from messaging import services
    from messaging.models import Delivery, DeliveryStatus

    message = services.send(bench_sender(), {"type": "fan", "n": n}, topic=fan_topic(n))
    if http:
        for k in range(drainers):
            broker.rpush(f"{KEY_PREFIX}go:{k}", json.dumps({"n": n}))
    if message.recipient_count != n:
        raise RuntimeError(f"fan-out to {n}: {message.recipient_count} recipients")
    mine = Delivery.objects.filter(message=message)
    deadline = time.monotonic() + timeout
    while mine.filter(status=DeliveryStatus.ACKED).count() < n and time.monotonic() < deadline:
        time.sleep(0.02)
    acked = list(mine.filter(status=DeliveryStatus.ACKED).values_list("acked_at", flat=True))
    lat = [(a - message.created_at).total_seconds() * 1000 for a in acked]
    if http:
        for k in range(drainers):
            wait_list(broker, f"{KEY_PREFIX}done:{k}", 60)
    return {
        "acked": len(acked),
        "last_ms": max(lat) if lat else float("nan"),
        "p50_ms": percentile(lat, 50) if lat else float("nan"),
        "p95_ms": percentile(lat, 95) if lat else float("nan"),
    }


def wait_list(broker, key: str, seconds: float):
    """BLPOP in short waits: the broker client's socket timeout (10 s) is shorter than a long BLPOP."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        item = broker.blpop(key, timeout=5)
        if item is not None:
            return item
    return None


def register_http_agents(count: int) -> list[str]:
    """Agents with no worker (HTTP-style), each subscribed to the topics of the sizes it belongs to."""
    from django.db import transaction

    from agents.models import Agent
    from agents.services import registry
    from messaging import services

    ids = [f"msg_http_{i:04d}" for i in range(count)]
    for lo in range(0, count, 100):  # setup, not measured: fewer commits
        with transaction.atomic():
            for i in range(lo, min(count, lo + 100)):
                registry.register_agent(agent_id=ids[i], name=ids[i])
                row = Agent.objects.get(agent_id=ids[i])
                for n in HTTP_SIZES:
                    if i < n:
                        services.subscribe(row, fan_topic(n))
    return ids


# --- Drainer processes (HTTP-style agents' clients) --------------------------------------------------------


def drain_main(args: argparse.Namespace) -> int:
    """A client process for a share of the HTTP-style agents: waits for a go, then takes each agent's
    deliveries with claim_batch and acks them, as an HTTP agent's GET inbox + POST ack would."""
    import django

    django.setup()
    from django.conf import settings

    from agents.models import Agent
    from messaging import services

    ids = json.loads(Path(args.drain).read_text())
    by_id = {a.agent_id: a for a in Agent.objects.filter(agent_id__in=ids)}
    agents = [by_id[i] for i in ids]  # in index order: agent i is in the sizes > i
    index = {a.agent_id: int(a.agent_id.rsplit("_", 1)[1]) for a in agents}
    broker = broker_client(settings.CELERY_BROKER_URL)
    go, done = f"{KEY_PREFIX}go:{args.drainer}", f"{KEY_PREFIX}done:{args.drainer}"
    broker.rpush(f"{KEY_PREFIX}ready", str(args.drainer))
    while True:
        item = wait_list(broker, go, 1800)
        if item is None:
            return 1
        order = json.loads(item[1])
        if order.get("stop"):
            return 0
        pending = [a for a in agents if index[a.agent_id] < order["n"]]
        acked = 0
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            left = []
            for a in pending:
                taken = services.claim_batch(a, limit=10, visibility=60)
                for d in taken:
                    services.ack(d.pk, agent=a)
                    acked += 1
                if not taken:
                    left.append(a)
            pending = left
        broker.rpush(done, str(acked))


# --- One stack -----------------------------------------------------------------------------------------------


def run_stack(stack: str, args: argparse.Namespace) -> StackResult:
    if stack == "postgres":
        require_tcp(args.postgres_url, 5432, "PostgreSQL", "Start it, pass --postgres-url, or run --stack embedded.")
        require_tcp(args.redis_url, 6379, "Redis", "Start it, pass --redis-url, or run --stack embedded.")
    busy = machine_busy()
    load_before = os.getloadavg()
    var_dir = Path(tempfile.mkdtemp(prefix=f"masp-msg-{stack[:2]}-"))
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
                "messages": args.messages,
                "send_batch": args.send_batch,
                "batch_run": args.batch_run,
                "rounds": args.rounds,
                "roundtrips": args.roundtrips,
                "fan_repeat": args.fan_repeat,
                "drainers": args.drainers,
                "broker": broker_url if stack == "postgres" else "embedded (redis+socket)",
            },
        )
        result.notes.append(f"database created and migrated in {time.perf_counter() - started:.1f} s")
        result.notes.append(
            f"machine busy in the 2 s before the run: {busy:.0%} of all CPUs; load average {load_before[0]:.2f}"
        )
        measure(result, args, var_dir, masp_env, broker_url, broker, workers)
        load_after = os.getloadavg()
        result.notes.append(f"load average at the end: {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")
        return result
    finally:
        for worker in workers:
            worker.stop()
        try:
            for k in range(args.drainers):
                broker.rpush(f"{KEY_PREFIX}go:{k}", json.dumps({"stop": True}))
        except Exception:
            pass
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


def raw_worker(name: str, var_dir: Path, broker_url: str, queue: str, pool: list[str], loglevel: str) -> Worker:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_") and k != "DJANGO_SETTINGS_MODULE"}
    env.update(MASP_BENCH_RAW_BROKER=broker_url, MASP_BENCH_RAW_BACKEND=broker_url)
    command = [sys.executable, "-m", "celery", "-A", "bench.messaging:raw_app", "worker", *pool, "-Q", queue]
    command += ["-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "-l", loglevel, "--without-mingle", "--without-gossip"]
    return Worker(name, command, env, var_dir / f"{name}.log")


def agent_worker(agent_id: str, var_dir: Path, masp_env: dict[str, str], pool: list[str], **env: str) -> Worker:
    command = [sys.executable, "manage.py", "run_agent", "bench.messaging", "--agent-id", agent_id, *pool]
    return Worker(f"agent {agent_id}", command, child_env(masp_env, **env), var_dir / f"agent-{agent_id}.log")


def measure(result, args, var_dir, masp_env, broker_url, broker, workers: list[Worker]) -> None:
    from masplatform.celery import app as platform_app

    loglevel = args.worker_loglevel
    raw = raw_worker("bench-raw", var_dir, broker_url, RAW_QUEUE, ["-P", "prefork", "-c", "2"], loglevel)
    workers.append(raw)
    p2p_worker = agent_worker(
        P2P_AGENT, var_dir, masp_env, ["--concurrency", "2", "--pool", "prefork", "--loglevel", loglevel]
    )
    workers.append(p2p_worker)
    raw.wait_ready()
    p2p_worker.wait_ready()
    app = make_raw_app(broker_url, broker_url)
    platform_app.set_current()
    noop, noop_result, fan_task = (app.tasks[f"bench.msg.{t}"] for t in ("noop", "noop_result", "fan"))

    # warm-up: pool processes import, connect, fill caches
    raw_throughput(noop, broker, args.warmup)
    platform_throughput(args.warmup, args.send_batch)
    raw_roundtrip(noop_result, 20)
    platform_roundtrip(20)

    n = args.messages
    watched = {"raw Celery worker": raw, "agent worker": p2p_worker}
    raw_runs, plat_runs, raw_cpus, plat_cpus = [], [], [], []
    for _ in range(args.rounds):
        cpu0 = cpu_snapshot(watched)
        raw_runs.append(raw_throughput(noop, broker, n))
        raw_cpus.append(cpu_per_call(cpu0, cpu_snapshot(watched), n))
        cpu0 = cpu_snapshot(watched)
        plat_runs.append(platform_throughput(n, args.send_batch))
        plat_cpus.append(cpu_per_call(cpu0, cpu_snapshot(watched), n))
    ratios = [p["per_s"] / r["per_s"] for r, p in zip(raw_runs, plat_runs, strict=True)]
    ratio = statistics.median(ratios)
    raw_rate = statistics.median(r["per_s"] for r in raw_runs)
    plat_rate = statistics.median(p["per_s"] for p in plat_runs)
    result.rows.append(
        Row(
            f"point-to-point, {n:,} direct messages, 2 worker processes, median of {args.rounds}",
            f"{raw_rate:,.0f}/s",
            f"{plat_rate:,.0f}/s",
            f"{ratio:.2f}x",
            f">= {THROUGHPUT_TARGET}x",
            verdict(ratio >= THROUGHPUT_TARGET),
        )
    )
    result.rows.append(
        Row(
            "  each round (information)",
            ", ".join(f"{r['per_s']:,.0f}" for r in raw_runs) + " /s",
            ", ".join(f"{p['per_s']:,.0f}" for p in plat_runs) + " /s",
            ", ".join(f"{x:.2f}" for x in ratios),
        )
    )
    result.rows.append(
        Row(
            "  send rate (information)",
            f"{statistics.median(n / r['publish_s'] for r in raw_runs):,.0f}/s apply_async",
            f"{statistics.median(n / p['publish_s'] for p in plat_runs):,.0f}/s send()",
        )
    )
    if args.batch_run:
        bulk = platform_throughput(n, args.batch_run)
        result.rows.append(
            Row(
                f"  the same, {args.batch_run} send()s per transaction, one run",
                f"{raw_rate:,.0f}/s (median above)",
                f"{bulk['per_s']:,.0f}/s (send {n / bulk['publish_s']:,.0f}/s)",
                f"{bulk['per_s'] / raw_rate:.2f}x",
            )
        )
        plat_runs_all = [*plat_runs, bulk]
        result.raw["platform_batch_run"] = bulk
    else:
        plat_runs_all = plat_runs
    for run in plat_runs_all:
        if run["acked"] != n or run["attempts"] != n:
            result.notes.append(f"point-to-point: {run['acked']} acked, {run['attempts']} attempts for {n}")
    mean = {k: statistics.fmean(c.get(k, 0.0) for c in raw_cpus) for k in raw_cpus[0]}
    result.cpu = {
        "raw": mean,
        "platform": {k: statistics.fmean(c.get(k, 0.0) for c in plat_cpus) for k in plat_cpus[0]},
    }
    result.raw.update(raw_throughput=raw_runs, platform_throughput=plat_runs, ratios=ratios)

    raw_times: list[float] = []
    plat_times: list[float] = []
    for r in range(args.rounds):
        size = args.roundtrips // args.rounds + (1 if r < args.roundtrips % args.rounds else 0)
        raw_times += raw_roundtrip(noop_result, size)
        plat_times += platform_roundtrip(size)
    raw_rt, plat_rt = latency_summary(raw_times), latency_summary(plat_times)
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        rt_ratio = plat_rt[key] / raw_rt[key]
        result.rows.append(
            Row(
                f"request/response round trip {label}, {raw_rt['n']} sequential",
                f"{raw_rt[key]:.2f} ms",
                f"{plat_rt[key]:.2f} ms",
                f"{rt_ratio:.2f}x",
                f"<= {ROUNDTRIP_TARGET:g}x",
                verdict(rt_ratio <= ROUNDTRIP_TARGET),
            )
        )
    result.rows.append(
        Row(
            "  round trip p95 / max / mean (information)",
            f"{raw_rt['p95_ms']:.2f} / {raw_rt['max_ms']:.1f} / {raw_rt['mean_ms']:.2f} ms",
            f"{plat_rt['p95_ms']:.2f} / {plat_rt['max_ms']:.1f} / {plat_rt['mean_ms']:.2f} ms",
        )
    )
    result.raw.update(raw_roundtrip=raw_rt, platform_roundtrip=plat_rt)
    result.notes.append(
        f"point-to-point: send() from this process, {args.send_batch} message(s) per transaction (published "
        "at each commit); end = the latest Delivery.acked_at; raw Celery's end = the worker's clock in the last "
        "task; request: services.request() (waits on the wake-up channel) beside apply_async().get()"
    )
    raw.stop()
    workers.remove(raw)
    p2p_worker.stop()
    workers.remove(p2p_worker)

    if args.fan_repeat:
        fan_out(result, args, var_dir, masp_env, broker_url, broker, workers, fan_task)


def fan_agent(i: int, var_dir: Path, masp_env: dict[str, str], loglevel: str) -> Worker:
    """Fan-out subscriber i, a real worker agent: subscribed to the topics of the sizes above i."""
    topics = ",".join(fan_topic(n) for n in WORKER_SIZES if i < n)
    pool = ["--concurrency", "1", "--pool", "solo", "--loglevel", loglevel]
    return agent_worker(f"msg_fan_{i:02d}", var_dir, masp_env, pool, MASP_BENCH_MSG_SUBSCRIBE=topics)


def start_fan_workers(first: int, last: int, var_dir, masp_env, broker_url, loglevel, workers) -> tuple[list, list]:
    plat = [fan_agent(i, var_dir, masp_env, loglevel) for i in range(first, last)]
    celery = [
        raw_worker(f"bench-fan-{i:02d}", var_dir, broker_url, BCAST_QUEUE, ["-P", "solo"], loglevel)
        for i in range(first, last)
    ]
    workers += plat + celery
    for w in plat + celery:
        w.wait_ready(180)
    time.sleep(1)  # a raw worker logs ready as its consumer starts; let its SUBSCRIBE reach the server
    return plat, celery


def fan_row(n: int, runs: list[dict[str, Any]], how: str, bc: list[dict[str, Any]] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "n": n,
        "how": how,
        "expected": n,
        "acked": min(r["acked"] for r in runs),
        "last_ms": statistics.median(r["last_ms"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p95_ms": statistics.median(r["p95_ms"] for r in runs),
        "runs": runs,
    }
    row["per_recipient_ms"] = row["last_ms"] / n
    if bc:
        times = [b["last_ms"] for b in bc if b["last_ms"] is not None]
        row["celery_last_ms"] = statistics.median(times) if times else None
        row["celery_reached"] = min(b["reached"] for b in bc)
        row["celery_expected"] = n
        row["celery_runs"] = bc
    return row


def fan_out(result, args, var_dir, masp_env, broker_url, broker, workers, fan_task) -> None:
    loglevel, repeat = args.worker_loglevel, args.fan_repeat
    small, width = WORKER_SIZES
    plat, celery = start_fan_workers(0, small, var_dir, masp_env, broker_url, loglevel, workers)

    started = time.perf_counter()
    http_ids = register_http_agents(max(HTTP_SIZES))
    result.notes.append(
        f"{len(http_ids)} HTTP-style agents registered and subscribed in {time.perf_counter() - started:.1f} s"
    )
    broker.delete(f"{KEY_PREFIX}ready")
    for k in range(args.drainers):
        share = var_dir / f"drainer-{k}.json"
        share.write_text(json.dumps(http_ids[k :: args.drainers]))
        command = [sys.executable, str(Path(__file__).resolve()), "--drain", str(share), "--drainer", str(k)]
        workers.append(Worker(f"drainer {k}", command, child_env(masp_env), var_dir / f"drainer-{k}.log"))
    deadline = time.monotonic() + 120
    while broker.llen(f"{KEY_PREFIX}ready") < args.drainers:
        if time.monotonic() > deadline:
            raise RuntimeError("drainers not ready: " + workers[-1].log_text()[-2000:])
        time.sleep(0.1)

    fan_once(small, broker, args.drainers, http=False)  # warm-up
    raw_broadcast(fan_task, broker, small)
    runs = [fan_once(small, broker, args.drainers, http=False) for _ in range(repeat)]
    bc = [raw_broadcast(fan_task, broker, small) for _ in range(repeat)]
    result.fan.append(fan_row(small, runs, f"{small} run_agent worker", bc))

    more_plat, more_celery = start_fan_workers(small, width, var_dir, masp_env, broker_url, loglevel, workers)
    plat += more_plat
    celery += more_celery
    fan_once(width, broker, args.drainers, http=False)  # warm-up
    raw_broadcast(fan_task, broker, width)
    runs = [fan_once(width, broker, args.drainers, http=False) for _ in range(repeat)]
    bc = [raw_broadcast(fan_task, broker, width) for _ in range(repeat)]
    result.fan.append(fan_row(width, runs, f"{width} run_agent workers", bc))

    fan_once(HTTP_SIZES[0], broker, args.drainers, http=True)  # warm-up
    for n in HTTP_SIZES:
        runs = [fan_once(n, broker, args.drainers, http=True) for _ in range(repeat)]
        result.fan.append(fan_row(n, runs, f"HTTP-style, {args.drainers} drainer processes", None))
    per = {f["n"]: f["per_recipient_ms"] for f in result.fan}
    result.rows.append(
        Row(
            "fan-out, time to last ack per recipient, 1 / 10 / 100 / 1,000",
            " / ".join(
                f"{f['celery_last_ms'] / f['n']:.2f}" if f.get("celery_last_ms") is not None else "-"
                for f in result.fan
            )
            + " ms",
            " / ".join(f"{per[n]:.2f}" for n in (*WORKER_SIZES, *HTTP_SIZES)) + " ms",
            f"1,000 vs 100: {per[HTTP_SIZES[1]] / per[HTTP_SIZES[0]]:.2f}x per recipient",
        )
    )
    if args.absent:
        absent(result, args, broker, fan_task, plat, celery, workers, var_dir, masp_env, broker_url)
    result.notes.append(
        f"fan-out: {small} and {width} recipients are real worker agents (run_agent --pool solo, one process "
        f"each); {HTTP_SIZES[0]} and {HTTP_SIZES[1]:,} are HTTP-style agents (registered, no worker) drained by "
        f"{args.drainers} client processes calling services.claim_batch + services.ack (the HTTP inbox's "
        "services, without HTTP), woken by a Redis list push right after the publish commits; latency = "
        "acked_at - Message.created_at. Celery's broadcast: as many raw workers (-P solo) as the platform's "
        "worker agents, on a kombu Broadcast queue (a fanout exchange: on Redis, one PUBLISH that reaches the "
        "subscribers connected at that moment); its latency = the task's clock on the worker - the bench's "
        f"clock at apply_async; not run at {HTTP_SIZES[0]} and {HTTP_SIZES[1]:,} (as many worker processes)"
    )


def absent(result, args, broker, fan_task, plat, celery, workers, var_dir, masp_env, broker_url) -> None:
    """Stop one subscriber of each side, publish once, start it again: who gets the message?"""
    from messaging import services
    from messaging.models import Delivery, DeliveryStatus

    width = len(plat)
    gone_agent, gone_raw = plat[-1], celery[-1]
    for w in (gone_agent, gone_raw):
        w.stop()
        workers.remove(w)
    message = services.send(bench_sender(), {"type": "fan", "absent": True}, topic=fan_topic(width))
    bc = raw_broadcast(fan_task, broker, width - 1)
    key_hosts = set(bc["hosts"])
    back = fan_agent(width - 1, var_dir, masp_env, args.worker_loglevel)
    back_raw = raw_worker("bench-fan-back", var_dir, broker_url, BCAST_QUEUE, ["-P", "solo"], args.worker_loglevel)
    workers += [back, back_raw]
    back.wait_ready(120)
    back_raw.wait_ready(120)
    mine = Delivery.objects.filter(message=message)
    deadline = time.monotonic() + 30
    while mine.filter(status=DeliveryStatus.ACKED).count() < width and time.monotonic() < deadline:
        time.sleep(0.1)
    acked = mine.filter(status=DeliveryStatus.ACKED).count()
    time.sleep(1)
    late = broker.llen(bc["key"]) - bc["reached"]
    result.rows.append(
        Row(
            f"one of {width} subscribers stopped at the publish, started again",
            f"{bc['reached']}/{width} reached, {late} after the restart ({len(key_hosts)} workers)",
            f"{acked}/{width} acked, the restarted agent's from its inbox",
        )
    )


# --- Main ------------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/messaging.py",
        description="Benchmark the message bus beside raw Celery on the same broker, on throwaway databases.",
    )
    parser.add_argument("--stack", choices=[*STACKS, "both"], default="both")
    parser.add_argument("--messages", type=positive_int, default=5000, help="point-to-point messages per run")
    parser.add_argument(
        "--send-batch", type=positive_int, default=1, help="messages sent per transaction in the rounds (default 1)"
    )
    parser.add_argument(
        "--batch-run",
        type=int,
        default=250,
        metavar="N",
        help="one more point-to-point run sending N messages per transaction (0: skip; default 250)",
    )
    parser.add_argument("--rounds", type=positive_int, default=2, help="point-to-point rounds (raw, platform)")
    parser.add_argument("--roundtrips", type=positive_int, default=300, help="sequential request round trips")
    parser.add_argument("--warmup", type=positive_int, default=200)
    parser.add_argument("--fan-repeat", type=int, default=3, help="publishes per fan-out size (0: skip fan-out)")
    parser.add_argument("--drainers", type=positive_int, default=4, help="client processes of the HTTP-style agents")
    parser.add_argument("--no-absent", dest="absent", action="store_false", help="skip the absent-subscriber run")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis of the postgres stack (db flushed)")
    parser.add_argument("--worker-loglevel", default="INFO", help="-l of every worker (run_agent's default: INFO)")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--drain", help=argparse.SUPPRESS)
    parser.add_argument("--drainer", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def forwarded_args(args: argparse.Namespace) -> list[str]:
    out = []
    for name in ("messages", "send_batch", "batch_run", "rounds", "roundtrips", "warmup", "fan_repeat", "drainers"):
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out += ["--postgres-url", args.postgres_url, "--redis-url", args.redis_url, "--worker-loglevel"]
    out.append(args.worker_loglevel)
    if not args.absent:
        out.append("--no-absent")
    if args.keep_logs:
        out.append("--keep-logs")
    return out


def run_both(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="masp-msg-") as tmp:
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
    # SIGTERM (a stopped run) unwinds like an exception: the workers are stopped, the database dropped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.drain:
        return drain_main(args)
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
