"""Retention: beat's purges of finished invocations, workflow executions and agent history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents import selectors
from agents import services as agent_services
from agents.models import Agent, Invocation, InvocationAttempt, InvocationStatus
from tests.workflows.helpers import calls, capability, fresh, play, run_task, worker_agent, workflow
from workflows import retention as workflow_retention
from workflows import services as workflow_services
from workflows.models import Execution, TaskCall, TaskRun, Workflow

pytestmark = pytest.mark.django_db

LONG_AGO = timezone.now() - timedelta(days=45)


@pytest.fixture
def agent() -> Agent:
    capability("echo")
    capability("step")
    return worker_agent("worker-1", "echo", "step")


def _call(**fields) -> Invocation:
    return agent_services.invoke(capability="echo", input=fields, requested_by="user:x")[0]


def _age(*invocations: Invocation) -> None:
    """Move the calls' creation (and their finish, if they finished) 45 days back."""
    pks = [i.pk for i in invocations]
    Invocation.objects.filter(pk__in=pks).update(created_at=LONG_AGO)
    Invocation.objects.filter(pk__in=pks, finished_at__isnull=False).update(finished_at=LONG_AGO)


def test_the_purge_deletes_finished_calls_past_retention_with_attempts_and_keeps_queued_running_and_recent(agent):
    succeeded, failed, cancelled, queued, running, recent = (_call(n=n) for n in range(6))
    play(succeeded, agent, {"ok": 1})
    play(failed, agent, error="boom")
    agent_services.cancel(cancelled.pk)
    assert agent_services.claim(str(running.pk), agent=agent) is not None
    play(recent, agent, {"ok": 2})
    _age(succeeded, failed, cancelled, queued, running)

    assert agent_services.purge_invocations() == 3

    kept = set(Invocation.objects.values_list("pk", flat=True))
    assert kept == {queued.pk, running.pk, recent.pk}
    assert set(InvocationAttempt.objects.values_list("invocation_id", flat=True)) == {running.pk, recent.pk}
    assert agent_services.purge_invocations() == 0  # idempotent


def test_the_purge_runs_in_bounded_batches_until_all_is_purged(agent):
    old = [_call(n=n) for n in range(7)]
    for invocation in old:
        play(invocation, agent, {})
    _age(*old)
    with CaptureQueriesContext(connection) as queries:
        assert agent_services.purge_invocations(batch_size=2) == 7
    deletes = [q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "agents_invocation"')]
    assert len(deletes) == 4  # 2 + 2 + 2 + 1
    assert not Invocation.objects.exists() and not InvocationAttempt.objects.exists()


def test_an_agents_counters_are_unchanged_by_a_purge(agent, client, django_user_model):
    done = [_call(n=n) for n in range(3)]
    for invocation in done[:2]:
        play(invocation, agent, {})
    play(done[2], agent, error="boom")
    before = selectors.call_counters([agent.pk])[agent.pk]
    assert (before.completed, before.failed) == (2, 1) and before.avg_response_time_ms is not None
    _age(*done)
    assert agent_services.purge_invocations() == 3
    assert not InvocationAttempt.objects.exists()
    assert selectors.call_counters([agent.pk])[agent.pk] == before
    client.force_login(django_user_model.objects.create_user("staff", is_staff=True))
    shown = client.get(f"/api/agents/{agent.agent_id}/").json()
    assert (shown["calls_completed"], shown["calls_failed"]) == (2, 1)
    assert shown["avg_response_time_ms"] == pytest.approx(before.avg_response_time_ms)


def _two_steps():
    existing = Workflow.objects.filter(name="two-steps").first()
    if existing:
        return existing
    return workflow(
        [
            {"key": "first", "capability": "step", "input": {}},
            {"key": "second", "capability": "step", "input": {}, "depends_on": ["first"]},
        ],
        name="two-steps",
    )


def test_calls_of_an_unfinished_execution_are_kept_by_both_purges(agent):
    execution = workflow_services.execute(_two_steps().pk)
    run_task(execution, "first", agent, {"x": 1})
    (first,) = Invocation.objects.filter(workflow_call__task_run__key="first")
    _age(first)
    Execution.objects.filter(pk=execution.pk).update(created_at=LONG_AGO)

    assert agent_services.purge_invocations() == 0
    assert workflow_retention.purge_executions() == {"executions": 0, "invocations": 0}
    assert Invocation.objects.filter(pk=first.pk, status=InvocationStatus.SUCCEEDED).exists()
    assert fresh(execution).status == "running"


def test_a_finished_execution_past_retention_goes_with_its_tasks_and_calls(agent):
    done = workflow_services.execute(_two_steps().pk)
    run_task(done, "first", agent, {})
    run_task(done, "second", agent, {})
    assert fresh(done).status == "succeeded"
    recent = workflow_services.execute(_two_steps().pk)
    run_task(recent, "first", agent, {})
    run_task(recent, "second", agent, {})
    done_calls = list(Invocation.objects.filter(workflow_call__task_run__execution=done))
    _age(*done_calls)
    Execution.objects.filter(pk=done.pk).update(created_at=LONG_AGO, finished_at=LONG_AGO)

    # the standalone purge leaves a workflow's calls to it
    assert agent_services.purge_invocations() == 0
    assert workflow_retention.purge_executions(batch_size=1) == {"executions": 1, "invocations": 2}

    assert list(Execution.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not TaskRun.objects.filter(execution_id=done.pk).exists()
    assert TaskCall.objects.count() == 2
    assert not Invocation.objects.filter(pk__in=[i.pk for i in done_calls]).exists()
    assert not InvocationAttempt.objects.filter(invocation_id__in=[i.pk for i in done_calls]).exists()
    assert Invocation.objects.count() == 2


def test_a_finished_execution_with_a_call_still_running_is_kept(agent):
    execution = workflow_services.execute(_two_steps().pk)
    (first,) = calls(execution, "first")
    assert agent_services.claim(str(first.pk), agent=agent) is not None
    workflow_services.cancel_execution(execution.pk)
    assert fresh(execution).is_finished
    Execution.objects.filter(pk=execution.pk).update(created_at=LONG_AGO, finished_at=LONG_AGO)
    still = Invocation.objects.get(pk=first.pk)
    assert still.status == InvocationStatus.RUNNING
    assert workflow_retention.purge_executions() == {"executions": 0, "invocations": 0}
    assert Execution.objects.filter(pk=execution.pk).exists()


def test_finished_executions_purge_in_several_batches(agent):
    executions = []
    for _ in range(3):
        execution = workflow_services.execute(_two_steps().pk)
        run_task(execution, "first", agent, {})
        run_task(execution, "second", agent, {})
        executions.append(execution)
    Execution.objects.update(created_at=LONG_AGO, finished_at=LONG_AGO)
    with CaptureQueriesContext(connection) as queries:
        assert workflow_retention.purge_executions(batch_size=2) == {"executions": 3, "invocations": 6}
    deletes = [q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "workflows_execution"')]
    assert len(deletes) == 2
    assert not Execution.objects.exists() and not Invocation.objects.exists()


def test_an_agent_gone_long_ago_stays_while_a_queued_call_is_pinned_to_it(agent):
    capability("solo")
    pinned_to = worker_agent("pinned", "solo")
    call = agent_services.invoke(capability="solo", input={}, requested_by="user:x", agent="pinned")[0]
    Agent.objects.filter(pk=pinned_to.pk).update(unregistered_at=LONG_AGO, state="offline", state_changed_at=LONG_AGO)
    assert agent_services.purge_history()["agents"] == 0
    assert Invocation.objects.get(pk=call.pk).pinned_agent_id == pinned_to.pk
    agent_services.cancel(call.pk)
    assert agent_services.purge_history()["agents"] == 1
    assert not Agent.objects.filter(pk=pinned_to.pk).exists()


def test_the_retention_periodic_tasks_exist_after_migrate():
    from django_celery_beat.models import PeriodicTask

    tasks = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {
        "agents.tasks.purge_agent_history",
        "agents.tasks.purge_invocations",
        "workflows.tasks.purge_executions",
    } <= tasks
    purge = PeriodicTask.objects.get(task="workflows.tasks.purge_executions")
    assert purge.enabled and purge.interval.every == 3600


def test_the_migration_sets_each_agents_counters_from_its_existing_attempts(agent):
    import importlib
    from types import SimpleNamespace

    from django.apps import apps

    from agents.models import AgentCallCounter

    done = [_call(n=n) for n in range(3)]
    play(done[0], agent, {})
    play(done[1], agent, {})
    play(done[2], agent, error="boom")
    expected = selectors.call_counters([agent.pk])[agent.pk]
    AgentCallCounter.objects.all().delete()  # as before migration 0006: attempts only
    assert selectors.call_counters([agent.pk])[agent.pk].completed == 0
    migration = importlib.import_module("agents.migrations.0006_agent_call_counters")
    migration.counters_from_attempts(apps, SimpleNamespace(connection=connection))
    migrated = selectors.call_counters([agent.pk])[agent.pk]
    assert (migrated.completed, migrated.failed) == (expected.completed, expected.failed) == (2, 1)
    assert migrated.avg_response_time_ms == pytest.approx(expected.avg_response_time_ms)
