"""Exercises 1 and 2 through real agents: capability calls from the API, run by agent workers."""

from __future__ import annotations

from collections.abc import Callable

from demo.client import Api
from masplatform.tables import table

Say = Callable[[str], None]

# (agent_id, example module) run as real Celery workers by `manage.py run_agent`
REAL_AGENTS = [
    ("data_agent_1", "agents.examples.data_processor"),
    ("data_agent_4", "agents.examples.data_processor"),
    ("image_agent_2", "agents.examples.image_processor"),
    ("image_agent_5", "agents.examples.image_processor"),
    ("text_agent_3", "agents.examples.text_processor"),
    ("calc_service", "agents.examples.calculation_service"),
    ("validation_service", "agents.examples.validation_service"),
]

EXERCISE_1 = [
    ("data_ingestion", "process_data", {"task_data": {"id": "data_001", "record_count": 1000}, "priority": 1}),
    ("image_processing", "process_image", {"task_data": {"id": "img_001", "image_count": 50}, "priority": 2}),
    ("text_analysis", "process_text", {"task_data": {"id": "text_001", "document_count": 200}, "priority": 1}),
]


def summary(output: dict | None) -> str:
    if not output:
        return "-"
    result = output.get("result", output)
    keys = [k for k in result if k not in ("timestamp",)][:4]
    return ", ".join(f"{k}={result[k]}" for k in keys)


def call(api: Api, capability: str, payload: dict, wait: int = 20, priority: int = 5) -> dict:
    return api.post(
        f"/api/invocations/?wait={wait}", {"capability": capability, "input": payload, "priority": priority}
    )


def run(api: Api, say: Say) -> None:
    say("\n== 6. Exercise 1: the seed's tasks as capability calls (POST /api/invocations/?wait=20)")
    rows = []
    for task, capability, payload in EXERCISE_1:
        inv = call(api, capability, payload)
        rows.append((task, capability, inv["agent"], inv["status"], _ms(inv), summary(inv["output"])))
    say(table(["task", "capability", "agent", "status", "ms", "result"], rows))

    say("\n  A burst of 24 calls (no wait): competing consumers spread them over the agents with free capacity")
    ids = []
    for i in range(8):
        for capability, key, counter in (
            ("process_data", "record_count", 200 + i),
            ("process_image", "image_count", 5 + i),
            ("process_text", "document_count", 20 + i),
        ):
            ids.append(
                api.post(
                    "/api/invocations/",
                    {"capability": capability, "input": {"task_data": {"id": f"burst-{capability}-{i}", key: counter}}},
                )["id"]
            )
    outcomes = [api.get(f"/api/invocations/{pk}/?wait=20") for pk in ids]
    done = sum(1 for o in outcomes if o["status"] == "succeeded")
    say(f"  {done} of {len(ids)} succeeded")

    say("\n== 7. Exercise 2: the calculation and validation services answer")
    rows = []
    for capability, payload in (
        ("calculation", {"a": 10, "b": 5}),
        ("calculation", {"a": 2.5, "b": -4}),
        ("validation", {"data": "hello agents"}),
        ("validation", {"data": ""}),
    ):
        inv = call(api, capability, payload)
        rows.append((capability, payload, inv["agent"], inv["status"], inv["output"]))
    say(table(["capability", "input", "agent", "status", "output"], rows))
    bad = None
    try:
        call(api, "calculation", {"a": "ten"})
    except Exception as exc:
        bad = exc
    say(f"  bad input is refused before anything is queued: {bad}")

    say("\n== 8. Per-agent load (GET /api/agents/?tag=processor and ?tag=service)")
    agents = (
        api.get("/api/agents/?tag=processor&page_size=50")["results"]
        + api.get("/api/agents/?tag=service&page_size=50")["results"]
    )
    say(
        table(
            ["agent", "state", "calls done", "failed", "avg ms", "in flight", "cpu load"],
            [
                (
                    a["agent_id"],
                    a["state"],
                    a["calls_completed"],
                    a["calls_failed"],
                    a["avg_response_time_ms"],
                    f"{a['in_flight']}/{a['max_concurrency']}",
                    a["cpu_load"],
                )
                for a in agents
            ],
        )
    )
    say("\n  Fleet figures per capability (GET /api/capabilities/{name}/)")
    rows = []
    for name in ("process_data", "process_image", "process_text", "calculation", "validation"):
        fleet = api.get(f"/api/capabilities/{name}/")["fleet"]
        rows.append(
            (
                name,
                fleet["live_agents"],
                fleet["queue_depth"],
                fleet["in_flight"],
                fleet["finished"],
                fleet["success_rate"],
                fleet["p50_ms"],
                fleet["p95_ms"],
            )
        )
    say(
        table(
            ["capability", "live agents", "queue depth", "in flight", "finished 1h", "success", "p50 ms", "p95 ms"],
            rows,
        )
    )


def _ms(inv: dict) -> str:
    from datetime import datetime

    if not (inv.get("started_at") and inv.get("finished_at")):
        return "-"
    started = datetime.fromisoformat(inv["started_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(inv["finished_at"].replace("Z", "+00:00"))
    return f"{(finished - started).total_seconds() * 1000:.0f}"
