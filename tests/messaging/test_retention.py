"""Retention of the bus's history: beat's purge deletes old messages whose deliveries are all final, and
keeps what is still open (a pending request, a delivery waiting, in its backoff or handed out) and
whatever is recent; in bounded batches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging import services, tasks
from messaging.models import Delivery, Message, RoutingRule
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db

BOSS = services.Sender.of_user("boss")
LONG_AGO = timezone.now() - timedelta(days=30)


def _age(*messages: Message) -> None:
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(created_at=LONG_AGO)


def _send(agent, **fields) -> Message:
    return services.send(BOSS, {"type": "job"}, to=agent.agent_id, **fields)


def _hand_out(agent) -> Delivery:
    (taken,) = services.claim_batch(agent, limit=1, visibility=30)
    return taken


def _acked(agent) -> Message:
    message = _send(agent)
    services.ack(_hand_out(agent).pk, agent=agent)
    return message


def test_the_purge_deletes_old_finished_messages_and_keeps_open_pending_requests_and_recent_ones():
    agent = AgentFactory(agent_id="keeper")
    other = AgentFactory(agent_id="other")
    acked = _acked(agent)
    dead = _send(agent)
    services.fail(_hand_out(agent).pk, error="boom", agent=agent, final=True)
    expired = _send(agent, ttl=1)
    Delivery.objects.filter(message=expired).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.expire_deliveries() == 1
    RoutingRule.objects.create(name="drop-noise", action="drop", topic_pattern="noise")
    dropped = services.send(BOSS, {"n": 1}, topic="noise")
    assert dropped.recipient_count == 0

    handed_out = _send(agent)
    _hand_out(agent)  # delivered, not acked yet
    retrying = _send(agent)
    services.fail(_hand_out(agent).pk, error="try again", agent=agent)  # failed: in its backoff
    waiting = _send(agent)
    half_done = services.send(BOSS, {"n": 2}, broadcast=True)  # "other" acks it, "keeper" has not
    services.ack(_hand_out(other).pk, agent=other)
    open_request = services.send(BOSS, {"type": "job"}, to="other", type="request", timeout=60)
    # its delivery expired (the delivery sweep ran), but the request itself is not timed out yet
    Delivery.objects.filter(message=open_request).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.expire_deliveries() == 1
    recent = _acked(AgentFactory(agent_id="recent"))

    statuses = dict(Delivery.objects.filter(agent=agent).values_list("message_id", "status"))
    assert [statuses[m.pk] for m in (handed_out, retrying, waiting, half_done)] == [
        "delivered",
        "failed",
        "pending",
        "pending",
    ]
    assert Message.objects.get(pk=open_request.pk).request_status == "pending"
    old = [acked, dead, expired, dropped, handed_out, retrying, waiting, half_done, open_request]
    _age(*old)

    assert services.purge_messages(older_than_days=7) == 4

    kept = set(Message.objects.values_list("pk", flat=True))
    assert {acked.pk, dead.pk, expired.pk, dropped.pk}.isdisjoint(kept)
    assert {handed_out.pk, retrying.pk, waiting.pk, half_done.pk, open_request.pk, recent.pk} <= kept
    assert not Delivery.objects.filter(message_id__in=[acked.pk, dead.pk, expired.pk]).exists()
    assert services.purge_messages(older_than_days=7) == 0  # idempotent

    # once the last open delivery of a message is final, the next purge takes it
    services.claim_batch(agent, limit=10, visibility=30)  # waiting and half_done, handed out
    services.ack(Delivery.objects.get(message=half_done, agent=agent).pk, agent=agent)
    assert services.purge_messages(older_than_days=7) == 1
    assert not Message.objects.filter(pk=half_done.pk).exists()


def test_the_purge_uses_the_retention_setting(settings):
    agent = AgentFactory(agent_id="setting")
    message = _acked(agent)
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(days=3))
    settings.MASP_MESSAGE_RETENTION_DAYS = 5
    assert tasks.purge_messages() == 0
    settings.MASP_MESSAGE_RETENTION_DAYS = 2
    assert tasks.purge_messages() == 1  # the beat task
    assert not Message.objects.filter(pk=message.pk).exists()


def test_the_purge_runs_in_bounded_batches_until_all_is_purged():
    agent = AgentFactory(agent_id="batched")
    old = [_acked(agent) for _ in range(7)]
    _age(*old)
    with CaptureQueriesContext(connection) as queries:
        assert services.purge_messages(older_than_days=7, batch_size=2) == 7
    deletes = [q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "messaging_message"')]
    assert len(deletes) == 4  # 2 + 2 + 2 + 1
    assert not Message.objects.filter(pk__in=[m.pk for m in old]).exists()
    assert not Delivery.objects.filter(agent=agent).exists()
