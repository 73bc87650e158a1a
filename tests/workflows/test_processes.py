"""Workflows end to end: real `run_agent` worker processes on this run's database and broker.

The engine runs where outcomes are recorded (in the agents' workers) and, for
sweeps and operator actions, in this test process, as it would in beat's
worker and the web server.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from django.test.utils import override_settings

from agents import services as agent_services
from agents.models import Invocation, InvocationAttempt
from tests.processes import wait_until
from workflows import services
from workflows.models import Execution, TaskCall, TaskRun

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
AGENT = "tests.workflow_agents"


def workflow(tasks: list[dict], **fields):
    return services.create_workflow({"name": fields.pop("name", "wf"), "tasks": tasks, **fields})


def finished(execution: Execution, timeout: float = 60) -> Execution:
    def done():
        e = Execution.objects.get(pk=execution.pk)
        return e if e.is_finished else None

    return wait_until(done, timeout=timeout, interval=0.1, message=f"execution {execution.pk} to finish")


def runs(execution: Execution) -> dict[str, TaskRun]:
    return {r.key: r for r in TaskRun.objects.filter(execution=execution)}


def sweep_stale() -> None:
    with override_settings(MASP_STALE_TIMEOUT=3):
        agent_services.sweep_stale_agents()


def test_the_seed_complex_workflow_runs_on_the_example_agents(processes):
    for module, agent_id in (
        ("agents.examples.data_processor", "data-1"),
        ("agents.examples.image_processor", "image-1"),
        ("agents.examples.text_processor", "text-1"),
    ):
        processes.agent(module, agent_id=agent_id, concurrency=2)
    from demo.workflows import seed_complex_workflow

    wf = services.create_workflow(seed_complex_workflow())
    execution = finished(services.execute(wf.pk, context={"requested_by": "test"}))
    assert execution.status == "succeeded", execution.error
    tasks = runs(execution)
    assert {k: r.agent.agent_id for k, r in tasks.items()} == {
        "data_ingestion": "data-1",
        "image_processing": "image-1",
        "text_analysis": "text-1",
        "final_aggregation": "data-1",
    }
    assert tasks["data_ingestion"].output["result"]["processed_records"] == 1000
    assert tasks["image_processing"].output["result"]["images_processed"] == 50
    assert tasks["text_analysis"].started_at >= tasks["data_ingestion"].finished_at
    final = tasks["final_aggregation"]
    assert final.started_at >= max(
        tasks[k].finished_at for k in ("data_ingestion", "image_processing", "text_analysis")
    )
    # the join read its inputs from the three upstream outputs
    assert final.resolved_input["task_data"]["sources"] == {
        "data": tasks["data_ingestion"].output["result"]["processed_records"],
        "image": tasks["image_processing"].output["result"]["images_processed"],
        "text": tasks["text_analysis"].output["result"]["documents_analyzed"],
    }
    assert execution.context["requested_by"] == "test"


def test_context_updates_flow_and_a_condition_skips_a_branch(processes):
    processes.agent(AGENT, agent_id="wf-1", concurrency=2)
    wf = workflow(
        [
            {"key": "probe", "capability": "step", "input": {"name": "probe", "context_updates": {"mode": "fast"}}},
            {
                "key": "fast",
                "capability": "step",
                "depends_on": ["probe"],
                "condition": 'context.mode == "fast"',
                "input": {"name": "fast", "value": "${context.base}"},
            },
            {"key": "slow", "capability": "step", "depends_on": ["probe"], "condition": 'context.mode == "slow"'},
            {
                "key": "report",
                "capability": "step",
                "depends_on": ["fast", "slow"],
                "input": {"name": "report", "value": "${tasks.fast.output.value}", "slow": "${tasks.slow.output}"},
            },
        ]
    )
    execution = finished(services.execute(wf.pk, context={"base": 21}))
    assert execution.status == "succeeded", execution.error
    tasks = runs(execution)
    assert tasks["slow"].status == "skipped" and tasks["fast"].output["value"] == 42
    assert tasks["report"].resolved_input == {"name": "report", "value": 42, "slow": None}
    assert tasks["report"].output["value"] == 84
    assert execution.context == {"base": 21, "mode": "fast"}
    assert execution.tasks_skipped == 1 and execution.tasks_succeeded == 3


def test_stop_cancels_the_running_branch_and_fails_the_execution(processes, tmp_path):
    processes.agent(AGENT, agent_id="wf-1", concurrency=2)
    marker = tmp_path / "long-started"
    wf = workflow(
        [
            {"key": "long", "capability": "step", "input": {"name": "long", "sleep": 30, "marker": str(marker)}},
            {"key": "bad", "capability": "step", "input": {"name": "bad", "fail": True, "sleep": 0.5}},
            {"key": "after", "capability": "step", "depends_on": ["long", "bad"]},
        ],
        failure_strategy="stop",
    )
    execution = services.execute(wf.pk)
    wait_until(marker.exists, message="the long task to start")
    execution = finished(execution)
    assert execution.status == "failed" and "bad" in execution.error and "failed on attempt 1" in execution.error
    wait_until(lambda: runs(execution)["long"].status == "cancelled", message="the running branch to be cancelled")
    tasks = runs(execution)
    assert tasks["after"].status == "cancelled"
    assert Invocation.objects.get(workflow_call__task_run=tasks["long"]).status == "cancelled"


def test_continue_finishes_the_independent_branch(processes):
    processes.agent(AGENT, agent_id="wf-1", concurrency=2)
    wf = workflow(
        [
            {"key": "bad", "capability": "step", "input": {"fail": True}},
            {"key": "bad_child", "capability": "step", "depends_on": ["bad"]},
            {"key": "good", "capability": "step", "input": {"sleep": 0.5}},
            {"key": "good_child", "capability": "step", "depends_on": ["good"]},
        ],
        failure_strategy="continue",
    )
    execution = finished(services.execute(wf.pk))
    assert execution.status == "failed"
    assert {k: r.status for k, r in runs(execution).items()} == {
        "bad": "failed",
        "bad_child": "skipped",
        "good": "succeeded",
        "good_child": "succeeded",
    }


def test_retry_reruns_the_failed_task_then_goes_on(processes):
    processes.agent(AGENT, agent_id="wf-1")
    wf = workflow(
        [
            {"key": "flaky", "capability": "step", "input": {"fail": 2}, "retries": 2},
            {"key": "next", "capability": "step", "depends_on": ["flaky"]},
            {"key": "hopeless", "capability": "step", "input": {"fail": True}, "retries": 1, "depends_on": ["next"]},
        ],
        failure_strategy="retry",
    )
    execution = finished(services.execute(wf.pk))
    tasks = runs(execution)
    assert tasks["flaky"].status == "succeeded" and tasks["flaky"].attempts == 3
    assert tasks["next"].status == "succeeded"
    assert tasks["hopeless"].status == "failed" and tasks["hopeless"].attempts == 2
    assert execution.status == "failed" and "hopeless" in execution.error


def test_a_task_timeout_and_the_global_timeout(processes):
    processes.agent(AGENT, agent_id="wf-1", concurrency=2)
    wf = workflow([{"key": "slow", "capability": "step", "input": {"sleep": 10}, "timeout": 1}])
    execution = finished(services.execute(wf.pk))
    assert execution.status == "failed" and runs(execution)["slow"].error == "timed out after 1 s"

    wf = workflow([{"key": "slow", "capability": "step", "input": {"sleep": 20}}], name="global", global_timeout=1)
    execution = services.execute(wf.pk)
    wait_until(lambda: services.sweep()["timed_out"] == 1, timeout=20, message="the sweep to time it out")
    execution = Execution.objects.get(pk=execution.pk)
    assert execution.status == "timed_out" and "global timeout of 1 s" in execution.error
    wait_until(lambda: runs(execution)["slow"].status == "cancelled", message="its running call to be cancelled")


def test_pause_resume_and_cancel_mid_run(processes, tmp_path):
    processes.agent(AGENT, agent_id="wf-1", concurrency=2)
    marker = tmp_path / "first"
    wf = workflow(
        [
            {"key": "first", "capability": "step", "input": {"sleep": 1.5, "marker": str(marker)}},
            {"key": "second", "capability": "step", "depends_on": ["first"]},
            {"key": "third", "capability": "step", "depends_on": ["second"], "input": {"sleep": 30}},
        ]
    )
    execution = services.execute(wf.pk)
    wait_until(marker.exists, message="the first task to start")
    services.pause_execution(execution.pk)
    wait_until(lambda: runs(execution)["first"].status == "succeeded", message="the running task to finish")
    assert runs(execution)["second"].status == "ready"
    assert not TaskCall.objects.filter(task_run__key="second").exists()
    services.resume_execution(execution.pk)
    wait_until(lambda: runs(execution)["third"].status == "running", message="the third task to start")
    services.cancel_execution(execution.pk)
    wait_until(lambda: runs(execution)["third"].status == "cancelled", message="the running call to stop")
    execution = Execution.objects.get(pk=execution.pk)
    assert execution.status == "cancelled" and runs(execution)["second"].status == "succeeded"


def test_a_worker_killed_mid_workflow_and_the_workflow_still_completes_once_each(processes, tmp_path):
    log = tmp_path / "runs.txt"
    victim = processes.agent(AGENT, agent_id="victim")
    marker = tmp_path / "middle"
    wf = workflow(
        [
            {"key": "a", "capability": "step", "input": {"name": "a", "path": str(log)}},
            {
                "key": "b",
                "capability": "step",
                "depends_on": ["a"],
                "input": {"name": "b", "path": str(log), "sleep": 4, "marker": str(marker)},
            },
            {"key": "c", "capability": "step", "depends_on": ["b"], "input": {"name": "c", "path": str(log)}},
        ]
    )
    execution = services.execute(wf.pk)
    wait_until(marker.exists, message="the middle task to start on the victim")
    victim.signal(signal.SIGKILL, group=True)
    processes.agent(AGENT, agent_id="survivor")

    def swept():
        sweep_stale()
        return Execution.objects.get(pk=execution.pk).is_finished

    wait_until(swept, timeout=90, interval=0.5, message="the workflow to complete after the kill")
    execution = Execution.objects.get(pk=execution.pk)
    assert execution.status == "succeeded", execution.error
    tasks = runs(execution)
    assert tasks["b"].agent.agent_id == "survivor" and tasks["c"].agent.agent_id == "survivor"
    for run in tasks.values():
        outcomes = list(
            InvocationAttempt.objects.filter(invocation__workflow_call__task_run=run).values_list("outcome", flat=True)
        )
        assert outcomes.count("succeeded") == 1, (run.key, outcomes)
    names = [line.split()[0] for line in log.read_text().splitlines()]
    assert names.count("a") == 1 and names.count("c") == 1 and names.count("b") == 2  # b ran again after the kill


def test_a_200_way_fan_in_finished_by_two_workers_dispatches_the_join_once(processes):
    processes.agent(AGENT, agent_id="fan-1", concurrency=4, pool="threads")
    processes.agent(AGENT, agent_id="fan-2", concurrency=4, pool="threads")
    branches = [{"key": f"b{i}", "capability": "step", "input": {"value": i}} for i in range(200)]
    join = {
        "key": "join",
        "capability": "step",
        "depends_on": [b["key"] for b in branches],
        "input": {"value": "${tasks.b199.output.value}"},
    }
    execution = finished(services.execute(workflow([*branches, join], max_parallel_tasks=200).pk), timeout=180)
    assert execution.status == "succeeded", execution.error
    join_run = runs(execution)["join"]
    assert TaskCall.objects.filter(task_run=join_run).count() == 1
    assert InvocationAttempt.objects.filter(invocation__workflow_call__task_run=join_run).count() == 1
    assert join_run.output["value"] == 199 * 2 * 2
    agents = set(TaskRun.objects.filter(execution=execution).values_list("agent__agent_id", flat=True))
    assert agents == {"fan-1", "fan-2"}


def test_scatter_gather_on_three_agents_aggregates_and_survives_one_dying(processes, tmp_path):
    children = {n: processes.agent(AGENT, agent_id=f"node-{n}") for n in (1, 2, 3)}
    wf = workflow(
        [
            {
                "key": "spread",
                "capability": "share",
                "required_agents": 3,
                "aggregation": "average",
                "input": {"factor": 10, "sleep": 3, "marker_dir": str(tmp_path)},
            },
            {
                "key": "after",
                "capability": "step",
                "depends_on": ["spread"],
                "input": {"value": "${tasks.spread.output.score}"},
            },
        ]
    )
    first = finished(services.execute(wf.pk))
    assert first.status == "succeeded", first.error
    assert runs(first)["spread"].output == {"score": 20.0, "gathered": 3}  # (10 + 20 + 30) / 3
    assert runs(first)["after"].output["value"] == 40.0

    for path in tmp_path.iterdir():
        path.unlink()
    execution = services.execute(wf.pk)
    wait_until(lambda: Path(tmp_path, "node-2").exists(), message="node-2 to start its share")
    children[2].signal(signal.SIGKILL, group=True)
    processes.agent(AGENT, agent_id="node-4")

    def swept():
        sweep_stale()
        return Execution.objects.get(pk=execution.pk).is_finished

    wait_until(swept, timeout=90, interval=0.5, message="the scatter task to complete without node-2")
    execution = Execution.objects.get(pk=execution.pk)
    assert execution.status == "succeeded", execution.error
    spread = runs(execution)["spread"]
    assert spread.output == {"score": (10 + 30 + 40) / 3, "gathered": 3}
    share_agents = list(
        Invocation.objects.filter(workflow_call__task_run=spread).values_list("agent__agent_id", flat=True)
    )
    assert sorted(share_agents) == ["node-1", "node-3", "node-4"]
