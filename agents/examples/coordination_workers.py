"""Shared code of the seed's coordination workers (Exercise 3): computation, analysis, validation."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.examples._common import rng, simulate_work


def schemas(field: str) -> tuple[dict, dict]:
    return (
        {
            "type": "object",
            "properties": {
                field: {"type": "integer", "minimum": 0, "maximum": 10_000_000},
                "task_name": {"type": "string"},
            },
        },
        {
            "type": "object",
            "properties": {"worker_id": {"type": "string"}, "capability": {"type": "string"}},
            "required": ["worker_id", "capability"],
        },
    )


def base(ctx, seconds: float) -> dict:
    return {
        "worker_id": ctx.agent_id,
        "capability": ctx.capability,
        "processing_time": seconds,
        "timestamp": datetime.now(UTC).isoformat(),
    }


def computation(data, ctx):
    size = data.get("data_size", 1000)
    seconds = simulate_work(ctx)
    return {
        **base(ctx, seconds),
        "computed_value": size * (size - 1) // 2,
        "operations_performed": size,
        "efficiency_score": round(rng(size).uniform(0.8, 1.0), 4),
    }


def analysis(data, ctx):
    records = data.get("records", 500)
    r = rng(data.get("task_name"), records)
    values = [r.randint(0, 99) for _ in range(records)]
    seconds = simulate_work(ctx)
    return {
        **base(ctx, seconds),
        "records_analyzed": records,
        "patterns_found": len(set(v // 10 for v in values)),
        "confidence_score": round(min(0.95, 0.7 + records / 4000), 4),
    }


def validate_items(data, ctx):
    items = data.get("items", 200)
    r = rng(data.get("task_name"), items)
    valid = sum(1 for _ in range(items) if r.random() < 0.92)
    seconds = simulate_work(ctx)
    return {
        **base(ctx, seconds),
        "items_validated": items,
        "valid_items": valid,
        "validation_rate": round(valid / items, 4) if items else 1.0,
        "errors_found": items - valid,
    }
