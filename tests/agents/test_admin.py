"""The registry's admin pages: they load fast with many agents, filter, and their actions call the services."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import Agent, AgentEvent, Capability
from tests.factories import AgentFactory, CapabilityFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "boss-pass-123")
    client.force_login(user)
    return client


def test_agent_list_shows_badges_heartbeat_age_and_capabilities_without_n_plus_1(
    admin_client, django_assert_max_num_queries
):
    for i in range(60):
        AgentFactory(agent_id=f"bulk-{i}", offers={"cap_a": 1.0, "cap_b": 2.0}, tag_names=["t1", "t2"])
    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse("admin:agents_agent_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "bulk-0" in html and "cap_a" in html and "s ago" in html and "border-radius" in html


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("capability=cap_x", "with-x", "without-x"),
        ("tag=blue", "with-x", "without-x"),
        ("state__exact=offline", "without-x", "with-x"),
        ("q=with-", "with-x", "nobody"),
    ],
)
def test_agent_list_filters(admin_client, query, shown, hidden):
    AgentFactory(agent_id="with-x", offers={"cap_x": 1.0}, tag_names=["blue"])
    AgentFactory(agent_id="without-x", state="offline")
    html = admin_client.get(reverse("admin:agents_agent_changelist") + "?" + query).content.decode()
    assert f">{shown}<" in html
    assert f">{hidden}<" not in html


def test_mark_offline_and_unregister_actions_use_the_services(admin_client):
    AgentFactory(agent_id="act-1")
    AgentFactory(agent_id="act-2")
    url = reverse("admin:agents_agent_changelist")
    admin_client.post(url, {"action": "mark_offline", "_selected_action": [Agent.objects.get(agent_id="act-1").pk]})
    admin_client.post(url, {"action": "unregister", "_selected_action": [Agent.objects.get(agent_id="act-2").pk]})
    assert Agent.objects.get(agent_id="act-1").state == "offline"
    assert Agent.objects.get(agent_id="act-2").unregistered_at is not None
    kinds = set(AgentEvent.objects.values_list("agent__agent_id", "kind"))
    assert kinds == {("act-1", "state_changed"), ("act-2", "unregistered")}


def test_agent_page_shows_history_and_metadata(admin_client):
    agent = AgentFactory(agent_id="page-1", metadata={"zone": "eu"}, offers={"cap_p": 1.0})
    AgentEvent.objects.create(agent=agent, kind="registered", at=agent.registered_at, to_state="idle")
    html = admin_client.get(reverse("admin:agents_agent_change", args=[agent.pk])).content.decode()
    assert "&quot;zone&quot;: &quot;eu&quot;" in html and "registered" in html and "cap_p" in html


def test_capability_admin_shows_pretty_schemas_and_refuses_an_invalid_one(admin_client):
    cap = CapabilityFactory(name="calc", input_schema={"type": "object", "required": ["a"]})
    AgentFactory(agent_id="c-1", offers={"calc": 0.5})
    html = admin_client.get(reverse("admin:agents_capability_changelist")).content.decode()
    assert "calc" in html and "0.5" in html
    url = reverse("admin:agents_capability_change", args=[cap.pk])
    assert "&quot;required&quot;" in admin_client.get(url).content.decode()
    response = admin_client.post(url, {"description": "x", "input_schema": '{"type": 5}', "output_schema": "{}"})
    assert response.status_code == 200 and "invalid JSON Schema" in response.content.decode()
    assert Capability.objects.get(name="calc").input_schema == {"type": "object", "required": ["a"]}
    response = admin_client.post(
        url, {"description": "new", "input_schema": '{"type": "object"}', "output_schema": "{}"}
    )
    assert response.status_code == 302
    assert Capability.objects.get(name="calc").input_schema == {"type": "object"}


def test_event_list_is_read_only(admin_client):
    agent = AgentFactory(agent_id="ev-a")
    AgentEvent.objects.create(
        agent=agent, kind="went_offline", at=agent.registered_at, from_state="idle", to_state="offline"
    )
    html = admin_client.get(reverse("admin:agents_agentevent_changelist")).content.decode()
    assert "ev-a" in html and "idle → offline" in html
    assert admin_client.get(reverse("admin:agents_agentevent_add")).status_code == 403


def test_admin_never_deletes_agents_and_deletes_capabilities_only_through_the_service(admin_client):
    from django.contrib.admin.models import LogEntry

    agent = AgentFactory(agent_id="keep-me", offers={"busy_cap": 1.0})
    assert admin_client.get(reverse("admin:agents_agent_delete", args=[agent.pk])).status_code == 403
    offered = Capability.objects.get(name="busy_cap")
    assert (
        admin_client.post(reverse("admin:agents_capability_delete", args=[offered.pk]), {"post": "yes"}).status_code
        == 403
    )
    response = admin_client.post(
        reverse("admin:agents_capability_add"),
        {"name": "new_cap", "description": "", "input_schema": "{}", "output_schema": "{}"},
    )
    assert response.status_code == 302
    created = Capability.objects.get(name="new_cap")
    assert LogEntry.objects.filter(object_id=str(created.pk)).exists()
    response = admin_client.post(reverse("admin:agents_capability_delete", args=[created.pk]), {"post": "yes"})
    assert response.status_code == 302 and not Capability.objects.filter(name="new_cap").exists()
    changelist = admin_client.get(reverse("admin:agents_capability_changelist")).content.decode()
    assert "delete_selected" not in changelist


def test_invocation_admin_lists_with_badges_and_retries_and_cancels(admin_client):
    from agents import services

    CapabilityFactory(name="calc")
    a = AgentFactory(agent_id="runner", offers={"calc": 1})
    failed, _ = services.invoke(capability="calc", input={}, requested_by="user:x")
    claimed = services.claim(str(failed.pk), agent=a)
    services.record_failure(failed.pk, attempt=claimed.attempt, error_type="ValueError", error_message="boom")
    queued, _ = services.invoke(capability="calc", input={}, requested_by="user:x")
    html = admin_client.get(reverse("admin:agents_invocation_changelist")).content.decode()
    assert "failed" in html and "queued" in html and "runner" in html and "border-radius" in html
    page = admin_client.get(reverse("admin:agents_invocation_change", args=[failed.pk])).content.decode()
    assert "boom" in page and "ValueError" in page
    url = reverse("admin:agents_invocation_changelist")
    admin_client.post(url, {"action": "retry_selected", "_selected_action": [failed.pk]})
    admin_client.post(url, {"action": "cancel_selected", "_selected_action": [queued.pk]})
    failed.refresh_from_db()
    queued.refresh_from_db()
    assert (failed.status, queued.status) == ("queued", "cancelled")
    html = admin_client.get(reverse("admin:agents_capability_change", args=[a.offers.first().capability_id]))
    assert "queue depth" in html.content.decode()


def test_fleet_command_refuses_agents_without_a_worker(django_user_model):
    from io import StringIO

    from django.core.management import CommandError, call_command

    AgentFactory(agent_id="no-worker")
    with pytest.raises(CommandError):
        call_command("fleet", "drain", "no-worker", stderr=StringIO())
    with pytest.raises(CommandError, match="name the agents"):
        call_command("fleet", "drain")
    out = StringIO()
    call_command("fleet", "status", stdout=out)
    assert "no-worker" in out.getvalue()
