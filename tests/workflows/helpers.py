"""Building blocks of the workflow tests: capabilities, agents, and playing a worker in-process.

``play`` does what an agent's worker does with a call (claim, then record the
outcome) through the real services and database; nothing is mocked. In tests
that run inside a transaction no message is published (on_commit never runs),
so these tests drive every step themselves.
"""

from __future__ import annotations

from typing import Any

from agents import services as agent_services
from agents.models import Agent, Invocation, InvocationStatus
from agents.services import CapabilitySpec
from workflows import services
from workflows.models import Execution, TaskRun

NUMBERS = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}
ANY = {"type": "object"}


def capability(name: str, input_schema: dict | None = None) -> None:
    agent_services.create_capability(name=name, input_schema=input_schema or ANY, output_schema=ANY)


def worker_agent(agent_id: str, *capabilities: str) -> Agent:
    """A registered agent that runs as a worker (as run_agent registers it)."""
    specs = [CapabilitySpec(name=c) for c in capabilities]
    return agent_services.register_agent(
        agent_id=agent_id, name=agent_id, capabilities=specs, worker_name=f"{agent_id}@test"
    ).agent


def calls(execution: Execution, key: str | None = None, *, status: str = InvocationStatus.QUEUED) -> list[Invocation]:
    qs = Invocation.objects.filter(workflow_call__task_run__execution=execution, status=status)
    if key:
        qs = qs.filter(workflow_call__task_run__key=key)
    return list(
        qs.select_related("capability", "pinned_agent").order_by(
            "workflow_call__task_run__position", "workflow_call__share"
        )
    )


def queued_keys(execution: Execution) -> list[str]:
    return sorted({i.workflow_call.task_run.key for i in calls(execution)})


def play(invocation: Invocation, agent: Agent, output: Any = None, *, error: str | None = None) -> None:
    """Claim ``invocation`` as ``agent`` and record ``output`` (or a failure)."""
    claim = agent_services.claim(str(invocation.pk), agent=agent)
    assert claim is not None, f"{invocation.pk} could not be claimed"
    if error:
        agent_services.record_failure(
            invocation.pk, attempt=claim.attempt, error_type="RuntimeError", error_message=error
        )
    else:
        agent_services.record_success(invocation.pk, attempt=claim.attempt, output=output if output is not None else {})


def run_task(execution: Execution, key: str, agent: Agent, output: Any = None, *, error: str | None = None) -> None:
    (invocation,) = calls(execution, key)
    play(invocation, agent, output, error=error)


def statuses(execution: Execution) -> dict[str, str]:
    return dict(TaskRun.objects.filter(execution=execution).values_list("key", "status"))


def fresh(execution: Execution) -> Execution:
    return Execution.objects.get(pk=execution.pk)


def workflow(tasks: list[dict], **fields: Any):
    return services.create_workflow({"name": fields.pop("name", "wf"), "tasks": tasks, **fields}, created_by="test")
