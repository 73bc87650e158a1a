"""Workflow admin: executing a definition needs "Can change workflow", operating an execution needs
"Can change execution". View-only staff see no button and no action; forged POSTs get 403 and change nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.agents.test_admin_permissions import staff_with
from tests.workflows.helpers import capability, fresh, worker_agent, workflow
from workflows import services
from workflows.models import Execution

pytestmark = pytest.mark.django_db

VERBS = ["pause", "resume", "cancel"]


@pytest.fixture
def agent():
    capability("echo")
    return worker_agent("worker-1", "echo")


@pytest.fixture
def definition(agent):
    return workflow(
        [{"key": "a", "capability": "echo"}, {"key": "b", "capability": "echo", "depends_on": ["a"]}], name="two"
    )


@pytest.fixture
def viewer(client, django_user_model):
    client.force_login(staff_with(django_user_model, "viewer", "workflows.view_workflow", "workflows.view_execution"))
    return client


@pytest.fixture
def operator(client, django_user_model):
    client.force_login(
        staff_with(
            django_user_model,
            "operator",
            "workflows.view_workflow",
            "workflows.change_workflow",
            "workflows.view_execution",
            "workflows.change_execution",
        )
    )
    return client


def html_of(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def verb_urls(execution: Execution) -> dict[str, str]:
    return {verb: reverse(f"admin:workflows_execution_{verb}", args=[execution.pk]) for verb in VERBS}


def test_a_view_only_user_sees_no_execute_button_or_action_and_cannot_execute(viewer, definition):
    execute_url = reverse("admin:workflows_workflow_execute", args=[definition.pk])
    page = html_of(viewer, reverse("admin:workflows_workflow_change", args=[definition.pk]))
    assert "two" in page and execute_url not in page and 'name="_save"' not in page
    changelist = html_of(viewer, reverse("admin:workflows_workflow_changelist"))
    assert "execute_selected" not in changelist and 'name="action"' not in changelist
    assert viewer.post(execute_url).status_code == 403
    response = viewer.post(
        reverse("admin:workflows_workflow_changelist"),
        {"action": "execute_selected", "_selected_action": [definition.pk]},
    )
    assert response.status_code == 403
    assert not Execution.objects.exists()


def test_a_view_only_user_sees_no_execution_button_or_action_and_cannot_operate(viewer, definition):
    running, paused = services.execute(definition.pk), services.execute(definition.pk)
    services.pause_execution(paused.pk)
    for execution in (running, paused):
        page = html_of(viewer, reverse("admin:workflows_execution_change", args=[execution.pk]))
        assert str(execution.pk) in page
        assert not any(url in page for url in verb_urls(execution).values())
    changelist = html_of(viewer, reverse("admin:workflows_execution_changelist"))
    assert 'name="action"' not in changelist
    for execution in (running, paused):
        for verb, url in verb_urls(execution).items():
            assert viewer.post(url).status_code == 403, verb
    for action in ("pause_selected", "resume_selected", "cancel_selected"):
        response = viewer.post(
            reverse("admin:workflows_execution_changelist"),
            {"action": action, "_selected_action": [str(running.pk), str(paused.pk)]},
        )
        assert response.status_code == 403, action
    assert (fresh(running).status, fresh(paused).status) == ("running", "paused")


def test_an_operator_with_the_change_permissions_executes_and_operates(operator, definition):
    execute_url = reverse("admin:workflows_workflow_execute", args=[definition.pk])
    assert execute_url in html_of(operator, reverse("admin:workflows_workflow_change", args=[definition.pk]))
    assert "execute_selected" in html_of(operator, reverse("admin:workflows_workflow_changelist"))
    response = operator.post(execute_url)
    execution = Execution.objects.get(workflow=definition)
    assert response.status_code == 302 and execution.requested_by == "user:operator"
    urls = verb_urls(execution)
    page = html_of(operator, reverse("admin:workflows_execution_change", args=[execution.pk]))
    assert urls["pause"] in page and urls["cancel"] in page
    changelist = html_of(operator, reverse("admin:workflows_execution_changelist"))
    assert all(f'value="{a}"' in changelist for a in ("pause_selected", "resume_selected", "cancel_selected"))
    operator.post(urls["pause"])
    assert fresh(execution).status == "paused"
    operator.post(
        reverse("admin:workflows_execution_changelist"),
        {"action": "cancel_selected", "_selected_action": [str(execution.pk)]},
    )
    assert fresh(execution).status == "cancelled"


def test_operating_executions_does_not_let_one_execute_definitions(client, django_user_model, definition):
    client.force_login(
        staff_with(
            django_user_model,
            "exec-only",
            "workflows.view_workflow",
            "workflows.view_execution",
            "workflows.change_execution",
        )
    )
    assert client.post(reverse("admin:workflows_workflow_execute", args=[definition.pk])).status_code == 403
    assert not Execution.objects.exists()
