"""Shared bits of the example agents: the simulated processing time and schema helpers."""

from __future__ import annotations

import os
import random
import time
from typing import Any

OBJECT = "object"


def simulate_work(ctx: Any, steps: int = 4) -> float:
    """Sleep MASP_EXAMPLE_DELAY seconds in steps, reporting progress and honouring cancel. Returns seconds."""
    delay = float(os.environ.get("MASP_EXAMPLE_DELAY", "0.05"))
    started = time.monotonic()
    for step in range(steps):
        ctx.raise_if_cancelled()
        time.sleep(delay / steps)
        if delay >= 0.5:  # progress is worth a write only for calls that take a while
            ctx.report_progress((step + 1) / steps)
    return round(time.monotonic() - started, 4)


def request_delay() -> float:
    """The simulated processing time of a request handled over the bus: MASP_EXAMPLE_DELAY seconds."""
    delay = float(os.environ.get("MASP_EXAMPLE_DELAY", "0.05"))
    time.sleep(delay)
    return delay


def rng(*parts: Any) -> random.Random:
    """A generator seeded by the input, so the same input gives the same output."""
    return random.Random("/".join(str(p) for p in parts))


def processor_schemas(counter: str, items: str, item_schema: dict[str, Any]) -> tuple[dict, dict]:
    input_schema = {
        "type": OBJECT,
        "properties": {
            "task_data": {
                "type": OBJECT,
                "properties": {
                    "id": {"type": "string"},
                    counter: {"type": "integer", "minimum": 0, "maximum": 100000},
                    items: {"type": "array", "items": item_schema},
                },
            },
            "priority": {"type": "integer"},
        },
        "required": ["task_data"],
    }
    output_schema = {
        "type": OBJECT,
        "properties": {
            "task_id": {"type": ["string", "null"]},
            "result": {"type": OBJECT},
            "processing_time": {"type": "number"},
            "agent_id": {"type": "string"},
        },
        "required": ["result", "processing_time", "agent_id"],
    }
    return input_schema, output_schema
