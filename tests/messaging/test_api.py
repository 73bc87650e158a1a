"""The message bus's REST API without workers: each addressing mode, every bad input (400 naming the field,
nothing created), who may send as whom and read what, the history's filters, routing explanations,
redelivery, subscriptions, routing rules and the metrics."""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import override_settings

from messaging import services
from messaging.models import Delivery, DeliveryStatus, Message, RoutingRule, Subscription
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


def post(client, body, path="/api/messages/"):
    return client.post(path, body, format="json")


def delivered_to(data) -> set[str]:
    return {d["agent_id"] for d in data["deliveries"]}


@pytest.fixture
def fleet():
    return {name: AgentFactory(agent_id=name) for name in ("pub", "sub1", "sub2", "other")}


# --- addressing ---------------------------------------------------------------


def test_an_agent_sends_directly_publishes_and_broadcasts_as_itself(agent_client, fleet):
    services.subscribe(fleet["sub1"], "weather.#")
    services.subscribe(fleet["sub2"], "weather.*", where={"unit": "C"})
    pub = agent_client(fleet["pub"])
    direct = post(pub, {"to": "sub1", "content": {"type": "hello"}})
    assert direct.status_code == 201, direct.content
    data = direct.json()
    assert data["sender"] == "pub" and data["addressing"] == "direct" and data["to"] == "sub1"
    assert delivered_to(data) == {"sub1"} and data["type"] == "event" and data["response"] is None
    published = post(pub, {"topic": "weather.nyc", "content": {"unit": "C", "t": 3}}).json()
    assert published["addressing"] == "topic" and delivered_to(published) == {"sub1", "sub2"}
    assert {d["via"] for d in published["deliveries"]} == {"subscription"}
    filtered = post(pub, {"topic": "weather.nyc", "content": {"unit": "F"}}).json()
    assert delivered_to(filtered) == {"sub1"}
    everyone = post(pub, {"broadcast": True, "content": {"note": "hi"}}).json()
    assert everyone["type"] == "broadcast" and delivered_to(everyone) == {"sub1", "sub2", "other"}
    assert Message.objects.filter(sender="pub").count() == 4


def test_a_persons_messages_carry_user_and_their_name(user_client, fleet):
    response = post(user_client, {"to": "sub1", "content": {"x": 1}, "priority": 9, "ttl": 60})
    assert response.status_code == 201, response.content
    assert response.json()["sender"] == "user:reader" and response.json()["priority"] == 9
    assert Message.objects.get().sender_agent is None


def test_a_request_to_an_agent_that_cannot_answer_gets_no_responders_at_once(staff_client, fleet):
    fleet["sub1"].state = "offline"
    fleet["sub1"].save()
    response = post(
        staff_client, {"type": "request", "to": "sub1", "content": {"type": "ping"}}, "/api/messages/?wait=5"
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["request_status"] == "no_responders" and data["deliveries"] == []
    assert data["response"]["error"] == "no_responders" and "offline" in data["response"]["detail"]


def test_a_request_not_answered_within_the_wait_is_pending(staff_client, fleet, broker_url):
    response = post(
        staff_client, {"type": "request", "to": "sub1", "content": {"type": "add"}}, "/api/messages/?wait=0.3"
    )
    assert response.status_code == 201 and response.json()["request_status"] == "pending"
    assert response.json()["response"] is None and delivered_to(response.json()) == {"sub1"}


def test_a_request_answered_by_an_ack_carries_the_response(staff_client, agent_client, fleet):
    sent = post(staff_client, {"type": "request", "to": "sub1", "content": {"type": "add", "a": 1}}).json()
    sub1 = agent_client(fleet["sub1"])
    [taken] = sub1.get("/api/agents/sub1/inbox/").json()["deliveries"]
    assert taken["message"]["id"] == sent["id"] and taken["attempt"] == 1
    acked = post(sub1, {"response": {"sum": 2}}, f"/api/agents/sub1/inbox/{taken['id']}/ack/")
    assert acked.status_code == 200 and acked.json()["status"] == "acked"
    detail = staff_client.get(f"/api/messages/{sent['id']}/").json()
    assert detail["request_status"] == "answered"
    answer = staff_client.get(f"/api/messages/?correlation_id={sent['id']}").json()["results"]
    assert [m["content"] for m in answer] == [{"sum": 2}] and answer[0]["sender"] == "sub1"


# --- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"to": "ghost", "content": {}}, "to", "No agent 'ghost'"),
        ({"topic": "weather..nyc", "content": {}}, "topic", "is not a topic"),
        ({"topic": "weather.#", "content": {}}, "topic", "is not a topic"),
        ({"to": "sub1", "content": [1, 2]}, "content", "A JSON object"),
        ({"to": "sub1", "content": "text"}, "content", "A JSON object"),
        ({"to": "sub1", "content": {}, "ttl": 0}, "ttl", "greater than or equal to 1"),
        ({"to": "sub1", "content": {}, "ttl": 10**9}, "ttl", "less than or equal to"),
        ({"to": "sub1", "content": {}, "priority": 10}, "priority", "less than or equal to 9"),
        ({"to": "sub1", "content": {}, "priority": -1}, "priority", "greater than or equal to 0"),
        ({"to": "sub1", "content": {}, "priority": "5"}, "priority", "must be an integer"),
        ({"to": "sub1", "content": {}, "timeout": 5}, "timeout", "Only a request has a timeout"),
        ({"type": "request", "topic": "a.b", "content": {}}, "to", "A request goes to one agent"),
        ({"to": "sub1", "content": {}, "reply_to": "sub2"}, "reply_to", "come back to itself"),
        ({"type": "request", "to": "pub", "content": {}}, "to", "cannot send a request to itself"),
        ({"to": "sub1", "content": {}, "correlation_id": "nope"}, "correlation_id", "valid UUID"),
        ({"to": "sub1", "content": {}, "type": "shout"}, "type", "not a valid choice"),
        ({"content": {}}, "to", "Give exactly one of"),
        ({"to": "sub1", "broadcast": True, "content": {}}, "to", "Give exactly one of"),
        ({"to": "sub1", "content": {"x": "a\u0000b"}}, "content", "NUL"),
        ({"to": "sub1", "content": {}, "sender": "sub2"}, "sender", "never taken from the body"),
    ],
)
def test_bad_messages_are_400_naming_the_field_and_create_nothing(agent_client, fleet, body, field, words):
    response = post(agent_client(fleet["pub"]), body)
    assert response.status_code == 400, response.content
    assert words in str(response.json()[field]), response.json()
    assert not Message.objects.exists() and not Delivery.objects.exists()


@override_settings(MASP_MESSAGE_MAX_BYTES=100)
def test_a_message_too_large_is_400_naming_content(staff_client, fleet):
    response = post(staff_client, {"to": "sub1", "content": {"text": "x" * 200}})
    assert response.status_code == 400 and "at most 100" in str(response.json()["content"])
    assert not Message.objects.exists()


@pytest.mark.parametrize(("query", "words"), [("wait=31", "between 0 and 30"), ("wait=soon", "a number")])
def test_wait_is_0_to_30_seconds(staff_client, fleet, query, words):
    response = post(staff_client, {"type": "request", "to": "sub1", "content": {}}, f"/api/messages/?{query}")
    assert response.status_code == 400 and words in str(response.json()["wait"])
    assert not Message.objects.exists()


def test_wait_on_a_message_that_is_not_a_request_is_400(staff_client, fleet):
    response = post(staff_client, {"to": "sub1", "content": {}}, "/api/messages/?wait=1")
    assert response.status_code == 400 and "Only a request" in str(response.json()["wait"])
    assert not Message.objects.exists()


def test_a_body_that_is_not_an_object_is_400(staff_client, fleet):
    response = post(staff_client, [1, 2])
    assert response.status_code == 400 and "non_field_errors" in response.json()


# --- who may send as whom, and read what ---------------------------------------


def test_anonymous_is_401_everywhere(api_client, fleet):
    sent = services.send(services.PLATFORM_SENDER, {}, to="sub1")
    delivery = Delivery.objects.get()
    for method, path in [
        ("post", "/api/messages/"),
        ("get", "/api/messages/"),
        ("get", f"/api/messages/{sent.pk}/"),
        ("get", f"/api/messages/{sent.pk}/routing/"),
        ("get", "/api/deliveries/"),
        ("post", f"/api/deliveries/{delivery.pk}/redeliver/"),
        ("get", "/api/agents/sub1/inbox/"),
        ("post", f"/api/agents/sub1/inbox/{delivery.pk}/ack/"),
        ("get", "/api/agents/sub1/subscriptions/"),
        ("post", "/api/agents/sub1/subscriptions/"),
        ("get", "/api/messaging/stats/"),
        ("get", "/api/routing-rules/"),
    ]:
        assert getattr(api_client, method)(path, {}, format="json").status_code == 401, path


def test_an_agent_cannot_read_or_ack_another_agents_inbox_deliveries_or_subscriptions(agent_client, fleet):
    services.send(services.PLATFORM_SENDER, {"secret": 1}, to="sub2")
    services.subscribe(fleet["sub2"], "private.#")
    delivery = Delivery.objects.get()
    sub1 = agent_client(fleet["sub1"])
    assert sub1.get("/api/agents/sub2/inbox/").status_code == 403
    assert post(sub1, {}, f"/api/agents/sub2/inbox/{delivery.pk}/ack/").status_code == 403
    assert post(sub1, {"error": "x"}, f"/api/agents/sub2/inbox/{delivery.pk}/nack/").status_code == 403
    # through its own inbox's URL, another's delivery does not exist
    assert post(sub1, {}, f"/api/agents/sub1/inbox/{delivery.pk}/ack/").status_code == 404
    assert sub1.get("/api/agents/sub2/subscriptions/").status_code == 403
    assert post(sub1, {"pattern": "private.#"}, "/api/agents/sub2/subscriptions/").status_code == 403
    assert sub1.get("/api/deliveries/").json()["count"] == 0
    assert sub1.get(f"/api/deliveries/{delivery.pk}/").status_code == 404
    assert sub1.get("/api/messages/").json()["count"] == 0
    assert sub1.get(f"/api/messages/{delivery.message_id}/").status_code == 404
    assert Delivery.objects.get().status == DeliveryStatus.PENDING
    assert Subscription.objects.filter(agent=fleet["sub1"]).count() == 0


def test_a_person_who_is_not_staff_reads_no_inbox_and_only_the_messages_they_sent(user_client, fleet):
    services.send(services.PLATFORM_SENDER, {}, to="sub1")
    mine = post(user_client, {"to": "sub2", "content": {}}).json()
    assert user_client.get("/api/agents/sub1/inbox/").status_code == 403
    assert user_client.get("/api/agents/sub1/subscriptions/").status_code == 403
    listed = user_client.get("/api/messages/").json()
    assert [m["id"] for m in listed["results"]] == [mine["id"]]
    assert delivered_to(user_client.get(f"/api/messages/{mine['id']}/").json()) == {"sub2"}
    assert user_client.get(f"/api/messages/{mine['id']}/routing/").status_code == 403


def test_a_recipient_sees_only_its_own_delivery_of_a_message(staff_client, agent_client, fleet):
    sent = post(staff_client, {"broadcast": True, "content": {}}).json()
    assert len(sent["deliveries"]) == 4
    seen = agent_client(fleet["sub1"]).get(f"/api/messages/{sent['id']}/").json()
    assert delivered_to(seen) == {"sub1"}


def test_the_sender_sees_every_delivery_of_its_message(agent_client, fleet):
    pub = agent_client(fleet["pub"])
    sent = post(pub, {"broadcast": True, "content": {}}).json()
    assert delivered_to(pub.get(f"/api/messages/{sent['id']}/").json()) == {"sub1", "sub2", "other"}


# --- history filters ----------------------------------------------------------


def test_the_history_filters_by_sender_recipient_topic_type_correlation_since_and_status(staff_client, fleet):
    services.subscribe(fleet["sub1"], "news.#")
    pub = services.Sender.of_agent(fleet["pub"])
    first = services.send(pub, {}, to="sub1")
    news = services.send(pub, {}, topic="news.world", type="event")
    beat = services.send(services.Sender.of_agent(fleet["sub2"]), {}, to="other", type="heartbeat")
    reply = services.send(pub, {}, to="sub2", correlation_id=first.pk)
    Delivery.objects.filter(message=news).update(status=DeliveryStatus.DEAD)

    def ids(query: str) -> set[str]:
        response = staff_client.get(f"/api/messages/?{query}")
        assert response.status_code == 200, response.content
        return {m["id"] for m in response.json()["results"]}

    assert ids("sender=pub") == {str(m.pk) for m in (first, news, reply)}
    assert ids("recipient=sub1") == {str(first.pk), str(news.pk)}
    assert ids("topic=news.world") == {str(news.pk)}
    assert ids("type=heartbeat") == {str(beat.pk)}
    assert ids(f"correlation_id={first.pk}") == {str(reply.pk)}
    assert ids("status=dead") == {str(news.pk)}
    assert ids("since=2999-01-01T00:00:00Z") == set()
    assert len(ids("since=2000-01-01T00:00:00Z")) == 4
    for bad, field in [("type=shout", "type"), ("since=yesterday", "since"), ("status=lost", "status")]:
        response = staff_client.get(f"/api/messages/?{bad}")
        assert response.status_code == 400 and field in response.json(), bad


# --- routing explanations -----------------------------------------------------


def test_routing_explains_why_an_agent_did_or_did_not_receive_a_message(staff_client, agent_client, fleet):
    services.subscribe(fleet["sub1"], "weather.#")
    services.subscribe(fleet["sub2"], "weather.*", where={"unit": "C"})
    message = services.send(services.Sender.of_agent(fleet["pub"]), {"unit": "F"}, topic="weather.nyc")
    got = staff_client.get(f"/api/messages/{message.pk}/routing/?agent=sub1").json()["explanations"]
    assert got[0]["received"] is True and got[0]["via"] == "subscription"
    missed = staff_client.get(f"/api/messages/{message.pk}/routing/?agent=sub2").json()["explanations"][0]
    assert missed["received"] is False and "filter wants" in missed["reason"]
    everyone = staff_client.get(f"/api/messages/{message.pk}/routing/").json()["explanations"]
    assert {e["agent_id"] for e in everyone} == {"sub1", "sub2"}
    # an agent asks about itself only, and only about messages it may see
    assert agent_client(fleet["sub1"]).get(f"/api/messages/{message.pk}/routing/?agent=sub2").status_code == 403
    mine = agent_client(fleet["sub1"]).get(f"/api/messages/{message.pk}/routing/").json()["explanations"]
    assert [e["agent_id"] for e in mine] == ["sub1"]
    assert agent_client(fleet["sub2"]).get(f"/api/messages/{message.pk}/routing/").status_code == 404
    assert staff_client.get(f"/api/messages/{message.pk}/routing/?agent=ghost").status_code == 400


# --- redelivery ---------------------------------------------------------------


def test_staff_redeliver_a_dead_delivery_others_may_not_and_a_pending_one_is_409(staff_client, agent_client, fleet):
    services.send(services.PLATFORM_SENDER, {}, to="sub1")
    delivery = Delivery.objects.get()
    assert post(staff_client, {}, f"/api/deliveries/{delivery.pk}/redeliver/").status_code == 409
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.DEAD, attempts=5, last_error="boom")
    assert post(agent_client(fleet["sub1"]), {}, f"/api/deliveries/{delivery.pk}/redeliver/").status_code == 403
    response = post(staff_client, {}, f"/api/deliveries/{delivery.pk}/redeliver/")
    assert response.status_code == 200 and response.json()["status"] == "pending" and response.json()["attempts"] == 0
    assert post(staff_client, {}, "/api/deliveries/999999/redeliver/").status_code == 404


# --- subscriptions ------------------------------------------------------------


def test_an_agent_subscribes_idempotently_lists_and_unsubscribes_itself(agent_client, staff_client, fleet):
    sub1 = agent_client(fleet["sub1"])
    body = {"pattern": "weather.#", "types": ["event"], "senders": ["weather_*"], "where": {"unit": "C"}}
    created = post(sub1, body, "/api/agents/sub1/subscriptions/")
    assert created.status_code == 201, created.content
    again = post(sub1, body, "/api/agents/sub1/subscriptions/")
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    listed = sub1.get("/api/agents/sub1/subscriptions/").json()
    assert listed["count"] == 1 and listed["results"][0]["where"] == {"unit": "C"}
    assert staff_client.get("/api/agents/sub1/subscriptions/").json()["count"] == 1
    sid = created.json()["id"]
    other = services.subscribe(fleet["sub2"], "x.#")[0]
    assert sub1.delete(f"/api/agents/sub1/subscriptions/{other.pk}/").status_code == 404
    assert sub1.delete(f"/api/agents/sub1/subscriptions/{sid}/").status_code == 204
    assert sub1.delete(f"/api/agents/sub1/subscriptions/{sid}/").status_code == 404
    assert list(Subscription.objects.values_list("pk", flat=True)) == [other.pk]
    assert staff_client.get("/api/agents/ghost/subscriptions/").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pattern": "weather..x"}, "pattern"),
        ({"pattern": "weather.*x"}, "pattern"),
        ({}, "pattern"),
        ({"pattern": "a", "types": ["shout"]}, "types"),
        ({"pattern": "a", "senders": ["bad glob!"]}, "senders"),
        ({"pattern": "a", "where": ["x"]}, "where"),
        ({"pattern": "a", "where": {"bad key!": 1}}, "where"),
    ],
)
def test_bad_subscriptions_are_400_naming_the_field(agent_client, fleet, body, field):
    response = post(agent_client(fleet["sub1"]), body, "/api/agents/sub1/subscriptions/")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not Subscription.objects.exists()


# --- routing rules ------------------------------------------------------------


def test_staff_write_routing_rules_others_read(staff_client, user_client, agent_client, fleet):
    body = {"name": "copy-to-other", "action": "add_agent", "target_agent": "other", "topic_pattern": "news.#"}
    assert post(user_client, body, "/api/routing-rules/").status_code == 403
    assert post(agent_client(fleet["pub"]), body, "/api/routing-rules/").status_code == 403
    created = post(staff_client, body, "/api/routing-rules/")
    assert created.status_code == 201, created.content
    assert agent_client(fleet["pub"]).get("/api/routing-rules/").json()["count"] == 1
    rule = RoutingRule.objects.get()
    assert rule.target_agent == fleet["other"]
    sent = post(agent_client(fleet["pub"]), {"topic": "news.x", "content": {}}).json()
    assert delivered_to(sent) == {"other"} and sent["deliveries"][0]["rule"] == rule.pk
    patched = staff_client.patch(f"/api/routing-rules/{rule.pk}/", {"enabled": False}, format="json")
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert staff_client.delete(f"/api/routing-rules/{rule.pk}/").status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "r", "action": "add_agent"}, "target_agent"),
        ({"name": "r", "action": "add_agent", "target_agent": "ghost"}, "target_agent"),
        ({"name": "r", "action": "add_topic"}, "target_topic"),
        ({"name": "r", "action": "add_topic", "target_topic": "a.#"}, "target_topic"),
        ({"name": "r", "action": "drop", "topic_pattern": "a..b"}, "topic_pattern"),
        ({"name": "r", "action": "drop", "sender_pattern": "bad glob!"}, "sender_pattern"),
        ({"name": "r", "action": "drop", "message_types": ["shout"]}, "message_types"),
        ({"name": "r", "action": "drop", "content_filters": {"bad key!": 1}}, "content_filters"),
        ({"name": "r", "action": "explode"}, "action"),
    ],
)
def test_bad_routing_rules_are_400_naming_the_field(staff_client, fleet, body, field):
    response = post(staff_client, body, "/api/routing-rules/")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not RoutingRule.objects.exists()


# --- metrics ------------------------------------------------------------------


def test_stats_count_messages_by_type_deliveries_by_status_and_inbox_depths(user_client, agent_client, fleet):
    services.send(services.PLATFORM_SENDER, {}, broadcast=True)
    services.send(services.PLATFORM_SENDER, {}, to="sub1")
    Delivery.objects.filter(agent=fleet["other"]).update(status=DeliveryStatus.DEAD)
    for client in (user_client, agent_client(fleet["pub"])):
        stats = client.get("/api/messaging/stats/").json()
        assert stats["messages_by_type"] == {"broadcast": 1, "event": 1} and stats["total_messages"] == 2
        assert stats["deliveries_by_status"]["pending"] == 4 and stats["dead_deliveries"] == 1
        assert stats["inbox_depth"] == {"sub1": 2, "pub": 1, "sub2": 1}


def test_unknown_message_is_404_naming_it(staff_client):
    missing = uuid.uuid4()
    response = staff_client.get(f"/api/messages/{missing}/")
    assert response.status_code == 404 and str(missing) in response.json()["detail"]


def test_patterns_and_sender_lists_too_long_to_store_are_400(agent_client, fleet):
    sub1 = agent_client(fleet["sub1"])
    wild = post(sub1, {"pattern": ".".join(["#"] * 120)}, "/api/agents/sub1/subscriptions/")
    assert wild.status_code == 400 and "too many wildcards" in str(wild.json()["pattern"])
    many = post(
        sub1, {"pattern": "a", "senders": [f"s{n}-" + "x" * 150 for n in range(20)]}, "/api/agents/sub1/subscriptions/"
    )
    assert many.status_code == 400 and "senders" in many.json()
    assert not Subscription.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/deliveries/99999999999999999999999/",
        "/api/routing-rules/99999999999999999999999/",
        "/api/agents/sub1/subscriptions/99999999999999999999999/",
    ],
)
def test_ids_out_of_range_are_404(staff_client, fleet, path):
    method = "delete" if "subscriptions" in path else "get"
    assert getattr(staff_client, method)(path).status_code == 404


def test_acks_of_ids_out_of_range_are_404(staff_client, fleet):
    response = post(staff_client, {}, "/api/agents/sub1/inbox/99999999999999999999999/ack/")
    assert response.status_code == 404


def test_a_request_whose_timeout_passes_during_the_wait_is_timed_out_with_an_error_answer(
    staff_client, fleet, broker_url
):
    started = time.monotonic()
    response = post(
        staff_client, {"type": "request", "to": "sub1", "content": {}, "timeout": 0.5}, "/api/messages/?wait=10"
    )
    assert response.status_code == 201 and time.monotonic() - started < 5
    data = response.json()
    assert data["request_status"] == "timed_out" and data["response"]["error"] == "timed_out"
