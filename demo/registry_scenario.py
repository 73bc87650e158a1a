"""The registry scenario: register the seed's agents, heartbeat, discover, go stale, revive."""

from __future__ import annotations

import time
from collections.abc import Callable

from demo.client import Api, ApiError
from demo.seed_agents import seed_agents, validation_worker_capability
from masplatform.tables import table

Say = Callable[[str], None]


def run(api: Api, say: Say, *, stale_timeout: float, silent: str = "image_agent_5") -> dict[str, str]:
    """Runs through the API as staff and as each agent; returns the agents' tokens."""
    say("\n== 1. The seed's agents register themselves (POST /api/agents/)")
    sync_contracts(api, say)
    tokens: dict[str, str] = {}
    rows = []
    for body in seed_agents():
        agent = api.post("/api/agents/", body)
        tokens[agent["agent_id"]] = agent["token"]
        rows.append((agent["agent_id"], [c["name"] for c in agent["capabilities"]], agent["tags"], agent["state"]))
    say(table(["agent", "capabilities", "tags", "state"], rows))

    say("\nA capability is one contract shared by every agent offering it. The seed's Exercise 3 worker")
    say("calls its capability 'validation', which clashes with the validation service's contract:")
    clash = {
        "agent_id": "worker_clash",
        "name": "clash",
        "capabilities": [{**validation_worker_capability(), "name": "validation"}],
    }
    try:
        api.post("/api/agents/", clash)
        say("  (unexpectedly accepted)")
    except ApiError as exc:
        say(f"  HTTP {exc.status}: {exc.body['detail']}")

    say("\n== 2. Every agent heartbeats with its own token (POST /api/agents/{id}/heartbeat/)")
    loads = {agent_id: round(0.1 + 0.08 * i, 2) for i, agent_id in enumerate(tokens)}
    for agent_id, token in tokens.items():
        beat = api.as_(f"Agent {token}").post(
            f"/api/agents/{agent_id}/heartbeat/",
            {"cpu_load": loads[agent_id], "health_score": 1.0 - loads[agent_id] / 4},
        )
    say(
        f"  {len(tokens)} heartbeats; the platform answers with the next one due every {beat['heartbeat_interval']:.0f} s"
    )
    print_discovery(api, say)

    say(f"\n== 3. {silent} stops heartbeating; the beat sweep takes it offline after {stale_timeout:.0f} s")
    start = time.monotonic()
    while True:
        for agent_id, token in tokens.items():
            if agent_id != silent:
                api.as_(f"Agent {token}").post(f"/api/agents/{agent_id}/heartbeat/", {"cpu_load": loads[agent_id]})
        state = api.get(f"/api/agents/{silent}/")["state"]
        elapsed = time.monotonic() - start
        say(f"  t={elapsed:4.1f}s  {silent}: {state}")
        if state == "offline":
            break
        if elapsed > stale_timeout * 6 + 30:
            raise RuntimeError(f"{silent} did not go offline; is beat running? see the logs")
        time.sleep(1.0)
    event = api.get(f"/api/agent-events/?agent={silent}&kind=went_offline")["results"][0]
    say(
        f"  event: {event['kind']} {event['from_state']} -> {event['to_state']} at {event['at']} ({event['details']['reason']})"
    )
    live = [a["agent_id"] for a in api.get("/api/agents/?available=true")["results"]]
    say(f"  available now: {', '.join(live)}")

    say(f"\n== 4. A heartbeat from {silent} revives it")
    beat = api.as_(f"Agent {tokens[silent]}").post(f"/api/agents/{silent}/heartbeat/", {"cpu_load": 0.2})
    say(f"  revived={beat['revived']} state={beat['state']}")

    say("\n== 5. Registry statistics (GET /api/agents/stats/) and capabilities (GET /api/capabilities/)")
    stats = api.get("/api/agents/stats/")
    bands = stats["live_agents_by_health"]
    say(
        table(
            [
                "total",
                "idle",
                "busy",
                "error",
                "offline",
                "healthy/degraded/unhealthy",
                "avg health",
                "avg load",
                "seen last min",
            ],
            [
                (
                    stats["total_agents"],
                    *(stats["by_state"][s] for s in ("idle", "busy", "error", "offline")),
                    f"{bands['healthy']}/{bands['degraded']}/{bands['unhealthy']}",
                    stats["average_health"],
                    stats["average_cpu_load"],
                    stats["agents_seen_last_minute"],
                )
            ],
        )
    )
    say("  live agents per tag: " + ", ".join(f"{t}={n}" for t, n in stats["live_agents_per_tag"].items()))
    caps = api.get("/api/capabilities/?page_size=100")["results"]
    say(
        table(
            ["capability", "live agents", "lowest cost"],
            [(c["name"], c["live_agents"], c["lowest_cost"]) for c in caps],
        )
    )
    return tokens


def sync_contracts(api: Api, say: Say) -> None:
    """A database from an older demo may hold older contracts: staff bring them up to date (PUT)."""
    seen = set()
    for body in seed_agents():
        for cap in body["capabilities"]:
            if cap["name"] in seen:
                continue
            seen.add(cap["name"])
            try:
                current = api.get(f"/api/capabilities/{cap['name']}/")
            except ApiError as exc:
                if exc.status == 404:
                    continue
                raise
            wanted = {k: cap[k] for k in ("description", "input_schema", "output_schema")}
            if any(current[k] != v for k, v in wanted.items()):
                api.request("PUT", f"/api/capabilities/{cap['name']}/", {"name": cap["name"], **wanted})
                say(f"  (updated the contract of '{cap['name']}' left by an older demo: PUT /api/capabilities/)")


def print_discovery(api: Api, say: Say) -> None:
    for query, what in [
        ("capability=process_data", "who can process data (health desc, load asc)"),
        ("capability=process_image&max_cpu_load=0.5", "image processors under 50% load"),
        ("tag=coordination&available=true", "available coordination workers"),
    ]:
        rows = api.get(f"/api/agents/?{query}")["results"]
        say(f"\n  GET /api/agents/?{query}   ({what})")
        say(
            table(
                ["agent", "state", "health", "cpu load", "cost"],
                [
                    (
                        a["agent_id"],
                        a["state"],
                        a["health_score"],
                        a["cpu_load"],
                        ", ".join(f"{c['name']}={c['cost']}" for c in a["capabilities"]),
                    )
                    for a in rows
                ],
            )
        )
