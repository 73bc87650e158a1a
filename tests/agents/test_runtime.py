"""Invocations end to end: real `run_agent` worker processes on this run's database and broker."""

from __future__ import annotations

import re
import signal
import time

import pytest
from django.db import transaction
from django.test.utils import override_settings
from rest_framework.test import APIClient

from agents import selectors, services
from agents.models import Agent, Invocation, InvocationAttempt
from agents.services import invocations as invocation_services
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def finished(invocation, timeout: float = 30) -> Invocation:
    def done():
        inv = Invocation.objects.get(pk=invocation.pk)
        return inv if inv.is_finished else None

    return wait_until(done, timeout=timeout, interval=0.1, message=f"invocation {invocation.pk} to finish")


def invoke(capability: str, input: dict, **kwargs) -> Invocation:
    return services.invoke(capability=capability, input=input, requested_by="user:test", **kwargs)[0]


def invoke_started(capability: str, input: dict, tmp_path) -> Invocation:
    """Invoke a sample capability that writes ``started_marker`` when its function starts; return once it has."""
    marker = tmp_path / f"started-{capability}"
    invocation = invoke(capability, {**input, "started_marker": str(marker)})
    wait_until(marker.exists, message=f"the {capability} call to start")
    return invocation


def staff_api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_call_runs_on_an_agent_and_its_output_is_recorded_through_the_api(processes, staff_user):
    worker = processes.agent(agent_id="sample-1")
    client = staff_api(staff_user)
    response = client.post("/api/invocations/?wait=20", {"capability": "echo", "input": {"x": 1}}, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "succeeded", data
    assert data["output"] == {"echo": {"x": 1}, "agent_id": "sample-1", "attempt": 1}
    assert data["agent"] == "sample-1" and [a["outcome"] for a in data["attempts"]] == ["succeeded"]
    assert client.get("/api/agents/sample-1/").json()["calls_completed"] == 1
    # the Celery task id starts with the invocation's id: the worker's INFO lines name the call
    succeeded = re.compile(rf"agents\.tasks\.run_invocation\[{data['id']}\.[0-9a-f]{{8}}\] succeeded in")
    wait_until(lambda: succeeded.search(worker.log_text()), timeout=10, message="the worker's 'succeeded' line")


def test_a_get_that_waits_is_woken_when_the_running_call_finishes(processes, staff_user, tmp_path):
    """GET ?wait= on a call queued without waiting asks for its wake-up (``watch``): it answers when the
    call finishes, not at its next check of the database (every 5 s without a wake-up)."""
    processes.agent(agent_id="sample-1")
    client = staff_api(staff_user)
    call = invoke_started("slow", {"seconds": 1.5}, tmp_path)
    assert Invocation.objects.get(pk=call.pk).waited_on is None  # nobody asked for a wake-up until now
    started = time.monotonic()
    data = client.get(f"/api/invocations/{call.pk}/?wait=20").json()
    took = time.monotonic() - started
    assert data["status"] == "succeeded", data
    assert took < 4.5, f"answered after {took:.1f} s: not woken by the outcome"
    assert Invocation.objects.get(pk=call.pk).waited_on is True


def test_calls_queued_by_invoke_many_run_once_each_and_count_for_the_agent(processes):
    processes.agent(agent_id="sample-1", concurrency=2)
    calls = services.invoke_many(
        [{"capability": "echo", "input": {"n": i}} for i in range(50)], requested_by="user:test"
    )
    wait_until(
        lambda: Invocation.objects.filter(status="succeeded").count() == 50,
        timeout=60,
        interval=0.2,
        message="50 calls to succeed",
    )
    assert InvocationAttempt.objects.count() == 50
    assert Invocation.objects.get(pk=calls[7].pk).output["echo"] == {"n": 7}
    agent = Agent.objects.get(agent_id="sample-1")
    assert selectors.call_counters([agent.pk])[agent.pk].completed == 50


def test_a_bad_output_fails_the_call_with_a_clear_error(processes):
    processes.agent(agent_id="sample-1")
    invocation = finished(invoke("bad_output", {}))
    assert invocation.status == "failed" and invocation.error_type == "OutputSchemaError"
    assert "'answer' is a required property" in invocation.error_message


def test_the_same_message_delivered_twice_runs_and_records_once(processes, tmp_path):
    path = tmp_path / "runs.txt"
    processes.agent(agent_id="sample-1", concurrency=2)
    processes.agent(agent_id="sample-2", concurrency=2)
    with transaction.atomic():  # three deliveries of one call, published together at commit
        invocation = invoke("record", {"path": str(path), "sleep": 0.3})
        invocation_services.dispatch_again(invocation)
        invocation_services.dispatch_again(invocation)
    assert finished(invocation).status == "succeeded"
    time.sleep(1.0)  # let the duplicates arrive and be refused
    assert len(path.read_text().splitlines()) == 1
    assert InvocationAttempt.objects.filter(invocation=invocation).count() == 1


def test_500_concurrent_calls_over_two_agents_all_succeed_exactly_once(processes):
    processes.agent(agent_id="sample-1", concurrency=4, pool="threads")
    processes.agent(agent_id="sample-2", concurrency=4, pool="threads")
    calls = [invoke("echo", {"n": i}) for i in range(500)]
    wait_until(
        lambda: Invocation.objects.filter(status="succeeded").count() == 500,
        timeout=120,
        interval=0.5,
        message="500 calls to succeed",
    )
    assert InvocationAttempt.objects.count() == 500
    assert all(Invocation.objects.get(pk=c.pk).output["echo"] == {"n": i} for i, c in enumerate(calls[:20]))
    agents = dict(Agent.objects.filter(agent_id__startswith="sample-").values_list("pk", "agent_id"))
    by_agent = {agents[pk]: c.completed for pk, c in selectors.call_counters(agents).items()}
    assert sum(by_agent.values()) == 500 and all(n > 0 for n in by_agent.values()), by_agent


def test_retries_back_off_and_keep_each_error(processes):
    processes.agent(agent_id="sample-1")
    ok = finished(invoke("flaky", {"fail_times": 2}, max_retries=3))
    assert ok.status == "succeeded" and ok.output == {"succeeded_on_attempt": 3}
    attempts = list(InvocationAttempt.objects.filter(invocation=ok).order_by("number"))
    assert [a.outcome for a in attempts] == ["failed", "failed", "succeeded"]
    assert [a.error_message for a in attempts[:2]] == ["failure number 1", "failure number 2"]
    assert ok.error_type == ok.error_message == ""  # the call's error is cleared; its attempts keep theirs
    for before, after, base in zip(attempts, attempts[1:], (0.2, 0.4), strict=False):
        assert (after.started_at - before.finished_at).total_seconds() >= base / 2  # backoff with jitter
    gave_up = finished(invoke("flaky", {"fail_times": 5}, max_retries=1))
    assert gave_up.status == "failed" and gave_up.failed_attempts == 2 and gave_up.error_type == "ValueError"


def test_soft_time_limit_times_out_the_attempt(processes):
    processes.agent(agent_id="sample-1")
    invocation = finished(invoke("slow", {"seconds": 10}, timeout=1))
    assert invocation.status == "timed_out" and invocation.error_type == "SoftTimeLimitExceeded"


def test_hard_time_limit_kills_it_and_the_deadline_sweep_records_it(processes, tmp_path):
    import psutil

    worker = processes.agent(agent_id="sample-1")
    pid_file = tmp_path / "pid"
    with override_settings(MASP_HARD_TIMEOUT_GRACE=1):
        invocation = invoke("stubborn", {"pid_file": str(pid_file)}, timeout=1)
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), message="the call to start")
    pool_process = int(pid_file.read_text())

    def killed():
        try:
            return psutil.Process(pool_process).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # the function ignores the soft limit: only the hard one (timeout + grace = 2 s) stops it, by killing
    # the pool process that runs it; it would otherwise run for 60 s
    wait_until(killed, timeout=20, message="the hard time limit to kill the pool process")
    wait_until(
        lambda: re.search(
            r"Hard time limit \(2(\.0)?s\) exceeded for agents\.tasks\.run_invocation", worker.log_text()
        ),
        timeout=5,
        message="Celery's hard time limit line in the worker's log",
    )

    def swept():
        services.sweep_deadlines()
        return Invocation.objects.get(pk=invocation.pk).is_finished

    wait_until(swept, timeout=30, interval=0.5, message="the deadline sweep")
    invocation.refresh_from_db()
    assert invocation.status == "timed_out" and invocation.error_type == "TimeoutError"


def test_cancel_a_queued_call_before_any_agent_and_a_running_one(processes, tmp_path):
    from tests.sample_agents import agent as sample

    record = sample.capabilities["record"]  # the contract exists before any agent runs
    services.create_capability(name="record", input_schema=record.input_schema, output_schema=record.output_schema)
    queued = invoke("record", {"path": str(tmp_path / "never.txt")})
    assert services.cancel(queued.pk).status == "cancelled"
    processes.agent(agent_id="sample-1")
    running = invoke_started("slow", {"seconds": 30}, tmp_path)
    wait_until(lambda: Invocation.objects.get(pk=running.pk).progress, message="progress reported by the function")
    assert Invocation.objects.get(pk=running.pk).progress_message == "sleeping"
    services.cancel(running.pk)
    assert finished(running).status == "cancelled"
    assert InvocationAttempt.objects.get(invocation=running).outcome == "cancelled"
    assert not (tmp_path / "never.txt").exists()
    assert not InvocationAttempt.objects.filter(invocation=queued).exists()


def test_drain_stops_new_work_while_the_call_in_flight_finishes(processes, staff_user, tmp_path):
    processes.agent(agent_id="sample-1")
    client = staff_api(staff_user)
    first = invoke_started("slow", {"seconds": 2}, tmp_path)
    response = client.post("/api/agents/sample-1/drain/")
    assert response.status_code == 200 and response.json()["acknowledged"] is True, response.content
    second = invoke("echo", {"late": True})
    wait_until(lambda: selectors.queue_depth("cap.echo") == 1, message="the call waiting in the broker queue")
    assert finished(first).status == "succeeded"
    time.sleep(1.5)
    second.refresh_from_db()
    assert second.status == "queued"
    assert "draining" in services.waiting_reason(second)
    assert Agent.objects.get(agent_id="sample-1").state == "draining"
    assert client.post("/api/agents/sample-1/resume/").json()["acknowledged"] is True
    assert finished(second).status == "succeeded"
    # an empty queue (on Redis its list is gone) waits 0, not "unknown"
    wait_until(lambda: selectors.queue_depth("cap.echo") == 0, message="the queue empty")
    assert client.get("/api/capabilities/echo/").json()["fleet"]["queue_depth"] == 0


def test_shutdown_over_the_api_finishes_the_call_in_flight_then_stops_the_worker(processes, staff_user, tmp_path):
    agent = processes.agent(agent_id="sample-1")
    call = invoke_started("slow", {"seconds": 2}, tmp_path)
    response = staff_api(staff_user).post("/api/agents/sample-1/shutdown/")
    assert response.status_code == 200 and response.json()["acknowledged"] is True, response.content
    assert finished(call).status == "succeeded"
    assert agent.popen.wait(30) == 0
    assert Agent.objects.get(agent_id="sample-1").state == "offline"


def test_the_heartbeat_reports_calls_in_flight_cpu_load_and_busy_at_its_concurrency(processes, tmp_path):
    processes.agent(agent_id="sample-1", concurrency=1)  # heartbeats every second (tests/processes.py)
    call = invoke_started("burn", {"seconds": 10}, tmp_path)

    def busy():
        agent = Agent.objects.get(agent_id="sample-1")
        return agent.state == "busy" and agent.in_flight == 1 and agent.cpu_load > 0.05

    wait_until(busy, timeout=8, message="a heartbeat with the call in flight, busy, its CPU load")
    assert finished(call).status == "succeeded"

    def idle():
        agent = Agent.objects.get(agent_id="sample-1")
        return agent.state == "idle" and agent.in_flight == 0

    wait_until(idle, timeout=5, message="a heartbeat with nothing in flight, idle")


def test_the_function_sees_its_deadline(processes):
    from datetime import datetime, timedelta

    processes.agent(agent_id="sample-1")
    call = finished(invoke("context", {}, timeout=7))
    assert call.status == "succeeded", call.error_message
    deadline = datetime.fromisoformat(call.output["deadline"])
    assert abs((deadline - (call.started_at + timedelta(seconds=7))).total_seconds()) < 0.001
    assert 0 < call.output["remaining"] <= 7


def test_a_killed_worker_loses_nothing_the_call_runs_once_on_a_live_agent(processes, tmp_path):
    processes.worker(MASP_HEARTBEAT_INTERVAL="1", MASP_STALE_TIMEOUT="3")  # runs the stale sweep below
    a = processes.agent(agent_id="victim")
    processes.agent(agent_id="survivor", MASP_HEARTBEAT_INTERVAL="0.5")
    # Only the victim takes calls until it dies: the survivor drains for now.
    services.change_state(agent_id="survivor", state="draining")
    from agents.services import fleet

    fleet.drain(agent_id="survivor")
    marker = tmp_path / "started"
    invocation = invoke("slow", {"seconds": 3, "started_marker": str(marker)})
    wait_until(marker.exists, message="the call to start on the victim")
    assert marker.read_text() == "victim"
    a.signal(signal.SIGKILL, group=True)  # the worker and its pool, as an OOM kill or a lost host would
    fleet.resume(agent_id="survivor")

    def sweep():
        with override_settings(MASP_STALE_TIMEOUT=3):
            services.sweep_stale_agents()
        return Invocation.objects.get(pk=invocation.pk).is_finished

    wait_until(sweep, timeout=60, interval=0.5, message="the call to be re-queued and finished")
    invocation.refresh_from_db()
    assert invocation.status == "succeeded" and invocation.output["agent_id"] == "survivor"
    outcomes = list(
        InvocationAttempt.objects.filter(invocation=invocation)
        .order_by("number")
        .values_list("agent__agent_id", "outcome")
    )
    assert outcomes == [("victim", "lost"), ("survivor", "succeeded")]
    assert Agent.objects.get(agent_id="victim").state == "offline"


def test_an_agent_offering_nothing_is_never_sent_work(processes):
    processes.agent("tests.sample_idle_agent", agent_id="idle-one")
    processes.agent(agent_id="sample-1")
    calls = [invoke("echo", {"n": i}) for i in range(20)]
    for call in calls:
        assert finished(call).agent.agent_id == "sample-1"
    assert not Invocation.objects.filter(agent__agent_id="idle-one").exists()
    # nor can a call be pinned to it (its own queue is the only one it consumes)
    from masplatform.exceptions import InvalidInput

    with pytest.raises(InvalidInput, match="does not offer"):
        invoke("echo", {}, agent="idle-one")
    assert Invocation.objects.count() == 20


def test_sigterm_finishes_the_call_in_flight_then_goes_offline(processes, tmp_path):
    agent = processes.agent(agent_id="sample-1")
    invocation = invoke_started("slow", {"seconds": 2}, tmp_path)
    agent.signal(signal.SIGTERM)
    assert finished(invocation).status == "succeeded"
    wait_until(lambda: Agent.objects.get(agent_id="sample-1").state == "offline", message="offline after SIGTERM")


def test_fleet_command_drains_shows_and_resumes_a_worker_and_shuts_it_down(processes):
    from io import StringIO

    from django.core.management import call_command

    agent = processes.agent(agent_id="sample-1")
    out = StringIO()
    call_command("fleet", "drain", "sample-1", stdout=out)
    assert "sample-1: drain -> draining; worker agent.sample-1@" in out.getvalue() and "acknowledged" in out.getvalue()
    out = StringIO()
    call_command("fleet", "status", stdout=out)
    assert "draining" in out.getvalue() and "cap.echo" not in out.getvalue() and "echo" in out.getvalue()
    call_command("fleet", "resume", "sample-1", stdout=StringIO())
    assert finished(invoke("echo", {})).status == "succeeded"
    call_command("fleet", "shutdown", "sample-1", stdout=StringIO())
    agent.popen.wait(30)
    wait_until(lambda: Agent.objects.get(agent_id="sample-1").state == "offline", message="offline after shutdown")


def test_invocations_run_with_rabbitmq_as_the_broker_highest_priority_first(processes):
    """On RabbitMQ (queues declared with x-max-priority), a call waiting in the queue is overtaken by a
    higher-priority call published after it, as on Redis (docs/operations.md)."""
    import subprocess
    import sys

    from django.conf import settings
    from kombu import Connection

    from tests import stack
    from tests.processes import process_env
    from tests.sample_agents import agent as sample

    if stack.stack() != "services":
        pytest.skip("RabbitMQ is part of the services pass")
    url = stack.DEFAULT_AMQP
    if not stack.reachable(url):
        if stack.services_required():
            pytest.fail(f"RabbitMQ not reachable at {url} and MASP_REQUIRE_SERVICES=1")
        pytest.skip(f"RabbitMQ not reachable at {url}")
    queues = [f"cap.{name}" for name in sample.capabilities] + ["agent.sample-amqp"]
    env = {**process_env(), "MASP_BROKER_URL": url}

    def on_rabbitmq(code: str) -> list[str]:
        """Run ``code`` in a process of the platform on RabbitMQ (this one's Celery app is on the test broker)."""
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return [line[3:] for line in done.stdout.splitlines() if line.startswith("pk=")]

    def waiting() -> int:
        with Connection(url) as conn:
            return conn.default_channel.queue_declare("cap.echo", passive=True).message_count

    try:
        processes.agent(agent_id="sample-amqp", concurrency=1, MASP_BROKER_URL=url)
        pks = on_rabbitmq(
            "from agents import services; from agents.services import fleet\n"
            "assert fleet.drain(agent_id='sample-amqp').acknowledged\n"
            "for p in (0, 0, 0, 9):\n"
            "    print('pk=', services.invoke(capability='echo', input={'p': p}, requested_by='user:amqp', priority=p)[0].pk, sep='')"
        )
        wait_until(lambda: waiting() == 4, message="four calls waiting in the RabbitMQ queue")
        on_rabbitmq("from agents.services import fleet; assert fleet.resume(agent_id='sample-amqp').acknowledged")
        calls = [finished(Invocation.objects.get(pk=pk)) for pk in pks]
        assert all(c.status == "succeeded" and c.agent.agent_id == "sample-amqp" for c in calls)
        assert calls[0].output["echo"] == {"p": 0}
        first = min(calls, key=lambda c: c.started_at)
        assert first.pk == calls[-1].pk, [(c.priority, c.started_at) for c in calls]
    finally:
        with Connection(url) as conn:
            channel = conn.channel()
            for name in queues:
                channel.queue_delete(name)


def test_a_higher_priority_call_waiting_in_the_queue_runs_first(processes):
    from agents.services import fleet

    processes.agent(agent_id="sample-1", concurrency=1)
    fleet.drain(agent_id="sample-1")
    low = [invoke("echo", {"n": i}, priority=0) for i in range(3)]
    high = invoke("echo", {"urgent": True}, priority=9)
    wait_until(lambda: selectors.queue_depth("cap.echo") == 4, message="four calls waiting in the queue")
    fleet.resume(agent_id="sample-1")
    for call in [*low, high]:
        finished(call)
    order = list(Invocation.objects.order_by("started_at").values_list("pk", flat=True))
    assert order[0] == high.pk


def test_a_call_whose_message_was_lost_still_runs(processes):
    from datetime import timedelta

    from django.utils import timezone

    from agents.models import Capability

    processes.agent(agent_id="sample-1")
    now = timezone.now()
    # A committed call whose message never reached the broker (as if the publish had failed).
    lost = Invocation.objects.create(
        capability=Capability.objects.get(name="echo"),
        input={"lost": True},
        requested_by="user:test",
        created_at=now,
        queued_at=now,
        dispatched_at=now - timedelta(minutes=10),
    )
    assert services.redispatch_waiting() == 1
    assert finished(lost).status == "succeeded"


def test_a_crashed_pool_process_is_timed_out_by_the_deadline_sweep(processes):
    processes.agent(agent_id="sample-1")
    with override_settings(MASP_HARD_TIMEOUT_GRACE=1):
        invocation = invoke("crash", {}, timeout=1)

    def swept():
        services.sweep_deadlines()
        return Invocation.objects.get(pk=invocation.pk).is_finished

    wait_until(swept, timeout=30, interval=0.5, message="the deadline sweep")
    invocation.refresh_from_db()
    assert invocation.status == "timed_out"


def test_an_unregistered_agents_worker_stops_taking_calls(processes):
    agent = processes.agent(agent_id="sample-1")
    services.unregister_agent(agent_id="sample-1")
    agent.popen.wait(30)  # its heartbeat finds it unregistered and shuts the worker down
    assert agent.popen.returncode is not None


def test_a_worker_whose_database_connections_were_cut_runs_the_next_calls(processes):
    """The runtime, not Celery's per-task fix-up, looks after the worker's connection (run_agent turns
    the fix-up's per-task receivers off): calls after a server-side disconnect still run, once each."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("cutting the server's side of a connection: PostgreSQL")
    processes.agent(agent_id="sample-1", concurrency=2)
    assert finished(invoke("echo", {"n": 0})).status == "succeeded"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 2  # the pool processes' connections, at least
    calls = [invoke("echo", {"n": n}) for n in range(1, 7)]
    assert [finished(call).status for call in calls] == ["succeeded"] * 6
    assert InvocationAttempt.objects.filter(invocation__in=calls).count() == 6


def test_a_call_queued_before_any_worker_declared_its_queue_runs_when_one_starts(processes):
    """On Redis a call's message declares nothing (a queue is a list its first message creates)."""
    from agents import dispatch
    from tests.factories import CapabilityFactory

    CapabilityFactory(name="echo", input_schema={"type": "object"}, output_schema={"type": "object"})
    call = invoke("echo", {"n": 1})
    assert dispatch.publish_declares() == ([] if dispatch.broker_is_redis() else None)
    processes.agent(agent_id="sample-1")
    done = finished(call)
    assert (done.status, done.output["echo"], done.attempt) == ("succeeded", {"n": 1}, 1)
