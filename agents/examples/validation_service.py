"""The seed's validation service (Exercise 2): is the string non-empty, and how long is it."""

from __future__ import annotations

from agents.examples._common import simulate_work
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
