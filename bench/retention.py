#!/usr/bin/env python
"""Benchmark: the heartbeat and an agent's read with 1,000,000 attempts in the table, and the purge.

Not a test: it prints figures. PostgreSQL only (the point is a large table on the production stack).
Run from the repository root::

    .venv/bin/python bench/retention.py                       # 1,000,000 attempts, 50,000 of them old
    .venv/bin/python bench/retention.py --rows 200000 --old 20000 --beats 500

What it does, on a database of its own (``bench_retention``, created on the server of
``--postgres-url``, migrated, dropped at the end):

1. registers one agent and bulk-inserts ``--rows`` finished invocations of it, one attempt each
   (``INSERT ... SELECT generate_series``: this bench's own helper, not platform code), ``--old`` of
   them finished past ``MASP_INVOCATION_RETENTION_DAYS``; the agent's counters are set from the
   attempts as migration 0006 does, then ``VACUUM ANALYZE``;
2. times ``--beats`` heartbeats through ``POST /api/agents/{id}/heartbeat/`` (Django's test Client,
   in-process, the agent's own token), the runtime's heartbeat (``services.heartbeat`` followed by
   ``services.sync_agent_counters``, as the agent's worker does), and ``GET /api/agents/{id}/``;
   for comparison, the aggregation over the attempts that the counters replace;
3. times ``services.purge_invocations()`` over the ``--old`` calls (batches of
   ``MASP_RETENTION_BATCH_SIZE``), in invocations + attempts deleted per second, and checks that the
   agent's counters did not change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "bench_retention"


def configure(postgres_url: str, var_dir: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "masplatform.settings"
    os.environ["MASP_DEBUG"] = "1"
    os.environ["MASP_DOTENV"] = "0"
    os.environ["MASP_VAR_DIR"] = str(var_dir)
    os.environ["MASP_LOG_LEVEL"] = "WARNING"
    os.environ["MASP_BROKER_URL"] = "memory://"
    os.environ["MASP_DATABASE_URL"] = postgres_url
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def timings(fn: Callable[[], object], n: int) -> dict[str, float]:
    fn()  # warm
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "per_s": n / (sum(samples) / 1000),
    }


def fill(agent_pk: int, capability_pk: int, rows: int, old: int, retention_days: float) -> None:
    """Bench-only bulk insert: ``rows`` succeeded calls of the agent with one attempt each; the first
    ``old`` finished ``retention_days + 10`` days ago, the others within the last day."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO agents_invocation (id, capability_id, input, output, status, priority, timeout,
                max_retries, attempt, failed_attempts, agent_id, idempotency_key, request_hash, requested_by,
                error_type, error_message, error_traceback, progress, progress_message, cancel_requested,
                created_at, queued_at, started_at, finished_at)
            SELECT gen_random_uuid(), %s, '{}', '{"ok": true}', 'succeeded', 5, 300, 0, 1, 0, %s, NULL, '',
                'user:bench', '', '', '', 1.0, '', false, t, t, t, t + interval '20 milliseconds'
            FROM (SELECT g, CASE WHEN g <= %s THEN now() - make_interval(days => %s) - g * interval '1 ms'
                                 ELSE now() - g * interval '50 ms' END AS t
                  FROM generate_series(1, %s) AS g) AS s
            """,
            [capability_pk, agent_pk, old, int(retention_days) + 10, rows],
        )
        cursor.execute(
            """
            INSERT INTO agents_invocationattempt (invocation_id, number, agent_id, outcome, started_at,
                finished_at, duration_ms, error_type, error_message, error_traceback)
            SELECT id, 1, agent_id, 'succeeded', started_at, finished_at, 20.0, '', '', ''
            FROM agents_invocation
            """
        )
        # the counters as migration 0006 computes them from existing attempts
        cursor.execute(
            """
            INSERT INTO agents_agentcallcounter (agent_id, shard, completed, failed, response_ms_total,
                response_count)
            SELECT agent_id, 0, count(*), 0, sum(duration_ms), count(duration_ms)
            FROM agents_invocationattempt WHERE outcome = 'succeeded' GROUP BY agent_id
            """
        )
    old_autocommit = connection.get_autocommit()
    connection.set_autocommit(True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    connection.set_autocommit(old_autocommit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--old", type=int, default=50_000)
    parser.add_argument("--beats", type=int, default=1000)
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="masp-bench-retention-"))
    configure(args.postgres_url, var_dir)

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment, teardown_test_environment

    connection.settings_dict["TEST"]["NAME"] = DB_NAME
    setup_test_environment(debug=False)
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        from agents import selectors, services
        from agents.models import Invocation, InvocationAttempt
        from agents.services import CapabilitySpec

        reg = services.register_agent(agent_id="bench-agent", name="bench", capabilities=[CapabilitySpec(name="echo")])
        agent = reg.agent
        capability_pk = agent.capabilities.get().pk
        started = time.perf_counter()
        fill(agent.pk, capability_pk, args.rows, args.old, settings.MASP_INVOCATION_RETENTION_DAYS)
        print(f"inserted {args.rows:,} invocations + attempts in {time.perf_counter() - started:.1f} s")

        client = Client(HTTP_AUTHORIZATION=f"Agent {reg.token}")
        url = f"/api/agents/{agent.agent_id}/"

        def http_beat() -> None:
            response = client.post(f"{url}heartbeat/", {"cpu_load": 0.1}, content_type="application/json")
            assert response.status_code == 200, response.content

        def runtime_beat() -> None:
            services.heartbeat(agent_id=agent.agent_id, cpu_load=0.1)
            services.sync_agent_counters(agent.pk)

        from django.contrib.auth import get_user_model

        staff = Client()
        staff.force_login(get_user_model().objects.create_user("bench-staff", is_staff=True))

        def read() -> None:
            assert staff.get(url).status_code == 200

        def aggregate_attempts() -> None:
            from django.db.models import Avg, Count

            list(
                InvocationAttempt.objects.filter(agent_id=agent.pk, outcome="succeeded")
                .values("agent_id")
                .annotate(n=Count("id"), avg=Avg("duration_ms"))
                .order_by()
            )

        before = selectors.call_counters([agent.pk])[agent.pk]
        results = {
            "POST /api/agents/{id}/heartbeat/": timings(http_beat, args.beats),
            "heartbeat + sync_agent_counters (runtime)": timings(runtime_beat, args.beats),
            "GET /api/agents/{id}/ (staff)": timings(read, args.beats),
            "aggregating the attempts (replaced)": timings(aggregate_attempts, 5),
        }
        print(f"\n{args.rows:,} attempts; agent counters: {before}")
        print(f"{'path':48} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8}")
        for name, r in results.items():
            print(f"{name:48} {r['p50']:8.2f} {r['p99']:8.2f} {r['per_s']:8.0f}")

        started = time.perf_counter()
        purged = services.purge_invocations()
        seconds = time.perf_counter() - started
        after = selectors.call_counters([agent.pk])[agent.pk]
        print(
            f"\npurge: {purged:,} invocations + {purged:,} attempts in {seconds:.2f} s "
            f"(batches of {settings.MASP_RETENTION_BATCH_SIZE}): {2 * purged / seconds:,.0f} rows/s, "
            f"{purged / seconds:,.0f} invocations/s"
        )
        print(f"left: {Invocation.objects.count():,} invocations; counters unchanged: {after == before}")
        assert purged == args.old and after == before
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
