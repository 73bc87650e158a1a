"""Shapes of the message bus API. Form only: what a message may be sent as, and whether its agents,
topics and patterns exist or parse, is for ``messaging.services`` (InvalidInput naming the field)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import Agent
from masplatform.serializers import StrictTypesMixin
from messaging import routing
from messaging.models import Delivery, DeliveryStatus, Message, MessageType, RequestStatus, RoutingRule, RuleAction
from messaging.services.subscriptions import check_subscription, check_types

# the longest ``key=value`` a content filter is stored as (SubscriptionFilter.pair)
MAX_FILTER_PAIR = 1200
NUL_ESCAPE = "\\u0000"


def no_nul(value: Any) -> Any:
    """PostgreSQL's jsonb refuses the NUL character; refuse it here, as a 400, on both databases."""
    if NUL_ESCAPE in json.dumps(value):
        raise serializers.ValidationError("The NUL character (\\u0000) is not allowed in JSON text.")
    return value


def bounded_filters(value: Any) -> Any:
    if isinstance(value, dict):
        for key, expected in value.items():
            if len(routing.filter_pair(str(key), expected)) > MAX_FILTER_PAIR:
                raise serializers.ValidationError(
                    f"The filter on '{key}' is longer than {MAX_FILTER_PAIR} characters as key=JSON value."
                )
    return value


class ObjectField(serializers.JSONField):
    """A JSON object (any keys), documented as such."""

    default_error_messages = {"not_object": "A JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        return no_nul(value)


extend_schema_field({"type": "object", "additionalProperties": True})(ObjectField)


# --- sending ------------------------------------------------------------------


class SendSerializer(StrictTypesMixin, serializers.Serializer):
    """The body of ``POST /api/messages/``. The sender is who authenticated, so ``sender`` is refused."""

    type = serializers.ChoiceField(
        choices=MessageType.choices, required=False, help_text="default: event (broadcast when broadcast is true)"
    )
    to = serializers.CharField(max_length=100, required=False, help_text="an agent id (direct; required for a request)")
    topic = serializers.CharField(
        max_length=routing.MAX_TOPIC, required=False, help_text="dotted words, e.g. weather.nyc"
    )
    broadcast = serializers.BooleanField(required=False, default=False, help_text="to every registered agent")
    content = ObjectField(required=False, help_text="a JSON object; content.type keys the SDK's handlers")
    priority = serializers.IntegerField(min_value=0, max_value=9, required=False, default=5)
    ttl = serializers.FloatField(
        min_value=1,
        max_value=settings.MASP_MESSAGE_MAX_TTL,
        required=False,
        help_text="seconds it waits in the inboxes (default MASP_MESSAGE_TTL); a request's is its timeout",
    )
    correlation_id = serializers.UUIDField(required=False, allow_null=True, help_text="the message this one answers")
    reply_to = serializers.CharField(
        max_length=100, required=False, allow_blank=True, help_text="agent id whose inbox gets the response (itself)"
    )
    timeout = serializers.FloatField(
        min_value=0.1, max_value=3600, required=False, help_text="requests only (default MASP_REQUEST_TIMEOUT)"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if isinstance(self.initial_data, dict):
            forged = [name for name in ("sender", "sender_agent") if name in self.initial_data]
            if forged:
                raise serializers.ValidationError(
                    {
                        name: [
                            "The sender is who authenticated (an agent sends as itself, a person as user:<name>); "
                            "it is never taken from the body."
                        ]
                        for name in forged
                    }
                )
        return attrs

    def to_service_kwargs(self) -> dict[str, Any]:
        data = dict(self.validated_data)
        data.setdefault("content", {})
        data.setdefault("type", None)
        return data


class DeliverySerializer(serializers.ModelSerializer):
    agent_id = serializers.CharField(source="agent.agent_id", read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "agent_id",
            "status",
            "attempts",
            "via",
            "subscription",
            "rule",
            "created_at",
            "delivered_at",
            "acked_at",
            "visible_at",
            "last_error",
        ]
        read_only_fields = fields


class DeliveryDetailSerializer(DeliverySerializer):
    """A delivery on its own: with its message's id and its place in the inbox."""

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields[:2], "message", "priority", "expires_at", "available_at"] + [
            f for f in DeliverySerializer.Meta.fields[2:]
        ]
        read_only_fields = fields


class MessageSerializer(serializers.ModelSerializer):
    to = serializers.SerializerMethodField()
    dropped_by = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="the routing rule that dropped it"
    )
    request_status = serializers.ChoiceField(
        choices=[*RequestStatus.choices, ("", "not a request")],
        read_only=True,
        help_text="requests only; empty for the other types",
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "type",
            "sender",
            "addressing",
            "to",
            "topic",
            "content",
            "content_type",
            "correlation_id",
            "reply_to",
            "priority",
            "created_at",
            "expires_at",
            "recipient_count",
            "dropped_by",
            "request_status",
            "timeout",
            "answered_at",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "string", "nullable": True, "description": "the addressee (direct messages)"})
    def get_to(self, message: Message) -> str | None:
        return message.to_agent.agent_id if message.to_agent_id and message.to_agent else None


class MessageDetailSerializer(MessageSerializer):
    """A message with its deliveries (``deliveries``: those the reader may see, set by the view)."""

    deliveries = serializers.SerializerMethodField()

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "deliveries"]
        read_only_fields = fields

    @extend_schema_field(DeliverySerializer(many=True))
    def get_deliveries(self, message: Message) -> list[dict[str, Any]]:
        rows = getattr(message, "visible_deliveries", None)
        if rows is None:
            rows = message.deliveries.select_related("agent").order_by("id")
        return DeliverySerializer(rows, many=True).data


class SentMessageSerializer(MessageDetailSerializer):
    """The answer to ``POST /api/messages/``: the message, its recipients and, for a request, its answer."""

    response = serializers.SerializerMethodField()

    class Meta(MessageDetailSerializer.Meta):
        fields = [*MessageDetailSerializer.Meta.fields, "response"]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "additionalProperties": True,
            "description": "a request's answer: the response's content, or the error answer "
            "(no_responders, timed_out, failed); null while pending and for other types",
        }
    )
    def get_response(self, message: Message) -> dict[str, Any] | None:
        answer = getattr(message, "answer", None)
        return answer.content if answer is not None else None


# --- routing explanations -----------------------------------------------------


class ExplanationSerializer(serializers.Serializer):
    agent_id = serializers.CharField()
    received = serializers.BooleanField()
    reason = serializers.CharField(help_text="why it did, or the first condition that failed")
    via = serializers.CharField(help_text="direct, broadcast, subscription, rule or reply; empty if not received")
    subscription = serializers.IntegerField(allow_null=True)
    rule = serializers.IntegerField(allow_null=True)
    delivery_status = serializers.CharField()
    checks = serializers.ListField(
        child=serializers.DictField(),
        help_text="each of the agent's subscriptions and each enabled routing rule: matched, or what failed",
    )


class RoutingSerializer(serializers.Serializer):
    message = serializers.UUIDField()
    explanations = ExplanationSerializer(many=True)


# --- the HTTP inbox -----------------------------------------------------------


class InboxQuerySerializer(StrictTypesMixin, serializers.Serializer):
    wait = serializers.FloatField(min_value=0, max_value=30, required=False, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=10)
    visibility = serializers.FloatField(min_value=1, max_value=3600, required=False)


class InboxDeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    message = MessageSerializer()
    attempt = serializers.IntegerField(source="attempts", help_text="1 the first time it is handed out")
    visible_at = serializers.DateTimeField(help_text="ack it before then, or it is handed out again")


class InboxSerializer(serializers.Serializer):
    deliveries = InboxDeliverySerializer(many=True)


ATTEMPT_HELP = (
    "optional: the attempt the inbox handed out; given, an ack or nack of an earlier hand-out (one handed out "
    "again after its visibility deadline) is a 409"
)


class AckSerializer(StrictTypesMixin, serializers.Serializer):
    response = ObjectField(required=False, allow_null=True, help_text="a request's answer (its content)")
    attempt = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False, help_text=ATTEMPT_HELP)


class NackSerializer(StrictTypesMixin, serializers.Serializer):
    error = serializers.CharField(
        max_length=4000, required=False, default="nacked", help_text="what went wrong (retried after a backoff)"
    )
    attempt = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False, help_text=ATTEMPT_HELP)


# --- subscriptions ------------------------------------------------------------


class SubscriptionSerializer(StrictTypesMixin, serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    agent_id = serializers.CharField(source="agent.agent_id", read_only=True)
    pattern = serializers.CharField(max_length=routing.MAX_TOPIC, help_text="dotted words; * one word, # zero or more")
    types = serializers.ListField(
        child=serializers.ChoiceField(choices=MessageType.choices),
        source="message_types",
        required=False,
        default=list,
        help_text="empty: every type",
    )
    senders = serializers.ListField(
        child=serializers.CharField(max_length=160),
        source="sender_patterns",
        required=False,
        default=list,
        help_text="sender globs; empty: any sender",
    )
    where = ObjectField(
        source="content_filters",
        required=False,
        default=dict,
        validators=[bounded_filters],
        help_text='{"dotted.key": value}: every one must equal the content\'s',
    )
    declared = serializers.BooleanField(read_only=True, help_text="declared by the agent's SDK code")
    created_at = serializers.DateTimeField(read_only=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        check_subscription(attrs["pattern"], attrs["message_types"], attrs["sender_patterns"], attrs["content_filters"])
        return attrs


# --- routing rules ------------------------------------------------------------


class RoutingRuleSerializer(StrictTypesMixin, serializers.ModelSerializer):
    target_agent = serializers.SlugRelatedField(
        slug_field="agent_id",
        queryset=Agent.objects.all(),
        required=False,
        allow_null=True,
        help_text="add_agent: the agent id added",
    )
    message_types = serializers.ListField(
        child=serializers.ChoiceField(choices=MessageType.choices), required=False, help_text="empty: every type"
    )
    content_filters = ObjectField(required=False, validators=[bounded_filters])
    position = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)

    class Meta:
        model = RoutingRule
        fields = [
            "id",
            "name",
            "position",
            "enabled",
            "message_types",
            "topic_pattern",
            "sender_pattern",
            "content_filters",
            "action",
            "target_agent",
            "target_topic",
            "stop",
            "description",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_message_types(self, value: list[str]) -> list[str]:
        return check_types(value, "message_types")

    def validate_topic_pattern(self, value: str) -> str:
        problem = value and routing.pattern_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_sender_pattern(self, value: str) -> str:
        problem = value and routing.sender_glob_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_target_topic(self, value: str) -> str:
        problem = value and routing.topic_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_content_filters(self, value: dict[str, Any]) -> dict[str, Any]:
        problem = routing.content_filters_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        def current(name: str) -> Any:
            if name in attrs:
                return attrs[name]
            return getattr(self.instance, name, None) if self.instance is not None else None

        action = current("action")
        if action == RuleAction.ADD_AGENT and current("target_agent") is None:
            raise serializers.ValidationError({"target_agent": ["An add_agent rule names the agent it adds."]})
        if action == RuleAction.ADD_TOPIC and not current("target_topic"):
            raise serializers.ValidationError({"target_topic": ["An add_topic rule names the topic it adds."]})
        return attrs


# --- metrics ------------------------------------------------------------------


class LatencySerializer(serializers.Serializer):
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)


@extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
class CountsField(serializers.DictField):
    child = serializers.IntegerField()


class MessagingStatsSerializer(serializers.Serializer):
    total_messages = serializers.IntegerField()
    messages_by_type = CountsField(help_text="message type -> count")
    deliveries_by_status = CountsField(help_text=f"each of {', '.join(DeliveryStatus.values)} -> count")
    failed_deliveries = serializers.IntegerField(help_text="failed, to be retried")
    dead_deliveries = serializers.IntegerField()
    latency_window_seconds = serializers.FloatField()
    acked_in_window = serializers.IntegerField()
    fanout_latency_ms = LatencySerializer(help_text="sent to acked, over the window; null without acks")
    inbox_depth = CountsField(help_text="agent id -> deliveries not yet acked, expired or dead (top 100)")
    subscription_count = serializers.IntegerField()
    routing_rule_count = serializers.IntegerField(help_text="enabled rules")
