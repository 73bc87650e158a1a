"""Handing deliveries out and recording what became of them: the claim of an SDK worker, the HTTP
inbox's batch claim, ack (with a request's response), nack and failure (retried with backoff, then
dead), redelivery by an operator, and an agent's inbox drained when its worker starts."""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.models import Agent
from masplatform import notify
from masplatform.exceptions import Conflict, InvalidInput, NotFound
from messaging.models import (
    WAITING,
    Addressing,
    Delivery,
    DeliveryStatus,
    Message,
    MessageType,
    RequestStatus,
)
from messaging.services import sending

logger = logging.getLogger("messaging")


@dataclass(frozen=True)
class Claimed:
    delivery: Delivery  # with its message
    attempt: int


def _claimable(now: datetime) -> Q:
    return Q(status__in=WAITING, available_at__lte=now, expires_at__gt=now)


def claim(delivery_id: int, *, agent_pk: int, visibility: float) -> Claimed | None:
    """Take one delivery for ``agent_pk``'s worker (conditional UPDATE: waiting -> delivered, attempts + 1).
    None when it is not there to take: a duplicate or late Celery message, acked, expired, or not yet due."""
    now = timezone.now()
    taken = Delivery.objects.filter(_claimable(now), pk=delivery_id, agent_id=agent_pk).update(
        status=DeliveryStatus.DELIVERED,
        attempts=F("attempts") + 1,
        delivered_at=now,
        visible_at=now + timedelta(seconds=visibility),
    )
    if not taken:
        return None
    delivery = Delivery.objects.select_related("message", "agent").get(pk=delivery_id)
    return Claimed(delivery, delivery.attempts)


def claim_batch(agent: Agent, *, limit: int, visibility: float) -> list[Delivery]:
    """Take up to ``limit`` of ``agent``'s waiting deliveries, highest priority first, then oldest, each
    delivered with a visibility deadline (the HTTP inbox). Concurrent pollers take different ones."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(_claimable(now), agent=agent)
            .order_by("-priority", "created_at", "id")
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []
        Delivery.objects.filter(_claimable(now), pk__in=ids).update(
            status=DeliveryStatus.DELIVERED,
            attempts=F("attempts") + 1,
            delivered_at=now,
            visible_at=now + timedelta(seconds=visibility),
        )
        taken = list(
            Delivery.objects.select_related("message")
            .filter(pk__in=ids, status=DeliveryStatus.DELIVERED, delivered_at=now)
            .order_by("-priority", "created_at", "id")
        )
    return taken


def next_due(agent: Agent) -> datetime | None:
    """When the soonest of ``agent``'s deliveries waiting for a retry's backoff becomes due."""
    return (
        Delivery.objects.filter(agent=agent, status__in=WAITING, expires_at__gt=timezone.now())
        .order_by("available_at")
        .values_list("available_at", flat=True)
        .first()
    )


def _own_delivery(delivery_id: Any, agent: Agent | None) -> Delivery:
    try:
        delivery_id = int(delivery_id)
    except (TypeError, ValueError):
        raise NotFound(f"no delivery {delivery_id!r}") from None
    delivery = Delivery.objects.select_related("message", "agent").filter(pk=delivery_id).first()
    if delivery is None or (agent is not None and delivery.agent_id != agent.pk):
        raise NotFound(f"no delivery {delivery_id} in this inbox")
    return delivery


def ack(
    delivery_id: Any,
    *,
    agent: Agent | None = None,
    attempt: int | None = None,
    response: Any = None,
    claimed: Delivery | None = None,
) -> Delivery:
    """Record the delivery handled (``acked``), once: only the current attempt's holder may (an HTTP
    agent's ack names no attempt: the delivery must still be ``delivered``). For a request, ``response``
    (an object) becomes its answer. Raises ``Conflict`` when it is no longer there to ack. ``claimed``:
    the delivery as the worker's claim read it (with its message and agent): not read again."""
    delivery = claimed if claimed is not None else _own_delivery(delivery_id, agent)
    message = delivery.message
    if response is not None and not isinstance(response, dict):
        raise InvalidInput({"response": ["A JSON object (the response's content)."]})
    if response is not None and message.type != MessageType.REQUEST:
        raise InvalidInput({"response": [f"Only a request is answered; this delivery is a {message.type}."]})
    now = timezone.now()
    # a single UPDATE commits by itself; a request's answer is written in the same transaction as the ack
    with transaction.atomic() if message.type == MessageType.REQUEST else contextlib.nullcontext():
        done = Delivery.objects.filter(
            pk=delivery.pk,
            status=DeliveryStatus.DELIVERED,
            attempts=attempt if attempt is not None else delivery.attempts,
        ).update(status=DeliveryStatus.ACKED, acked_at=now, visible_at=None)
        if not done:
            current = Delivery.objects.filter(pk=delivery.pk).values_list("status", flat=True).first()
            raise Conflict(
                f"delivery {delivery.pk} is {current}, not delivered to this attempt: it was acked already, "
                "expired, or handed out again after its visibility deadline"
            )
        if message.type == MessageType.REQUEST:
            answer(message, delivery.agent, response if response is not None else {}, now)
    delivery.status, delivery.acked_at = DeliveryStatus.ACKED, now
    return delivery


def answer(request: Message, responder: Agent, content: dict[str, Any], now: datetime) -> Message | None:
    """Record ``content`` as the response to ``request`` (once: a request already answered, timed out or
    failed keeps its first outcome; the late response is still stored, not as its answer)."""
    won = Message.objects.filter(pk=request.pk, request_status=RequestStatus.PENDING).update(
        request_status=RequestStatus.ANSWERED, answered_at=now
    )
    if not won:
        logger.info("event=late_response request=%s responder=%s", request.pk, responder.agent_id)
        return None
    response = Message.objects.create(
        sender=responder.agent_id,
        sender_agent=responder,
        type=MessageType.RESPONSE,
        addressing=Addressing.DIRECT,
        to_agent=request.sender_agent,
        content=content,
        content_type=str(content.get("type", ""))[:100],
        correlation_id=request.pk,
        priority=request.priority,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MASP_MESSAGE_TTL),
    )
    sending._reply_delivery(request, response, now)
    sending._announce_answer(request)
    return response


def backoff(attempts: int) -> float:
    base = settings.MASP_MESSAGE_RETRY_BACKOFF * 2 ** max(0, attempts - 1)
    return min(settings.MASP_MESSAGE_RETRY_BACKOFF_MAX, base) * random.uniform(0.8, 1.2)


def fail(
    delivery_id: Any, *, error: str, agent: Agent | None = None, attempt: int | None = None, final: bool = False
) -> Delivery:
    """The handler raised (or an HTTP agent nacked): retried after a backoff, or ``dead`` once it has been
    handed out ``MASP_MESSAGE_MAX_ATTEMPTS`` times. A dead request fails with an error response."""
    delivery = _own_delivery(delivery_id, agent)
    if not isinstance(error, str):
        raise InvalidInput({"error": ["A string saying what went wrong."]})
    error = error[:4000] or "nacked"
    now = timezone.now()
    current_attempt = attempt if attempt is not None else delivery.attempts
    dead = final or current_attempt >= settings.MASP_MESSAGE_MAX_ATTEMPTS
    delay = backoff(current_attempt)
    with transaction.atomic():
        done = Delivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.DELIVERED, attempts=current_attempt
        ).update(
            status=DeliveryStatus.DEAD if dead else DeliveryStatus.FAILED,
            last_error=error,
            visible_at=None,
            available_at=now if dead else now + timedelta(seconds=delay),
        )
        if not done:
            current = Delivery.objects.filter(pk=delivery.pk).values_list("status", flat=True).first()
            raise Conflict(f"delivery {delivery.pk} is {current}, not delivered to this attempt")
        if dead and delivery.message.type == MessageType.REQUEST:
            fail_request(delivery.message, f"the handler of '{delivery.agent.agent_id}' failed: {error}", now)
        if not dead:
            delivery.status = DeliveryStatus.FAILED
            sending.hand_out([delivery], countdown=delay)
    delivery.status = DeliveryStatus.DEAD if dead else DeliveryStatus.FAILED
    delivery.last_error = error
    logger.info("event=delivery_%s delivery=%s attempt=%d", delivery.status, delivery.pk, current_attempt)
    return delivery


def fail_request(request: Message, detail: str, now: datetime, *, kind: str = "failed") -> bool:
    status = RequestStatus.TIMED_OUT if kind == "timed_out" else RequestStatus.FAILED
    won = Message.objects.filter(pk=request.pk, request_status=RequestStatus.PENDING).update(
        request_status=status, answered_at=now
    )
    if won:
        sending._error_response(request, kind, detail, now)
        sending._announce_answer(request)
    return bool(won)


def time_out_request(request_id: Any) -> bool:
    """Record a pending request whose timeout has passed as ``timed_out`` with an error response."""
    now = timezone.now()
    request = Message.objects.filter(pk=request_id, request_status=RequestStatus.PENDING, expires_at__lte=now).first()
    if request is None:
        return False
    with transaction.atomic():
        return fail_request(request, f"no response within {request.timeout:g}s", now, kind="timed_out")


def redeliver(delivery_id: Any) -> Delivery:
    """An operator sends a dead, failed or expired delivery again: waiting, attempts reset, a new expiry."""
    delivery = _own_delivery(delivery_id, None)
    now = timezone.now()
    ttl = timedelta(seconds=settings.MASP_MESSAGE_TTL)
    with transaction.atomic():
        done = Delivery.objects.filter(
            pk=delivery.pk, status__in=[DeliveryStatus.DEAD, DeliveryStatus.FAILED, DeliveryStatus.EXPIRED]
        ).update(
            status=DeliveryStatus.PENDING,
            attempts=0,
            available_at=now,
            visible_at=None,
            expires_at=max(delivery.expires_at, now + ttl),
        )
        if not done:
            raise Conflict(
                f"delivery {delivery.pk} is {delivery.status}: only a dead, failed or expired one is redelivered"
            )
        delivery.refresh_from_db()
        sending.hand_out([delivery])
    return delivery


def dispatch_waiting(agent_pk: int) -> int:
    """Send the agent's worker a message for each of its waiting deliveries, highest priority first,
    then oldest (those in a retry's backoff when it is due). Returns how many."""
    now = timezone.now()
    waiting = list(
        Delivery.objects.filter(agent_id=agent_pk, status__in=WAITING, expires_at__gt=now).order_by(
            "-priority", "created_at", "id"
        )
    )
    due = [d for d in waiting if d.available_at <= now]
    later = [d for d in waiting if d.available_at > now]
    with transaction.atomic():
        sending.hand_out(due)
        for d in later:
            sending.hand_out([d], countdown=(d.available_at - now).total_seconds())
    return len(waiting)


def drain_at_start(agent_pk: int, *, started_at: datetime) -> int:
    """A worker that started at ``started_at`` for this agent: what a previous run of it had taken but
    not acked (it died) waits again, and every waiting delivery is sent to the new worker. What the new
    worker itself took meanwhile (its queue is consumed already) is left alone."""
    now = timezone.now()
    Delivery.objects.filter(agent_id=agent_pk, status=DeliveryStatus.DELIVERED, delivered_at__lt=started_at).update(
        status=DeliveryStatus.PENDING, available_at=now, visible_at=None
    )
    return dispatch_waiting(agent_pk)


def announce_inbox(agent_id: str) -> None:
    notify.publish(f"inbox:{agent_id}", "new")
