"""The seed's calculation service (Exercise 2): sum and product of two numbers, as a capability
(``POST /api/invocations/``) and as the seed's request over the message bus (``service_request``)."""

from __future__ import annotations

from django.utils import timezone

from agents.examples._common import request_delay, simulate_work
from agents.sdk import AgentDefinition

agent = AgentDefinition("calc_service", name="Calculation service", tags=("service",), metadata={"exercise": 2})


@agent.capability(
    "calculation",
    description="Sum and product of two numbers",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
    output_schema={
        "type": "object",
        "properties": {"sum": {"type": "number"}, "product": {"type": "number"}},
        "required": ["sum", "product"],
    },
)
def calculation(data, ctx):
    simulate_work(ctx, steps=1)
    return {"sum": data["a"] + data["b"], "product": data["a"] * data["b"]}


@agent.on("service_request")
def service_request(message, ctx):
    """The seed's request ``{"type": "service_request", "request_data": {"a", "b"}, "request_id"}``; the
    return value is the response."""
    data = message.content.get("request_data") or {}
    a, b = data.get("a", 0), data.get("b", 0)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)):
        result = {"error": "a and b must be numbers"}  # an answer, not an exception: retrying cannot help
    else:
        request_delay()
        result = {"sum": a + b, "product": a * b}
    return {
        "type": "service_response",
        "service": "calculation",
        "result": result,
        "request_id": message.content.get("request_id"),
        "processed_at": timezone.now().isoformat(),
    }
