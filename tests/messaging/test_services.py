"""The bus's services on the real database (no worker processes): addressing, recipients computed in the
database, filters, routing rules, explanations, claims, acks, retries, expiry, requests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from agents.models import Agent, AgentState
from masplatform.exceptions import Conflict, InvalidInput
from messaging import selectors, services
from messaging.models import Delivery, DeliveryStatus, Endpoint, Message, RequestStatus, RoutingRule, Transport
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db
Sender = services.Sender


def agents(*ids):
    return [AgentFactory(agent_id=i) for i in ids]


def recipients(message: Message) -> set[str]:
    return set(Delivery.objects.filter(message=message).values_list("agent__agent_id", flat=True))


def as_agent(agent) -> services.Sender:
    return Sender.of_agent(agent)


def test_direct_topic_and_broadcast_addressing_never_deliver_to_the_sender():
    pub, a, b = agents("pub", "a", "b")
    services.subscribe(a, "weather.#")
    services.subscribe(pub, "weather.#")  # its own publication is not delivered back to it
    direct = services.send(as_agent(pub), {"type": "hello"}, to="a")
    assert recipients(direct) == {"a"} and direct.addressing == "direct"
    published = services.send(as_agent(pub), {"type": "reading"}, topic="weather.nyc")
    assert recipients(published) == {"a"} and published.recipient_count == 1
    everyone = services.send(as_agent(pub), {"type": "hi"}, broadcast=True)
    assert recipients(everyone) == {"a", "b"} and everyone.type == "broadcast"
    to_self = services.send(as_agent(pub), {"type": "me"}, to="pub")
    assert recipients(to_self) == set()


def test_broadcast_skips_unregistered_agents_but_reaches_offline_ones():
    pub, offline, gone = agents("pub", "offline", "gone")
    offline.state = AgentState.OFFLINE
    offline.save()
    gone.unregistered_at = timezone.now()
    gone.save()
    assert recipients(services.send(as_agent(pub), {}, broadcast=True)) == {"offline"}
    assert recipients(services.send(as_agent(pub), {}, to="offline")) == {"offline"}  # it waits
    with pytest.raises(InvalidInput) as err:
        services.send(as_agent(pub), {}, to="gone")
    assert "unregistered" in err.value.detail["to"][0]


def test_wildcards_types_senders_and_content_filters_are_matched_in_the_database():
    pub, other, star, hash_, typed, by_sender, filtered = agents(
        "weather_pub", "stock_pub", "star", "hash", "typed", "by_sender", "filtered"
    )
    services.subscribe(star, "weather.*")
    services.subscribe(hash_, "weather.#")
    services.subscribe(typed, "weather.#", types=["broadcast"])
    services.subscribe(by_sender, "#", senders=["weather_*"])
    services.subscribe(filtered, "weather.#", where={"type": "data_update", "data.location": "NY"})
    ny = {"type": "data_update", "data": {"location": "NY"}}
    assert recipients(services.send(as_agent(pub), ny, topic="weather.nyc")) == {
        "star",
        "hash",
        "by_sender",
        "filtered",
    }
    assert recipients(services.send(as_agent(pub), ny, topic="weather")) == {"hash", "by_sender", "filtered"}
    la = {"type": "data_update", "data": {"location": "LA"}}
    assert recipients(services.send(as_agent(pub), la, topic="weather.la.today")) == {"hash", "by_sender"}
    # another sender: not by_sender's; a broadcast-typed message to the topic: typed's too
    assert recipients(services.send(as_agent(other), ny, topic="weather.nyc")) == {"star", "hash", "filtered"}
    assert recipients(services.send(as_agent(other), ny, topic="weather.nyc", type="broadcast")) == {
        "star",
        "hash",
        "typed",
        "filtered",
    }


def test_two_matching_subscriptions_give_one_delivery_recording_the_first():
    pub, a = agents("pub", "a")
    first, _ = services.subscribe(a, "weather.#")
    services.subscribe(a, "weather.*")
    message = services.send(as_agent(pub), {}, topic="weather.nyc")
    delivery = Delivery.objects.get(message=message)
    assert delivery.via == "subscription" and delivery.subscription_id == first.pk


def test_subscribing_twice_is_idempotent_and_bad_subscriptions_name_the_field():
    (a,) = agents("a")
    sub, created = services.subscribe(a, "x.#", types=["event"])
    again, created_again = services.subscribe(a, "x.#", types=["event"])
    assert created and not created_again and sub.pk == again.pk
    for kwargs, field in [
        ({"pattern": "a..b"}, "pattern"),
        ({"pattern": "a", "types": ["nope"]}, "types"),
        ({"pattern": "a", "senders": ["bad glob"]}, "senders"),
        ({"pattern": "a", "where": ["x"]}, "where"),
    ]:
        with pytest.raises(InvalidInput) as err:
            services.subscribe(a, **kwargs)
        assert field in err.value.detail


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"content": [1], "to": "a"}, "content"),
        ({"content": {}, "to": "nobody"}, "to"),
        ({"content": {}, "topic": "bad topic"}, "topic"),
        ({"content": {}}, "to"),
        ({"content": {}, "to": "a", "broadcast": True}, "to"),
        ({"content": {}, "to": "a", "priority": 10}, "priority"),
        ({"content": {}, "to": "a", "priority": True}, "priority"),
        ({"content": {}, "to": "a", "ttl": 0}, "ttl"),
        ({"content": {}, "to": "a", "type": "gossip"}, "type"),
        ({"content": {}, "to": "a", "timeout": 5}, "timeout"),
        ({"content": {}, "topic": "x", "type": "request"}, "to"),
        ({"content": {}, "to": "a", "correlation_id": "not-a-uuid"}, "correlation_id"),
        ({"content": {}, "to": "a", "reply_to": "a"}, "reply_to"),
        ({"content": {"type": 3}, "to": "a"}, "content"),
        ({"content": {"blob": "x" * 300_000}, "to": "a"}, "content"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(kwargs, field):
    pub, _ = agents("pub", "a")
    content = kwargs.pop("content")
    with pytest.raises(InvalidInput) as err:
        services.send(as_agent(pub), content, **kwargs)
    assert field in err.value.detail
    assert not Message.objects.exists() and not Delivery.objects.exists()


def rule(name, position, **fields):
    return RoutingRule.objects.create(name=name, position=position, **fields)


def test_routing_rules_add_an_agent_add_a_topic_and_drop_in_order():
    pub, audit, mirror, a = agents("pub", "audit", "mirror", "a")
    services.subscribe(a, "orders.#")
    services.subscribe(mirror, "mirror.orders")
    add = rule("audit everything from pub", 10, sender_pattern="pub", action="add_agent", target_agent=audit)
    rule("mirror orders", 20, topic_pattern="orders.#", action="add_topic", target_topic="mirror.orders")
    message = services.send(as_agent(pub), {"type": "order"}, topic="orders.new")
    assert recipients(message) == {"a", "audit", "mirror"}
    assert Delivery.objects.get(message=message, agent=audit).rule_id == add.pk
    # a drop rule drops the whole message...
    drop = rule("drop spam", 30, content_filters={"spam": True}, action="drop")
    dropped = services.send(as_agent(pub), {"spam": True}, topic="orders.new")
    assert recipients(dropped) == set() and dropped.dropped_by_id == drop.pk
    # ...unless an earlier rule that matched stops the evaluation
    add.stop = True
    add.save()
    assert recipients(services.send(as_agent(pub), {"spam": True}, topic="orders.new")) == {"a", "audit"}
    # disabled rules do nothing
    for each in RoutingRule.objects.all():  # as the admin saves them (another process's edit: within a second)
        each.enabled = False
        each.save()
    assert recipients(services.send(as_agent(pub), {"spam": True}, topic="orders.new")) == {"a"}


def test_the_routing_explanation_says_which_subscription_matched_or_what_failed():
    pub, a, b, c = agents("pub", "a", "b", "c")
    sub, _ = services.subscribe(a, "weather.#")
    services.subscribe(b, "weather.#", where={"data.location": "LA"})
    message = services.send(as_agent(pub), {"data": {"location": "NY"}}, topic="weather.nyc")
    yes = selectors.explain(message, a)
    assert yes.received and yes.subscription_id == sub.pk and "matched" in yes.reason
    no = selectors.explain(message, b)
    assert not no.received and "data.location" in no.reason and "LA" in no.reason
    assert "no subscription" in selectors.explain(message, c).reason
    assert "own message" in selectors.explain(message, pub).reason


def test_a_claim_takes_a_delivery_once_and_only_the_current_attempt_acks():
    pub, a = agents("pub", "a")
    message = services.send(as_agent(pub), {"type": "x"}, to="a")
    delivery = Delivery.objects.get(message=message)
    claimed = services.claim(delivery.pk, agent_pk=a.pk, visibility=30)
    assert claimed.attempt == 1
    assert services.claim(delivery.pk, agent_pk=a.pk, visibility=30) is None  # a duplicate Celery message
    with pytest.raises(Conflict):
        services.ack(delivery.pk, attempt=2)
    services.ack(delivery.pk, attempt=1)
    with pytest.raises(Conflict):
        services.ack(delivery.pk, attempt=1)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.ACKED and delivery.acked_at is not None


@override_settings(MASP_MESSAGE_MAX_ATTEMPTS=2, MASP_MESSAGE_RETRY_BACKOFF=0.001)
def test_failures_are_retried_with_backoff_then_dead_and_an_operator_redelivers():
    pub, a = agents("pub", "a")
    delivery = Delivery.objects.get(message=services.send(as_agent(pub), {}, to="a"))
    services.claim(delivery.pk, agent_pk=a.pk, visibility=30)
    failed = services.fail(delivery.pk, attempt=1, error="boom 1")
    assert failed.status == DeliveryStatus.FAILED
    delivery.refresh_from_db()
    assert delivery.available_at > delivery.created_at  # the backoff
    Delivery.objects.filter(pk=delivery.pk).update(available_at=timezone.now())
    assert services.claim(delivery.pk, agent_pk=a.pk, visibility=30).attempt == 2
    assert services.fail(delivery.pk, attempt=2, error="boom 2").status == DeliveryStatus.DEAD
    delivery.refresh_from_db()
    assert delivery.last_error == "boom 2"
    assert services.redeliver(delivery.pk).status == DeliveryStatus.PENDING
    assert services.claim(delivery.pk, agent_pk=a.pk, visibility=30).attempt == 1
    with pytest.raises(Conflict):
        services.redeliver(delivery.pk)  # delivered, not dead


def test_expired_deliveries_are_swept_and_never_handed_out():
    pub, a = agents("pub", "a")
    message = services.send(as_agent(pub), {}, to="a", ttl=1)
    Delivery.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    delivery = Delivery.objects.get(message=message)
    assert services.claim(delivery.pk, agent_pk=a.pk, visibility=30) is None
    assert services.claim_batch(a, limit=10, visibility=30) == []
    assert services.expire_deliveries() == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.EXPIRED


def test_a_delivery_not_acked_by_its_visibility_deadline_is_handed_out_again():
    pub, a = agents("pub", "a")
    services.send(as_agent(pub), {"n": 1}, to="a", priority=1)
    services.send(as_agent(pub), {"n": 2}, to="a", priority=9)
    first = services.claim_batch(a, limit=10, visibility=30)
    assert [d.message.content["n"] for d in first] == [2, 1]  # priority first
    assert services.claim_batch(a, limit=10, visibility=30) == []
    Delivery.objects.update(visible_at=timezone.now() - timedelta(seconds=1))
    assert services.return_invisible() == 2
    again = services.claim_batch(a, limit=1, visibility=30)
    assert len(again) == 1 and again[0].attempts == 2


def test_inbox_depth_counts_what_is_not_yet_handled():
    pub, a = agents("pub", "a")
    for _ in range(3):
        services.send(as_agent(pub), {}, to="a")
    assert selectors.inbox_depth(a) == 3
    (taken,) = services.claim_batch(a, limit=1, visibility=30)
    services.ack(taken.pk, agent=a)
    assert selectors.inbox_depth(a) == 2 and selectors.inbox_depths() == {a.pk: 2}


def test_a_request_nobody_can_answer_fails_at_once_saying_why():
    client, offline, gone, picky = agents("client", "offline", "gone", "picky")
    offline.state = AgentState.OFFLINE
    offline.save()
    gone.unregistered_at = timezone.now()
    gone.save()
    Endpoint.objects.create(agent=picky, transport=Transport.WORKER, handles=["ping", "add"])
    for to, words in [
        ("offline", "is offline"),
        ("gone", "is unregistered"),
        ("picky", "no handler for requests of type 'mul'"),
    ]:
        outcome = services.wait_for_answer(services.send(as_agent(client), {"type": "mul"}, to=to, type="request"), 5)
        assert outcome.status == RequestStatus.NO_RESPONDERS
        assert words in outcome.response.content["detail"] and outcome.response.correlation_id == outcome.request.pk
    assert not Delivery.objects.exists()


def test_an_acked_request_is_answered_once_and_a_timed_out_one_gets_an_error_answer():
    client, svc = agents("client", "svc")
    request = services.send(as_agent(client), {"type": "add"}, to="svc", type="request", timeout=5)
    (delivery,) = services.claim_batch(svc, limit=1, visibility=30)
    services.ack(delivery.pk, agent=svc, response={"sum": 3})
    outcome = services.wait_for_answer(request, 1)
    assert outcome.ok and outcome.response.content == {"sum": 3} and outcome.response.sender == "svc"
    late = services.send(as_agent(client), {"type": "add"}, to="svc", type="request", timeout=0.1)
    Message.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.time_out_requests() == 1
    late.refresh_from_db()
    assert late.request_status == RequestStatus.TIMED_OUT
    assert services.wait_for_answer(late, 0).response.content["error"] == "timed_out"
    assert services.time_out_requests() == 0


def test_a_waiter_records_the_timeout_itself_when_its_request_times_out():
    client, _ = agents("client", "svc")
    request = services.send(as_agent(client), {"type": "add"}, to="svc", type="request", timeout=0.3)
    outcome = services.wait_for_answer(request, 5)
    assert outcome.status == RequestStatus.TIMED_OUT and outcome.response.content["error"] == "timed_out"


def test_a_response_goes_to_the_requesters_inbox_when_it_asks_for_it():
    client, svc = agents("client", "svc")
    services.send(as_agent(client), {"type": "add"}, to="svc", type="request", reply_to="client")
    (delivery,) = services.claim_batch(svc, limit=1, visibility=30)
    services.ack(delivery.pk, agent=svc, response={"sum": 3})
    (reply,) = services.claim_batch(client, limit=1, visibility=30)
    assert reply.message.type == "response" and reply.message.content == {"sum": 3} and reply.via == "reply"


def test_stats_count_types_statuses_and_latency():
    pub, a = agents("pub", "a")
    services.send(as_agent(pub), {}, to="a")
    services.send(as_agent(pub), {}, broadcast=True)
    (first, _) = services.claim_batch(a, limit=2, visibility=30)
    services.ack(first.pk, agent=a)
    stats = selectors.stats()
    assert stats["messages_by_type"] == {"event": 1, "broadcast": 1}
    assert stats["deliveries_by_status"]["acked"] == 1 and stats["deliveries_by_status"]["delivered"] == 1
    assert stats["acked_in_window"] == 1 and stats["fanout_latency_ms"]["p50"] >= 0
    assert stats["inbox_depth"] == {"a": 1}


def test_the_database_and_the_explanation_agree_on_who_matches():
    """The recipients come from SQL (regular expressions, bit masks, filter pairs); the explanation from
    Python (messaging.routing). For a grid of subscriptions and messages, both give the same answer."""
    import itertools

    from messaging import routing

    pub, other = agents("weather_pub", "stock_pub")
    specs = list(
        itertools.product(
            ["weather", "weather.*", "weather.#", "#", "*.nyc", "weather.#.today"],
            [[], ["broadcast", "request"]],
            [[], ["weather_*"]],
            [{}, {"type": "data_update"}, {"data.location": "NY", "data.n": 1}],
        )
    )
    subscribers = {}
    for i, (pattern, types, senders, where) in enumerate(specs):
        (agent,) = agents(f"s{i}")
        services.subscribe(agent, pattern, types=types, senders=senders, where=where)
        subscribers[agent.agent_id] = (pattern, types, senders, where)
    contents = [{"type": "data_update", "data": {"location": "NY", "n": 1.0}}, {"type": "other", "data": {"n": 1}}]
    for sender, topic, type_, content in itertools.product(
        [pub, other], ["weather", "weather.nyc", "weather.nyc.today"], ["event", "broadcast"], contents
    ):
        message = services.send(as_agent(sender), content, topic=topic, type=type_)
        got = recipients(message)
        envelope = routing.Envelope(type_, topic, sender.agent_id, content)
        for agent_id, (pattern, types, senders, where) in subscribers.items():
            mismatch = routing.subscription_mismatch(
                pattern=pattern, message_types=types, sender_patterns=senders, filters=where, message=envelope
            )
            assert (agent_id in got) == (mismatch is None), (agent_id, topic, type_, sender.agent_id, mismatch)
    # and the selector reports it per agent
    some = next(a for a in subscribers if a not in got)
    assert not selectors.explain(message, Agent.objects.get(agent_id=some)).received
