"""The seed's image processor: ``process_image`` 'detects' objects in each image (deterministically)."""

from __future__ import annotations

from agents.examples._common import processor_schemas, rng, simulate_work
from agents.sdk import AgentDefinition

agent = AgentDefinition(
    "image_agent",
    name="ImageAgent",
    description="Processes image tasks",
    tags=("image", "processor"),
    metadata={"specialization": "image"},
)
INPUT, OUTPUT = processor_schemas("image_count", "images", {"type": "string"})


@agent.capability(
    "process_image", description="Process and analyse images", input_schema=INPUT, output_schema=OUTPUT, cost=3.0
)
def process_image(data, ctx):
    task = data["task_data"]
    images = task.get("images") or [f"{task.get('id', 'img')}-{i}" for i in range(task.get("image_count", 10))]
    detections = []
    for name in images:
        r = rng(name)
        detections.append((r.randint(0, 6), r.uniform(0.6, 0.99)))
    seconds = simulate_work(ctx)
    objects = sum(n for n, _ in detections)
    confidence = sum(c * n for n, c in detections) / objects if objects else 0.0
    return {
        "task_id": task.get("id"),
        "result": {
            "images_processed": len(images),
            "objects_detected": objects,
            "confidence_score": round(confidence, 4),
        },
        "processing_time": seconds,
        "agent_id": ctx.agent_id,
    }
