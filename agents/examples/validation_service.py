"""The seed's validation service (Exercise 2): is the string non-empty, and how long is it, as a
capability (``POST /api/invocations/``) and as the seed's request over the message bus
(``service_request``)."""

from __future__ import annotations

from django.utils import timezone

from agents.examples._common import request_delay, simulate_work
from agents.sdk import AgentDefinition

agent = AgentDefinition("validation_service", name="Validation service", tags=("service",), metadata={"exercise": 2})


@agent.capability(
    "validation",
    description="Is the string non-empty, and how long is it",
    input_schema={"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]},
    output_schema={
        "type": "object",
        "properties": {"valid": {"type": "boolean"}, "length": {"type": "integer"}},
        "required": ["valid", "length"],
    },
)
def validation(data, ctx):
    simulate_work(ctx, steps=1)
    return {"valid": len(data["data"]) > 0, "length": len(data["data"])}


@agent.on("service_request")
def service_request(message, ctx):
    """The seed's request ``{"type": "service_request", "request_data": {"data"}, "request_id"}``; the
    return value is the response."""
    data = (message.content.get("request_data") or {}).get("data", "")
    if not isinstance(data, str):
        result = {"error": "data must be a string"}  # an answer, not an exception: retrying cannot help
    else:
        request_delay()
        result = {"valid": len(data) > 0, "length": len(data)}
    return {
        "type": "service_response",
        "service": "validation",
        "result": result,
        "request_id": message.content.get("request_id"),
        "processed_at": timezone.now().isoformat(),
    }
