"""Who may do what, on every endpoint: anonymous, user, staff, the agent itself, another agent, an unregistered
agent. Which rows each of them *reads* (their own invocations and executions) is in tests/test_read_matrix.py."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agents import services
from agents.models import AgentEvent
from tests.factories import AgentFactory, CapabilityFactory, token_for
from workflows import services as workflow_services

pytestmark = pytest.mark.django_db

PRINCIPALS = ["anonymous", "user", "staff", "self_agent", "other_agent", "gone_agent"]
REG = {"agent_id": "newcomer", "name": "New", "capabilities": []}
INVOKE = {"capability": "spare", "input": {}}
WORKFLOW = {"name": "another", "tasks": [{"key": "a", "capability": "spare"}]}

# (method, path, body, expected status for each principal in PRINCIPALS order). In the paths, {inv} is an
# invocation that agent alpha (self_agent) created, {wf} a workflow and {ex} an execution that staff started.
# gone_agent is agent gamma, unregistered: its token is 401 everywhere, on its own agent's endpoints too.
MATRIX = [
    ("get", "/api/", None, (401, 200, 200, 403, 403, 401)),
    ("get", "/api/agents/", None, (401, 200, 200, 403, 403, 401)),
    ("post", "/api/agents/", REG, (401, 403, 201, 403, 403, 401)),
    ("get", "/api/agents/alpha/", None, (401, 200, 200, 403, 403, 401)),
    ("get", "/api/agents/stats/", None, (401, 200, 200, 403, 403, 401)),
    ("post", "/api/agents/alpha/heartbeat/", {}, (401, 403, 200, 200, 403, 401)),
    ("post", "/api/agents/alpha/status/", {"state": "busy"}, (401, 403, 200, 200, 403, 401)),
    ("delete", "/api/agents/alpha/", None, (401, 403, 204, 204, 403, 401)),
    ("post", "/api/agents/gamma/heartbeat/", {}, (401, 403, 409, 403, 403, 401)),
    ("post", "/api/agents/gamma/status/", {"state": "idle"}, (401, 403, 409, 403, 403, 401)),
    ("delete", "/api/agents/gamma/", None, (401, 403, 409, 403, 403, 401)),
    ("post", "/api/agents/alpha/drain/", None, (401, 403, 409, 403, 403, 401)),
    ("post", "/api/agents/alpha/resume/", None, (401, 403, 409, 403, 403, 401)),
    ("post", "/api/agents/alpha/shutdown/", None, (401, 403, 409, 403, 403, 401)),
    ("get", "/api/capabilities/", None, (401, 200, 200, 200, 200, 401)),
    ("get", "/api/capabilities/spare/", None, (401, 200, 200, 200, 200, 401)),
    ("post", "/api/capabilities/", {"name": "brand_new"}, (401, 403, 201, 403, 403, 401)),
    ("patch", "/api/capabilities/spare/", {"description": "d"}, (401, 403, 200, 403, 403, 401)),
    ("put", "/api/capabilities/spare/", {"name": "spare", "description": "d"}, (401, 403, 200, 403, 403, 401)),
    ("delete", "/api/capabilities/unused/", None, (401, 403, 204, 403, 403, 401)),
    ("get", "/api/agent-events/", None, (401, 200, 200, 403, 403, 401)),
    ("get", "/api/agent-events/{event}/", None, (401, 200, 200, 403, 403, 401)),
    ("post", "/api/invocations/", INVOKE, (401, 403, 201, 201, 201, 401)),
    ("get", "/api/invocations/", None, (401, 200, 200, 200, 200, 401)),
    ("get", "/api/invocations/{inv}/", None, (401, 404, 200, 200, 404, 401)),
    ("post", "/api/invocations/{inv}/cancel/", None, (401, 403, 200, 200, 404, 401)),
    ("post", "/api/invocations/{inv}/retry/", None, (401, 403, 409, 403, 403, 401)),
    ("get", "/api/workflows/", None, (401, 200, 200, 403, 403, 401)),
    ("post", "/api/workflows/", WORKFLOW, (401, 403, 201, 403, 403, 401)),
    ("get", "/api/workflows/{wf}/", None, (401, 200, 200, 403, 403, 401)),
    ("put", "/api/workflows/{wf}/", {**WORKFLOW, "name": "wf"}, (401, 403, 200, 403, 403, 401)),
    ("post", "/api/workflows/{wf}/execute/", {}, (401, 403, 201, 403, 403, 401)),
    ("delete", "/api/workflows/{wf}/", None, (401, 403, 204, 403, 403, 401)),
    ("get", "/api/executions/", None, (401, 200, 200, 403, 403, 401)),
    ("get", "/api/executions/{ex}/", None, (401, 404, 200, 403, 403, 401)),
    ("post", "/api/executions/{ex}/pause/", None, (401, 403, 200, 403, 403, 401)),
    ("post", "/api/executions/{ex}/cancel/", None, (401, 403, 200, 403, 403, 401)),
]


@pytest.fixture
def clients(staff_user, plain_user):
    AgentFactory(agent_id="alpha")
    AgentFactory(agent_id="beta")
    AgentFactory(agent_id="gamma")
    services.unregister_agent(agent_id="gamma", reason="test")
    CapabilityFactory(name="spare")
    CapabilityFactory(name="unused")
    made = {name: APIClient() for name in PRINCIPALS}
    made["user"].force_authenticate(plain_user)
    made["staff"].force_authenticate(staff_user)
    made["self_agent"].credentials(HTTP_AUTHORIZATION=f"Agent {token_for('alpha')}")
    made["other_agent"].credentials(HTTP_AUTHORIZATION=f"Agent {token_for('beta')}")
    made["gone_agent"].credentials(HTTP_AUTHORIZATION=f"Agent {token_for('gamma')}")
    return made


@pytest.fixture
def ids(clients) -> dict[str, str]:
    invocation, _ = services.invoke(capability="spare", input={}, requested_by="agent:alpha")
    workflow = workflow_services.create_workflow(
        {"name": "wf", "tasks": [{"key": "a", "capability": "spare"}]}, created_by="user:staff"
    )
    execution = workflow_services.execute(workflow.pk, requested_by="user:staff")
    event = AgentEvent.objects.get(agent__agent_id="gamma", kind="unregistered")
    return {"inv": str(invocation.pk), "wf": str(workflow.pk), "ex": str(execution.pk), "event": str(event.pk)}


@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
@pytest.mark.parametrize("who", PRINCIPALS)
def test_auth_matrix(clients, ids, who, method, path, body, expected):
    path = path.format(**ids)
    client = getattr(clients[who], method)
    response = client(path, body, format="json") if body is not None else client(path)
    want = expected[PRINCIPALS.index(who)]
    assert response.status_code == want, (who, method, path, response.content)
    if want in (401, 403, 404, 409):
        assert response.json()["detail"]
    if who == "gone_agent":
        assert "unregistered" in response.json()["detail"]


def test_an_unregistered_agents_token_is_revoked_at_once_and_re_registering_issues_one_that_works(staff_client):
    AgentFactory(agent_id="phoenix")
    CapabilityFactory(name="spare")
    old = APIClient()
    old.credentials(HTTP_AUTHORIZATION=f"Agent {token_for('phoenix')}")
    assert old.post("/api/agents/phoenix/heartbeat/", {}, format="json").status_code == 200
    assert old.delete("/api/agents/phoenix/").status_code == 204  # the agent unregisters itself

    for response in (
        old.post("/api/agents/phoenix/heartbeat/", {}, format="json"),
        old.post("/api/invocations/", INVOKE, format="json"),
        old.get("/api/invocations/"),
        old.get("/api/capabilities/"),
    ):
        assert response.status_code == 401, response.content
        detail = response.json()["detail"]
        assert "revoked" in detail and "'phoenix' was unregistered" in detail and "new token" in detail

    again = staff_client.post("/api/agents/", {"agent_id": "phoenix", "name": "P"}, format="json")
    assert again.status_code == 200
    new = APIClient()
    new.credentials(HTTP_AUTHORIZATION=f"Agent {again.json()['token']}")
    assert new.post("/api/agents/phoenix/heartbeat/", {}, format="json").status_code == 200
    assert new.post("/api/invocations/", INVOKE, format="json").status_code == 201
    # the token of the earlier registration stays dead, with the message for a replaced token
    response = old.get("/api/capabilities/")
    assert response.status_code == 401 and "replaced by a later registration" in response.json()["detail"]


def test_a_token_is_refused_when_the_agent_is_unregistered_by_staff_or_the_admin(staff_client):
    AgentFactory(agent_id="victim")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Agent {token_for('victim')}")
    assert client.get("/api/capabilities/").status_code == 200
    assert staff_client.delete("/api/agents/victim/").status_code == 204
    assert client.get("/api/capabilities/").status_code == 401
    services.register_agent(agent_id="victim", name="victim")  # re-registered: a new token, the old one stays dead
    assert client.get("/api/capabilities/").status_code == 401


def test_another_agent_is_told_whose_token_it_holds(clients):
    response = clients["other_agent"].post("/api/agents/alpha/heartbeat/", {}, format="json")
    assert response.status_code == 403
    assert "'beta'" in response.json()["detail"] and "'alpha'" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Token nonsense", "Agent nonsense", "Agent", "Agent a b"])
def test_bad_credentials_are_401(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/agents/")
    assert response.status_code == 401
    assert response.json()["detail"]


def test_token_endpoint_issues_a_token_that_works(staff_user):
    client = APIClient()
    response = client.post("/api/auth/token/", {"username": "staff", "password": "staff-pass-123"}, format="json")
    assert response.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert client.get("/api/agents/").status_code == 200
    bad = APIClient().post("/api/auth/token/", {"username": "staff", "password": "wrong"}, format="json")
    assert bad.status_code == 400 and bad.json()["non_field_errors"]


def test_session_login_reaches_the_api(client, staff_user):
    assert client.login(username="staff", password="staff-pass-123")
    assert client.get("/api/agents/", HTTP_ACCEPT="application/json").status_code == 200


def test_schema_and_docs_are_anonymous_and_load_nothing_from_a_cdn(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in [
        "/api/agents/",
        "/api/agents/{agent_id}/heartbeat/",
        "/api/agents/{agent_id}/status/",
        "/api/agents/stats/",
        "/api/capabilities/{name}/",
        "/api/agent-events/",
        "/api/auth/token/",
    ]:
        assert path in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in html.lower() and "https://" not in html
