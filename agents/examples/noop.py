"""A no-op agent for benchmarks: ``noop`` returns its input."""

from __future__ import annotations

from agents.sdk import AgentDefinition

agent = AgentDefinition("noop_agent", name="No-op", tags=("bench",))


@agent.capability(
    "noop", description="Returns its input", input_schema={"type": "object"}, output_schema={"type": "object"}
)
def noop(data, ctx):
    return data
