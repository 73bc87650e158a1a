"""Exercises 1 (the complex workflow) and 3 (distributed coordination) as workflows, through the API."""

from __future__ import annotations

import time
from collections.abc import Callable

from demo.client import Api, ApiError
from demo.workflows import distributed_coordination_workflow, seed_complex_workflow
from masplatform.tables import table

Say = Callable[[str], None]
COORDINATION_WORKERS = ["compute-1", "compute-2", "compute-3"]
SHARE_SECONDS = 4.0  # the coordination workers' simulated work, long enough to kill one mid-share


def define(api: Api, body: dict) -> dict:
    """Create the definition, or replace the one a previous demo run left."""
    existing = api.get(f"/api/workflows/?name={body['name'].replace(' ', '+')}")["results"]
    for workflow in existing:
        if workflow["name"] == body["name"]:
            return api.request("PUT", f"/api/workflows/{workflow['id']}/", body)
    return api.post("/api/workflows/", body)


def follow(
    api: Api, say: Say, execution_id: str, timeout: float = 120, on_tick: Callable[[dict], None] | None = None
) -> dict:
    """Print each change of progress until the execution finishes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        data = api.get(f"/api/executions/{execution_id}/")
        p = data["progress"]
        line = (
            f"  {data['status']:<9} {p['percent']:5.1f}%  running {p['running']}  succeeded {p['succeeded']}"
            f"  failed {p['failed']}  skipped {p['skipped']}  pending {p['pending']}"
        )
        running = [t["key"] for t in data["tasks"] if t["status"] == "running"]
        if running:
            line += f"  (now: {', '.join(running)})"
        if line != last:
            say(line)
            last = line
        if on_tick:
            on_tick(data)
        if data["status"] not in ("pending", "running", "paused") or time.monotonic() > deadline:
            return data
        time.sleep(0.3)


def task_table(data: dict) -> str:
    rows = []
    for t in data["tasks"]:
        agents = sorted({c["agent"] for c in t["calls"] if c["agent"]}) or ([t["agent"]] if t["agent"] else [])
        rows.append(
            (
                t["key"],
                t["status"],
                ", ".join(agents) or "-",
                t["attempts"],
                f"{t['duration_seconds']:.2f}" if t["duration_seconds"] is not None else "-",
                _brief(t["output"]),
            )
        )
    return table(["task", "status", "agent(s)", "attempts", "seconds", "output"], rows)


def _brief(output) -> str:
    if not isinstance(output, dict):
        return "-"
    result = output.get("result", output)
    if "results" in result:
        return f"{len(result['results'])} outputs: " + ", ".join(str(r.get("worker_id")) for r in result["results"])
    keys = [k for k in result if k not in ("timestamp", "key_topics", "worker_id", "capability")][:4]
    return ", ".join(f"{k}={result[k]}" for k in keys)


def run_complex(api: Api, say: Say, base: str) -> str:
    say("\n== 9. Exercise 1 as a workflow: the seed's complex workflow (POST /api/workflows/, then /execute/)")
    workflow = define(api, seed_complex_workflow())
    say(
        f"  definition {workflow['id']} '{workflow['name']}': "
        + "; ".join(f"{t['key']} <- {', '.join(t['depends_on']) or 'start'}" for t in workflow["tasks"])
    )
    try:
        api.post(
            "/api/workflows/",
            {
                **seed_complex_workflow("broken copy"),
                "tasks": [
                    {"key": "a", "capability": "process_data", "input": {"task_data": {}}, "depends_on": ["b"]},
                    {"key": "b", "capability": "process_data", "input": {"task_data": {}}, "depends_on": ["a"]},
                ],
            },
        )
    except ApiError as exc:
        say(f"  a definition with a cycle is refused (400): {exc.body.get('tasks')}")
    execution = api.post(f"/api/workflows/{workflow['id']}/execute/", {"context": {"requested_by": "make demo"}})
    data = follow(api, say, execution["id"])
    say(task_table(data))
    s = data["summary"]
    say(
        f"  {data['status']} in {s['duration_seconds']} s; critical path {' -> '.join(s['critical_path'])}"
        f" ({s['critical_path_seconds']} s); slowest task {s['slowest_task']}"
    )
    say(f"  admin: {base}/admin/workflows/execution/{execution['id']}/change/")
    return execution["id"]


def run_coordination(api: Api, say: Say, base: str, kill: Callable[[str], None], restart: Callable[[str], None]) -> str:
    say(
        "\n== 10. Exercise 3 as a workflow: distributed coordination"
        f" (each task needs {len(COORDINATION_WORKERS)} distinct workers, results aggregated)"
    )
    workflow = define(api, distributed_coordination_workflow(agents=len(COORDINATION_WORKERS)))
    execution = api.post(f"/api/workflows/{workflow['id']}/execute/", {})
    state = {"killed": None, "restarted": False}

    def chaos(data: dict) -> None:
        first = data["tasks"][0]
        if state["killed"] is None:
            running = [c for c in first["calls"] if c["status"] == "running" and c["agent"]]
            if len(running) == len(COORDINATION_WORKERS):
                victim = running[1]["agent"]
                say(f"  killing {victim} (SIGKILL) in the middle of its share")
                kill(victim)
                state["killed"] = victim
        elif not state["restarted"]:
            lost = any(c["status"] == "queued" and c["pinned_agent"] == state["killed"] for c in first["calls"])
            if lost:
                say(
                    f"  the stale sweep took {state['killed']} offline and re-queued its share;"
                    f" restarting {state['killed']}"
                )
                restart(state["killed"])
                state["restarted"] = True

    data = follow(api, say, execution["id"], timeout=180, on_tick=chaos)
    say(task_table(data))
    first = data["tasks"][0]
    say(f"  aggregated (average) output of '{first['key']}': {first['output']}")
    say(f"  admin: {base}/admin/workflows/execution/{execution['id']}/change/")
    return execution["id"]
