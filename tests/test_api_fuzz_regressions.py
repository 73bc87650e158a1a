"""What the schemathesis run (tests/fuzz/run.py) found, each pinned by a test that fails without its fix."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from agents import services as agent_services
from agents.services import CapabilitySpec
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db

ANY = {"type": "object"}


@pytest.fixture
def used_capability(staff_user):
    agent_services.create_capability(name="echo", input_schema=ANY, output_schema=ANY)
    agent_services.invoke(capability="echo", input={}, requested_by="user:staff")
    return "echo"


def test_deleting_a_capability_that_past_invocations_reference_is_a_409_naming_them(staff_client, used_capability):
    response = staff_client.delete(f"/api/capabilities/{used_capability}/")
    assert response.status_code == 409, response.content
    assert "invocations" in response.json()["detail"]


def test_a_multipart_body_is_a_415(staff_client):
    response = staff_client.post("/api/capabilities/", {"name": "x"}, format="multipart")
    assert response.status_code == 415, response.content
    assert "detail" in response.json()


@pytest.mark.parametrize("field", ["pid"])
def test_registration_integers_beyond_the_database_range_are_a_400(staff_client, field):
    response = staff_client.post("/api/agents/", {"agent_id": "a1", field: 2**31}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_heartbeat_in_flight_beyond_the_database_range_is_a_400(staff_client):
    agent_services.register_agent(agent_id="a1", name="a1")
    response = staff_client.post("/api/agents/a1/heartbeat/", {"in_flight": 2**31}, format="json")
    assert response.status_code == 400, response.content
    assert "in_flight" in response.json()


@pytest.mark.parametrize("path", ["/api/agent-events/", "/api/invocations/", "/api/executions/"])
@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", ""])
def test_since_out_of_range_or_empty_is_a_400_naming_since(staff_client, path, since):
    response = staff_client.get(path, {"since": since})
    assert response.status_code == 400, response.content
    assert "since" in response.json()


@pytest.mark.parametrize("path", ["/api/agent-events/", "/api/invocations/", "/api/executions/"])
def test_since_with_an_offset_postgresql_refuses_is_taken_in_utc(staff_client, path):
    response = staff_client.get(path, {"since": "0506-11-25T20:40:28+23:16"})
    assert response.status_code == 200, response.content


def test_since_with_a_large_offset_still_filters_in_utc(staff_client):
    agent_services.register_agent(agent_id="a1", name="a1")
    assert staff_client.get("/api/agent-events/", {"since": "2000-01-01T23:00:00+23:16"}).json()["count"] == 1


@pytest.mark.parametrize("page_size", ["null", "0", "-3", "501"])
def test_a_bad_page_size_is_a_400(staff_client, page_size):
    response = staff_client.get("/api/capabilities/", {"page_size": page_size})
    assert response.status_code == 400, response.content
    assert "page_size" in response.json()


@pytest.mark.parametrize("ordering", [",", " name", "name,"])
def test_ordering_items_must_be_exact_field_names(staff_client, ordering):
    assert staff_client.get("/api/capabilities/", {"ordering": ordering}).status_code == 400


def test_an_empty_wait_is_a_400(staff_client, used_capability):
    invocation = staff_client.get("/api/invocations/").json()["results"][0]
    response = staff_client.get(f"/api/invocations/{invocation['id']}/", {"wait": ""})
    assert response.status_code == 400
    assert "wait" in response.json()


def test_a_huge_workflow_filter_is_a_400_not_a_database_error(staff_client):
    response = staff_client.get("/api/executions/", {"workflow": str(10**30)})
    assert response.status_code == 400, response.content


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/agents/", {"agent_id": "a1", "version": 0}, "version"),
        ("/api/agents/", {"agent_id": "a1", "tags": [0]}, "tags"),
        ("/api/agents/a1/heartbeat/", {"health_score": False}, "health_score"),
        ("/api/agents/a1/status/", {"state": "idle", "reason": 0}, "reason"),
        ("/api/invocations/", {"capability": "echo", "priority": "3"}, "priority"),
    ],
)
def test_a_body_field_of_another_json_type_is_a_400_naming_it(staff_client, used_capability, path, body, field):
    agent_services.register_agent(agent_id="a1", name="a1", capabilities=[CapabilitySpec(name="echo")])
    response = staff_client.post(path, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_an_invocation_without_an_agent_matches_its_schema(staff_client, used_capability):
    schema = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]
    assert schema["InvocationDetail"]["properties"]["agent"].get("nullable") is True
    assert schema["InvocationDetail"]["properties"]["pinned_agent"].get("nullable") is True
    assert schema["Execution"]["properties"]["workflow"].get("nullable") is True
    assert staff_client.get("/api/invocations/").json()["results"][0]["agent"] is None


def test_every_operation_documents_the_shared_error_answers():
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items():
            codes = set(operation["responses"])
            assert {"400", "401", "403", "404", "429", "503"} <= codes, (method, path)
            if method != "get":
                assert "409" in codes, (method, path)
            if "requestBody" in operation:
                assert "415" in codes, (method, path)


def test_a_list_error_body_becomes_an_object(staff_client):
    AgentFactory(agent_id="a2")
    response = staff_client.post(
        "/api/agents/", {"agent_id": "a2", "capabilities": [{"name": "c"}, {"name": "c"}]}, format="json"
    )
    assert response.status_code == 400
    assert isinstance(response.json(), dict)


@pytest.mark.parametrize("query", ["min_health=1.5", "max_cpu_load=-0.1", "min_health=1e79"])
def test_discovery_numbers_outside_0_to_1_are_a_400_as_the_schema_says(staff_client, query):
    response = staff_client.get(f"/api/agents/?{query}")
    assert response.status_code == 400, response.content
    assert query.split("=")[0] in response.json()


@pytest.mark.parametrize("aggregation", [{}, None, 3])
def test_a_scatter_tasks_aggregation_that_is_not_a_string_is_a_400(staff_client, used_capability, aggregation):
    task = {"key": "a", "capability": "echo", "required_agents": 2, "aggregation": aggregation}
    response = staff_client.post("/api/workflows/", {"name": "w", "tasks": [task]}, format="json")
    assert response.status_code == 400 and "aggregation must be one of" in str(response.json()), response.json()


def test_an_empty_choice_filter_means_no_filter_and_the_schema_says_so(staff_client):
    AgentFactory(agent_id="a-1")
    assert staff_client.get("/api/agents/", {"state": ""}).json()["count"] == 1
    parameters = SchemaGenerator().get_schema(request=None, public=True)["paths"]["/api/agents/"]["get"]["parameters"]
    (state,) = [p for p in parameters if p["name"] == "state"]
    assert "" in state["schema"]["enum"]


@pytest.mark.parametrize("field", ["name", "description", "condition"])
def test_a_tasks_optional_text_may_be_empty_or_null_but_not_another_type(staff_client, used_capability, field):
    def post(value):
        task = {"key": "a", "capability": "echo", field: value}
        return staff_client.post("/api/workflows/", {"name": f"w-{field}-{value!r}", "tasks": [task]}, format="json")

    assert post("").status_code == 201 and post(None).status_code == 201
    response = post({})
    assert response.status_code == 400 and f"{field} must be a string" in str(response.json())


@pytest.mark.parametrize(("field", "value"), [("description", {}), ("description", 3), ("metadata", []), ("metadata", "")])
def test_a_workflows_description_or_metadata_of_another_type_is_a_400(staff_client, used_capability, field, value):
    body = {"name": "w", "tasks": [{"key": "a", "capability": "echo"}], field: value}
    response = staff_client.post("/api/workflows/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.json()
