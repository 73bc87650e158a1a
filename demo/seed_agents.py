"""The seed's agents, as registration bodies (POST /api/agents/) built from the example agents.

Exercise 1: two data, two image and one text processor (the seed's
``specializations``, their processing times as costs); Exercise 2: the
calculation and validation services; Exercise 3: three coordination workers.
The contracts are the example agents' (agents/examples/), so the real agents
that ``make demo`` starts later re-register with the same contracts. The seed's
Exercise 3 names a worker capability ``validation``, which clashes with the
validation service's contract; here it is ``validation_worker``.
"""

from __future__ import annotations

from typing import Any

from agents.examples import (
    analysis_worker,
    calculation_service,
    computation_worker,
    data_processor,
    image_processor,
    text_processor,
    validation_service,
    validation_worker,
)
from agents.sdk import AgentDefinition

# agent_id -> (example module, cost), in the seed's order
SEED = [
    ("data_agent_1", data_processor, 2.0),
    ("image_agent_2", image_processor, 3.0),
    ("text_agent_3", text_processor, 1.5),
    ("data_agent_4", data_processor, 2.5),
    ("image_agent_5", image_processor, 2.8),
    ("calc_service", calculation_service, 1.0),
    ("validation_service", validation_service, 1.0),
    ("worker_1", computation_worker, 1.0),
    ("worker_2", analysis_worker, 1.0),
    ("worker_3", validation_worker, 1.0),
]


def capability_bodies(definition: AgentDefinition, cost: float | None = None) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "description": c.description,
            "input_schema": c.input_schema,
            "output_schema": c.output_schema,
            "cost": c.cost if cost is None else cost,
        }
        for c in definition.capabilities.values()
    ]


def seed_agents() -> list[dict[str, Any]]:
    bodies = []
    for agent_id, module, cost in SEED:
        definition = module.agent
        bodies.append(
            {
                "agent_id": agent_id,
                "name": f"{definition.name} ({agent_id})",
                "description": definition.description,
                "capabilities": capability_bodies(definition, cost),
                "tags": list(definition.tags),
                "metadata": {**definition.metadata, "example": module.__name__},
                "max_concurrency": 2,
            }
        )
    return bodies


def validation_worker_capability() -> dict[str, Any]:
    """The coordination worker's validation contract (the demo shows it clash under the name 'validation')."""
    return capability_bodies(validation_worker.agent)[0]
