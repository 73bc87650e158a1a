"""Who may do what, on every registry endpoint: anonymous, user, staff, the agent itself, another agent."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import AgentFactory, CapabilityFactory, token_for

pytestmark = pytest.mark.django_db

PRINCIPALS = ["anonymous", "user", "staff", "self_agent", "other_agent"]
REG = {"agent_id": "newcomer", "name": "New", "capabilities": []}

# (method, path, body, expected status for each principal in PRINCIPALS order)
MATRIX = [
    ("get", "/api/agents/", None, (401, 200, 200, 403, 403)),
    ("post", "/api/agents/", REG, (401, 403, 201, 403, 403)),
    ("get", "/api/agents/alpha/", None, (401, 200, 200, 403, 403)),
    ("get", "/api/agents/stats/", None, (401, 200, 200, 403, 403)),
    ("post", "/api/agents/alpha/heartbeat/", {}, (401, 403, 200, 200, 403)),
    ("post", "/api/agents/alpha/status/", {"state": "busy"}, (401, 403, 200, 200, 403)),
    ("delete", "/api/agents/alpha/", None, (401, 403, 204, 204, 403)),
    ("get", "/api/capabilities/", None, (401, 200, 200, 200, 200)),
    ("get", "/api/capabilities/spare/", None, (401, 200, 200, 200, 200)),
    ("post", "/api/capabilities/", {"name": "brand_new"}, (401, 403, 201, 403, 403)),
    ("patch", "/api/capabilities/spare/", {"description": "d"}, (401, 403, 200, 403, 403)),
    ("put", "/api/capabilities/spare/", {"name": "spare", "description": "d"}, (401, 403, 200, 403, 403)),
    ("delete", "/api/capabilities/spare/", None, (401, 403, 204, 403, 403)),
    ("get", "/api/agent-events/", None, (401, 200, 200, 403, 403)),
]


@pytest.fixture
def clients(staff_user, plain_user):
    AgentFactory(agent_id="alpha")
    AgentFactory(agent_id="beta")
    CapabilityFactory(name="spare")
    made = {name: APIClient() for name in PRINCIPALS}
    made["user"].force_authenticate(plain_user)
    made["staff"].force_authenticate(staff_user)
    made["self_agent"].credentials(HTTP_AUTHORIZATION=f"Agent {token_for('alpha')}")
    made["other_agent"].credentials(HTTP_AUTHORIZATION=f"Agent {token_for('beta')}")
    return made


@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
@pytest.mark.parametrize("who", PRINCIPALS)
def test_auth_matrix(clients, who, method, path, body, expected):
    response = (
        getattr(clients[who], method)(path, body, format="json")
        if body is not None
        else getattr(clients[who], method)(path)
    )
    want = expected[PRINCIPALS.index(who)]
    assert response.status_code == want, (who, method, path, response.content)
    if want in (401, 403):
        assert response.json()["detail"]


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
