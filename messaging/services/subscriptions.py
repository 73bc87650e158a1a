"""Subscriptions (an agent's own, or staff's for anyone) and routing rules' derived fields."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from agents.models import Agent
from masplatform.exceptions import Conflict, InvalidInput, NotFound
from messaging import routing
from messaging.models import TYPE_BITS, MessageType, Subscription, SubscriptionFilter

# the lengths of Subscription.topic_regex and .sender_regex
TOPIC_REGEX_MAX = 1200
SENDER_REGEX_MAX = 2000


def check_types(types: Any, field: str = "types") -> list[str]:
    if types is None:
        return []
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise InvalidInput({field: ["A list of message types."]})
    unknown = [t for t in types if t not in MessageType.values]
    if unknown:
        raise InvalidInput({field: [f"'{unknown[0]}' is not a message type; one of: {', '.join(MessageType.values)}."]})
    return sorted(set(types))


def check_subscription(
    pattern: Any, types: Any = None, senders: Any = None, where: Any = None
) -> tuple[str, list[str], list[str], dict[str, Any]]:
    """The subscription's fields, checked (``InvalidInput`` naming the field)."""
    problem = routing.pattern_problem(pattern)
    if problem:
        raise InvalidInput({"pattern": [problem]})
    if len(routing.topic_regex(pattern)) > TOPIC_REGEX_MAX:  # e.g. 128 '#' words: the column would refuse it
        raise InvalidInput({"pattern": [f"'{pattern[:40]}…' has too many wildcards; use fewer words."]})
    types = check_types(types)
    senders = [] if senders is None else senders
    if not isinstance(senders, list):
        raise InvalidInput({"senders": ["A list of sender patterns (globs)."]})
    for glob in senders:
        problem = routing.sender_glob_problem(glob)
        if problem:
            raise InvalidInput({"senders": [problem]})
    if len(routing.sender_regex(senders)) > SENDER_REGEX_MAX:
        raise InvalidInput({"senders": ["Too many sender patterns, or too long: use fewer."]})
    where = {} if where is None else where
    problem = routing.content_filters_problem(where)
    if problem:
        raise InvalidInput({"where": [problem]})
    return pattern, types, sorted(set(senders)), where


def type_mask(types: list[str]) -> int:
    mask = 0
    for t in types:
        mask |= TYPE_BITS[t]
    return mask


def subscribe(
    agent: Agent, pattern: str, *, types: Any = None, senders: Any = None, where: Any = None, declared: bool = False
) -> tuple[Subscription, bool]:
    """Subscribe ``agent`` (idempotent: the same subscription again returns the existing one, False)."""
    pattern, types, senders, where = check_subscription(pattern, types, senders, where)
    if agent.unregistered_at is not None:
        raise Conflict(f"agent '{agent.agent_id}' is unregistered; it cannot subscribe")
    existing = Subscription.objects.filter(
        agent=agent, pattern=pattern, message_types=types, sender_patterns=senders, content_filters=where
    ).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            subscription = Subscription.objects.create(
                agent=agent,
                pattern=pattern,
                message_types=types,
                sender_patterns=senders,
                content_filters=where,
                topic_regex=routing.topic_regex(pattern),
                sender_regex=routing.sender_regex(senders),
                type_mask=type_mask(types),
                declared=declared,
            )
            SubscriptionFilter.objects.bulk_create(
                SubscriptionFilter(subscription=subscription, key=k, pair=routing.filter_pair(k, v))
                for k, v in where.items()
            )
    except IntegrityError:  # the same one, created meanwhile
        return Subscription.objects.get(
            agent=agent, pattern=pattern, message_types=types, sender_patterns=senders, content_filters=where
        ), False
    return subscription, True


def refresh_derived(subscription: Subscription) -> None:
    """Recompute what the database matches on after an edit (the admin)."""
    subscription.topic_regex = routing.topic_regex(subscription.pattern)
    subscription.sender_regex = routing.sender_regex(subscription.sender_patterns)
    subscription.type_mask = type_mask(subscription.message_types)
    with transaction.atomic():
        subscription.save()
        SubscriptionFilter.objects.filter(subscription=subscription).delete()
        SubscriptionFilter.objects.bulk_create(
            SubscriptionFilter(subscription=subscription, key=k, pair=routing.filter_pair(k, v))
            for k, v in subscription.content_filters.items()
        )


def unsubscribe(agent: Agent, subscription_id: Any) -> None:
    deleted, _ = Subscription.objects.filter(agent=agent, pk=subscription_id).delete()
    if not deleted:
        raise NotFound(f"agent '{agent.agent_id}' has no subscription {subscription_id}")


def declare(agent: Agent, wanted: list[tuple[str, Any, Any, Any]]) -> None:
    """Make ``agent``'s declared subscriptions exactly ``wanted`` (its SDK's, at start); those made
    through the API or the admin stay."""
    keep = set()
    for pattern, types, senders, where in wanted:
        subscription, _ = subscribe(agent, pattern, types=types, senders=senders, where=where, declared=True)
        keep.add(subscription.pk)
    Subscription.objects.filter(agent=agent, declared=True).exclude(pk__in=keep).delete()
