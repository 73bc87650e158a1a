"""Sending: checking a message, computing its recipients in the database, storing the message with one
delivery per recipient, and handing the deliveries to their agents once the transaction commits."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.lookups import Regex
from django.utils import timezone

from agents.models import Agent, AgentState
from masplatform import notify
from masplatform.exceptions import InvalidInput
from messaging import routing
from messaging.models import (
    TYPE_BITS,
    Addressing,
    Delivery,
    Endpoint,
    Message,
    MessageType,
    RequestStatus,
    RoutingRule,
    RuleAction,
    Subscription,
    SubscriptionFilter,
    Transport,
)

logger = logging.getLogger("messaging")
PLATFORM = "platform"


@dataclass(frozen=True)
class Sender:
    """Who sends, as authenticated: an agent (``agent`` set; ``id`` is its agent id), a person
    (``user:<username>``) or the platform itself."""

    id: str
    agent: Agent | None = None

    @classmethod
    def of_agent(cls, agent: Agent) -> Sender:
        return cls(agent.agent_id, agent)

    @classmethod
    def of_user(cls, username: str) -> Sender:
        return cls(f"user:{username}")


PLATFORM_SENDER = Sender(PLATFORM)


@dataclass(frozen=True)
class Recipient:
    agent_pk: int
    agent_id: str
    via: str
    subscription_id: int | None = None
    rule_id: int | None = None


def _check_content(content: Any) -> str:
    if not isinstance(content, dict):
        raise InvalidInput({"content": ["A JSON object (the message's content)."]})
    text = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > settings.MASP_MESSAGE_MAX_BYTES:
        raise InvalidInput(
            {
                "content": [
                    f"The content is {len(text.encode())} bytes as JSON; at most {settings.MASP_MESSAGE_MAX_BYTES}."
                ]
            }
        )
    content_type = content.get("type", "")
    if not isinstance(content_type, str) or len(content_type) > 100:
        raise InvalidInput({"content": ["content.type, when present, is a string of at most 100 characters."]})
    return content_type


def _check_number(value: Any, field: str, low: float, high: float, *, integer: bool = False) -> float:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise InvalidInput({field: [f"{what} from {low:g} to {high:g}."]})
    return value


def registered_agent(agent_id: Any, field: str) -> Agent:
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidInput({field: ["An agent id."]})
    agent = Agent.objects.select_related("endpoint").filter(agent_id=agent_id).first()
    if agent is None:
        raise InvalidInput({field: [f"No agent '{agent_id}' is registered."]})
    return agent


def send(
    sender: Sender,
    content: Any,
    *,
    to: str | None = None,
    topic: str | None = None,
    broadcast: bool = False,
    type: str | None = None,
    priority: int = 5,
    ttl: float | None = None,
    correlation_id: Any = None,
    reply_to: str = "",
    timeout: float | None = None,
    message_id: uuid.UUID | None = None,
) -> Message:
    """Send a message: to one agent (``to``), to a topic's subscribers (``topic``), or to every registered
    agent (``broadcast``); a ``request`` goes to one agent and is answered by its handler's result.
    Returns the stored message (``recipient_count``; for a request ``request_status``, which is
    ``no_responders`` at once when its agent cannot answer). Bad input is ``InvalidInput`` naming the field."""
    content_type = _check_content(content)
    if type is None:
        type = MessageType.BROADCAST if broadcast else MessageType.EVENT
    if type not in MessageType.values:
        raise InvalidInput({"type": [f"'{type}' is not a message type; one of: {', '.join(MessageType.values)}."]})
    targets = [
        name
        for name, given in (("to", bool(to)), ("topic", topic is not None and topic != ""), ("broadcast", broadcast))
        if given
    ]
    if type == MessageType.BROADCAST and not broadcast and not targets:
        broadcast, targets = True, ["broadcast"]
    if len(targets) != 1 and not (targets == ["to", "topic"]):
        raise InvalidInput(
            {"to": ["Give exactly one of: 'to' (an agent id), 'topic' (its subscribers), 'broadcast': true."]}
        )
    to_agent = registered_agent(to, "to") if to else None
    if topic:
        problem = routing.topic_problem(topic)
        if problem:
            raise InvalidInput({"topic": [problem]})
    if to_agent is not None and to_agent.unregistered_at is not None and type != MessageType.REQUEST:
        raise InvalidInput({"to": [f"Agent '{to_agent.agent_id}' is unregistered; nothing would receive this."]})
    if type == MessageType.REQUEST and to_agent is None:
        raise InvalidInput({"to": ["A request goes to one agent: give 'to'."]})
    if type == MessageType.REQUEST and sender.agent is not None and to_agent.pk == sender.agent.pk:
        # it would wait out its timeout: the sender never receives its own message
        raise InvalidInput({"to": [f"'{sender.id}' cannot send a request to itself."]})
    priority = int(_check_number(priority, "priority", 0, 9, integer=True))
    ttl = settings.MASP_MESSAGE_TTL if ttl is None else _check_number(ttl, "ttl", 1, settings.MASP_MESSAGE_MAX_TTL)
    if type == MessageType.REQUEST:
        timeout = settings.MASP_REQUEST_TIMEOUT if timeout is None else _check_number(timeout, "timeout", 0.1, 3600)
        ttl = timeout  # a request nobody answered in time is not handled later
    elif timeout is not None:
        raise InvalidInput({"timeout": ["Only a request has a timeout."]})
    if correlation_id not in (None, ""):
        try:
            correlation_id = uuid.UUID(str(correlation_id))
        except ValueError:
            raise InvalidInput({"correlation_id": ["A UUID (the id of the message this one answers)."]}) from None
    else:
        correlation_id = None
    if reply_to:
        reply_agent = registered_agent(reply_to, "reply_to")
        if sender.agent is not None and reply_agent.pk != sender.agent.pk:
            raise InvalidInput(
                {"reply_to": [f"An agent's responses come back to itself: '{sender.id}', not '{reply_to}'."]}
            )
    now = timezone.now()
    message = Message(
        id=message_id or uuid.uuid4(),
        sender=sender.id,
        sender_agent=sender.agent,
        type=type,
        addressing=Addressing.DIRECT if to_agent else Addressing.TOPIC if topic else Addressing.BROADCAST,
        to_agent=to_agent,
        topic=topic or "",
        content=content,
        content_type=content_type,
        correlation_id=correlation_id,
        reply_to=reply_to or "",
        priority=priority,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        timeout=timeout,
        request_status=RequestStatus.PENDING if type == MessageType.REQUEST else "",
    )
    with transaction.atomic():
        if type == MessageType.REQUEST:
            reason = no_responders_reason(to_agent, content_type)
            if reason:
                message.request_status = RequestStatus.NO_RESPONDERS
                message.answered_at = now
                message.save(force_insert=True)
                _error_response(message, "no_responders", reason, now)
                _announce_answer(message)
                return message
        recipients, dropped_by = compute_recipients(message)
        message.dropped_by = dropped_by
        message.recipient_count = len(recipients)
        message.save(force_insert=True)
        known = {to_agent.pk: route_of(to_agent)} if to_agent is not None else {}
        by_agent = routes({r.agent_pk for r in recipients} - set(known)) | known if recipients else {}
        hand_out(_create_deliveries(message, recipients, now, by_agent), by_agent=by_agent, dispatched=True)
    logger.info(
        "event=message_sent message=%s type=%s sender=%s addressing=%s recipients=%d",
        message.id,
        message.type,
        sender.id,
        message.addressing,
        message.recipient_count,
    )
    return message


def no_responders_reason(agent: Agent, content_type: str) -> str | None:
    """Why ``agent`` cannot answer a request of ``content_type`` now (offline, unregistered, no handler)."""
    if agent.unregistered_at is not None:
        return f"no responders: agent '{agent.agent_id}' is unregistered"
    if agent.state == AgentState.OFFLINE:
        return f"no responders: agent '{agent.agent_id}' is offline"
    endpoint = Endpoint.objects.filter(agent=agent).first()
    if endpoint is not None and endpoint.handles:
        if content_type not in endpoint.handles and MessageType.REQUEST not in endpoint.handles:
            what = f"requests of type '{content_type}'" if content_type else "requests without a content type"
            return f"no responders: agent '{agent.agent_id}' has no handler for {what}"
    return None


def _error_response(request: Message, kind: str, detail: str, now: datetime) -> Message:
    """The error answer of a request that will get no other (``kind``: no_responders, timed_out, failed)."""
    response = Message.objects.create(
        sender=PLATFORM,
        type=MessageType.ERROR,
        addressing=Addressing.DIRECT,
        to_agent=request.sender_agent,
        content={"type": "error", "error": kind, "detail": detail, "request_id": str(request.id)},
        content_type="error",
        correlation_id=request.id,
        priority=request.priority,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MASP_MESSAGE_TTL),
    )
    _reply_delivery(request, response, now)
    return response


def _reply_delivery(request: Message, response: Message, now: datetime) -> None:
    """The response's delivery to the requester's inbox, when it asked for one (``reply_to``)."""
    if not request.reply_to:
        return
    agent = Agent.objects.filter(agent_id=request.reply_to, unregistered_at__isnull=True).first()
    if agent is None:
        return
    Message.objects.filter(pk=response.pk).update(recipient_count=1)
    hand_out(_create_deliveries(response, [Recipient(agent.pk, agent.agent_id, "reply")], now))


def _announce_answer(request: Message) -> None:
    pk = request.pk
    transaction.on_commit(lambda: notify.publish(f"message:{pk}", "answered"))


def envelope(message: Message) -> routing.Envelope:
    return routing.Envelope(message.type, message.topic, message.sender, message.content)


def _filter_keys() -> list[str]:
    return list(SubscriptionFilter.objects.values_list("key", flat=True).distinct())


def topic_subscribers(message: Message, topic: str, *, exclude_pk: int | None) -> list[tuple[int, int, str]]:
    """(subscription id, agent pk, agent id) of every registered agent's first subscription that matches
    ``message`` as if sent to ``topic``: one query, whatever the number of subscriptions."""
    pairs = routing.content_pairs(message.content, _filter_keys())
    bit = TYPE_BITS[message.type]
    unmatched_filter = SubscriptionFilter.objects.filter(subscription=OuterRef("pk")).exclude(pair__in=pairs)
    rows = (
        Subscription.objects.filter(agent__unregistered_at__isnull=True)
        .filter(Regex(Value("." + topic), F("topic_regex")))
        .annotate(type_hit=F("type_mask").bitand(bit))
        .filter(Q(type_mask=0) | Q(type_hit__gt=0))
        .filter(Q(sender_regex="") | Regex(Value(message.sender), F("sender_regex")))
        .filter(~Exists(unmatched_filter))
        .order_by("agent_id", "pk")
        .values_list("pk", "agent_id", "agent__agent_id")
    )
    if exclude_pk is not None:
        rows = rows.exclude(agent_id=exclude_pk)
    seen: set[int] = set()
    found = []
    for row in rows:
        if row[1] not in seen:
            seen.add(row[1])
            found.append(row)
    return found


def compute_recipients(message: Message) -> tuple[list[Recipient], RoutingRule | None]:
    """Who receives ``message``: its addressee, the topic's subscribers or every registered agent; then
    the routing rules in order. Never the sender. Returns the recipients and the rule that dropped it."""
    sender_pk = message.sender_agent_id
    chosen: dict[int, Recipient] = {}
    if message.addressing == Addressing.DIRECT:
        agent = message.to_agent
        if agent.pk != sender_pk and agent.unregistered_at is None:
            chosen[agent.pk] = Recipient(agent.pk, agent.agent_id, "direct")
    elif message.addressing == Addressing.TOPIC:
        for sub_pk, agent_pk, agent_id in topic_subscribers(message, message.topic, exclude_pk=sender_pk):
            chosen[agent_pk] = Recipient(agent_pk, agent_id, "subscription", subscription_id=sub_pk)
    else:
        agents = Agent.objects.filter(unregistered_at__isnull=True).order_by("pk")
        if sender_pk is not None:
            agents = agents.exclude(pk=sender_pk)
        for agent_pk, agent_id in agents.values_list("pk", "agent_id"):
            chosen[agent_pk] = Recipient(agent_pk, agent_id, "broadcast")
    for rule in enabled_rules():
        if rule_mismatch(rule, message) is not None:
            continue
        if rule.action == RuleAction.DROP:
            return [], rule
        if rule.action == RuleAction.ADD_AGENT:
            agent = rule.target_agent
            if agent is not None and agent.pk != sender_pk and agent.unregistered_at is None:
                chosen.setdefault(agent.pk, Recipient(agent.pk, agent.agent_id, "rule", rule_id=rule.pk))
        elif rule.action == RuleAction.ADD_TOPIC and rule.target_topic:
            for _, agent_pk, agent_id in topic_subscribers(message, rule.target_topic, exclude_pk=sender_pk):
                chosen.setdefault(agent_pk, Recipient(agent_pk, agent_id, "rule", rule_id=rule.pk))
        if rule.stop:
            break
    return list(chosen.values()), None


# The enabled routing rules, read at most once a second per process (every message needs them, and they
# change when an operator edits one). A change made in this process applies at once (the receivers in
# messaging.receivers clear the cache); one made elsewhere from the next second.
RULES_TTL = 1.0
_rules_cache: tuple[float, list[RoutingRule]] | None = None


def enabled_rules() -> list[RoutingRule]:
    global _rules_cache
    now = time.monotonic()
    if _rules_cache is None or now - _rules_cache[0] > RULES_TTL:
        rules = list(RoutingRule.objects.filter(enabled=True).select_related("target_agent").order_by("position", "pk"))
        _rules_cache = (now, rules)
    return _rules_cache[1]


def forget_rules(**kwargs: Any) -> None:
    global _rules_cache
    _rules_cache = None


def rule_mismatch(rule: RoutingRule, message: Message) -> str | None:
    return routing.rule_mismatch(
        message_types=rule.message_types,
        topic_pattern=rule.topic_pattern,
        sender_pattern=rule.sender_pattern,
        filters=rule.content_filters,
        message=envelope(message),
    )


def _create_deliveries(
    message: Message, recipients: list[Recipient], now: datetime, by_agent: dict[int, Route] | None = None
) -> list[Delivery]:
    """The deliveries, in one INSERT; with ``by_agent`` (the recipients' routes), those that will be sent
    to a worker's queue are recorded as dispatched now."""
    deliveries = [
        Delivery(
            message=message,
            agent_id=r.agent_pk,
            priority=message.priority,
            expires_at=message.expires_at,
            created_at=now,
            available_at=now,
            dispatched_at=now if by_agent is not None and by_agent[r.agent_pk].worker else None,
            via=r.via,
            subscription_id=r.subscription_id,
            rule_id=r.rule_id,
        )
        for r in recipients
    ]
    if not deliveries:
        return []
    created = Delivery.objects.bulk_create(deliveries)
    if created and created[0].pk is None:  # a backend that does not return ids (not ours): read them
        created = list(Delivery.objects.filter(message=message))
    return created


@dataclass(frozen=True)
class Route:
    """Where an agent's deliveries go: its worker's queue (``worker``: a live SDK worker) or its inbox."""

    agent_id: str
    worker: bool


def _route(agent_id: str, state: str, transport: str | None) -> Route:
    return Route(agent_id, transport == Transport.WORKER and state != AgentState.OFFLINE)


def route_of(agent: Agent) -> Route:
    """The route of an agent read with ``select_related("endpoint")``."""
    endpoint = getattr(agent, "endpoint", None)
    return _route(agent.agent_id, agent.state, endpoint.transport if endpoint is not None else None)


def routes(agent_pks: set[int]) -> dict[int, Route]:
    if not agent_pks:
        return {}
    rows = Agent.objects.filter(pk__in=agent_pks).values_list("pk", "agent_id", "state", "endpoint__transport")
    return {pk: _route(agent_id, state, transport) for pk, agent_id, state, transport in rows}


def hand_out(
    deliveries: list[Delivery],
    *,
    countdown: float = 0,
    by_agent: dict[int, Route] | None = None,
    dispatched: bool = False,
) -> None:
    """After the transaction commits: one Celery message per delivery whose agent is a live SDK worker
    (to its queue ``agent.<agent_id>``); a wake-up for the long polls of HTTP agents. A delivery to an
    agent that is offline waits in the database: its worker drains its inbox when it starts.
    ``by_agent``: the agents' routes when the caller has them; ``dispatched``: the deliveries were
    inserted with ``dispatched_at`` set already."""
    if not deliveries:
        return
    if by_agent is None:
        by_agent = routes({d.agent_id for d in deliveries})
    to_workers = [(d.pk, by_agent[d.agent_id].agent_id, d.priority) for d in deliveries if by_agent[d.agent_id].worker]
    inboxes = sorted({by_agent[d.agent_id].agent_id for d in deliveries if not by_agent[d.agent_id].worker})
    if to_workers and not dispatched:
        Delivery.objects.filter(pk__in=[pk for pk, _, _ in to_workers]).update(dispatched_at=timezone.now())

    def publish() -> None:
        if to_workers:
            publish_deliveries(to_workers, countdown=countdown)
        for agent_id in inboxes:
            notify.publish(f"inbox:{agent_id}", "new")

    transaction.on_commit(publish)


def publish_deliveries(items: list[tuple[int, str, int]], *, countdown: float = 0) -> None:
    """One Celery message per (delivery id, agent id, priority), through one producer. A message that is
    not published leaves its delivery waiting; the sweep sends it again (``redispatch_waiting``)."""
    from agents import dispatch
    from masplatform.celery import app
    from messaging.tasks import deliver

    try:
        with app.producer_or_acquire() as producer:
            for pk, agent_id, priority in items:
                args = (pk,)
                options: dict[str, Any] = {
                    "argsrepr": repr(args),
                    "kwargsrepr": "{}",
                    "queue": dispatch.queue(dispatch.agent_queue_name(agent_id)),
                    "priority": dispatch.broker_priority(priority),
                    "soft_time_limit": settings.MASP_MESSAGE_HANDLER_TIMEOUT,
                    "time_limit": settings.MASP_MESSAGE_HANDLER_TIMEOUT + settings.MASP_HARD_TIMEOUT_GRACE,
                    "declare": dispatch.publish_declares(),
                    "producer": producer,
                }
                if countdown > 0:
                    options["countdown"] = countdown
                deliver.apply_async(args, **options)
    except Exception:
        logger.warning("event=delivery_publish_failed deliveries=%d", len(items), exc_info=True)


def deliveries_of(message: Message) -> Any:
    return Delivery.objects.filter(message=message).select_related("agent")
