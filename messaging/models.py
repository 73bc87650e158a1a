"""The message bus's state: messages, one delivery per recipient (the inboxes), subscriptions, routing
rules, and what each agent's worker said it handles (its endpoint)."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q

from agents.models import Agent


class MessageType(models.TextChoices):
    REQUEST = "request", "request"
    RESPONSE = "response", "response"
    BROADCAST = "broadcast", "broadcast"
    EVENT = "event", "event"
    HEARTBEAT = "heartbeat", "heartbeat"
    ERROR = "error", "error"


# one bit per type, so that a subscription's type filter is an integer the database can test
TYPE_BITS = {value: 1 << i for i, value in enumerate(MessageType.values)}


class Addressing(models.TextChoices):
    DIRECT = "direct", "direct"
    TOPIC = "topic", "topic"
    BROADCAST = "broadcast", "broadcast"


class RequestStatus(models.TextChoices):
    PENDING = "pending", "pending"
    ANSWERED = "answered", "answered"
    FAILED = "failed", "failed"
    TIMED_OUT = "timed_out", "timed out"
    NO_RESPONDERS = "no_responders", "no responders"


class Message(models.Model):
    """One message as it was sent. ``sender`` is who sent it as the platform authenticated them
    (an agent's id, ``user:<name>``, ``platform``); ``sender_agent`` is set when it was an agent."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sender = models.CharField(max_length=160)
    sender_agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="sent_messages", db_index=False
    )
    type = models.CharField(max_length=16, choices=MessageType.choices, default=MessageType.EVENT)
    addressing = models.CharField(max_length=16, choices=Addressing.choices)
    to_agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="direct_messages", db_index=False
    )
    topic = models.CharField(max_length=255, blank=True, default="")
    content = models.JSONField(default=dict, blank=True)
    content_type = models.CharField(
        max_length=100, blank=True, default="", help_text="content['type'], which SDK handlers are keyed by"
    )
    correlation_id = models.UUIDField(null=True, blank=True)
    reply_to = models.CharField(max_length=100, blank=True, default="", help_text="agent id the response goes to")
    priority = models.PositiveSmallIntegerField(default=5, validators=[MaxValueValidator(9)])
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    recipient_count = models.PositiveIntegerField(default=0)
    dropped_by = models.ForeignKey(
        "RoutingRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # requests only: their state, deadline and answer
    request_status = models.CharField(max_length=16, choices=RequestStatus.choices, blank=True, default="")
    timeout = models.FloatField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"], name="message_created"),
            models.Index(fields=["correlation_id"], name="message_correlation"),
            models.Index(fields=["sender", "created_at"], name="message_sender"),
            models.Index(fields=["expires_at"], name="message_request_deadline", condition=Q(request_status="pending")),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(priority__lte=9), name="message_priority_0_9"),
            models.CheckConstraint(condition=Q(type__in=MessageType.values), name="message_type_valid"),
        ]

    def __str__(self) -> str:
        target = {"direct": self.to_agent_id and f"-> {self.to_agent_id}", "topic": f"#{self.topic}"}.get(
            self.addressing, "broadcast"
        )
        return f"{self.type} {self.id} from {self.sender} {target or ''}".strip()


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    ACKED = "acked", "acked"
    EXPIRED = "expired", "expired"
    FAILED = "failed", "failed (will be retried)"
    DEAD = "dead", "dead"


FINAL_DELIVERY = frozenset({DeliveryStatus.ACKED, DeliveryStatus.EXPIRED, DeliveryStatus.DEAD})
# waiting in an inbox: to be handed out once ``available_at`` has passed
WAITING = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


class Delivery(models.Model):
    """A message's delivery to one recipient. ``attempts`` is the claim token: each hand-out bumps it,
    and only the holder of the current attempt may ack, so a duplicate or late hand-out does nothing."""

    id = models.BigAutoField(primary_key=True)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    # copies of the message's, so that an inbox is read and swept from this table alone
    priority = models.PositiveSmallIntegerField(default=5)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    available_at = models.DateTimeField(help_text="not handed out before (a retry's backoff)")
    delivered_at = models.DateTimeField(null=True, blank=True)
    visible_at = models.DateTimeField(
        null=True, blank=True, help_text="handed out again if not acked by then (the visibility deadline)"
    )
    acked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="its last Celery message (SDK agents)")
    # why this agent received it
    via = models.CharField(max_length=16)  # direct, broadcast, subscription, rule, reply
    subscription = models.ForeignKey(
        "Subscription", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    rule = models.ForeignKey(
        "RoutingRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-priority", "created_at", "id"]
        indexes = [
            # an inbox, in the order it is handed out
            models.Index(
                "agent",
                models.F("priority").desc(),
                "created_at",
                "id",
                name="delivery_inbox",
                condition=Q(status__in=["pending", "failed", "delivered"]),
            ),
            models.Index(
                fields=["expires_at"], name="delivery_open_expiry", condition=Q(status__in=["pending", "failed"])
            ),
            models.Index(fields=["visible_at"], name="delivery_visibility", condition=Q(status="delivered")),
            models.Index(fields=["acked_at"], name="delivery_acked"),
            models.Index(fields=["status"], name="delivery_dead", condition=Q(status="dead")),
        ]
        constraints = [
            models.UniqueConstraint(fields=["message", "agent"], name="delivery_one_per_recipient"),
            models.CheckConstraint(condition=Q(status__in=DeliveryStatus.values), name="delivery_status_valid"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.message_id} to {self.agent_id}: {self.status}"


class Subscription(models.Model):
    """An agent's interest in a topic pattern, narrowed by message types, sender patterns and content
    filters. ``topic_regex``/``sender_regex``/``type_mask`` are the same conditions in the form the
    database tests when a message is sent."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="subscriptions")
    pattern = models.CharField(max_length=255, help_text="dotted words; * one word, # zero or more words")
    message_types = models.JSONField(default=list, blank=True, help_text="empty: every type")
    sender_patterns = models.JSONField(
        default=list, blank=True, help_text="globs of sender ids, e.g. weather_* or user:*"
    )
    content_filters = models.JSONField(default=dict, blank=True, help_text='{"dotted.key": value}, all equal')
    topic_regex = models.CharField(max_length=1200, editable=False)
    sender_regex = models.CharField(max_length=2000, blank=True, default="", editable=False)
    type_mask = models.PositiveIntegerField(default=0, editable=False)
    declared = models.BooleanField(default=False, help_text="declared by the agent's SDK code (replaced at its start)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent_id", "pattern", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "pattern", "message_types", "sender_patterns", "content_filters"],
                name="subscription_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}: {self.pattern}"


class SubscriptionFilter(models.Model):
    """One content filter of a subscription, as ``key`` and ``pair`` (key + canonical JSON of the
    value): a message matches when every pair of the subscription is among the message's own."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="filters")
    key = models.CharField(max_length=200)
    pair = models.CharField(max_length=1200)

    class Meta:
        indexes = [models.Index(fields=["key"], name="subscriptionfilter_key")]

    def __str__(self) -> str:
        return self.pair


class RuleAction(models.TextChoices):
    ADD_AGENT = "add_agent", "add an agent"
    ADD_TOPIC = "add_topic", "add the subscribers of a topic"
    DROP = "drop", "drop the message"


class RoutingRule(models.Model):
    """An operator's rule, applied in ``position`` order to every message sent: when it matches, its
    action adds recipients or drops the message; ``stop`` ends the evaluation of later rules."""

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(default=100, help_text="rules are applied in ascending order")
    enabled = models.BooleanField(default=True)
    message_types = models.JSONField(default=list, blank=True, help_text="empty: every type")
    topic_pattern = models.CharField(max_length=255, blank=True, default="", help_text="empty: any topic")
    sender_pattern = models.CharField(max_length=160, blank=True, default="", help_text="glob; empty: any sender")
    content_filters = models.JSONField(default=dict, blank=True)
    action = models.CharField(max_length=16, choices=RuleAction.choices)
    target_agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="for add_agent"
    )
    target_topic = models.CharField(max_length=255, blank=True, default="", help_text="for add_topic")
    stop = models.BooleanField(default=False, help_text="do not apply later rules to a message this one matched")
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}"


class Transport(models.TextChoices):
    WORKER = "worker", "SDK worker (Celery queue agent.<id>)"
    HTTP = "http", "HTTP inbox"


class Endpoint(models.Model):
    """How an agent takes its messages, and which it says it handles (declared by its SDK worker at
    start). An agent without one is an HTTP agent that may handle anything."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, primary_key=True, related_name="endpoint")
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.HTTP)
    handles = models.JSONField(default=list, blank=True, help_text="content or message types; empty: any")
    worker_pid = models.PositiveIntegerField(null=True, blank=True, help_text="the run_agent process that set it up")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.agent_id} ({self.transport})"
