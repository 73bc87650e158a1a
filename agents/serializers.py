"""Shapes of the registry API. Validation of form only; state rules live in services."""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import (
    CAPABILITY_NAME_RE,
    Agent,
    AgentEvent,
    AgentState,
    Capability,
    Invocation,
    InvocationAttempt,
)
from agents.schemas import schema_error
from agents.selectors import CallCounters, call_counters, offers_of, tags_of
from agents.services import CapabilitySpec
from masplatform.serializers import StrictTypesMixin

# The largest value of an IntegerField column on PostgreSQL (and so the bound of every integer input).
INT32_MAX = 2**31 - 1

capability_name = RegexValidator(
    CAPABILITY_NAME_RE,
    "Use 1-100 of: lowercase letters, digits, '_', '.', '-', starting with a letter or digit.",
)


class SchemaField(serializers.JSONField):
    """A JSON Schema (object or boolean), checked to be a valid one."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        problem = schema_error(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class CapabilitySpecSerializer(StrictTypesMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100, validators=[capability_name])
    description = serializers.CharField(allow_blank=True, required=False, default="")
    input_schema = serializers.JSONField(
        required=False,
        default=None,
        allow_null=True,
        help_text="Omitted: the capability's existing contract ({} for a new one).",
    )
    output_schema = serializers.JSONField(required=False, default=None, allow_null=True, help_text="As input_schema.")
    cost = serializers.FloatField(min_value=0.0, required=False, default=1.0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors = {}
        for which in ("input_schema", "output_schema"):
            if attrs[which] is None:
                continue
            problem = schema_error(attrs[which])
            if problem:
                errors[which] = [f"capability '{attrs['name']}': {problem}"]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class AgentRegistrationSerializer(StrictTypesMixin, serializers.Serializer):
    agent_id = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    capabilities = CapabilitySpecSerializer(many=True, required=False, default=list)
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False, default=list)
    metadata = serializers.DictField(required=False, default=dict)
    max_concurrency = serializers.IntegerField(min_value=1, max_value=100_000, required=False, default=1)
    host = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    pid = serializers.IntegerField(min_value=0, max_value=INT32_MAX, required=False, allow_null=True, default=None)
    version = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")

    def validate_capabilities(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = [c["name"] for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise serializers.ValidationError(f"capabilities declared twice: {', '.join(twice)}")
        return value

    def to_service_kwargs(self) -> dict[str, Any]:
        data = dict(self.validated_data)
        data["name"] = data["name"] or data["agent_id"]
        data["capabilities"] = [CapabilitySpec(**c) for c in data["capabilities"]]
        return data


class OfferSerializer(serializers.Serializer):
    name = serializers.CharField(source="capability.name")
    cost = serializers.FloatField()


class AgentListSerializer(serializers.ListSerializer):
    """Reads the call counters of a whole page of agents in one query (``selectors.call_counters``)."""

    def to_representation(self, data: Any) -> list[dict[str, Any]]:
        agents = list(data.all() if hasattr(data, "all") else data)
        counters = call_counters(a.pk for a in agents)
        for agent in agents:
            agent._call_counters = counters[agent.pk]
        return super().to_representation(agents)


class AgentSerializer(serializers.ModelSerializer):
    tags = serializers.SerializerMethodField()
    capabilities = serializers.SerializerMethodField()
    heartbeat_age_seconds = serializers.SerializerMethodField()
    available = serializers.BooleanField(source="is_available", read_only=True)
    # from the agent's invocation attempts, always current (the Agent columns follow with its heartbeats)
    calls_completed = serializers.SerializerMethodField()
    calls_failed = serializers.SerializerMethodField()
    avg_response_time_ms = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        list_serializer_class = AgentListSerializer
        fields = [
            "agent_id",
            "name",
            "description",
            "state",
            "available",
            "capabilities",
            "tags",
            "metadata",
            "host",
            "pid",
            "version",
            "max_concurrency",
            "health_score",
            "cpu_load",
            "in_flight",
            "calls_completed",
            "calls_failed",
            "avg_response_time_ms",
            "registered_at",
            "last_heartbeat_at",
            "heartbeat_age_seconds",
            "state_changed_at",
            "unregistered_at",
        ]
        read_only_fields = fields

    def get_tags(self, agent: Agent) -> list[str]:
        return tags_of(agent)

    @extend_schema_field(OfferSerializer(many=True))
    def get_capabilities(self, agent: Agent) -> list[dict]:
        return [{"name": o.capability.name, "cost": o.cost} for o in offers_of(agent)]

    def get_heartbeat_age_seconds(self, agent: Agent) -> float:
        return round((timezone.now() - agent.last_heartbeat_at).total_seconds(), 3)

    def _counters(self, agent: Agent) -> CallCounters:
        counters = getattr(agent, "_call_counters", None)
        if counters is None:
            counters = agent._call_counters = call_counters([agent.pk])[agent.pk]
        return counters

    @extend_schema_field(OpenApiTypes.INT)
    def get_calls_completed(self, agent: Agent) -> int:
        return self._counters(agent).completed

    @extend_schema_field(OpenApiTypes.INT)
    def get_calls_failed(self, agent: Agent) -> int:
        return self._counters(agent).failed

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_avg_response_time_ms(self, agent: Agent) -> float | None:
        return self._counters(agent).avg_response_time_ms


class RegisteredAgentSerializer(AgentSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once. Send as 'Authorization: Agent <token>'.")

    class Meta(AgentSerializer.Meta):
        fields = [*AgentSerializer.Meta.fields, "token"]
        read_only_fields = fields


class HeartbeatSerializer(StrictTypesMixin, serializers.Serializer):
    cpu_load = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    health_score = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    in_flight = serializers.IntegerField(min_value=0, max_value=INT32_MAX, required=False)
    state = serializers.ChoiceField(choices=AgentState.choices, required=False)


class HeartbeatResultSerializer(serializers.Serializer):
    agent_id = serializers.CharField()
    state = serializers.CharField()
    revived = serializers.BooleanField()
    next_heartbeat_due = serializers.DateTimeField()
    heartbeat_interval = serializers.FloatField(help_text="Seconds between heartbeats.")


class StatusSerializer(StrictTypesMixin, serializers.Serializer):
    state = serializers.ChoiceField(choices=AgentState.choices)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)


class StatsSerializer(serializers.Serializer):
    total_agents = serializers.IntegerField()
    by_state = serializers.DictField(child=serializers.IntegerField())
    live_agents = serializers.IntegerField()
    unregistered_agents = serializers.IntegerField()
    capabilities = serializers.IntegerField()
    live_agents_per_capability = serializers.DictField(child=serializers.IntegerField())
    live_agents_per_tag = serializers.DictField(child=serializers.IntegerField())
    live_agents_by_health = serializers.DictField(
        child=serializers.IntegerField(), help_text="healthy: health >= 0.8; degraded: 0.5-0.8; unhealthy: < 0.5"
    )
    average_health = serializers.FloatField(allow_null=True)
    average_cpu_load = serializers.FloatField(allow_null=True)
    agents_seen_last_minute = serializers.IntegerField()


class CapabilitySerializer(StrictTypesMixin, serializers.ModelSerializer):
    name = serializers.CharField(max_length=100, validators=[capability_name])
    input_schema = SchemaField(required=False)
    output_schema = SchemaField(required=False)
    live_agents = serializers.IntegerField(read_only=True, default=0)
    lowest_cost = serializers.FloatField(read_only=True, allow_null=True, default=None)

    class Meta:
        model = Capability
        fields = [
            "name",
            "description",
            "input_schema",
            "output_schema",
            "live_agents",
            "lowest_cost",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class AgentEventSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.agent_id", read_only=True)

    class Meta:
        model = AgentEvent
        fields = ["id", "agent", "kind", "at", "from_state", "to_state", "details"]
        read_only_fields = fields


class InvocationRequestSerializer(StrictTypesMixin, serializers.Serializer):
    capability = serializers.CharField(max_length=100)
    input = serializers.JSONField(required=False, default=dict)
    priority = serializers.IntegerField(
        min_value=0, max_value=9, required=False, default=5, help_text="0 (lowest) to 9 (highest)"
    )
    timeout = serializers.FloatField(
        min_value=0.1,
        max_value=86400,
        required=False,
        default=None,
        allow_null=True,
        help_text="seconds per attempt (default MASP_INVOCATION_TIMEOUT)",
    )
    max_retries = serializers.IntegerField(min_value=0, max_value=100, required=False, default=0)
    agent = serializers.SlugField(required=False, allow_null=True, default=None, help_text="pin the call to this agent")
    idempotency_key = serializers.CharField(max_length=200, required=False, allow_null=True, default=None)


class InvocationAttemptSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.agent_id", default=None, read_only=True, allow_null=True)

    class Meta:
        model = InvocationAttempt
        fields = [
            "number",
            "agent",
            "outcome",
            "started_at",
            "finished_at",
            "duration_ms",
            "error_type",
            "error_message",
        ]
        read_only_fields = fields


class InvocationSerializer(serializers.ModelSerializer):
    capability = serializers.CharField(source="capability.name", read_only=True)
    agent = serializers.CharField(source="agent.agent_id", default=None, read_only=True, allow_null=True)
    pinned_agent = serializers.CharField(
        source="pinned_agent.agent_id", default=None, read_only=True, allow_null=True
    )
    error = serializers.SerializerMethodField()

    class Meta:
        model = Invocation
        fields = [
            "id",
            "capability",
            "status",
            "input",
            "output",
            "priority",
            "timeout",
            "max_retries",
            "attempt",
            "failed_attempts",
            "agent",
            "pinned_agent",
            "idempotency_key",
            "requested_by",
            "error",
            "progress",
            "progress_message",
            "cancel_requested",
            "created_at",
            "queued_at",
            "not_before",
            "started_at",
            "deadline_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_error(self, invocation: Invocation) -> dict[str, str] | None:
        if not invocation.error_type:
            return None
        error = {"type": invocation.error_type, "message": invocation.error_message}
        request = self.context.get("request")
        if request is not None and request.user.is_staff and invocation.error_traceback:
            error["traceback"] = invocation.error_traceback  # staff only
        return error


class InvocationDetailSerializer(InvocationSerializer):
    waiting_reason = serializers.SerializerMethodField(help_text="why a queued invocation waits")
    attempts = InvocationAttemptSerializer(many=True, read_only=True)

    class Meta(InvocationSerializer.Meta):
        fields = [*InvocationSerializer.Meta.fields, "waiting_reason", "attempts"]
        read_only_fields = fields

    def get_waiting_reason(self, invocation: Invocation) -> str | None:
        from agents.services import waiting_reason

        return waiting_reason(invocation)


class FleetResultSerializer(serializers.Serializer):
    agent_id = serializers.CharField()
    state = serializers.CharField()
    worker = serializers.CharField(help_text="the Celery node name of the agent's worker")
    acknowledged = serializers.BooleanField(help_text="whether the worker answered the remote-control command")


class FleetStatsSerializer(serializers.Serializer):
    queue = serializers.CharField()
    queue_depth = serializers.IntegerField(allow_null=True, help_text="messages waiting in the broker queue")
    queued = serializers.IntegerField(help_text="invocations in status queued")
    in_flight = serializers.IntegerField()
    live_agents = serializers.IntegerField()
    available_agents = serializers.IntegerField()
    window_seconds = serializers.IntegerField()
    finished = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)


class CapabilityDetailSerializer(CapabilitySerializer):
    fleet = FleetStatsSerializer(read_only=True)

    class Meta(CapabilitySerializer.Meta):
        fields = [*CapabilitySerializer.Meta.fields, "fleet"]
