"""Whose rows each reader sees: staff all; a person who is not staff, or an agent, only the invocations and
executions recorded as requested by them (someone else's is a 404, in the list, the detail and the filters);
everyone signed in reads the registry, capabilities, workflow definitions and stats. Which methods each may
use is in tests/agents/test_auth.py."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agents import services
from tests.factories import AgentFactory, CapabilityFactory, token_for
from workflows import services as workflow_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(django_user_model, staff_user, plain_user):
    """Invocations and executions of reader, of another person, of staff, of an agent and of a workflow."""
    django_user_model.objects.create_user("other", password="other-pass-123")
    AgentFactory(agent_id="alpha", offers={"spare": 1})
    CapabilityFactory(name="spare")
    calls = {
        who: services.invoke(capability="spare", input={"secret": who}, requested_by=who)[0].pk
        for who in ("user:reader", "user:other", "user:staff", "agent:alpha")
    }
    workflow = workflow_services.create_workflow(
        {"name": "wf", "tasks": [{"key": "a", "capability": "spare"}]}, created_by="user:staff"
    )
    executions = {
        who: workflow_services.execute(workflow.pk, requested_by=who).pk for who in ("user:reader", "user:staff")
    }
    return {"calls": calls, "executions": executions, "workflow": workflow.pk}


def as_user(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def listed(client: APIClient, path: str, **params) -> set[str]:
    response = client.get(path, params)
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_a_person_who_is_not_staff_lists_only_the_invocations_they_asked_for(world, plain_user):
    reader = as_user(plain_user)
    mine = str(world["calls"]["user:reader"])
    assert listed(reader, "/api/invocations/") == {mine}
    # filters work inside that scope: asking for someone else's finds nothing, not a count of theirs
    assert listed(reader, "/api/invocations/", requested_by="user:other") == set()
    assert listed(reader, "/api/invocations/", requested_by="user:reader") == {mine}
    assert listed(reader, "/api/invocations/", capability="spare", status="queued") == {mine}
    detail = reader.get(f"/api/invocations/{mine}/")
    assert detail.status_code == 200 and detail.json()["input"] == {"secret": "user:reader"}


@pytest.mark.parametrize("owner", ["user:other", "user:staff", "agent:alpha"])
def test_someone_elses_invocation_is_a_404_for_a_person_who_is_not_staff(world, plain_user, owner):
    pk = world["calls"][owner]
    for path in (f"/api/invocations/{pk}/", f"/api/invocations/{pk}/?wait=5"):
        response = as_user(plain_user).get(path)
        assert response.status_code == 404, response.content
        assert response.json() == {"detail": f"No invocation '{pk}'."}  # the same answer as for no such id
        assert "secret" not in response.content.decode()


def test_staff_read_every_invocation_and_execution(world, staff_user):
    staff = as_user(staff_user)
    workflow_calls = listed(staff, "/api/invocations/") - {str(pk) for pk in world["calls"].values()}
    assert len(workflow_calls) == 2  # and the ones the two executions made
    for pk in world["calls"].values():
        assert staff.get(f"/api/invocations/{pk}/").status_code == 200
    assert listed(staff, "/api/executions/") == {str(pk) for pk in world["executions"].values()}
    for pk in world["executions"].values():
        assert staff.get(f"/api/executions/{pk}/").status_code == 200


def test_a_person_who_is_not_staff_reads_only_the_executions_they_started(world, plain_user):
    reader = as_user(plain_user)
    mine, theirs = world["executions"]["user:reader"], world["executions"]["user:staff"]
    assert listed(reader, "/api/executions/") == {str(mine)}
    assert listed(reader, "/api/executions/", requested_by="user:staff") == set()
    assert listed(reader, "/api/executions/", workflow=world["workflow"]) == {str(mine)}
    detail = reader.get(f"/api/executions/{mine}/")
    assert detail.status_code == 200 and detail.json()["requested_by"] == "user:reader"
    response = reader.get(f"/api/executions/{theirs}/")
    assert response.status_code == 404 and response.json() == {"detail": f"No execution '{theirs}'."}


def test_another_person_who_is_not_staff_sees_none_of_readers_rows(world, django_user_model):
    other = as_user(django_user_model.objects.get(username="other"))
    assert listed(other, "/api/invocations/") == {str(world["calls"]["user:other"])}
    assert listed(other, "/api/executions/") == set()
    assert other.get(f"/api/executions/{world['executions']['user:reader']}/").status_code == 404


def test_an_agent_reads_only_the_invocations_it_asked_for_and_no_executions(world):
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Agent {token_for('alpha')}")
    assert listed(agent, "/api/invocations/") == {str(world["calls"]["agent:alpha"])}
    assert agent.get(f"/api/invocations/{world['calls']['user:reader']}/").status_code == 404
    assert agent.get("/api/executions/").status_code == 403
    assert agent.get(f"/api/executions/{world['executions']['user:reader']}/").status_code == 403


def test_a_person_who_is_not_staff_reads_the_registry_definitions_and_stats(world, plain_user):
    reader = as_user(plain_user)
    assert [a["agent_id"] for a in reader.get("/api/agents/").json()["results"]] == ["alpha"]
    assert reader.get("/api/agents/alpha/").status_code == 200
    assert reader.get("/api/agents/stats/").json()["total_agents"] == 1
    fleet = reader.get("/api/capabilities/spare/").json()["fleet"]
    assert fleet["queued"] == 6  # stats count every call (figures, no inputs or outputs)
    assert reader.get("/api/workflows/").json()["count"] == 1
    assert reader.get(f"/api/workflows/{world['workflow']}/").status_code == 200
    assert reader.get("/api/agent-events/").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/api/invocations/", "/api/executions/", "/api/agents/", "/api/workflows/", "/api/agent-events/"],
)
def test_anonymous_reads_nothing(world, path):
    response = APIClient().get(path)
    assert response.status_code == 401 and response.json()["detail"]
