"""POST /api/agents/: registration, re-registration, contracts, and bad input that changes nothing."""

from __future__ import annotations

import pytest

from agents.models import Agent, AgentCapability, AgentEvent, Capability

pytestmark = pytest.mark.django_db

CALC = {
    "name": "calculation",
    "description": "adds and multiplies",
    "input_schema": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
    "output_schema": {"type": "object", "properties": {"sum": {"type": "number"}, "product": {"type": "number"}}},
    "cost": 1.5,
}


def body(agent_id="calc-1", **extra):
    return {
        "agent_id": agent_id,
        "name": "Calculator",
        "capabilities": [CALC],
        "tags": ["math", "service"],
        "metadata": {"region": "local"},
        "max_concurrency": 2,
        **extra,
    }


def snapshot():
    return (
        Agent.objects.count(),
        Capability.objects.count(),
        AgentCapability.objects.count(),
        AgentEvent.objects.count(),
    )


def test_register_returns_agent_and_a_token_that_authenticates_it(staff_client, api_client):
    response = staff_client.post("/api/agents/", body(), format="json")
    assert response.status_code == 201, response.data
    data = response.json()
    assert data["agent_id"] == "calc-1"
    assert data["state"] == "idle"
    assert data["capabilities"] == [{"name": "calculation", "cost": 1.5}]
    assert data["tags"] == ["math", "service"]
    assert data["max_concurrency"] == 2
    token = data["token"]
    agent = Agent.objects.get(agent_id="calc-1")
    assert token not in agent.token_hash  # only the hash is stored
    api_client.credentials(HTTP_AUTHORIZATION=f"Agent {token}")
    assert api_client.post("/api/agents/calc-1/heartbeat/", {}, format="json").status_code == 200
    assert AgentEvent.objects.filter(agent=agent, kind="registered").count() == 1
    # the token is shown once: reading the agent does not show it
    assert "token" not in staff_client.get("/api/agents/calc-1/").json()


def test_reregister_replaces_capabilities_tags_metadata_and_token(staff_client, api_client):
    first = staff_client.post("/api/agents/", body(), format="json").json()["token"]
    validation = {"name": "validation", "input_schema": {"type": "object"}, "output_schema": {"type": "object"}}
    response = staff_client.post(
        "/api/agents/", body(capabilities=[validation], tags=["checks"], metadata={"v": 2}), format="json"
    )
    assert response.status_code == 200
    data = response.json()
    assert [c["name"] for c in data["capabilities"]] == ["validation"]
    assert data["tags"] == ["checks"]
    assert data["metadata"] == {"v": 2}
    api_client.credentials(HTTP_AUTHORIZATION=f"Agent {first}")
    assert api_client.post("/api/agents/calc-1/heartbeat/", {}, format="json").status_code == 401
    api_client.credentials(HTTP_AUTHORIZATION=f"Agent {data['token']}")
    assert api_client.post("/api/agents/calc-1/heartbeat/", {}, format="json").status_code == 200
    assert list(AgentEvent.objects.filter(agent__agent_id="calc-1").values_list("kind", flat=True).order_by("id")) == [
        "registered",
        "reregistered",
    ]


def test_declaring_a_capability_with_another_contract_is_409_naming_it_and_changes_nothing(staff_client):
    staff_client.post("/api/agents/", body(), format="json")
    before = snapshot()
    changed = {**CALC, "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    response = staff_client.post("/api/agents/", body("calc-2", capabilities=[changed]), format="json")
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "calculation" in detail and "input_schema" in detail and "/properties/a/type" in detail
    assert snapshot() == before
    assert not Agent.objects.filter(agent_id="calc-2").exists()


def test_same_contract_is_shared_by_two_agents(staff_client):
    assert staff_client.post("/api/agents/", body("calc-1"), format="json").status_code == 201
    assert (
        staff_client.post("/api/agents/", body("calc-2", capabilities=[{**CALC, "cost": 3}]), format="json").status_code
        == 201
    )
    cap = staff_client.get("/api/capabilities/calculation/").json()
    assert cap["live_agents"] == 2
    assert cap["lowest_cost"] == 1.5


def test_a_bad_capability_leaves_nothing_half_registered(staff_client):
    staff_client.post("/api/agents/", body(), format="json")
    before = snapshot()
    good = {"name": "fresh_cap", "input_schema": {"type": "object"}}
    clash = {**CALC, "output_schema": {"type": "string"}}
    response = staff_client.post(
        "/api/agents/", body("calc-1", capabilities=[good, clash], tags=["new"]), format="json"
    )
    assert response.status_code == 409
    assert snapshot() == before
    assert not Capability.objects.filter(name="fresh_cap").exists()
    agent = Agent.objects.get(agent_id="calc-1")
    assert sorted(t.name for t in agent.tags.all()) == ["math", "service"]


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (body(agent_id="Not A Slug!"), "agent_id", "slug"),
        (body(capabilities=[{**CALC, "input_schema": {"type": "nonsense"}}]), "capabilities", "calculation"),
        (body(capabilities=[{**CALC, "output_schema": {"properties": 5}}]), "capabilities", "calculation"),
        (body(capabilities=[{**CALC, "cost": -1}]), "capabilities", "greater than or equal to 0"),
        (body(capabilities=[CALC, CALC]), "capabilities", "declared twice"),
        (body(capabilities=[{**CALC, "name": "Bad Name"}]), "capabilities", "lowercase"),
        (body(max_concurrency=0), "max_concurrency", "greater than or equal to 1"),
        (body(tags="math"), "tags", "list"),
        (body(metadata=[1, 2]), "metadata", "dictionary"),
        ({"name": "no id"}, "agent_id", "required"),
    ],
)
def test_bad_registration_is_400_naming_the_problem_and_changes_nothing(staff_client, payload, field, words):
    before = snapshot()
    response = staff_client.post("/api/agents/", payload, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert field in errors, errors
    assert words.lower() in str(errors[field]).lower(), errors
    assert snapshot() == before


def test_malformed_json_body_is_400_json(staff_client):
    before = snapshot()
    response = staff_client.generic("POST", "/api/agents/", '{"agent_id": "x",', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert snapshot() == before
