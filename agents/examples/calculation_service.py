"""The seed's calculation service (Exercise 2): sum and product of two numbers."""

from __future__ import annotations

from agents.examples._common import simulate_work
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
