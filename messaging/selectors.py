"""Reads of the bus: inbox depths, who may see which messages, the metrics, and why an agent did or did
not receive a message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from agents.models import Agent
from messaging import routing
from messaging.models import (
    WAITING,
    Addressing,
    Delivery,
    DeliveryStatus,
    Message,
    RoutingRule,
    RuleAction,
    Subscription,
)
from messaging.services.sending import envelope

OPEN = [*WAITING, DeliveryStatus.DELIVERED]


def inbox_depth(agent: Agent | int) -> int:
    """Deliveries not yet acked, expired or dead: waiting, in a retry's backoff, or handed out."""
    return Delivery.objects.filter(agent=agent, status__in=OPEN).count()


def inbox_depths(agent_pks: list[int] | None = None) -> dict[int, int]:
    rows = Delivery.objects.filter(status__in=OPEN)
    if agent_pks is not None:
        rows = rows.filter(agent_id__in=agent_pks)
    return dict(rows.values_list("agent_id").annotate(n=Count("pk")).values_list("agent_id", "n"))


def delivery_counts(agent: Agent) -> dict[str, int]:
    rows = Delivery.objects.filter(agent=agent).values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    return {status: n for status, n in rows}


def sent_count(agent: Agent) -> int:
    return Message.objects.filter(sender_agent=agent).count()


def messages_visible_to(principal: Any) -> QuerySet[Message]:
    """Staff: every message. An agent: those it sent or received. Another person: those they sent."""
    messages = Message.objects.all()
    if getattr(principal, "is_staff", False):
        return messages
    agent = getattr(principal, "agent", None)
    if agent is not None:
        return messages.filter(Q(sender_agent=agent) | Q(deliveries__agent=agent)).distinct()
    return messages.filter(sender=f"user:{principal.get_username()}")


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def stats(*, window: timedelta = timedelta(hours=1), sample: int = 20000) -> dict[str, Any]:
    """The bus's metrics (the seed's ``get_metrics``, from the database): messages by type, deliveries by
    status, failed and dead counts, fan-out latency (sent to acked) p50/p95 over ``window``, inbox depth
    per agent, subscriptions and rules."""
    since = timezone.now() - window
    by_type = dict(Message.objects.values_list("type").annotate(n=Count("pk")).values_list("type", "n"))
    by_status = dict(Delivery.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    latencies = sorted(
        (acked - sent).total_seconds() * 1000
        for acked, sent in Delivery.objects.filter(acked_at__gte=since)
        .order_by("-acked_at")
        .values_list("acked_at", "message__created_at")[:sample]
    )
    depths = (
        Delivery.objects.filter(status__in=OPEN)
        .values_list("agent__agent_id")
        .annotate(n=Count("pk"))
        .order_by("-n", "agent__agent_id")
        .values_list("agent__agent_id", "n")[:100]
    )
    return {
        "total_messages": sum(by_type.values()),
        "messages_by_type": by_type,
        "deliveries_by_status": {s: by_status.get(s, 0) for s in DeliveryStatus.values},
        "failed_deliveries": by_status.get(DeliveryStatus.FAILED, 0),
        "dead_deliveries": by_status.get(DeliveryStatus.DEAD, 0),
        "latency_window_seconds": window.total_seconds(),
        "acked_in_window": len(latencies),
        "fanout_latency_ms": {"p50": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95)},
        "inbox_depth": dict(depths),
        "subscription_count": Subscription.objects.count(),
        "routing_rule_count": RoutingRule.objects.filter(enabled=True).count(),
    }


@dataclass(frozen=True)
class Explanation:
    agent_id: str
    received: bool
    reason: str
    via: str = ""
    subscription_id: int | None = None
    rule_id: int | None = None
    delivery_status: str = ""
    checks: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "received": self.received,
            "reason": self.reason,
            "via": self.via,
            "subscription": self.subscription_id,
            "rule": self.rule_id,
            "delivery_status": self.delivery_status,
            "checks": list(self.checks),
        }


def explain(message: Message, agent: Agent) -> Explanation:
    """Why ``agent`` did or did not receive ``message``: the delivery and what chose it, or, for each of
    its subscriptions and each routing rule (as they are now), the first condition that failed."""
    env = envelope(message)
    checks: list[dict[str, Any]] = []
    for sub in Subscription.objects.filter(agent=agent).order_by("pk"):
        mismatch = routing.subscription_mismatch(
            pattern=sub.pattern,
            message_types=sub.message_types,
            sender_patterns=sub.sender_patterns,
            filters=sub.content_filters,
            message=env,
        )
        if message.addressing != Addressing.TOPIC and mismatch is None:
            mismatch = f"the message was sent {message.addressing}, not to a topic: subscriptions do not apply"
        checks.append(
            {"subscription": sub.pk, "pattern": sub.pattern, "matched": mismatch is None, "failed": mismatch or ""}
        )
    for rule in RoutingRule.objects.filter(enabled=True).order_by("position", "pk"):
        mismatch = routing.rule_mismatch(
            message_types=rule.message_types,
            topic_pattern=rule.topic_pattern,
            sender_pattern=rule.sender_pattern,
            filters=rule.content_filters,
            message=env,
        )
        entry = {
            "rule": rule.pk,
            "name": rule.name,
            "action": rule.action,
            "matched": mismatch is None,
            "failed": mismatch or "",
        }
        if mismatch is None and rule.action == RuleAction.ADD_AGENT and rule.target_agent_id != agent.pk:
            entry["note"] = "adds another agent"
        checks.append(entry)
    delivery = Delivery.objects.filter(message=message, agent=agent).first()
    if delivery is not None:
        reason = {
            "direct": f"the message was addressed to '{agent.agent_id}'",
            "broadcast": "the message was a broadcast to every registered agent",
            "subscription": f"subscription {delivery.subscription_id} matched",
            "rule": f"routing rule {delivery.rule_id} added it",
            "reply": "it is the response to this agent's request (reply_to)",
        }.get(delivery.via, delivery.via)
        return Explanation(
            agent.agent_id,
            True,
            reason,
            delivery.via,
            delivery.subscription_id,
            delivery.rule_id,
            delivery.status,
            tuple(checks),
        )
    if message.sender_agent_id == agent.pk:
        reason = "the sender never receives its own message"
    elif message.dropped_by_id is not None:
        reason = f"routing rule {message.dropped_by_id} dropped the message"
    elif agent.unregistered_at is not None and agent.unregistered_at <= message.created_at:
        reason = f"'{agent.agent_id}' was unregistered when the message was sent"
    elif agent.registered_at > message.created_at:
        reason = f"'{agent.agent_id}' registered after the message was sent"
    elif message.addressing == Addressing.DIRECT:
        reason = f"the message was addressed to '{message.to_agent.agent_id if message.to_agent else '?'}'"
    elif message.addressing == Addressing.TOPIC:
        subs = [c for c in checks if "subscription" in c]
        if not subs:
            reason = f"'{agent.agent_id}' has no subscription"
        else:
            reason = "no subscription matched: " + "; ".join(f"{c['pattern']}: {c['failed']}" for c in subs)
    else:
        reason = "no delivery was recorded for this agent"
    return Explanation(agent.agent_id, False, reason, checks=tuple(checks))
