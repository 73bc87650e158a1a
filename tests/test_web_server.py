"""The production web server (gunicorn, as `make run` serves) under a burst of 500 concurrent clients.

200 clients long-poll (`?wait=30`) calls that no agent runs, while 300 others post invocations and
read discovery. Nothing may fail, every POST is recorded once, the long polls hold no database
connection while they wait, and on PostgreSQL the server's connections stay bounded by its pool and
go back to their baseline afterwards.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from agents import services
from agents.models import Agent, Invocation
from tests import stack
from tests.factories import AgentFactory, CapabilityFactory, token_for
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WEB_WORKERS = 2
POOL_MAX = 8  # per web process (the default)
WAITERS, POSTERS, READERS = 200, 200, 100


def request(base: str, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict, dict]:
    """One request on a connection of its own, as an independent client; (status, headers, JSON body)."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=90)
    try:
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else {}
    finally:
        conn.close()


class ServerConnections:
    """How many connections the test database serves to others than this test (whose connections are
    named ``masp-test``), sampled in a thread of its own while started."""

    QUERY = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name <> 'masp-test'"
    )

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _connect():
        import psycopg

        s = connection.settings_dict
        return psycopg.connect(
            host=s["HOST"] or "127.0.0.1",
            port=s["PORT"] or 5432,
            user=s["USER"],
            dbname=s["NAME"],
            autocommit=True,
            application_name="masp-test",
        )

    def count(self) -> int:
        with self._connect() as db:
            return db.execute(self.QUERY).fetchone()[0]

    def _sample(self) -> None:
        with self._connect() as db:
            while not self._stop.is_set():
                self.samples.append(db.execute(self.QUERY).fetchone()[0])
                time.sleep(0.1)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)


def test_500_concurrent_clients_no_errors_each_post_once_connections_bounded(processes, staff_user):
    postgres = connection.vendor == "postgresql"
    if postgres:  # this test's own connections are told apart from the server's by their name
        with connection.cursor() as cursor:
            cursor.execute("SET application_name = 'masp-test'")
    token = Token.objects.create(user=staff_user).key
    CapabilityFactory(name="echo")
    for n in range(5):
        AgentFactory(agent_id=f"burst-{n}", offers={"echo": 1.0})
    # Calls that no worker consumes (no agent process runs): they stay queued, and their long polls wait.
    waited = [services.invoke(capability="echo", input={"n": n}, requested_by="user:staff")[0].pk for n in range(WAITERS)]
    watch = ServerConnections() if postgres else None
    baseline = watch.count() if watch else 0
    base = processes.web(
        workers=WEB_WORKERS,
        threads=256,  # every long poll of the burst could land on one process: it still answers the others
        MASP_DB_POOL_MIN_SIZE="0",
        MASP_DB_POOL_MAX_SIZE=str(POOL_MAX),
        MASP_DB_POOL_MAX_IDLE="1",
        MASP_WEB_ACCESS_LOG="0",
    )
    keys = [f"burst-{uuid.uuid4()}" for _ in range(POSTERS)]
    jobs = (
        [("GET", f"/api/invocations/{pk}/?wait=30", None) for pk in waited]
        + [("POST", "/api/invocations/", {"capability": "echo", "input": {"k": k}, "idempotency_key": k}) for k in keys]
        + [("GET", "/api/agents/?capability=echo", None)] * READERS
    )
    start = threading.Barrier(len(jobs))

    def client(job: tuple[str, str, dict | None]) -> tuple[str, str, int, dict, dict]:
        method, path, body = job
        start.wait()  # all 500 at once
        began = time.monotonic()
        try:
            status, headers, data = request(base, method, path, token, body)
        except Exception as exc:  # a reset or refused connection is a failure this test counts
            return method, path, 0, {}, {"error": repr(exc)}
        return method, path, status, headers, {**data, "_took": time.monotonic() - began}

    if watch:
        watch.start()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(client, job) for job in jobs]
        # Once the others are answered (or after 20 s on a slow machine: the long polls wait 30 s), the
        # long polls are still waiting: then end their calls.
        concurrent.futures.wait(futures[WAITERS:], timeout=20)
        waiting = sum(1 for f in futures[:WAITERS] if not f.done())
        for pk in waited:
            services.cancel(pk)
        results = [f.result(timeout=120) for f in futures]
    if watch:
        watch.stop()

    failures = [r for r in results if r[2] not in (200, 201)]
    assert not failures, f"{len(failures)} failed, e.g. {failures[:3]}"
    assert waiting > WAITERS // 2, "the long polls should still have been waiting when their calls were cancelled"
    polled = [r[4] for r in results[:WAITERS]]
    # woken by the cancel; on a slow machine, a poll whose call was cancelled after its 30 s answered then,
    # with the call still queued (what a long poll does at its deadline), never sooner
    assert all(p["status"] == "cancelled" or (p["status"] == "queued" and p["_took"] >= 29) for p in polled), [
        (p["status"], round(p["_took"], 1)) for p in polled if p["status"] != "cancelled"
    ]
    assert Counter(p["status"] for p in polled)["cancelled"] > WAITERS // 2
    posted = [r for r in results if r[0] == "POST"]
    assert Counter(r[2] for r in posted) == {201: POSTERS}
    recorded = Counter(
        Invocation.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True)
    )
    assert set(recorded) == set(keys) and set(recorded.values()) == {1}, "each POST recorded exactly once"
    assert {r[4]["id"] for r in posted} == set(
        str(pk) for pk in Invocation.objects.filter(idempotency_key__in=keys).values_list("pk", flat=True)
    )
    reads = [r[4] for r in results if r[1].startswith("/api/agents/")]
    assert all(r["count"] == 5 for r in reads)
    if watch:
        # While 200 long polls waited, the server held at most its pools' connections.
        assert max(watch.samples) <= baseline + WEB_WORKERS * POOL_MAX, watch.samples
        assert max(watch.samples) > baseline, "the burst should have used the database"
        deadline = time.monotonic() + 60
        while (now := watch.count()) > baseline and time.monotonic() < deadline:
            time.sleep(0.5)
        assert now == baseline, f"{now} server connections after the burst, baseline {baseline}"


@pytest.mark.skipif(not stack.stack() == "services", reason="the connection pool is PostgreSQL's")
def test_a_busy_pool_is_a_503_with_retry_after_not_a_500(processes, staff_user):
    """One pooled connection, held by a heartbeat that waits on a row this test locks: the next request
    finds the pool busy past its timeout and is told to come back, in JSON."""
    token = Token.objects.create(user=staff_user).key
    agent = AgentFactory(agent_id="held")
    base = processes.web(
        workers=1, threads=4, MASP_DB_POOL_MIN_SIZE="0", MASP_DB_POOL_MAX_SIZE="1", MASP_DB_POOL_TIMEOUT="1"
    )
    with ServerConnections._connect() as db:
        db.autocommit = False
        db.execute(f"SELECT 1 FROM {Agent._meta.db_table} WHERE id = %s FOR UPDATE", [agent.pk])
        url = urlparse(base)
        held = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        held.request(
            "POST",
            "/api/agents/held/heartbeat/",
            body="{}",
            headers={"Authorization": f"Agent {token_for('held')}", "Content-Type": "application/json"},
        )
        with ServerConnections._connect() as observer:  # the heartbeat holds the pool's one connection, blocked

            def blocked() -> bool:
                query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                return observer.execute(query).fetchone()[0] == 1

            wait_until(blocked, timeout=20, message="the heartbeat to wait on the lock")
        status, headers, body = request(base, "GET", "/api/agents/", token)
        db.rollback()
    assert status == 503, body
    assert headers["Retry-After"] == "2" and body["code"] == "overloaded"
    assert held.getresponse().status == 200  # the held request went on once the lock was gone
    held.close()

