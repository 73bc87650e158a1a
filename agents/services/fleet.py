"""Fleet operations on agent workers, through Celery's remote control: drain, resume, shutdown.

The database says what the platform intends (``draining`` is a state); the
remote-control broadcast makes the worker act on it at once. A worker that
does not answer keeps the state recorded here and is reported as not
acknowledging, so an operator sees it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agents import dispatch
from agents.models import Agent, AgentState
from agents.services.registry import change_state
from masplatform.exceptions import Conflict, NotFound

logger = logging.getLogger("agents")


@dataclass(frozen=True)
class FleetResult:
    agent_id: str
    state: str
    worker: str
    acknowledged: bool
    replies: list


def _agent(agent_id: str) -> Agent:
    agent = Agent.objects.filter(agent_id=agent_id, unregistered_at__isnull=True).first()
    if agent is None:
        raise NotFound(f"No registered agent '{agent_id}'.")
    if not agent.worker_name:
        raise Conflict(f"Agent '{agent_id}' has no Celery worker on record (it was not started with run_agent).")
    return agent


def agent_queues(agent: Agent) -> list[str]:
    names = [dispatch.capability_queue_name(n) for n in agent.capabilities.values_list("name", flat=True)]
    return [*names, dispatch.agent_queue_name(agent.agent_id)]


def _control():
    from masplatform.celery import app

    return app.control


def drain(*, agent_id: str, timeout: float = 3.0) -> FleetResult:
    """Stop the agent's worker taking new calls; the calls in flight finish. State: draining."""
    agent = _agent(agent_id)
    change_state(agent_id=agent_id, state=AgentState.DRAINING, reason="drain")
    replies = []
    for name in agent_queues(agent):
        replies += _control().cancel_consumer(name, destination=[agent.worker_name], reply=True, timeout=timeout) or []
    logger.info("event=agent_drain agent_id=%s replies=%d", agent_id, len(replies))
    return FleetResult(agent_id, AgentState.DRAINING, agent.worker_name, bool(replies), replies)


def resume(*, agent_id: str, timeout: float = 3.0) -> FleetResult:
    """Let a draining agent's worker take calls again. State: idle."""
    agent = _agent(agent_id)
    if agent.state != AgentState.DRAINING:
        raise Conflict(f"Agent '{agent_id}' is {agent.state}, not draining; there is nothing to resume.")
    replies = []
    for name in agent_queues(agent):
        queue = dispatch.queue(name)
        replies += (
            _control().add_consumer(
                name,
                routing_key=name,
                destination=[agent.worker_name],
                reply=True,
                timeout=timeout,
                options={"queue_arguments": queue.queue_arguments},
            )
            or []
        )
    change_state(agent_id=agent_id, state=AgentState.IDLE, reason="resume", resume=True)
    logger.info("event=agent_resume agent_id=%s replies=%d", agent_id, len(replies))
    return FleetResult(agent_id, AgentState.IDLE, agent.worker_name, bool(replies), replies)


def shutdown(*, agent_id: str, timeout: float = 3.0) -> FleetResult:
    """Warm shutdown of the agent's worker: it stops taking calls, finishes those in flight, goes offline."""
    agent = _agent(agent_id)
    if agent.state != AgentState.DRAINING:
        change_state(agent_id=agent_id, state=AgentState.DRAINING, reason="shutdown")
    # Celery's shutdown command sends no reply: a ping first tells whether the worker is there to get it.
    replies = _control().ping(destination=[agent.worker_name], timeout=timeout) or []
    _control().shutdown(destination=[agent.worker_name])
    logger.info("event=agent_shutdown agent_id=%s reachable=%s", agent_id, bool(replies))
    return FleetResult(agent_id, AgentState.DRAINING, agent.worker_name, bool(replies), replies)


def ping(agent: Agent, timeout: float = 1.0) -> bool:
    if not agent.worker_name:
        return False
    return bool(_control().ping(destination=[agent.worker_name], timeout=timeout))
