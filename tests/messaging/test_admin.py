"""The bus's admin pages: they render for staff only, the redeliver action calls the service and says
what it refused, subscription and rule forms refuse bad input on the right field and save what the
database routes on, and the agents' pages show their inbox depth."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse

from messaging import services
from messaging.models import Delivery, Endpoint, Message, RoutingRule, Subscription
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db

BOSS = services.Sender.of_user("boss")


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "boss-pass-123")
    client.force_login(user)
    return client


def _dead_delivery(agent, content=None) -> Delivery:
    """A direct message to an HTTP agent, handed out and nacked for good."""
    message = services.send(BOSS, content or {"type": "job"}, to=agent.agent_id)
    (taken,) = services.claim_batch(agent, limit=1, visibility=30)
    services.fail(taken.pk, error="handler exploded", agent=agent, final=True)
    return Delivery.objects.get(message=message, agent=agent)


def _acked_delivery(agent) -> Delivery:
    message = services.send(BOSS, {"type": "job"}, to=agent.agent_id)
    (taken,) = services.claim_batch(agent, limit=1, visibility=30)
    services.ack(taken.pk, agent=agent)
    return Delivery.objects.get(message=message, agent=agent)


def _page_urls(message: Message, delivery: Delivery, sub: Subscription, rule: RoutingRule, agent) -> list[str]:
    return [
        reverse("admin:messaging_message_changelist"),
        reverse("admin:messaging_message_change", args=[message.pk]),
        reverse("admin:messaging_delivery_changelist"),
        reverse("admin:messaging_delivery_changelist") + f"?status=dead&agent={agent.agent_id}",
        reverse("admin:messaging_delivery_changelist") + f"?message={message.pk}",
        reverse("admin:messaging_delivery_change", args=[delivery.pk]),
        reverse("admin:messaging_subscription_changelist"),
        reverse("admin:messaging_subscription_add"),
        reverse("admin:messaging_subscription_change", args=[sub.pk]),
        reverse("admin:messaging_routingrule_changelist"),
        reverse("admin:messaging_routingrule_add"),
        reverse("admin:messaging_routingrule_change", args=[rule.pk]),
        reverse("admin:messaging_endpoint_changelist"),
        reverse("admin:messaging_metrics"),
        reverse("admin:app_list", args=["messaging"]),
        reverse("admin:agents_agent_changelist"),
        reverse("admin:agents_agent_change", args=[agent.pk]),
    ]


@pytest.fixture
def bus():
    agent = AgentFactory(agent_id="inbox-a")
    Endpoint.objects.create(agent=agent, transport="http", handles=["job"])
    sub, _ = services.subscribe(agent, "weather.#", types=["event"], where={"city": "nyc"})
    rule = RoutingRule.objects.create(name="copy", action="add_agent", target_agent=agent, topic_pattern="audit.*")
    delivery = _dead_delivery(agent)
    return agent, delivery.message, delivery, sub, rule


def test_every_page_renders_for_staff(admin_client, bus):
    agent, message, delivery, sub, rule = bus
    for url in _page_urls(message, delivery, sub, rule, agent):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    page = admin_client.get(reverse("admin:messaging_message_change", args=[message.pk])).content.decode()
    # the deliveries inline: the recipient, a coloured status, attempts, via, the error
    assert "inbox-a" in page and "#c62828" in page and "handler exploded" in page and "direct" in page
    assert 'name="_save"' not in page  # read-only
    assert admin_client.get(reverse("admin:messaging_message_add")).status_code == 403


def test_pages_are_refused_to_people_who_are_not_staff(client, django_user_model, bus):
    agent, message, delivery, sub, rule = bus
    user = django_user_model.objects.create_user("reader", password="reader-pass-123")
    client.force_login(user)
    for url in _page_urls(message, delivery, sub, rule, agent):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


def test_staff_without_view_permission_does_not_see_the_metrics(client, django_user_model):
    user = django_user_model.objects.create_user("clerk", password="clerk-pass-123", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:messaging_metrics")).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    assert client.get(reverse("admin:messaging_metrics")).status_code == 200


def test_message_list_summarises_deliveries_per_status_in_one_query_for_the_page(
    admin_client, django_assert_max_num_queries
):
    agents = [AgentFactory(agent_id=f"sub-{i}") for i in range(4)]
    for agent in agents:
        services.subscribe(agent, "news.#")
    for _ in range(30):
        services.send(BOSS, {"n": 1}, topic="news.today")
    (taken,) = services.claim_batch(agents[0], limit=1, visibility=30)
    services.ack(taken.pk, agent=agents[0])
    with django_assert_max_num_queries(10):
        response = admin_client.get(reverse("admin:messaging_message_changelist"))
    html = response.content.decode()
    assert html.count('title="4 pending"') == 29 and 'title="3 pending"' in html and 'title="1 acked"' in html
    assert "topic news.today" in html


def test_messages_are_found_by_correlation_id_and_filtered_by_type(admin_client):
    agent = AgentFactory(agent_id="responder")
    request = services.send(BOSS, {"type": "job"}, to=agent.agent_id, type="request", timeout=30)
    services.send(BOSS, {"type": "job"}, to=agent.agent_id, correlation_id=str(request.pk))
    services.send(BOSS, {"other": 1}, to=agent.agent_id)
    url = reverse("admin:messaging_message_changelist")
    found = admin_client.get(url + f"?q={request.pk}").context["cl"].result_list
    assert {m.pk for m in found} == set(Message.objects.filter(content__type="job").values_list("pk", flat=True))
    assert len(admin_client.get(url + "?type__exact=request").context["cl"].result_list) == 1
    assert admin_client.get(url + "?q=user:boss").context["cl"].result_count == 3


def test_staff_may_delete_a_message_with_its_deliveries(admin_client, bus):
    agent, message, delivery, sub, rule = bus
    response = admin_client.post(reverse("admin:messaging_message_delete", args=[message.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Message.objects.filter(pk=message.pk).exists() and not Delivery.objects.filter(pk=delivery.pk).exists()


def test_redeliver_action_puts_a_dead_delivery_back_and_says_why_it_refuses_the_others(admin_client):
    agent = AgentFactory(agent_id="flaky")
    dead = _dead_delivery(agent)
    acked = _acked_delivery(agent)
    response = admin_client.post(
        reverse("admin:messaging_delivery_changelist"),
        {"action": "redeliver_selected", "_selected_action": [dead.pk, acked.pk]},
        follow=True,
    )
    lines = [str(m) for m in get_messages(response.wsgi_request)]
    assert f"Delivery {dead.pk} to flaky: redelivered." in lines
    assert any(line.startswith(f"Delivery {acked.pk} to flaky: not redelivered") and "acked" in line for line in lines)
    dead.refresh_from_db()
    acked.refresh_from_db()
    assert (dead.status, dead.attempts, acked.status) == ("pending", 0, "acked")
    # handed out again to the agent's inbox
    assert [d.pk for d in services.claim_batch(agent, limit=5, visibility=30)] == [dead.pk]


def test_redeliver_needs_the_change_permission_on_deliveries(client, django_user_model):
    agent = AgentFactory(agent_id="flaky-2")
    dead = _dead_delivery(agent)
    user = django_user_model.objects.create_user("viewer", password="viewer-pass-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client.force_login(user)
    url = reverse("admin:messaging_delivery_changelist")
    assert "redeliver_selected" not in client.get(url).content.decode()
    response = client.post(url, {"action": "redeliver_selected", "_selected_action": [dead.pk]})
    assert response.status_code == 403
    assert Delivery.objects.get(pk=dead.pk).status == "dead"
    user.user_permissions.add(Permission.objects.get(codename="change_delivery"))
    client.post(url, {"action": "redeliver_selected", "_selected_action": [dead.pk]})
    assert Delivery.objects.get(pk=dead.pk).status == "pending"


def _subscription_post(agent, **fields) -> dict:
    data = {"agent": agent.pk, "pattern": "weather.#", "sender_patterns": "", "content_filters": "{}"}
    data.update(fields)
    return data


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"pattern": "weather..nyc"}, "pattern"),
        ({"pattern": "weather.n*c"}, "pattern"),
        ({"message_types": ["shout"]}, "message_types"),
        ({"sender_patterns": "weather pub"}, "sender_patterns"),
        ({"content_filters": '["city"]'}, "content_filters"),
        ({"content_filters": '{"bad key!": 1}'}, "content_filters"),
        ({"content_filters": "{not json"}, "content_filters"),
    ],
)
def test_subscription_form_refuses_bad_input_on_the_right_field(admin_client, fields, field):
    agent = AgentFactory(agent_id="picky")
    response = admin_client.post(reverse("admin:messaging_subscription_add"), _subscription_post(agent, **fields))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert not Subscription.objects.exists()


def test_subscription_form_refuses_an_unregistered_agent(admin_client):
    from django.utils import timezone

    agent = AgentFactory(agent_id="gone", unregistered_at=timezone.now())
    response = admin_client.post(reverse("admin:messaging_subscription_add"), _subscription_post(agent))
    assert "agent" in response.context["adminform"].form.errors and not Subscription.objects.exists()


def test_a_subscription_saved_in_the_admin_routes_messages_and_follows_edits(admin_client):
    agent = AgentFactory(agent_id="listener")
    AgentFactory(agent_id="weather_pub")
    response = admin_client.post(
        reverse("admin:messaging_subscription_add"),
        _subscription_post(
            agent,
            pattern="weather.*",
            message_types=["event"],
            sender_patterns="weather_*\nuser:boss",
            content_filters='{"reading.city": "nyc"}',
        ),
    )
    assert response.status_code == 302
    sub = Subscription.objects.get(agent=agent)
    assert (sub.message_types, sub.sender_patterns, sub.type_mask) == (["event"], ["user:boss", "weather_*"], 8)
    assert list(sub.filters.values_list("key", flat=True)) == ["reading.city"]

    def recipients(content, topic, type="event"):
        message = services.send(BOSS, content, topic=topic, type=type)
        return set(Delivery.objects.filter(message=message).values_list("agent__agent_id", flat=True))

    assert recipients({"reading": {"city": "nyc"}}, "weather.today") == {"listener"}
    assert recipients({"reading": {"city": "sf"}}, "weather.today") == set()
    assert recipients({"reading": {"city": "nyc"}}, "weather.today.late") == set()
    assert recipients({"reading": {"city": "nyc"}}, "weather.today", type="heartbeat") == set()

    response = admin_client.post(
        reverse("admin:messaging_subscription_change", args=[sub.pk]),
        _subscription_post(agent, pattern="stocks.#", content_filters='{"venue": "nyse"}'),
    )
    assert response.status_code == 302
    assert recipients({"venue": "nyse"}, "stocks.us.aapl", type="heartbeat") == {"listener"}
    assert recipients({"reading": {"city": "nyc"}}, "weather.today") == set()
    assert list(Subscription.objects.get(pk=sub.pk).filters.values_list("pair", flat=True)) == ['venue="nyse"']


def _rule_post(**fields) -> dict:
    data = {
        "name": "r1",
        "position": "10",
        "enabled": "on",
        "topic_pattern": "",
        "sender_pattern": "",
        "content_filters": "{}",
        "action": "drop",
        "target_agent": "",
        "target_topic": "",
        "description": "",
    }
    data.update(fields)
    return data


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"topic_pattern": "orders.$"}, "topic_pattern"),
        ({"sender_pattern": "bad sender"}, "sender_pattern"),
        ({"message_types": ["nope"]}, "message_types"),
        ({"content_filters": "[1]"}, "content_filters"),
        ({"action": "add_agent"}, "target_agent"),
        ({"action": "add_topic"}, "target_topic"),
        ({"action": "add_topic", "target_topic": "audit.#"}, "target_topic"),
        ({"action": "drop", "target_topic": "audit"}, "target_topic"),
        ({"action": "shout"}, "action"),
    ],
)
def test_rule_form_refuses_bad_input_on_the_right_field(admin_client, fields, field):
    response = admin_client.post(reverse("admin:messaging_routingrule_add"), _rule_post(**fields))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert not RoutingRule.objects.exists()


def test_rules_saved_in_the_admin_route_messages_in_position_order(admin_client):
    auditor = AgentFactory(agent_id="auditor")
    watcher = AgentFactory(agent_id="watcher")
    services.subscribe(watcher, "audit.copies")
    url = reverse("admin:messaging_routingrule_add")
    assert (
        admin_client.post(
            url,
            _rule_post(
                name="to-auditor", position="20", action="add_agent", target_agent=auditor.pk, topic_pattern="orders.#"
            ),
        ).status_code
        == 302
    )
    assert (
        admin_client.post(
            url,
            _rule_post(
                name="to-topic", position="30", action="add_topic", target_topic="audit.copies", message_types=["event"]
            ),
        ).status_code
        == 302
    )
    message = services.send(BOSS, {"n": 1}, topic="orders.eu")
    chosen = {
        d.agent.agent_id: d.rule.name for d in Delivery.objects.filter(message=message).select_related("agent", "rule")
    }
    assert chosen == {"auditor": "to-auditor", "watcher": "to-topic"}

    # a drop rule moved in front of them in the list (list_editable position) drops the message
    drop = RoutingRule.objects.create(name="drop-orders", position=50, action="drop", topic_pattern="orders.#")
    rules = list(RoutingRule.objects.order_by("position"))
    changelist = reverse("admin:messaging_routingrule_changelist")
    data = {"form-TOTAL_FORMS": str(len(rules)), "form-INITIAL_FORMS": str(len(rules)), "_save": "Save"}
    for i, rule in enumerate(rules):
        data[f"form-{i}-id"] = str(rule.pk)
        data[f"form-{i}-position"] = "5" if rule.pk == drop.pk else str(rule.position)
        if rule.enabled:
            data[f"form-{i}-enabled"] = "on"
    assert admin_client.post(changelist, data).status_code == 302
    assert RoutingRule.objects.get(pk=drop.pk).position == 5
    listed = admin_client.get(changelist).context["cl"].result_list
    assert [r.name for r in listed] == ["drop-orders", "to-auditor", "to-topic"]
    dropped = services.send(BOSS, {"n": 2}, topic="orders.eu")
    assert dropped.recipient_count == 0 and dropped.dropped_by_id == drop.pk


def test_agent_list_shows_each_inbox_depth_with_one_query_for_the_page(admin_client, django_assert_max_num_queries):
    busy = AgentFactory(agent_id="busy")
    AgentFactory(agent_id="idle-one")
    for _ in range(3):
        services.send(BOSS, {"n": 1}, to="busy")
    _acked_delivery(busy)
    _dead_delivery(busy)
    for i in range(40):
        AgentFactory(agent_id=f"bulk-{i}")
        services.send(BOSS, {"n": 1}, to=f"bulk-{i}")
    with django_assert_max_num_queries(13):
        response = admin_client.get(reverse("admin:agents_agent_changelist") + "?q=busy")
    cl = response.context["cl"]
    depths = {a.agent_id: a.inbox_depth_count for a in cl.result_list}
    assert depths == {"busy": 3}
    html = response.content.decode()
    assert '?agent=busy&amp;status=pending,failed,delivered">3</a>' in html
    depths = {
        a.agent_id: a.inbox_depth_count
        for a in admin_client.get(reverse("admin:agents_agent_changelist")).context["cl"].result_list
    }
    assert depths["idle-one"] == 0 and depths["bulk-7"] == 1 and depths["busy"] == 3

    page = admin_client.get(reverse("admin:agents_agent_change", args=[busy.pk])).content.decode()
    assert "inbox depth" in page and "3 pending" in page and "1 dead" in page and "1 acked" in page
    listed = admin_client.get(
        reverse("admin:messaging_delivery_changelist") + "?agent=busy&status=pending,failed,delivered"
    )
    assert listed.context["cl"].result_count == 3


def test_metrics_page_shows_the_bus_stats_as_tables(admin_client):
    agent = AgentFactory(agent_id="metered")
    _dead_delivery(agent)
    _acked_delivery(agent)
    services.send(BOSS, {"n": 1}, to="metered")
    html = admin_client.get(reverse("admin:messaging_metrics")).content.decode()
    for piece in ("Messages by type", "Deliveries by status", "Fan-out latency", "p95", "Inbox depth per agent"):
        assert piece in html
    assert ">metered</a></td><td><a" in html  # its depth, linked to its open deliveries
    assert "?status=dead" in html
    assert (
        reverse("admin:messaging_metrics")
        in admin_client.get(reverse("admin:messaging_message_changelist")).content.decode()
    )
    assert (
        reverse("admin:messaging_metrics")
        in admin_client.get(reverse("admin:app_list", args=["messaging"])).content.decode()
    )


def test_endpoints_are_read_only(admin_client):
    agent = AgentFactory(agent_id="worker-agent")
    endpoint = Endpoint.objects.create(agent=agent, transport="worker", handles=["ping", "job"])
    html = admin_client.get(reverse("admin:messaging_endpoint_changelist")).content.decode()
    assert "worker-agent" in html and "ping, job" in html
    assert admin_client.get(reverse("admin:messaging_endpoint_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:messaging_endpoint_delete", args=[endpoint.pk]), {"post": "yes"}).status_code
        == 403
    )


def test_a_dead_deliverys_page_has_a_redeliver_button_for_those_who_may(admin_client, django_user_model):
    from django.test import Client

    agent = AgentFactory(agent_id="flaky-3")
    dead = _dead_delivery(agent)
    page = reverse("admin:messaging_delivery_change", args=[dead.pk])
    button = reverse("admin:messaging_delivery_redeliver", args=[dead.pk])
    viewer = django_user_model.objects.create_user("viewer", password="viewer-pass-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client = Client()
    client.force_login(viewer)
    assert button not in client.get(page).content.decode()
    assert client.post(button).status_code == 403

    assert button in admin_client.get(page).content.decode()
    assert admin_client.get(button).status_code == 405
    response = admin_client.post(button, follow=True)
    assert f"Delivery {dead.pk} to flaky-3: redelivered." in [str(m) for m in get_messages(response.wsgi_request)]
    assert Delivery.objects.get(pk=dead.pk).status == "pending"
    assert button not in admin_client.get(page).content.decode()  # pending: nothing to redeliver
