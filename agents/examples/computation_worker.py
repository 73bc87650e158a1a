"""The seed's coordination worker offering ``computation`` (Exercise 3)."""

from __future__ import annotations

from agents.examples import coordination_workers
from agents.sdk import AgentDefinition

agent = AgentDefinition(
    "computation_worker", name="Worker (computation)", tags=("worker", "coordination"), metadata={"exercise": 3}
)
INPUT, OUTPUT = coordination_workers.schemas("data_size")
agent.capability(
    "computation",
    description="Coordinated computation share of a distributed task",
    input_schema=INPUT,
    output_schema=OUTPUT,
)(coordination_workers.computation)
