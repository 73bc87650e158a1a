"""Query parameters of discovery and history; the filtering itself is the selectors'."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from agents.models import AgentEvent, AgentEventKind, AgentState, Invocation, InvocationStatus
from agents.selectors import discover_agents
from masplatform.filters import StrictBooleanFilter, UtcIsoDateTimeFilter


class AgentDiscoveryFilter(django_filters.FilterSet):
    capability = django_filters.CharFilter(
        method="_noop", help_text="Repeatable: the agent must offer every capability named."
    )
    tag = django_filters.CharFilter(method="_noop")
    state = django_filters.ChoiceFilter(choices=AgentState.choices, method="_noop")
    min_health = django_filters.NumberFilter(method="_noop", min_value=0, max_value=1)
    max_cpu_load = django_filters.NumberFilter(method="_noop", min_value=0, max_value=1)
    available = StrictBooleanFilter(
        method="_noop", help_text="true: live, not draining or in error, and below max concurrency."
    )
    include_unregistered = StrictBooleanFilter(method="_noop")

    def _noop(self, queryset: QuerySet, name: str, value: object) -> QuerySet:
        return queryset

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        data = self.form.cleaned_data
        as_float = lambda v: None if v is None else float(v)  # noqa: E731
        return discover_agents(
            queryset=queryset,
            capabilities=self.data.getlist("capability") if hasattr(self.data, "getlist") else [],
            tag=data.get("tag") or None,
            state=data.get("state") or None,
            min_health=as_float(data.get("min_health")),
            max_cpu_load=as_float(data.get("max_cpu_load")),
            available=data.get("available"),
            include_unregistered=bool(data.get("include_unregistered")),
        )


class AgentEventFilter(django_filters.FilterSet):
    agent = django_filters.CharFilter(field_name="agent__agent_id", help_text="agent_id")
    kind = django_filters.ChoiceFilter(choices=AgentEventKind.choices)
    since = UtcIsoDateTimeFilter(field_name="at", lookup_expr="gte")

    class Meta:
        model = AgentEvent
        fields = ["agent", "kind", "since"]


class InvocationFilter(django_filters.FilterSet):
    capability = django_filters.CharFilter(field_name="capability__name")
    status = django_filters.MultipleChoiceFilter(choices=InvocationStatus.choices)
    agent = django_filters.CharFilter(field_name="agent__agent_id", help_text="agent_id that ran it")
    requested_by = django_filters.CharFilter()
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Invocation
        fields = ["capability", "status", "agent", "requested_by", "since"]
