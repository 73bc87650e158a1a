"""The seed's coordination worker offering ``validation_worker`` (Exercise 3)."""

from __future__ import annotations

from agents.examples import coordination_workers
from agents.sdk import AgentDefinition

agent = AgentDefinition(
    "validation_worker", name="Worker (validation_worker)", tags=("worker", "coordination"), metadata={"exercise": 3}
)
INPUT, OUTPUT = coordination_workers.schemas("items")
agent.capability(
    "validation_worker",
    description="Coordinated validation_worker share of a distributed task",
    input_schema=INPUT,
    output_schema=OUTPUT,
)(coordination_workers.validate_items)
