"""Discovery, heartbeats, state changes, unregistering, stats, capabilities and events over the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent, AgentEvent, Capability
from tests.factories import AgentFactory, CapabilityFactory

pytestmark = pytest.mark.django_db


def ids(response):
    assert response.status_code == 200, response.content
    return [a["agent_id"] for a in response.json()["results"]]


@pytest.fixture
def fleet():
    AgentFactory(agent_id="data-1", health_score=0.9, cpu_load=0.5, offers={"process_data": 2.0}, tag_names=["data"])
    AgentFactory(
        agent_id="data-2",
        health_score=0.9,
        cpu_load=0.1,
        offers={"process_data": 2.5, "process_text": 1},
        tag_names=["data", "text"],
    )
    AgentFactory(agent_id="image-1", health_score=0.5, cpu_load=0.2, offers={"process_image": 3.0}, tag_names=["image"])
    AgentFactory(agent_id="text-1", health_score=1.0, cpu_load=0.9, offers={"process_text": 1.5}, in_flight=1)
    AgentFactory(agent_id="gone-1", state="offline", offers={"process_data": 0.5})
    AgentFactory(agent_id="unreg-1", state="offline", unregistered_at=timezone.now(), offers={"process_data": 0.1})


def test_discovery_orders_by_health_then_load_and_hides_unregistered(user_client, fleet):
    assert ids(user_client.get("/api/agents/")) == ["gone-1", "text-1", "data-2", "data-1", "image-1"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("capability=process_data", ["gone-1", "data-2", "data-1"]),
        ("capability=process_data&capability=process_text", ["data-2"]),
        ("capability=process_nothing", []),
        ("tag=data", ["data-2", "data-1"]),
        ("state=offline", ["gone-1"]),
        ("min_health=0.9", ["gone-1", "text-1", "data-2", "data-1"]),
        ("max_cpu_load=0.2", ["gone-1", "data-2", "image-1"]),
        ("available=true", ["data-2", "data-1", "image-1"]),
        ("available=true&capability=process_text", ["data-2"]),
        ("search=image", ["image-1"]),
        ("include_unregistered=true&capability=process_data", ["gone-1", "unreg-1", "data-2", "data-1"]),
    ],
)
def test_discovery_filters(user_client, fleet, query, expected):
    assert ids(user_client.get(f"/api/agents/?{query}")) == expected


def test_discovery_rejects_a_bad_filter_value(user_client, fleet):
    response = user_client.get("/api/agents/?state=sleeping")
    assert response.status_code == 400
    assert "state" in response.json()


def test_detail_and_unknown_agent(user_client, fleet):
    data = user_client.get("/api/agents/data-2/").json()
    assert data["capabilities"] == [
        {"name": "process_data", "cost": 2.5},
        {"name": "process_text", "cost": 1.0},
    ] or sorted(c["name"] for c in data["capabilities"]) == ["process_data", "process_text"]
    assert data["tags"] == ["data", "text"]
    assert user_client.get("/api/agents/unreg-1/").json()["unregistered_at"] is not None
    response = user_client.get("/api/agents/nobody/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


def test_heartbeat_records_figures_and_says_when_the_next_is_due(agent_client):
    agent = AgentFactory(agent_id="hb-1", last_heartbeat_at=timezone.now() - timedelta(seconds=20))
    before = timezone.now()
    response = agent_client(agent).post(
        "/api/agents/hb-1/heartbeat/", {"cpu_load": 0.25, "health_score": 0.8, "in_flight": 1}, format="json"
    )
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["state"] == "idle" and data["revived"] is False
    assert data["heartbeat_interval"] == 30.0
    agent.refresh_from_db()
    assert agent.last_heartbeat_at >= before
    assert (agent.cpu_load, agent.health_score, agent.in_flight) == (0.25, 0.8, 1)
    assert timezone.datetime.fromisoformat(data["next_heartbeat_due"]) > agent.last_heartbeat_at


def test_heartbeat_revives_an_agent_the_sweep_took_offline(agent_client):
    agent = AgentFactory(agent_id="hb-2", state="offline")
    response = agent_client(agent).post("/api/agents/hb-2/heartbeat/", {}, format="json")
    assert response.json()["revived"] is True
    agent.refresh_from_db()
    assert agent.state == "idle"
    event = AgentEvent.objects.get(agent=agent, kind="revived")
    assert (event.from_state, event.to_state) == ("offline", "idle")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"cpu_load": 1.5}, "cpu_load"),
        ({"health_score": -0.1}, "health_score"),
        ({"state": "asleep"}, "state"),
        ({"in_flight": -1}, "in_flight"),
        ({"cpu_load": "high"}, "cpu_load"),
    ],
)
def test_bad_heartbeat_is_400_and_changes_nothing(agent_client, payload, field):
    agent = AgentFactory(agent_id="hb-3", cpu_load=0.3)
    stamp = agent.last_heartbeat_at
    response = agent_client(agent).post("/api/agents/hb-3/heartbeat/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    agent.refresh_from_db()
    assert (agent.cpu_load, agent.last_heartbeat_at) == (0.3, stamp)


def test_heartbeat_with_a_state_not_allowed_is_409(agent_client):
    agent = AgentFactory(agent_id="hb-4", state="error")
    response = agent_client(agent).post("/api/agents/hb-4/heartbeat/", {"state": "busy"}, format="json")
    assert response.status_code == 409
    assert "is error" in response.json()["detail"]


def test_status_change_records_an_event_and_refuses_disallowed_moves(agent_client):
    agent = AgentFactory(agent_id="st-1")
    client = agent_client(agent)
    assert client.post("/api/agents/st-1/status/", {"state": "busy"}, format="json").json()["state"] == "busy"
    assert client.post("/api/agents/st-1/status/", {"state": "error"}, format="json").status_code == 200
    response = client.post("/api/agents/st-1/status/", {"state": "busy"}, format="json")
    assert response.status_code == 409
    assert "'st-1' is error" in response.json()["detail"]
    assert Agent.objects.get(agent_id="st-1").state == "error"
    kinds = list(AgentEvent.objects.filter(agent=agent).order_by("id").values_list("from_state", "to_state"))
    assert kinds == [("idle", "busy"), ("busy", "error")]
    assert client.post("/api/agents/st-1/status/", {"state": "sleepy"}, format="json").status_code == 400


def test_unregister_hides_from_discovery_keeps_history_and_refuses_heartbeats(staff_client, agent_client):
    agent = AgentFactory(agent_id="un-1", offers={"process_data": 1})
    client = agent_client(agent)
    assert client.delete("/api/agents/un-1/").status_code == 204
    assert "un-1" not in ids(staff_client.get("/api/agents/"))
    assert staff_client.get("/api/agents/un-1/").json()["unregistered_at"]
    assert AgentEvent.objects.filter(agent=agent, kind="unregistered").exists()
    response = client.post("/api/agents/un-1/heartbeat/", {}, format="json")
    assert response.status_code == 401 and "unregistered" in response.json()["detail"]  # its token is revoked
    response = staff_client.post("/api/agents/un-1/heartbeat/", {}, format="json")
    assert response.status_code == 409 and "unregistered" in response.json()["detail"]
    assert staff_client.delete("/api/agents/un-1/").status_code == 409
    assert staff_client.delete("/api/agents/nobody/").status_code == 404


def test_stats(user_client, fleet):
    data = user_client.get("/api/agents/stats/").json()
    assert data["total_agents"] == 5
    assert data["by_state"] == {"idle": 4, "busy": 0, "error": 0, "draining": 0, "offline": 1}
    assert data["live_agents"] == 4
    assert data["unregistered_agents"] == 1
    assert data["live_agents_per_capability"] == {"process_data": 2, "process_image": 1, "process_text": 2}
    assert data["live_agents_per_tag"] == {"data": 2, "image": 1, "text": 1}
    assert data["live_agents_by_health"] == {"healthy": 3, "degraded": 1, "unhealthy": 0}
    assert data["average_health"] == pytest.approx((0.9 + 0.9 + 0.5 + 1.0) / 4)
    assert data["agents_seen_last_minute"] == 4


def test_capability_list_counts_live_agents_and_lowest_live_cost(user_client, fleet):
    rows = {c["name"]: c for c in user_client.get("/api/capabilities/").json()["results"]}
    assert (rows["process_data"]["live_agents"], rows["process_data"]["lowest_cost"]) == (2, 2.0)
    assert (rows["process_text"]["live_agents"], rows["process_text"]["lowest_cost"]) == (2, 1.0)


def test_staff_change_a_contract_and_bad_schemas_are_400(staff_client):
    CapabilityFactory(name="calculation", input_schema={"type": "object"})
    new = {"type": "object", "required": ["a"]}
    response = staff_client.patch("/api/capabilities/calculation/", {"input_schema": new}, format="json")
    assert response.status_code == 200, response.content
    assert Capability.objects.get(name="calculation").input_schema == new
    response = staff_client.put(
        "/api/capabilities/calculation/", {"name": "calculation", "input_schema": {"type": 12}}, format="json"
    )
    assert response.status_code == 400 and "input_schema" in response.json()
    assert Capability.objects.get(name="calculation").input_schema == new
    assert staff_client.patch("/api/capabilities/nothing/", {"description": "x"}, format="json").status_code == 404


def test_create_and_delete_capability(staff_client):
    response = staff_client.post(
        "/api/capabilities/", {"name": "summarise", "input_schema": {"type": "object"}}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["live_agents"] == 0
    assert staff_client.post("/api/capabilities/", {"name": "summarise"}, format="json").status_code == 409
    AgentFactory(agent_id="sum-1", offers={"summarise": 1})
    response = staff_client.delete("/api/capabilities/summarise/")
    assert response.status_code == 409 and "sum-1" in response.json()["detail"]
    Agent.objects.filter(agent_id="sum-1").update(unregistered_at=timezone.now())
    assert staff_client.delete("/api/capabilities/summarise/").status_code == 204


def test_agent_events_filters(user_client, agent_client):
    a = AgentFactory(agent_id="ev-1")
    AgentFactory(agent_id="ev-2")
    agent_client(a).post("/api/agents/ev-1/status/", {"state": "busy"}, format="json")
    agent_client(a).delete("/api/agents/ev-1/")
    rows = user_client.get("/api/agent-events/?agent=ev-1").json()["results"]
    assert [r["kind"] for r in rows] == ["unregistered", "state_changed"]
    assert [r["kind"] for r in user_client.get("/api/agent-events/?kind=unregistered").json()["results"]] == [
        "unregistered"
    ]
    future = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert user_client.get("/api/agent-events/", {"since": future}).json()["results"] == []
    assert user_client.get("/api/agent-events/?since=yesterday").status_code == 400


@pytest.mark.parametrize(
    ("query", "status", "expected"),
    [
        ("available=1", 200, ["data-2", "data-1", "image-1"]),
        ("available=yes&capability=process_text", 200, ["data-2"]),
        ("available=maybe", 400, "available"),
        ("include_unregistered=sometimes", 400, "include_unregistered"),
        ("ordering=-cpu_load", 200, ["text-1", "data-1", "image-1", "data-2", "gone-1"]),
        ("ordering=secret_field", 400, "ordering"),
    ],
)
def test_discovery_refuses_parameters_it_does_not_understand(user_client, fleet, query, status, expected):
    response = user_client.get(f"/api/agents/?{query}")
    assert response.status_code == status, response.content
    if status == 200:
        assert ids(response) == expected
    else:
        assert expected in response.json()


def test_not_found_names_what_was_looked_for(user_client):
    assert user_client.get("/api/agents/ghost/").json()["detail"] == "No agent 'ghost'."
    assert user_client.get("/api/capabilities/ghost/").json()["detail"] == "No capability 'ghost'."


def test_put_replaces_the_whole_contract_and_a_non_object_body_is_400(staff_client):
    CapabilityFactory(name="calc", description="old", input_schema={"type": "object"}, output_schema={"type": "object"})
    response = staff_client.put(
        "/api/capabilities/calc/", {"name": "calc", "input_schema": {"type": "object"}}, format="json"
    )
    assert response.status_code == 200
    cap = Capability.objects.get(name="calc")
    assert (cap.description, cap.output_schema) == ("", {})
    for body in (["name"], "calc", 5):
        response = staff_client.put("/api/capabilities/calc/", body, format="json")
        assert response.status_code == 400, response.content
    response = staff_client.put("/api/capabilities/calc/", {"name": "other"}, format="json")
    assert response.status_code == 400 and "renamed" in str(response.json()["name"])
