"""The scheduler, driven step by step through the real services and database."""

from __future__ import annotations

import pytest

from agents.models import Invocation
from tests.workflows.helpers import (
    calls,
    capability,
    fresh,
    play,
    queued_keys,
    run_task,
    statuses,
    worker_agent,
    workflow,
)
from workflows import services
from workflows.models import TaskRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent():
    for name in ("process_data", "process_image", "process_text", "echo"):
        capability(name)
    return worker_agent("worker-1", "process_data", "process_image", "process_text", "echo")


def seed_workflow(**fields):
    """The seed's complex workflow: two roots, text after ingestion, aggregation after all three."""
    return workflow(
        [
            {"key": "data_ingestion", "capability": "process_data", "input": {"id": "data_001", "record_count": 1000}},
            {"key": "image_processing", "capability": "process_image", "input": {"id": "img_001", "image_count": 50}},
            {
                "key": "text_analysis",
                "capability": "process_text",
                "input": {"id": "text_001", "records": "${tasks.data_ingestion.output.records}"},
                "depends_on": ["data_ingestion"],
            },
            {
                "key": "final_aggregation",
                "capability": "process_data",
                "input": {
                    "sources": [
                        "${tasks.data_ingestion.output.records}",
                        "${tasks.image_processing.output.images}",
                        "${tasks.text_analysis.output.words}",
                    ]
                },
                "depends_on": ["data_ingestion", "image_processing", "text_analysis"],
                "priority": 9,
            },
        ],
        **fields,
    )


def test_the_seed_diamond_runs_in_dependency_order_with_upstream_outputs(agent):
    execution = services.execute(seed_workflow().pk, context={"run": 1})
    assert queued_keys(execution) == ["data_ingestion", "image_processing"]
    run_task(execution, "data_ingestion", agent, {"records": 1000})
    assert queued_keys(execution) == ["image_processing", "text_analysis"]
    (text_call,) = calls(execution, "text_analysis")
    assert text_call.input == {"id": "text_001", "records": 1000}
    run_task(execution, "text_analysis", agent, {"words": 42})
    assert queued_keys(execution) == ["image_processing"]  # the join waits for its third dependency
    run_task(execution, "image_processing", agent, {"images": 50})
    (final,) = calls(execution, "final_aggregation")
    assert final.input == {"sources": [1000, 50, 42]} and final.priority == 9
    run_task(execution, "final_aggregation", agent, {"total": 1092})
    execution = fresh(execution)
    assert execution.status == "succeeded"
    assert services.progress(execution) | {} == {
        "total": 4,
        "pending": 0,
        "running": 0,
        "succeeded": 4,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
        "percent": 100.0,
    }
    order = list(TaskRun.objects.filter(execution=execution).order_by("finished_at").values_list("key", flat=True))
    assert order.index("final_aggregation") == 3 and order.index("text_analysis") > order.index("data_ingestion")
    assert TaskRun.objects.get(execution=execution, key="final_aggregation").output == {"total": 1092}


def test_context_updates_merge_and_flow_into_later_inputs(agent):
    wf = workflow(
        [
            {"key": "a", "capability": "echo", "input": {"x": "${context.seed}"}},
            {"key": "b", "capability": "echo", "input": {"label": "region=${context.region}"}, "depends_on": ["a"]},
        ]
    )
    execution = services.execute(wf.pk, context={"seed": 7})
    assert calls(execution, "a")[0].input == {"x": 7}
    run_task(execution, "a", agent, {"context_updates": {"region": "eu"}})
    assert calls(execution, "b")[0].input == {"label": "region=eu"}
    assert fresh(execution).context == {"seed": 7, "region": "eu"}


def test_a_false_condition_skips_the_task_and_its_dependents_go_on(agent):
    wf = workflow(
        [
            {"key": "check", "capability": "echo"},
            {"key": "big", "capability": "echo", "depends_on": ["check"], "condition": "tasks.check.output.n > 100"},
            {"key": "small", "capability": "echo", "depends_on": ["check"], "condition": "tasks.check.output.n <= 100"},
            {"key": "after", "capability": "echo", "input": {"big": "${tasks.big.output.n}"}, "depends_on": ["big"]},
        ]
    )
    execution = services.execute(wf.pk)
    run_task(execution, "check", agent, {"n": 5})
    assert statuses(execution)["big"] == "skipped"
    assert queued_keys(execution) == ["after", "small"]
    assert calls(execution, "after")[0].input == {"big": None}  # a skipped task's output reads as null
    run_task(execution, "small", agent)
    run_task(execution, "after", agent)
    assert fresh(execution).status == "succeeded"
    assert fresh(execution).tasks_skipped == 1


def test_stop_fails_the_execution_and_cancels_what_did_not_start(agent):
    execution = services.execute(seed_workflow(failure_strategy="stop").pk)
    run_task(execution, "data_ingestion", agent, error="disk full")
    execution = fresh(execution)
    assert execution.status == "failed" and "data_ingestion" in execution.error and "disk full" in execution.error
    assert statuses(execution) == {
        "data_ingestion": "failed",
        "image_processing": "running",  # its call is cancelled after the commit; then it is recorded
        "text_analysis": "cancelled",
        "final_aggregation": "cancelled",
    }


def test_continue_skips_the_failed_tasks_dependents_and_finishes_the_rest(agent):
    execution = services.execute(seed_workflow(failure_strategy="continue").pk)
    run_task(execution, "data_ingestion", agent, error="bad rows")
    assert statuses(execution)["text_analysis"] == "skipped"
    assert statuses(execution)["final_aggregation"] == "skipped"
    assert fresh(execution).status == "running"
    run_task(execution, "image_processing", agent, {"images": 1})
    execution = fresh(execution)
    assert execution.status == "failed" and execution.tasks_succeeded == 1 and execution.tasks_skipped == 2
    assert "data_ingestion" in execution.error


def test_retry_reruns_a_failed_task_up_to_its_retries_then_stops(agent):
    wf = workflow(
        [
            {"key": "flaky", "capability": "echo", "retries": 1},
            {"key": "next", "capability": "echo", "depends_on": ["flaky"]},
        ],
        failure_strategy="retry",
    )
    execution = services.execute(wf.pk)
    run_task(execution, "flaky", agent, error="first")
    Invocation.objects.update(not_before=None)  # skip the backoff
    run_task(execution, "flaky", agent, {"ok": True})  # the same call, second attempt
    assert statuses(execution)["flaky"] == "succeeded"
    assert TaskRun.objects.get(execution=execution, key="flaky").attempts == 2
    run_task(execution, "next", agent, error="always")
    assert fresh(execution).status == "failed"


def test_max_parallel_tasks_and_priority_order(agent):
    tasks = [{"key": f"t{i}", "capability": "echo", "priority": i} for i in range(5)]
    execution = services.execute(workflow(tasks, max_parallel_tasks=2).pk)
    assert queued_keys(execution) == ["t3", "t4"]
    run_task(execution, "t4", agent)
    assert queued_keys(execution) == ["t2", "t3"]
    reason = services.waiting_reason(TaskRun.objects.get(execution=execution, key="t0"), fresh(execution))
    assert reason == "waiting for a free slot: 2 of max 2 tasks run"


def test_pause_starts_nothing_new_and_resume_goes_on(agent):
    wf = workflow([{"key": "a", "capability": "echo"}, {"key": "b", "capability": "echo", "depends_on": ["a"]}])
    execution = services.execute(wf.pk)
    services.pause_execution(execution.pk)
    run_task(execution, "a", agent)  # a running call finishes while paused
    assert statuses(execution) == {"a": "succeeded", "b": "ready"} and calls(execution) == []
    assert services.waiting_reason(TaskRun.objects.get(execution=execution, key="b"), fresh(execution)) == (
        "the execution is paused"
    )
    services.resume_execution(execution.pk)
    run_task(execution, "b", agent)
    assert fresh(execution).status == "succeeded"


def test_cancel_ends_the_execution_and_a_finished_one_is_a_conflict(agent):
    from masplatform.exceptions import Conflict

    execution = services.execute(seed_workflow().pk)
    services.cancel_execution(execution.pk)
    execution = fresh(execution)
    assert execution.status == "cancelled" and execution.tasks_cancelled == 2
    with pytest.raises(Conflict):
        services.cancel_execution(execution.pk)


def test_a_late_outcome_of_a_cancelled_execution_is_recorded_but_starts_nothing(agent):
    execution = services.execute(seed_workflow().pk)
    services.cancel_execution(execution.pk)
    run_task(execution, "data_ingestion", agent, {"records": 1})
    assert statuses(execution)["data_ingestion"] == "succeeded"
    assert statuses(execution)["text_analysis"] == "cancelled" and calls(execution) == calls(
        execution, "image_processing"
    )


def test_editing_a_definition_does_not_change_a_started_execution(agent):
    wf = workflow([{"key": "a", "capability": "echo", "input": {"v": 1}}])
    execution = services.execute(wf.pk)
    services.update_workflow(wf.pk, {"name": "wf", "tasks": [{"key": "z", "capability": "echo", "input": {"v": 2}}]})
    assert list(TaskRun.objects.filter(execution=execution).values_list("key", "input")) == [("a", {"v": 1})]
    assert fresh(execution).definition["version"] == 1 and fresh(execution).workflow_version == 1
    run_task(execution, "a", agent)
    assert fresh(execution).status == "succeeded"


def test_global_timeout_ends_the_execution_as_timed_out(agent):
    from datetime import timedelta

    from django.utils import timezone

    execution = services.execute(seed_workflow(global_timeout=1).pk)
    assert services.sweep()["timed_out"] == 0
    assert services.sweep(now=timezone.now() + timedelta(seconds=2))["timed_out"] == 1
    execution = fresh(execution)
    assert execution.status == "timed_out" and "global timeout" in execution.error


def test_a_task_timeout_fails_the_task(agent):
    from agents import services as agent_services

    execution = services.execute(workflow([{"key": "slow", "capability": "echo", "timeout": 2}]).pk)
    (invocation,) = calls(execution, "slow")
    assert invocation.timeout == 2
    claim = agent_services.claim(str(invocation.pk), agent=agent)
    agent_services.record_failure(
        invocation.pk, attempt=claim.attempt, error_type="SoftTimeLimitExceeded", error_message="x", timed_out=True
    )
    run = TaskRun.objects.get(execution=execution, key="slow")
    assert run.status == "failed" and run.error == "timed out after 2 s"
    assert fresh(execution).status == "failed"


def test_scatter_gather_runs_on_n_distinct_agents_and_aggregates(agent):
    capability("computation")
    agents = [worker_agent(f"w{i}", "computation") for i in range(3)]
    wf = workflow([{"key": "spread", "capability": "computation", "required_agents": 3, "aggregation": "average"}])
    execution = services.execute(wf.pk)
    shares = calls(execution, "spread")
    assert len(shares) == 3 and {s.pinned_agent_id for s in shares} == {a.pk for a in agents}
    by_pk = {a.pk: a for a in agents}
    for value, share in zip((1.0, 2.0, 6.0), shares, strict=True):
        play(share, by_pk[share.pinned_agent_id], {"score": value, "label": "x"})
    run = TaskRun.objects.get(execution=execution, key="spread")
    assert run.output == {"score": 3.0, "gathered": 3}
    assert fresh(execution).status == "succeeded"


def test_scatter_waits_for_enough_agents_and_says_why(agent):
    capability("computation")
    worker_agent("w0", "computation")
    wf = workflow([{"key": "spread", "capability": "computation", "required_agents": 2, "aggregation": "list"}])
    execution = services.execute(wf.pk)
    run = TaskRun.objects.get(execution=execution, key="spread")
    assert run.status == "ready" and calls(execution) == []
    assert services.waiting_reason(run, fresh(execution)) == (
        "needs 2 distinct live agents offering 'computation'; 1 is live"
    )
    worker_agent("w1", "computation")
    assert services.start_waiting_scatter_tasks() == 1
    assert len(calls(execution, "spread")) == 2


def test_a_share_on_a_dead_agent_moves_to_another_live_agent(agent):
    from agents import services as agent_services

    capability("computation")
    w0, w1, spare = (worker_agent(f"w{i}", "computation") for i in range(3))
    wf = workflow([{"key": "spread", "capability": "computation", "required_agents": 2}])
    execution = services.execute(wf.pk)
    shares = calls(execution, "spread")
    pinned = {s.pinned_agent_id for s in shares}
    assert len(pinned) == 2
    dead = next(a for a in (w0, w1, spare) if a.pk in pinned)
    claim = agent_services.claim(str(next(s for s in shares if s.pinned_agent_id == dead.pk).pk), agent=dead)
    assert claim is not None
    agent_services.unregister_agent(agent_id=dead.agent_id)
    from agents.models import Agent

    Agent.objects.filter(pk=dead.pk).update(state="offline")
    agent_services.requeue_running_on([dead.pk], now=__import__("django.utils.timezone", fromlist=["now"]).now())
    assert services.repin_orphaned_shares([dead.pk]) == 1
    shares = calls(execution, "spread")
    assert len(shares) == 2 and dead.pk not in {s.pinned_agent_id for s in shares}
    live = {a.pk: a for a in (w0, w1, spare)}
    for share in shares:
        play(share, live[share.pinned_agent_id], {"n": 1})
    assert TaskRun.objects.get(execution=execution, key="spread").output == {"results": [{"n": 1}, {"n": 1}]}


def test_a_resolved_input_that_breaks_the_schema_fails_the_task_and_continue_goes_on(agent):
    from tests.workflows.helpers import NUMBERS

    capability("calculation", NUMBERS)
    worker_agent("calc-1", "calculation")
    wf = workflow(
        [
            {"key": "x", "capability": "echo"},
            {
                "key": "sum",
                "capability": "calculation",
                "depends_on": ["x"],
                "input": {"a": "${tasks.x.output.v}", "b": 1},
            },
            {"key": "after_sum", "capability": "echo", "depends_on": ["sum"]},
            *({"key": f"side{i}", "capability": "echo", "depends_on": ["x"], "priority": 1} for i in range(3)),
        ],
        failure_strategy="continue",
        max_parallel_tasks=2,
    )
    execution = services.execute(wf.pk)
    run_task(execution, "x", agent, {"v": "not a number"})
    run = TaskRun.objects.get(execution=execution, key="sum")
    assert (
        run.status == "failed" and "could not be started" in run.error and "'not a number' is not of type" in run.error
    )
    assert statuses(execution)["after_sum"] == "skipped"
    assert len(calls(execution)) == 2  # the failed start did not take a slot, and no more than 2 run


def test_a_failing_engine_step_still_records_the_call_and_fails_only_its_execution(agent, monkeypatch):
    execution = services.execute(workflow([{"key": "a", "capability": "echo"}]).pk)
    (invocation,) = calls(execution, "a")

    def broken(invocation_id, status, **kwargs):
        TaskRun.objects.filter(execution=execution).update(error="half-done")  # rolled back with the step
        raise RuntimeError("engine bug")

    monkeypatch.setattr(services, "on_invocation_finished", broken)
    play(invocation, agent, {"n": 1})
    assert Invocation.objects.get(pk=invocation.pk).status == "succeeded"
    execution = fresh(execution)
    assert execution.status == "failed" and "engine bug" in execution.error
    run = TaskRun.objects.get(execution=execution, key="a")
    assert run.status == "failed" and "half-done" not in run.error and "engine bug" in run.error
    assert execution.tasks_running == 0 and execution.tasks_failed == 1


def test_a_fan_out_starts_together_and_one_bad_input_fails_only_its_task(agent):
    from tests.workflows.helpers import NUMBERS

    capability("calculation", NUMBERS)
    worker_agent("calc-1", "calculation")
    leaves = [
        {"key": f"leaf{i}", "capability": "calculation", "depends_on": ["root"], "input": {"a": i, "b": 1}}
        for i in range(5)
    ]
    leaves[3]["input"] = {"a": "${tasks.root.output.text}", "b": 1}
    wf = workflow([{"key": "root", "capability": "echo"}, *leaves], failure_strategy="continue", max_parallel_tasks=50)
    execution = services.execute(wf.pk)
    run_task(execution, "root", agent, {"text": "not a number"})
    assert queued_keys(execution) == ["leaf0", "leaf1", "leaf2", "leaf4"]
    assert "is not of type 'number'" in TaskRun.objects.get(execution=execution, key="leaf3").error
    assert [c.input for c in calls(execution)] == [{"a": i, "b": 1} for i in (0, 1, 2, 4)]
    for key in ("leaf0", "leaf1", "leaf2", "leaf4"):
        run_task(execution, key, agent)
    assert fresh(execution).status == "failed" and fresh(execution).tasks_succeeded == 5


def test_an_execution_whose_tasks_are_all_skipped_succeeds_at_once(agent):
    wf = workflow([{"key": "a", "capability": "echo", "condition": "context.go == true"}])
    execution = fresh(services.execute(wf.pk, context={}))
    assert execution.status == "succeeded" and execution.tasks_skipped == 1 and calls(execution) == []


def _bad_input_workflow(**fields):
    from tests.workflows.helpers import NUMBERS

    capability("calculation", NUMBERS)
    worker_agent("calc-1", "calculation")
    children = [
        {
            "key": f"c{i}",
            "capability": "calculation",
            "depends_on": ["root"],
            "input": {"a": i, "b": 1},
            "priority": 9 - i,
        }
        for i in range(4)
    ]
    children[1]["input"] = {"a": "${tasks.root.output.text}", "b": 1}
    return workflow([{"key": "root", "capability": "echo"}, *children], **fields)


def test_a_stored_ready_task_that_fails_to_start_under_stop_ends_the_execution_cleanly(agent):
    execution = services.execute(_bad_input_workflow(failure_strategy="stop", max_parallel_tasks=1).pk)
    run_task(execution, "root", agent, {"text": "x"})
    assert queued_keys(execution) == ["c0"] and fresh(execution).tasks_ready == 3
    run_task(execution, "c0", agent)  # frees the slot: c1 (next by priority) cannot start
    execution = fresh(execution)
    assert execution.status == "failed" and "c1" in execution.error and execution.tasks_ready == 0
    assert statuses(execution) == {
        "root": "succeeded",
        "c0": "succeeded",
        "c1": "failed",
        "c2": "cancelled",
        "c3": "cancelled",
    }
    assert execution.tasks_finished == execution.tasks_total == 5 and calls(execution) == []


def test_a_batch_with_a_bad_input_under_stop_starts_nothing_after_the_failure(agent):
    execution = services.execute(_bad_input_workflow(failure_strategy="stop", max_parallel_tasks=10).pk)
    run_task(execution, "root", agent, {"text": "x"})
    execution = fresh(execution)
    assert execution.status == "failed" and statuses(execution)["c1"] == "failed"
    assert statuses(execution)["c2"] == "cancelled" and statuses(execution)["c3"] == "cancelled"
    assert queued_keys(execution) == ["c0"]  # started before c1 failed; its call is cancelled after the commit
    assert execution.tasks_finished + execution.tasks_running == execution.tasks_total
