"""/api/workflows/ and /api/executions/ without workers: every validation error, executions, permissions."""

from __future__ import annotations

import pytest

from tests.workflows.helpers import NUMBERS, capability, run_task, worker_agent
from workflows.models import Execution, Workflow

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def capabilities():
    capability("echo")
    capability("calculation", NUMBERS)


def task(key: str, **fields):
    return {"key": key, "capability": fields.pop("capability", "echo"), **fields}


def post(client, tasks, **fields):
    return client.post("/api/workflows/", {"name": fields.pop("name", "wf"), "tasks": tasks, **fields}, format="json")


def problems(response) -> dict:
    assert response.status_code == 400, response.content
    assert not Workflow.objects.exists(), "a rejected definition must create nothing"
    body = response.json()
    return body["tasks"] if set(body) == {"tasks"} else body


def test_create_then_read_a_definition(staff_client):
    response = post(
        staff_client,
        [task("a"), task("b", depends_on=["a"], input={"x": "${tasks.a.output.y}"}, condition="tasks.a.output.ok")],
        description="two steps",
        max_parallel_tasks=3,
        failure_strategy="continue",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["name"] == "wf" and data["version"] == 1 and data["failure_strategy"] == "continue"
    assert [t["key"] for t in data["tasks"]] == ["a", "b"] and data["tasks"][1]["depends_on"] == ["a"]
    listed = staff_client.get("/api/workflows/").json()["results"]
    assert listed[0]["tasks"] == 2 and listed[0]["execution_count"] == 0


def test_a_cycle_names_the_tasks_on_it(staff_client):
    found = problems(
        post(
            staff_client,
            [task("a", depends_on=["c"]), task("b", depends_on=["a"]), task("c", depends_on=["b"]), task("d")],
        )
    )
    assert set(found) == {"a", "b", "c"}
    assert any("dependency cycle" in m and "->" in m for m in found["a"])


@pytest.mark.parametrize(
    ("tasks", "key", "words"),
    [
        ([task("a", depends_on=["ghost"])], "a", "depends_on 'ghost', which is not a task of this workflow"),
        ([task("a"), task("a")], "a", "duplicate key 'a'"),
        ([task("a", capability="nope")], "a", "unknown capability 'nope'"),
        ([task("a", capability="calculation", input={"a": 1})], "a", "input: 'b' is a required property"),
        ([task("a", capability="calculation", input={"a": "x", "b": 1})], "a", "input.a: 'x' is not of type 'number'"),
        ([task("a"), task("b", input={"v": "${tasks.a.output.v}"})], "b", "'a' is not upstream of 'b'"),
        ([task("a", input={"v": "${tasks.zz.output}"})], "a", "there is no task 'zz'"),
        ([task("a", condition="context.x >")], "a", "condition: the condition 'context.x >' does not parse"),
        ([task("a", condition="__import__('os').system('x')")], "a", "a function call is not allowed"),
        ([task("a", condition="context.x + 1 > 2")], "a", "arithmetic is not allowed"),
        ([task("a", input={"v": "${os.environ}"})], "a", "a reference starts with 'context' or 'tasks'"),
        ([task("a", priority=12)], "a", "priority must be between 0 and 9"),
        ([task("a", depends_on=["a"])], "a", "depends on itself"),
        ([task("a", required_agents=0)], "a", "required_agents must be between 1 and 1000"),
        ([task("a", aggregation="median", required_agents=2)], "a", "aggregation 'median' is not one of"),
        ([task("bad key!")], "bad key!", "must be 1-100 letters"),
    ],
)
def test_each_validation_error_names_the_task_and_the_problem(staff_client, tasks, key, words):
    found = problems(post(staff_client, tasks))
    assert any(words in message for message in found[key]), found


def test_a_reference_that_fills_a_schema_field_is_accepted(staff_client):
    response = post(
        staff_client,
        [task("a"), task("b", capability="calculation", depends_on=["a"], input={"a": "${tasks.a.output.n}", "b": 2})],
    )
    assert response.status_code == 201, response.content


def test_top_level_fields_and_an_empty_workflow(staff_client):
    assert "tasks" in problems(post(staff_client, []))
    detail = problems(post(staff_client, [task("a")], failure_strategy="panic", max_parallel_tasks=0, surprise=1))
    assert "failure_strategy" in detail and "max_parallel_tasks" in detail and "non_field_errors" in detail
    detail = problems(post(staff_client, [task("a")], global_timeout=1e12, max_parallel_tasks=10**10))
    assert detail["global_timeout"] == ["must be a number from 1 to 10,000,000, got 1000000000000.0"]
    assert "from 1 to 100,000" in detail["max_parallel_tasks"][0]


def test_a_duplicate_name_is_a_400(staff_client):
    assert post(staff_client, [task("a")]).status_code == 201
    response = post(staff_client, [task("a")])
    assert response.status_code == 400 and "exists" in response.json()["name"][0]


def test_put_replaces_and_bumps_the_version_delete_keeps_executions(staff_client):
    wf = post(staff_client, [task("a")]).json()
    execution = staff_client.post(f"/api/workflows/{wf['id']}/execute/", {}, format="json").json()
    response = staff_client.put(f"/api/workflows/{wf['id']}/", {"name": "wf", "tasks": [task("z")]}, format="json")
    assert response.status_code == 200 and response.json()["version"] == 2
    assert [t["key"] for t in response.json()["tasks"]] == ["z"]
    bad = staff_client.put(
        f"/api/workflows/{wf['id']}/", {"name": "wf", "tasks": [task("z", depends_on=["q"])]}, format="json"
    )
    assert bad.status_code == 400 and Workflow.objects.get().version == 2
    assert staff_client.delete(f"/api/workflows/{wf['id']}/").status_code == 204
    detail = staff_client.get(f"/api/executions/{execution['id']}/").json()
    assert detail["workflow"] is None and [t["key"] for t in detail["tasks"]] == ["a"]


def test_execute_shows_progress_tasks_and_summary(staff_client):
    agent = worker_agent("w1", "echo")
    wf = post(staff_client, [task("a", input={"seed": "${context.seed}"}), task("b", depends_on=["a"])]).json()
    response = staff_client.post(f"/api/workflows/{wf['id']}/execute/", {"context": {"seed": 3}}, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "running" and data["context"] == {"seed": 3}
    assert data["progress"] == {
        "total": 2,
        "pending": 1,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
        "percent": 0.0,
    }
    first, second = data["tasks"]
    assert first["status"] == "running" and first["resolved_input"] == {"seed": 3} and len(first["calls"]) == 1
    assert second["waiting_reason"] == "waiting for 1 of its dependencies (a)"
    execution = Execution.objects.get(pk=data["id"])
    run_task(execution, "a", agent, {"n": 1})
    run_task(execution, "b", agent, {"n": 2})
    data = staff_client.get(f"/api/executions/{execution.pk}/").json()
    assert data["status"] == "succeeded" and data["progress"]["percent"] == 100.0
    assert data["summary"]["critical_path"] == ["a", "b"] and data["summary"]["slowest_task"]["key"] in ("a", "b")
    assert data["tasks"][0]["agent"] == "w1" and data["tasks"][0]["calls"][0]["status"] == "succeeded"
    listed = staff_client.get("/api/executions/", {"status": "succeeded", "workflow": wf["id"]}).json()
    assert [e["id"] for e in listed["results"]] == [str(execution.pk)]
    assert staff_client.get("/api/executions/", {"status": "running"}).json()["count"] == 0


def test_execute_with_a_bad_context_is_a_400_and_starts_nothing(staff_client):
    wf = post(staff_client, [task("a")]).json()
    response = staff_client.post(f"/api/workflows/{wf['id']}/execute/", {"context": [1]}, format="json")
    assert response.status_code == 400 and "context" in response.json()
    assert not Execution.objects.exists()


def test_cancel_pause_resume_and_their_conflicts(staff_client):
    wf = post(staff_client, [task("a"), task("b", depends_on=["a"])]).json()
    execution = staff_client.post(f"/api/workflows/{wf['id']}/execute/", {}, format="json").json()
    url = f"/api/executions/{execution['id']}"
    assert staff_client.post(f"{url}/resume/").status_code == 409
    assert staff_client.post(f"{url}/pause/").json()["status"] == "paused"
    assert staff_client.post(f"{url}/resume/").json()["status"] == "running"
    cancelled = staff_client.post(f"{url}/cancel/").json()
    assert cancelled["status"] == "cancelled" and cancelled["progress"]["cancelled"] == 1
    response = staff_client.post(f"{url}/cancel/")
    assert response.status_code == 409 and "already cancelled" in response.json()["detail"]
    assert staff_client.post(f"{url}/pause/").status_code == 409


def test_people_who_are_not_staff_may_read_only_and_agents_not_at_all(staff_client, user_client, agent_client):
    wf = post(staff_client, [task("a")]).json()
    assert user_client.get("/api/workflows/").status_code == 200
    assert post(user_client, [task("b")], name="other").status_code == 403
    assert user_client.post(f"/api/workflows/{wf['id']}/execute/", {}, format="json").status_code == 403
    agent = worker_agent("w9", "echo")
    assert agent_client(agent).get("/api/workflows/").status_code in (401, 403)
    assert staff_client.get("/api/executions/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert staff_client.get("/api/workflows/999/").json()["detail"] == "No workflow '999'."


def test_the_schema_lists_the_workflow_endpoints(staff_client):
    schema = staff_client.get("/api/schema/", {"format": "json"}).json()
    assert "/api/workflows/{id}/execute/" in schema["paths"] and "/api/executions/{id}/pause/" in schema["paths"]
