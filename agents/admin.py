"""Operator pages of the registry. Actions call the same services as the API.

Agents and invocations change only through services, so their edit forms stay closed; their operator
actions (drain, resume, shut down, mark offline, unregister; retry, cancel) need the model's Django
*change* permission ("Can change agent", "Can change invocation"): see ``masplatform.admin``.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from agents import selectors, services
from agents.models import (
    Agent,
    AgentCapability,
    AgentEvent,
    AgentState,
    Capability,
    Invocation,
    InvocationAttempt,
    InvocationStatus,
    Tag,
)
from agents.schemas import schema_error
from agents.services import fleet
from masplatform.admin import PermissionCheckedActions
from masplatform.exceptions import ServiceError

STATE_COLOURS = {
    AgentState.IDLE: "#2e7d32",
    AgentState.BUSY: "#1565c0",
    AgentState.ERROR: "#c62828",
    AgentState.DRAINING: "#ef6c00",
    AgentState.OFFLINE: "#757575",
}


def badge(text: str, colour: str) -> str:
    return format_html(
        '<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;font-size:11px;'
        'font-weight:600;white-space:nowrap">{}</span>',
        colour,
        text,
    )


def run_each(model_admin: admin.ModelAdmin, request: HttpRequest, keys, service, done_message: str) -> None:
    """An admin action: call ``service(key)`` for each selected row; report successes and refusals."""
    done, refused = 0, []
    for key in keys:
        try:
            service(key)
            done += 1
        except ServiceError as exc:
            refused.append(f"{str(key)[:36]}: {exc.detail}")
    if done:
        model_admin.message_user(request, done_message.format(done), messages.SUCCESS)
    for line in refused[:10]:
        model_admin.message_user(request, line, messages.WARNING)


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


class CapabilityListFilter(admin.SimpleListFilter):
    title = "capability"
    parameter_name = "capability"

    def lookups(self, request, model_admin):
        return [(name, name) for name in Capability.objects.values_list("name", flat=True)]

    def queryset(self, request, queryset):
        if self.value():
            return selectors.discover_agents(queryset=queryset, capabilities=[self.value()], include_unregistered=True)
        return queryset


class TagListFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        return [(name, name) for name in Tag.objects.values_list("name", flat=True)]

    def queryset(self, request, queryset):
        return queryset.filter(tags__name=self.value()) if self.value() else queryset


class RegisteredListFilter(admin.SimpleListFilter):
    title = "registration"
    parameter_name = "registered"

    def lookups(self, request, model_admin):
        return [("yes", "registered"), ("no", "unregistered")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(unregistered_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(unregistered_at__isnull=False)
        return queryset


class OfferInline(admin.TabularInline):
    model = AgentCapability
    extra = 0
    can_delete = False
    fields = ["capability", "cost"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(PermissionCheckedActions, admin.ModelAdmin):
    list_display = [
        "agent_id",
        "name",
        "state_badge",
        "heartbeat",
        "health_score",
        "cpu_load",
        "load",
        "capability_list",
        "tag_list",
        "registered_at",
    ]
    list_display_links = ["agent_id", "name"]
    list_filter = ["state", RegisteredListFilter, CapabilityListFilter, TagListFilter]
    search_fields = ["agent_id", "name"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["drain", "resume", "shutdown", "mark_offline", "unregister"]
    inlines = [OfferInline]
    readonly_fields = [
        "agent_id",
        "name",
        "description",
        "state_badge",
        "heartbeat",
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
        "state_changed_at",
        "unregistered_at",
        "tag_list",
        "pretty_metadata",
        "recent_events",
    ]
    fieldsets = [
        (None, {"fields": ["agent_id", "name", "description", "state_badge", "tag_list"]}),
        (
            "Liveness and load",
            {
                "fields": [
                    "heartbeat",
                    "last_heartbeat_at",
                    "state_changed_at",
                    "health_score",
                    "cpu_load",
                    "in_flight",
                    "max_concurrency",
                ]
            },
        ),
        ("Counters", {"fields": ["calls_completed", "calls_failed", "avg_response_time_ms"]}),
        ("Process", {"fields": ["host", "pid", "version", "registered_at", "unregistered_at", "pretty_metadata"]}),
        ("History", {"fields": ["recent_events"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return selectors.with_details(super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # agents register themselves (POST /api/agents/)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # agents are unregistered (history kept), not deleted; the purge sweep deletes old ones

    @admin.display(description="state", ordering="state")
    def state_badge(self, agent: Agent) -> str:
        if agent.unregistered_at:
            return badge("unregistered", "#424242")
        return badge(agent.state, STATE_COLOURS.get(agent.state, "#757575"))

    @admin.display(description="last heartbeat", ordering="last_heartbeat_at")
    def heartbeat(self, agent: Agent) -> str:
        return ago((timezone.now() - agent.last_heartbeat_at).total_seconds())

    @admin.display(description="in flight")
    def load(self, agent: Agent) -> str:
        return f"{agent.in_flight}/{agent.max_concurrency}"

    @admin.display(description="capabilities")
    def capability_list(self, agent: Agent) -> str:
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            (
                (reverse("admin:agents_capability_change", args=[o.capability.pk]), o.capability.name)
                for o in selectors.offers_of(agent)
            ),
        )

    @admin.display(description="tags")
    def tag_list(self, agent: Agent) -> str:
        return ", ".join(selectors.tags_of(agent))

    @admin.display(description="metadata")
    def pretty_metadata(self, agent: Agent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(agent.metadata, indent=2, sort_keys=True))

    @admin.display(description="recent events")
    def recent_events(self, agent: Agent) -> str:
        events = agent.events.all()[:20]
        url = reverse("admin:agents_agentevent_changelist") + f"?q={agent.agent_id}"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td></tr>",
            (
                (e.at.strftime("%Y-%m-%d %H:%M:%S"), e.get_kind_display(), e.from_state or "–", e.to_state or "–")
                for e in events
            ),
        )
        return format_html('<table>{}</table><a href="{}">all events</a>', rows, url)

    def _run(self, request: HttpRequest, queryset: QuerySet[Agent], service, verb: str) -> None:
        run_each(self, request, queryset.values_list("agent_id", flat=True), service, f"{verb} {{}} agent(s).")

    @admin.action(
        description="Drain selected agents (finish calls in flight, take no new ones)", permissions=["operate"]
    )
    def drain(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._run(request, queryset, lambda a: fleet.drain(agent_id=a), "Draining")

    @admin.action(description="Resume selected draining agents", permissions=["operate"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._run(request, queryset, lambda a: fleet.resume(agent_id=a), "Resumed")

    @admin.action(
        description="Shut down selected agents' workers (warm: calls in flight finish)", permissions=["operate"]
    )
    def shutdown(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._run(request, queryset, lambda a: fleet.shutdown(agent_id=a), "Shutting down")

    @admin.action(description="Mark selected agents offline", permissions=["operate"])
    def mark_offline(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._run(
            request,
            queryset,
            lambda a: services.change_state(agent_id=a, state=AgentState.OFFLINE, reason=f"admin {request.user}"),
            "Marked offline",
        )

    @admin.action(description="Unregister selected agents", permissions=["operate"])
    def unregister(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._run(
            request,
            queryset,
            lambda a: services.unregister_agent(agent_id=a, reason=f"admin {request.user}"),
            "Unregistered",
        )


class CapabilityForm(forms.ModelForm):
    class Meta:
        model = Capability
        fields = ["name", "description", "input_schema", "output_schema"]

    def clean(self):
        cleaned = super().clean()
        for which in ("input_schema", "output_schema"):
            if which in cleaned:
                problem = schema_error(cleaned[which])
                if problem:
                    self.add_error(which, problem)
        return cleaned


@admin.register(Capability)
class CapabilityAdmin(admin.ModelAdmin):
    form = CapabilityForm
    list_display = ["name", "description", "live_agents", "lowest_cost", "updated_at"]
    search_fields = ["name", "description"]
    readonly_fields = [
        "fleet",
        "pretty_input_schema",
        "pretty_output_schema",
        "live_agents",
        "lowest_cost",
        "created_at",
        "updated_at",
    ]

    def get_queryset(self, request):
        return selectors.capabilities_with_stats(super().get_queryset(request))

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "name"] if obj else self.readonly_fields

    @admin.display(description="live agents", ordering="live_agents")
    def live_agents(self, capability: Capability) -> int:
        return capability.live_agents

    @admin.display(description="lowest cost", ordering="lowest_cost")
    def lowest_cost(self, capability: Capability):
        return capability.lowest_cost

    @admin.display(description="fleet (last hour)")
    def fleet(self, capability: Capability) -> str:
        if not capability.pk:
            return "–"
        stats = selectors.capability_fleet_stats(capability)
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td></tr>",
            ((k.replace("_", " "), "–" if v is None else v) for k, v in stats.items()),
        )
        url = reverse("admin:agents_invocation_changelist") + f"?capability__id__exact={capability.pk}"
        return format_html('<table>{}</table><a href="{}">invocations</a>', rows, url)

    @admin.display(description="input schema (current)")
    def pretty_input_schema(self, capability: Capability) -> str:
        return format_html("<pre>{}</pre>", json.dumps(capability.input_schema, indent=2, sort_keys=True))

    @admin.display(description="output schema (current)")
    def pretty_output_schema(self, capability: Capability) -> str:
        return format_html("<pre>{}</pre>", json.dumps(capability.output_schema, indent=2, sort_keys=True))

    def save_model(self, request, obj, form, change):
        data = {k: form.cleaned_data[k] for k in ("description", "input_schema", "output_schema")}
        if change:
            services.update_capability(name=obj.name, **data)
        else:
            obj.pk = services.create_capability(name=obj.name, **data).pk

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletion goes through the service, one capability at a time
        return actions

    def has_delete_permission(self, request, obj=None):
        # Like DELETE /api/capabilities/{name}/: not while a registered agent offers it.
        if obj is not None and obj.offers.filter(agent__unregistered_at__isnull=True).exists():
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj):
        services.delete_capability(name=obj.name)


@admin.register(AgentEvent)
class AgentEventAdmin(admin.ModelAdmin):
    list_display = ["at", "agent_link", "kind", "transition", "details_short"]
    list_filter = ["kind"]
    search_fields = ["agent__agent_id"]
    list_select_related = ["agent"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="agent", ordering="agent__agent_id")
    def agent_link(self, event: AgentEvent) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:agents_agent_change", args=[event.agent_id]), event.agent.agent_id
        )

    @admin.display(description="state")
    def transition(self, event: AgentEvent) -> str:
        return f"{event.from_state or '–'} → {event.to_state or '–'}"

    @admin.display(description="details")
    def details_short(self, event: AgentEvent) -> str:
        text = json.dumps(event.details, sort_keys=True)
        return text if len(text) <= 120 else text[:117] + "..."


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


INVOCATION_COLOURS = {
    InvocationStatus.QUEUED: "#6d4c41",
    InvocationStatus.RUNNING: "#1565c0",
    InvocationStatus.SUCCEEDED: "#2e7d32",
    InvocationStatus.FAILED: "#c62828",
    InvocationStatus.TIMED_OUT: "#ef6c00",
    InvocationStatus.CANCELLED: "#757575",
}


class AttemptInline(admin.TabularInline):
    model = InvocationAttempt
    extra = 0
    can_delete = False
    fields = ["number", "agent", "outcome", "started_at", "finished_at", "duration_ms", "error_type", "error_message"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Invocation)
class InvocationAdmin(PermissionCheckedActions, admin.ModelAdmin):
    list_display = [
        "short_id",
        "capability_link",
        "status_badge",
        "priority",
        "agent_link",
        "attempt",
        "progress_pct",
        "requested_by",
        "created_at",
        "duration",
    ]
    list_filter = ["status", "capability", "priority"]
    search_fields = ["id", "requested_by", "idempotency_key", "agent__agent_id"]
    list_select_related = ["capability", "agent"]
    list_per_page = 50
    show_full_result_count = False
    date_hierarchy = "created_at"
    actions = ["retry_selected", "cancel_selected"]
    inlines = [AttemptInline]
    fields = [
        "id",
        "capability",
        "status_badge",
        "waiting",
        "priority",
        "timeout",
        "max_retries",
        "attempt",
        "failed_attempts",
        "agent",
        "pinned_agent",
        "requested_by",
        "idempotency_key",
        "pretty_input",
        "pretty_output",
        "error_type",
        "error_message",
        "error_traceback",
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
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # invoke through the API (POST /api/invocations/)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="id")
    def short_id(self, invocation: Invocation) -> str:
        return str(invocation.pk)[:8]

    @admin.display(description="capability", ordering="capability__name")
    def capability_link(self, invocation: Invocation) -> str:
        url = reverse("admin:agents_capability_change", args=[invocation.capability_id])
        return format_html('<a href="{}">{}</a>', url, invocation.capability.name)

    @admin.display(description="agent", ordering="agent__agent_id")
    def agent_link(self, invocation: Invocation) -> str:
        if not invocation.agent_id:
            return "–"
        url = reverse("admin:agents_agent_change", args=[invocation.agent_id])
        return format_html('<a href="{}">{}</a>', url, invocation.agent.agent_id)

    @admin.display(description="status", ordering="status")
    def status_badge(self, invocation: Invocation) -> str:
        return badge(invocation.get_status_display(), INVOCATION_COLOURS.get(invocation.status, "#757575"))

    @admin.display(description="progress")
    def progress_pct(self, invocation: Invocation) -> str:
        return "–" if invocation.progress is None else f"{invocation.progress:.0%}"

    @admin.display(description="duration")
    def duration(self, invocation: Invocation) -> str:
        if invocation.started_at and invocation.finished_at:
            return f"{(invocation.finished_at - invocation.started_at).total_seconds() * 1000:.0f} ms"
        return "–"

    @admin.display(description="why it waits")
    def waiting(self, invocation: Invocation) -> str:
        return services.waiting_reason(invocation) or "–"

    @admin.display(description="input")
    def pretty_input(self, invocation: Invocation) -> str:
        return format_html("<pre>{}</pre>", json.dumps(invocation.input, indent=2, sort_keys=True))

    @admin.display(description="output")
    def pretty_output(self, invocation: Invocation) -> str:
        return format_html("<pre>{}</pre>", json.dumps(invocation.output, indent=2, sort_keys=True))

    def _each(self, request: HttpRequest, queryset: QuerySet[Invocation], service, verb: str) -> None:
        run_each(self, request, queryset.values_list("pk", flat=True), service, f"{verb} {{}} invocation(s).")

    @admin.action(description="Retry selected (failed, timed out or cancelled) invocations", permissions=["operate"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Invocation]) -> None:
        self._each(request, queryset, services.retry, "Re-queued")

    @admin.action(description="Cancel selected invocations", permissions=["operate"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Invocation]) -> None:
        self._each(request, queryset, services.cancel, "Cancelled")
