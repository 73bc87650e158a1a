"""The seed's coordination worker offering ``analysis`` (Exercise 3)."""

from __future__ import annotations

from agents.examples import coordination_workers
from agents.sdk import AgentDefinition

agent = AgentDefinition(
    "analysis_worker", name="Worker (analysis)", tags=("worker", "coordination"), metadata={"exercise": 3}
)
INPUT, OUTPUT = coordination_workers.schemas("records")
agent.capability(
    "analysis", description="Coordinated analysis share of a distributed task", input_schema=INPUT, output_schema=OUTPUT
)(coordination_workers.analysis)
