"""The requests every SDK agent answers without code from its author, with real data from the
registry and the bus (the seed's ``ping``, ``get_capabilities``, ``get_status`` and ``get_load_info``)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from agents.models import Agent, AgentCapability
from agents.sdk import HandlerContext, IncomingMessage
from messaging import selectors


def ping(message: IncomingMessage, ctx: HandlerContext) -> dict[str, Any]:
    return {"type": "pong", "agent_id": ctx.agent_id, "timestamp": timezone.now().isoformat()}


def get_capabilities(message: IncomingMessage, ctx: HandlerContext) -> dict[str, Any]:
    costs = dict(AgentCapability.objects.filter(agent__agent_id=ctx.agent_id).values_list("capability__name", "cost"))
    return {
        "type": "capabilities_response",
        "agent_id": ctx.agent_id,
        "capabilities": {
            name: {
                "description": c.description,
                "input_schema": c.input_schema,
                "output_schema": c.output_schema,
                "cost": costs.get(name, c.cost),
            }
            for name, c in ctx.definition.capabilities.items()
        },
        "handles": ctx.definition.handled_keys(),
    }


def _agent(ctx: HandlerContext) -> Agent:
    return Agent.objects.get(agent_id=ctx.agent_id)


def get_status(message: IncomingMessage, ctx: HandlerContext) -> dict[str, Any]:
    agent = _agent(ctx)
    counts = selectors.delivery_counts(agent)
    return {
        "type": "status_response",
        "agent_id": agent.agent_id,
        "name": agent.name,
        "state": agent.state,
        "health_score": agent.health_score,
        "capabilities": sorted(ctx.definition.capabilities),
        "metrics": {
            "calls_completed": agent.calls_completed,
            "calls_failed": agent.calls_failed,
            "avg_response_time_ms": agent.avg_response_time_ms,
            "messages_sent": selectors.sent_count(agent),
            "messages_received": sum(counts.values()),
            "messages_by_status": counts,
            "uptime_seconds": (timezone.now() - agent.registered_at).total_seconds(),
        },
    }


def get_load_info(message: IncomingMessage, ctx: HandlerContext) -> dict[str, Any]:
    agent = _agent(ctx)
    return {
        "type": "load_info",
        "agent_id": agent.agent_id,
        "state": agent.state,
        "in_flight": agent.in_flight,
        "max_concurrency": agent.max_concurrency,
        "load": agent.in_flight / agent.max_concurrency if agent.max_concurrency else 0.0,
        "cpu_load": agent.cpu_load,
        "inbox_depth": selectors.inbox_depth(agent),
        "last_heartbeat_at": agent.last_heartbeat_at.isoformat(),
    }


HANDLERS = {
    "ping": ping,
    "get_capabilities": get_capabilities,
    "get_status": get_status,
    "get_load_info": get_load_info,
}
