"""Admin actions that change state need a Django permission: staff who may only view see none of them,
and a hand-made POST of one is refused (403) and changes nothing. Real admin, real database."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from agents import services
from agents.models import Agent, AgentEvent, Invocation
from tests.factories import AgentFactory, CapabilityFactory

pytestmark = pytest.mark.django_db

AGENT_ACTIONS = ["drain", "resume", "shutdown", "mark_offline", "unregister"]
INVOCATION_ACTIONS = ["retry_selected", "cancel_selected"]
PERIODIC_TASK_ACTIONS = ["enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks"]


def staff_with(django_user_model, username: str, *perms: str):
    """A staff user (not a superuser) holding exactly ``perms`` ("app_label.codename")."""
    user = django_user_model.objects.create_user(username, password="pass-123-xyz", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


@pytest.fixture
def viewer(client, django_user_model):
    client.force_login(
        staff_with(
            django_user_model,
            "viewer",
            "agents.view_agent",
            "agents.view_invocation",
            "django_celery_beat.view_periodictask",
        )
    )
    return client


@pytest.fixture
def operator(client, django_user_model):
    client.force_login(
        staff_with(
            django_user_model,
            "operator",
            "agents.view_agent",
            "agents.change_agent",
            "agents.view_invocation",
            "agents.change_invocation",
            "django_celery_beat.view_periodictask",
            "django_celery_beat.change_periodictask",
        )
    )
    return client


@pytest.fixture
def superuser(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123"))
    return client


def offered_actions(client, url: str) -> set[str]:
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    if 'name="action"' not in html:
        return set()
    return {name for name in [*AGENT_ACTIONS, *INVOCATION_ACTIONS, *PERIODIC_TASK_ACTIONS] if f'value="{name}"' in html}


def test_a_view_only_staff_user_sees_the_agents_but_no_action(viewer):
    agent = AgentFactory(agent_id="seen")
    assert offered_actions(viewer, reverse("admin:agents_agent_changelist")) == set()
    assert "seen" in viewer.get(reverse("admin:agents_agent_change", args=[agent.pk])).content.decode()


@pytest.mark.parametrize("client_fixture", ["operator", "superuser"])
def test_staff_with_change_agent_and_superusers_see_every_agent_action(request, client_fixture):
    client = request.getfixturevalue(client_fixture)
    AgentFactory(agent_id="seen")
    assert offered_actions(client, reverse("admin:agents_agent_changelist")) == set(AGENT_ACTIONS)


@pytest.mark.parametrize("action", AGENT_ACTIONS)
def test_a_forged_agent_action_from_a_view_only_user_is_refused_and_changes_nothing(viewer, action):
    agent = AgentFactory(agent_id="target", state="draining" if action == "resume" else "idle")
    response = viewer.post(reverse("admin:agents_agent_changelist"), {"action": action, "_selected_action": [agent.pk]})
    assert response.status_code == 403
    after = Agent.objects.get(pk=agent.pk)
    assert (after.state, after.unregistered_at) == (agent.state, None)
    assert not AgentEvent.objects.filter(agent=agent).exists()


def test_an_operator_with_change_agent_runs_the_agent_actions(operator):
    AgentFactory(agent_id="op-1")
    AgentFactory(agent_id="op-2")
    AgentFactory(agent_id="op-3")  # no Celery worker on record: the fleet service refuses, and says why
    url = reverse("admin:agents_agent_changelist")

    def act(action: str, agent_id: str) -> str:
        pk = Agent.objects.get(agent_id=agent_id).pk
        response = operator.post(url, {"action": action, "_selected_action": [pk]}, follow=True)
        assert response.status_code == 200
        return response.content.decode()

    assert "Marked offline 1 agent(s)." in act("mark_offline", "op-1")
    assert "Unregistered 1 agent(s)." in act("unregister", "op-2")
    assert "has no Celery worker on record" in act("drain", "op-3")
    assert Agent.objects.get(agent_id="op-1").state == "offline"
    assert Agent.objects.get(agent_id="op-2").unregistered_at is not None
    assert Agent.objects.get(agent_id="op-3").state == "idle"


def failed_and_queued() -> tuple[Invocation, Invocation]:
    CapabilityFactory(name="calc")
    runner = AgentFactory(agent_id="runner", offers={"calc": 1})
    failed, _ = services.invoke(capability="calc", input={}, requested_by="user:x")
    claimed = services.claim(str(failed.pk), agent=runner)
    services.record_failure(failed.pk, attempt=claimed.attempt, error_type="ValueError", error_message="boom")
    queued, _ = services.invoke(capability="calc", input={}, requested_by="user:x")
    return Invocation.objects.get(pk=failed.pk), queued


def test_a_view_only_staff_user_sees_no_invocation_action_and_cannot_post_one(viewer):
    failed, queued = failed_and_queued()
    url = reverse("admin:agents_invocation_changelist")
    assert offered_actions(viewer, url) == set()
    for action, invocation in (("retry_selected", failed), ("cancel_selected", queued)):
        response = viewer.post(url, {"action": action, "_selected_action": [invocation.pk]})
        assert response.status_code == 403, action
    assert Invocation.objects.get(pk=failed.pk).status == "failed"
    assert Invocation.objects.get(pk=queued.pk).status == "queued"
    assert Invocation.objects.get(pk=failed.pk).attempt == failed.attempt


@pytest.mark.parametrize("client_fixture", ["operator", "superuser"])
def test_staff_with_change_invocation_and_superusers_retry_and_cancel(request, client_fixture):
    client = request.getfixturevalue(client_fixture)
    failed, queued = failed_and_queued()
    url = reverse("admin:agents_invocation_changelist")
    assert offered_actions(client, url) == set(INVOCATION_ACTIONS)
    client.post(url, {"action": "retry_selected", "_selected_action": [failed.pk]})
    client.post(url, {"action": "cancel_selected", "_selected_action": [queued.pk]})
    assert Invocation.objects.get(pk=failed.pk).status == "queued"
    assert Invocation.objects.get(pk=queued.pk).status == "cancelled"


def test_periodic_task_actions_need_the_change_permission(viewer):
    sweep = PeriodicTask.objects.get(task="agents.tasks.sweep_stale_agents")
    assert sweep.enabled
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    assert offered_actions(viewer, url) == set()
    for action in PERIODIC_TASK_ACTIONS:
        response = viewer.post(url, {"action": action, "_selected_action": [sweep.pk]})
        assert response.status_code == 403, action
    assert PeriodicTask.objects.get(pk=sweep.pk).enabled


def test_an_operator_with_change_periodictask_disables_a_sweep(operator):
    sweep = PeriodicTask.objects.get(task="agents.tasks.sweep_stale_agents")
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    assert offered_actions(operator, url) == set(PERIODIC_TASK_ACTIONS)
    response = operator.post(url, {"action": "disable_tasks", "_selected_action": [sweep.pk]}, follow=True)
    assert "1 task was successfully disabled" in response.content.decode()
    assert not PeriodicTask.objects.get(pk=sweep.pk).enabled
