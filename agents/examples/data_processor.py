"""The seed's data processor: ``process_data`` summarises records and flags anomalies."""

from __future__ import annotations

import statistics

from agents.examples._common import processor_schemas, rng, simulate_work
from agents.sdk import AgentDefinition

agent = AgentDefinition(
    "data_agent",
    name="DataAgent",
    description="Processes data tasks",
    tags=("data", "processor"),
    metadata={"specialization": "data"},
)
INPUT, OUTPUT = processor_schemas("record_count", "records", {"type": ["number", "null"]})


@agent.capability(
    "process_data", description="Process data related tasks", input_schema=INPUT, output_schema=OUTPUT, cost=2.0
)
def process_data(data, ctx):
    task = data["task_data"]
    records = task.get("records")
    if records is None:  # the seed sends only a count: make that many values, the same for the same task
        r = rng(task.get("id"), task.get("record_count", 100))
        records = [None if r.random() < 0.03 else r.gauss(100, 15) for _ in range(task.get("record_count", 100))]
    values = [v for v in records if v is not None]
    mean = statistics.fmean(values) if values else 0.0
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    anomalies = sum(1 for v in values if spread and abs(v - mean) > 3 * spread)
    seconds = simulate_work(ctx)
    return {
        "task_id": task.get("id"),
        "result": {
            "processed_records": len(records),
            "data_quality_score": round(len(values) / max(len(records), 1), 4),
            "anomalies_detected": anomalies,
            "mean": round(mean, 4),
            "stdev": round(spread, 4),
        },
        "processing_time": seconds,
        "agent_id": ctx.agent_id,
    }
