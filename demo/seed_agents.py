"""The seed's agents, as registration bodies (POST /api/agents/).

Exercise 1: two data, two image and one text processor (the seed's
``specializations`` with their processing times as costs); Exercise 2: the
calculation and validation services; Exercise 3: three coordination workers.
The seed's Exercise 3 names a worker capability ``validation`` that clashes
with the validation service's contract; here it is ``validation_worker``.
"""

from __future__ import annotations

from typing import Any

OBJ = "object"


def _processor(spec: str, counter: str) -> dict[str, Any]:
    return {
        "name": f"process_{spec}",
        "description": f"Process {spec} related tasks",
        "input_schema": {
            "type": OBJ,
            "properties": {
                "task_data": {
                    "type": OBJ,
                    "properties": {"id": {"type": "string"}, counter: {"type": "integer", "minimum": 0}},
                },
                "priority": {"type": "integer"},
            },
            "required": ["task_data"],
        },
        "output_schema": {
            "type": OBJ,
            "properties": {"result": {"type": OBJ}, "processing_time": {"type": "number"}},
            "required": ["result"],
        },
    }


PROCESSORS = {
    "data": _processor("data", "record_count"),
    "image": _processor("image", "image_count"),
    "text": _processor("text", "document_count"),
}

CALCULATION = {
    "name": "calculation",
    "description": "Sum and product of two numbers",
    "input_schema": {
        "type": OBJ,
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
    "output_schema": {
        "type": OBJ,
        "properties": {"sum": {"type": "number"}, "product": {"type": "number"}},
        "required": ["sum", "product"],
    },
}
VALIDATION = {
    "name": "validation",
    "description": "Is the string non-empty, and how long is it",
    "input_schema": {"type": OBJ, "properties": {"data": {"type": "string"}}, "required": ["data"]},
    "output_schema": {
        "type": OBJ,
        "properties": {"valid": {"type": "boolean"}, "length": {"type": "integer"}},
        "required": ["valid", "length"],
    },
}


def _worker_capability(name: str, field: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"Distributed {name.replace('_', ' ')} share of a coordinated task",
        "input_schema": {"type": OBJ, "properties": {field: {"type": "integer", "minimum": 0}}},
        "output_schema": {"type": OBJ, "properties": {"worker_id": {"type": "string"}}},
    }


WORKER_CAPS = {
    "computation": _worker_capability("computation", "data_size"),
    "analysis": _worker_capability("analysis", "records"),
    "validation_worker": _worker_capability("validation_worker", "items"),
}


def seed_agents() -> list[dict[str, Any]]:
    agents = []
    for i, (spec, cost) in enumerate([("data", 2.0), ("image", 3.0), ("text", 1.5), ("data", 2.5), ("image", 2.8)]):
        agents.append(
            {
                "agent_id": f"{spec}_agent_{i + 1}",
                "name": f"{spec.title()}Agent {i + 1}",
                "description": f"Processes {spec} tasks",
                "capabilities": [{**PROCESSORS[spec], "cost": cost}],
                "tags": [spec, "processor"],
                "metadata": {"specialization": spec, "processing_time": cost},
                "max_concurrency": 2,
            }
        )
    agents.append(
        {
            "agent_id": "calc_service",
            "name": "Calculation service",
            "capabilities": [CALCULATION],
            "tags": ["service"],
            "metadata": {"exercise": 2},
        }
    )
    agents.append(
        {
            "agent_id": "validation_service",
            "name": "Validation service",
            "capabilities": [VALIDATION],
            "tags": ["service"],
            "metadata": {"exercise": 2},
        }
    )
    for i, cap in enumerate(WORKER_CAPS):
        agents.append(
            {
                "agent_id": f"worker_{i + 1}",
                "name": f"Worker {i + 1} ({cap})",
                "capabilities": [WORKER_CAPS[cap]],
                "tags": ["worker", "coordination"],
                "metadata": {"exercise": 3},
            }
        )
    return agents
