"""Operator pages of the message bus: messages with their deliveries, deliveries (dead ones redelivered),
subscriptions, routing rules, endpoints, the bus metrics, and the inbox depth on the agents' pages.

Messages and deliveries change only through the services, so their pages are read-only; the redeliver
action needs *Can change delivery* (``masplatform.admin.PermissionCheckedActions``). Subscriptions are
saved through ``services.subscribe``/``refresh_derived`` so that what the database matches on when a
message is sent (regexes, type mask, filter rows) follows every edit.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from agents import admin as agents_admin
from agents.admin import badge
from agents.models import Agent
from masplatform.admin import PermissionCheckedActions
from masplatform.exceptions import InvalidInput, ServiceError
from messaging import routing, selectors, services
from messaging.models import (
    Delivery,
    DeliveryStatus,
    Endpoint,
    Message,
    MessageType,
    RoutingRule,
    RuleAction,
    Subscription,
)

DELIVERY_COLOURS = {
    DeliveryStatus.PENDING: "#6d4c41",
    DeliveryStatus.DELIVERED: "#1565c0",
    DeliveryStatus.ACKED: "#2e7d32",
    DeliveryStatus.EXPIRED: "#757575",
    DeliveryStatus.FAILED: "#ef6c00",
    DeliveryStatus.DEAD: "#c62828",
}
REQUEST_COLOURS = {
    "pending": "#1565c0",
    "answered": "#2e7d32",
    "failed": "#c62828",
    "timed_out": "#ef6c00",
    "no_responders": "#757575",
}
OPEN = ",".join(selectors.OPEN)
REDELIVERABLE = (DeliveryStatus.DEAD, DeliveryStatus.FAILED, DeliveryStatus.EXPIRED)


def delivery_badge(status: str) -> str:
    return badge(status, DELIVERY_COLOURS.get(status, "#757575"))


def deliveries_url(**params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return reverse("admin:messaging_delivery_changelist") + (f"?{query}" if query else "")


def agent_link(agent: Agent | None) -> str:
    if agent is None:
        return "–"
    return format_html('<a href="{}">{}</a>', reverse("admin:agents_agent_change", args=[agent.pk]), agent.agent_id)


def pretty_json(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def search_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


class PageChangeList(ChangeList):
    """A changelist that lets its ModelAdmin read, in one query, what the rows of the page need
    (``annotate_page``), instead of one query per row."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.model_admin.annotate_page(list(self.result_list))


class PageAnnotated:
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return PageChangeList

    def annotate_page(self, rows: list[Any]) -> None:  # pragma: no cover - overridden
        pass


# --- messages --------------------------------------------------------------------------------------------


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = [
        "agent_link",
        "status_badge",
        "attempts",
        "chosen_by",
        "created_at",
        "delivered_at",
        "visible_at",
        "acked_at",
        "last_error",
    ]
    readonly_fields = fields
    ordering = ["agent__agent_id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("agent")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="agent")
    def agent_link(self, delivery: Delivery) -> str:
        return agent_link(delivery.agent)

    @admin.display(description="status")
    def status_badge(self, delivery: Delivery) -> str:
        return delivery_badge(delivery.status)

    @admin.display(description="via")
    def chosen_by(self, delivery: Delivery) -> str:
        return chosen_by(delivery)


def chosen_by(delivery: Delivery) -> str:
    """``via``, with a link to the subscription or rule that chose the recipient (if it still exists)."""
    if delivery.subscription_id:
        url = reverse("admin:messaging_subscription_change", args=[delivery.subscription_id])
        return format_html('{} <a href="{}">#{}</a>', delivery.via, url, delivery.subscription_id)
    if delivery.rule_id:
        url = reverse("admin:messaging_routingrule_change", args=[delivery.rule_id])
        return format_html('{} <a href="{}">#{}</a>', delivery.via, url, delivery.rule_id)
    return delivery.via


@admin.register(Message)
class MessageAdmin(PageAnnotated, admin.ModelAdmin):
    list_display = [
        "short_id",
        "type",
        "sender",
        "target",
        "topic",
        "priority",
        "created_at",
        "expires_at",
        "recipient_count",
        "request_badge",
        "delivery_summary",
    ]
    list_filter = ["type", "addressing", "request_status", "created_at"]
    search_fields = ["sender", "topic"]
    list_select_related = ["to_agent"]
    list_per_page = 50
    show_full_result_count = False
    inlines = [DeliveryInline]
    fields = [
        "id",
        "type",
        "sender",
        "sender_agent",
        "addressing",
        "target",
        "topic",
        "content_type",
        "pretty_content",
        "priority",
        "correlation_link",
        "reply_to",
        "created_at",
        "expires_at",
        "recipient_count",
        "dropped_by",
        "request_badge",
        "timeout",
        "answered_at",
        "delivery_summary",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages are sent (POST /api/messages/, the SDK), not written

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        # a message's deliveries go with it, though they have no delete permission of their own
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(Delivery._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Message], search_term: str
    ) -> tuple[QuerySet[Message], bool]:
        # an id or correlation id is searched exactly (a UUID), the rest as text
        wanted = search_uuid(search_term)
        if wanted is not None:
            return queryset.filter(Q(pk=wanted) | Q(correlation_id=wanted)), False
        return super().get_search_results(request, queryset, search_term)

    def annotate_page(self, rows: list[Message]) -> None:
        counts: dict[Any, dict[str, int]] = {row.pk: {} for row in rows}
        grouped = (
            Delivery.objects.filter(message_id__in=list(counts))
            .values_list("message_id", "status")
            .annotate(n=Count("pk"))
            .values_list("message_id", "status", "n")
        )
        for message_id, status, n in grouped:
            counts[message_id][status] = n
        for row in rows:
            row.status_counts = counts[row.pk]

    @admin.display(description="id")
    def short_id(self, message: Message) -> str:
        return str(message.pk)[:8]

    @admin.display(description="to", ordering="addressing")
    def target(self, message: Message) -> str:
        if message.addressing == "direct":
            return format_html("direct → {}", message.to_agent.agent_id if message.to_agent else "?")
        if message.addressing == "topic":
            return format_html("topic {}", message.topic)
        return "broadcast"

    @admin.display(description="request", ordering="request_status")
    def request_badge(self, message: Message) -> str:
        if not message.request_status:
            return "–"
        return badge(message.get_request_status_display(), REQUEST_COLOURS.get(message.request_status, "#757575"))

    @admin.display(description="deliveries")
    def delivery_summary(self, message: Message) -> str:
        counts = getattr(message, "status_counts", None)
        if counts is None:  # the change page: one message
            counts = dict(message.deliveries.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
        if not counts:
            return "dropped" if message.dropped_by_id else "–"
        return format_html_join(
            " ",
            '<a href="{}" title="{}">{}</a>',
            (
                (
                    deliveries_url(message=str(message.pk), status=status),
                    f"{n} {status}",
                    badge(f"{n} {status}", DELIVERY_COLOURS[status]),
                )
                for status in DeliveryStatus.values
                if (n := counts.get(status))
            ),
        )

    @admin.display(description="content")
    def pretty_content(self, message: Message) -> str:
        return pretty_json(message.content)

    @admin.display(description="correlation id")
    def correlation_link(self, message: Message) -> str:
        if not message.correlation_id:
            return "–"
        url = reverse("admin:messaging_message_changelist") + f"?q={message.correlation_id}"
        return format_html('<a href="{}">{}</a>', url, message.correlation_id)

    def get_urls(self) -> list:
        return [
            path("metrics/", self.admin_site.admin_view(self.metrics_view), name="messaging_metrics"),
            *super().get_urls(),
        ]

    def metrics_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied("You need the permission 'Can view message' to see the bus metrics.")
        stats = selectors.stats()
        depths = stats["inbox_depth"]
        agents = dict(Agent.objects.filter(agent_id__in=list(depths)).values_list("agent_id", "pk"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Bus metrics",
            "stats": stats,
            "by_type": [(t, stats["messages_by_type"].get(t, 0)) for t in MessageType.values],
            "by_status": [
                (s, delivery_badge(s), n, deliveries_url(status=s)) for s, n in stats["deliveries_by_status"].items()
            ],
            "depths": [
                (
                    agent_id,
                    reverse("admin:agents_agent_change", args=[agents[agent_id]]) if agent_id in agents else "",
                    n,
                    deliveries_url(agent=agent_id, status=OPEN),
                )
                for agent_id, n in depths.items()
            ],
        }
        return TemplateResponse(request, "admin/messaging/metrics.html", context)


# --- deliveries ------------------------------------------------------------------------------------------


class DeliveryStatusFilter(admin.SimpleListFilter):
    """Each status, "open" (not yet final) and "dead" first: the deliveries an operator acts on."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            (DeliveryStatus.DEAD, "dead"),
            (OPEN, "open (pending, failed, delivered)"),
            *((s, label) for s, label in DeliveryStatus.choices if s != DeliveryStatus.DEAD),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> QuerySet[Delivery]:
        if self.value():
            return queryset.filter(status__in=self.value().split(","))
        return queryset


class DeliveryAgentFilter(admin.SimpleListFilter):
    """By agent id; offers the agents with open or dead deliveries (all agents would be a long list)."""

    title = "agent"
    parameter_name = "agent"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        ids = list(
            Agent.objects.filter(deliveries__status__in=[*selectors.OPEN, DeliveryStatus.DEAD])
            .values_list("agent_id", flat=True)
            .distinct()
            .order_by("agent_id")[:50]
        )
        if self.value() and self.value() not in ids:
            ids.insert(0, self.value())
        return [(a, a) for a in ids]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> QuerySet[Delivery]:
        return queryset.filter(agent__agent_id=self.value()) if self.value() else queryset


@admin.register(Delivery)
class DeliveryAdmin(PermissionCheckedActions, admin.ModelAdmin):
    list_display = [
        "id",
        "message_link",
        "message_type",
        "agent_col",
        "status_badge",
        "attempts",
        "chosen_by",
        "priority",
        "created_at",
        "delivered_at",
        "acked_at",
        "error_short",
    ]
    list_filter = [DeliveryStatusFilter, DeliveryAgentFilter]
    search_fields = ["agent__agent_id"]
    list_select_related = ["agent", "message"]
    ordering = ["-id"]  # newest first, by the primary key's index (the model's order is an inbox's)
    list_per_page = 100
    show_full_result_count = False
    actions = ["redeliver_selected"]
    fields = [
        "id",
        "message_link",
        "message_type",
        "agent_col",
        "status_badge",
        "attempts",
        "chosen_by",
        "priority",
        "created_at",
        "available_at",
        "dispatched_at",
        "delivered_at",
        "visible_at",
        "acked_at",
        "expires_at",
        "last_error",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a delivery goes with its message (delete the message, or let the purge do it)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Delivery], search_term: str
    ) -> tuple[QuerySet[Delivery], bool]:
        wanted = search_uuid(search_term)
        if wanted is not None:
            return queryset.filter(message_id=wanted), False
        if search_term.strip().isdigit():
            return queryset.filter(pk=int(search_term)), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="message", ordering="message__created_at")
    def message_link(self, delivery: Delivery) -> str:
        url = reverse("admin:messaging_message_change", args=[delivery.message_id])
        return format_html('<a href="{}">{}</a>', url, str(delivery.message_id)[:8])

    @admin.display(description="type")
    def message_type(self, delivery: Delivery) -> str:
        return delivery.message.type

    @admin.display(description="agent", ordering="agent__agent_id")
    def agent_col(self, delivery: Delivery) -> str:
        return agent_link(delivery.agent)

    @admin.display(description="status", ordering="status")
    def status_badge(self, delivery: Delivery) -> str:
        return delivery_badge(delivery.status)

    @admin.display(description="via", ordering="via")
    def chosen_by(self, delivery: Delivery) -> str:
        return chosen_by(delivery)

    @admin.display(description="last error")
    def error_short(self, delivery: Delivery) -> str:
        text = delivery.last_error
        return text if len(text) <= 80 else text[:77] + "..."

    def render_change_form(
        self, request: HttpRequest, context: dict, add: bool = False, change: bool = False, form_url: str = "", obj=None
    ) -> HttpResponse:
        context["can_redeliver"] = (
            obj is not None and obj.status in REDELIVERABLE and self.has_operate_permission(request)
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list:
        return [
            path(
                "<path:object_id>/redeliver/",
                self.admin_site.admin_view(self.redeliver_view),
                name="messaging_delivery_redeliver",
            ),
            *super().get_urls(),
        ]

    def redeliver_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_operate_permission(request):
            raise PermissionDenied("You need the permission 'Can change delivery' to redeliver a delivery.")
        delivery = get_object_or_404(Delivery, pk=object_id)
        self._redeliver(request, [(delivery.pk, delivery.agent.agent_id)])
        return HttpResponseRedirect(reverse("admin:messaging_delivery_change", args=[delivery.pk]))

    @admin.action(description="Redeliver selected (dead, failed or expired) deliveries", permissions=["operate"])
    def redeliver_selected(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._redeliver(request, queryset.order_by("pk").values_list("pk", "agent__agent_id"))

    def _redeliver(self, request: HttpRequest, rows: Any) -> None:
        shown = 0
        for pk, agent_id in rows:
            try:
                services.redeliver(pk)
                level, text = messages.SUCCESS, f"Delivery {pk} to {agent_id}: redelivered."
            except ServiceError as exc:
                level, text = messages.WARNING, f"Delivery {pk} to {agent_id}: not redelivered: {exc.detail}"
            shown += 1
            if shown <= 20:  # one line each, but not a page of them
                self.message_user(request, text, level)
        if shown > 20:
            self.message_user(request, f"... and {shown - 20} more (see their statuses).", messages.INFO)


# --- subscriptions -----------------------------------------------------------------------------------------


class GlobsField(forms.CharField):
    """A list of strings, written one per line (or separated by commas)."""

    widget = forms.Textarea(attrs={"rows": 2, "cols": 40})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(value)
        if isinstance(value, str) and value.startswith("["):  # the model's JSON, as re-displayed
            try:
                return "\n".join(json.loads(value))
            except (ValueError, TypeError):
                return value
        return value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value) or ""
        return [part.strip() for line in text.splitlines() for part in line.split(",") if part.strip()]


def types_field(help_text: str) -> forms.MultipleChoiceField:
    return forms.MultipleChoiceField(
        choices=MessageType.choices, required=False, widget=forms.CheckboxSelectMultiple, help_text=help_text
    )


def check_filters(form: forms.ModelForm, field: str) -> None:
    filters = form.cleaned_data.get(field)
    if filters is None and field in form.cleaned_data:
        form.cleaned_data[field] = filters = {}
    if field in form.cleaned_data:
        problem = routing.content_filters_problem(filters)
        if problem:
            form.add_error(field, problem)


# the services' field names -> the form's
SUBSCRIPTION_FIELDS = {
    "pattern": "pattern",
    "types": "message_types",
    "senders": "sender_patterns",
    "where": "content_filters",
}


class SubscriptionForm(forms.ModelForm):
    message_types = types_field("none ticked: every type")
    sender_patterns = GlobsField(
        required=False, help_text="globs, one per line, e.g. weather_* or user:*; empty: any sender"
    )

    class Meta:
        model = Subscription
        fields = ["agent", "pattern", "message_types", "sender_patterns", "content_filters"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("content_filters") is None and "content_filters" in cleaned:
            cleaned["content_filters"] = {}
        agent = cleaned.get("agent")
        if agent is not None and agent.unregistered_at is not None:
            self.add_error("agent", f"'{agent.agent_id}' is unregistered; it cannot subscribe.")
        if "pattern" not in cleaned or "content_filters" not in cleaned:
            return cleaned  # already refused on that field
        try:
            pattern, types, senders, where = services.check_subscription(
                cleaned["pattern"],
                cleaned.get("message_types"),
                cleaned.get("sender_patterns"),
                cleaned["content_filters"],
            )
        except InvalidInput as exc:
            for key, problems in exc.detail.items():
                for problem in problems:
                    self.add_error(SUBSCRIPTION_FIELDS.get(key), problem)
            return cleaned
        cleaned.update(pattern=pattern, message_types=types, sender_patterns=senders, content_filters=where)
        return cleaned


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    form = SubscriptionForm
    list_display = ["id", "agent_col", "pattern", "types", "senders", "filters", "declared", "created_at"]
    list_display_links = ["id", "pattern"]
    list_filter = ["declared"]
    search_fields = ["agent__agent_id", "pattern"]
    list_select_related = ["agent"]
    autocomplete_fields = ["agent"]
    readonly_fields = ["declared", "topic_regex", "sender_regex", "type_mask", "created_at"]
    show_full_result_count = False

    @admin.display(description="agent", ordering="agent__agent_id")
    def agent_col(self, sub: Subscription) -> str:
        return agent_link(sub.agent)

    @admin.display(description="types")
    def types(self, sub: Subscription) -> str:
        return ", ".join(sub.message_types) or "any"

    @admin.display(description="senders")
    def senders(self, sub: Subscription) -> str:
        return ", ".join(sub.sender_patterns) or "any"

    @admin.display(description="content filters")
    def filters(self, sub: Subscription) -> str:
        return json.dumps(sub.content_filters, sort_keys=True) if sub.content_filters else "–"

    def save_model(self, request: HttpRequest, obj: Subscription, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        if change:
            services.refresh_derived(obj)  # the edited fields, and what the database matches on
            return
        created, _ = services.subscribe(
            data["agent"],
            data["pattern"],
            types=data["message_types"],
            senders=data["sender_patterns"],
            where=data["content_filters"],
        )
        obj.pk = created.pk
        obj.created_at = created.created_at


# --- routing rules -----------------------------------------------------------------------------------------


class RoutingRuleForm(forms.ModelForm):
    message_types = types_field("none ticked: every type")

    class Meta:
        model = RoutingRule
        fields = [
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
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        check_filters(self, "content_filters")
        if cleaned.get("topic_pattern"):
            problem = routing.pattern_problem(cleaned["topic_pattern"])
            if problem:
                self.add_error("topic_pattern", problem)
        if cleaned.get("sender_pattern"):
            problem = routing.sender_glob_problem(cleaned["sender_pattern"])
            if problem:
                self.add_error("sender_pattern", problem)
        action = cleaned.get("action")
        agent, topic = cleaned.get("target_agent"), cleaned.get("target_topic", "")
        if action == RuleAction.ADD_AGENT:
            if agent is None:
                self.add_error("target_agent", "The agent that 'add an agent' adds.")
            elif agent.unregistered_at is not None:
                self.add_error("target_agent", f"'{agent.agent_id}' is unregistered; it would receive nothing.")
        elif agent is not None:
            self.add_error("target_agent", "Only an 'add an agent' rule has a target agent.")
        if action == RuleAction.ADD_TOPIC:
            problem = routing.topic_problem(topic)
            if problem:
                self.add_error("target_topic", problem)
        elif topic:
            self.add_error("target_topic", "Only an 'add the subscribers of a topic' rule has a target topic.")
        return cleaned


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    form = RoutingRuleForm
    list_display = ["name", "position", "enabled", "conditions", "action", "target", "stop", "updated_at"]
    list_display_links = ["name"]
    list_editable = ["position", "enabled"]
    list_filter = ["enabled", "action"]
    search_fields = ["name", "topic_pattern", "sender_pattern", "target_topic", "target_agent__agent_id"]
    list_select_related = ["target_agent"]
    autocomplete_fields = ["target_agent"]
    ordering = ["position", "id"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description="matches")
    def conditions(self, rule: RoutingRule) -> str:
        parts = []
        if rule.message_types:
            parts.append("type " + "|".join(rule.message_types))
        if rule.topic_pattern:
            parts.append(f"topic {rule.topic_pattern}")
        if rule.sender_pattern:
            parts.append(f"sender {rule.sender_pattern}")
        if rule.content_filters:
            parts.append(json.dumps(rule.content_filters, sort_keys=True))
        return ", ".join(parts) or "every message"

    @admin.display(description="target")
    def target(self, rule: RoutingRule) -> str:
        if rule.action == RuleAction.ADD_AGENT:
            return agent_link(rule.target_agent)
        return rule.target_topic or "–"


# --- endpoints ---------------------------------------------------------------------------------------------


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["agent_col", "transport", "handles_list", "updated_at"]
    list_filter = ["transport"]
    search_fields = ["agent__agent_id"]
    list_select_related = ["agent"]
    fields = ["agent", "transport", "handles", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # declared by the agent's worker at start

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="agent", ordering="agent__agent_id")
    def agent_col(self, endpoint: Endpoint) -> str:
        return agent_link(endpoint.agent)

    @admin.display(description="handles")
    def handles_list(self, endpoint: Endpoint) -> str:
        return ", ".join(endpoint.handles) or "anything"


# --- the agents' pages, with their inboxes (the agents app does not know the bus) --------------------------

admin.site.unregister(Agent)


@admin.register(Agent)
class AgentAdmin(PageAnnotated, agents_admin.AgentAdmin):
    list_display = [*agents_admin.AgentAdmin.list_display, "inbox_depth"]
    readonly_fields = [*agents_admin.AgentAdmin.readonly_fields, "inbox"]
    fieldsets = [*agents_admin.AgentAdmin.fieldsets, ("Messaging", {"fields": ["inbox"]})]

    def annotate_page(self, rows: list[Agent]) -> None:
        depths = selectors.inbox_depths([row.pk for row in rows])
        for row in rows:
            row.inbox_depth_count = depths.get(row.pk, 0)

    @admin.display(description="inbox depth")
    def inbox_depth(self, agent: Agent) -> str:
        depth = getattr(agent, "inbox_depth_count", None)
        if depth is None:
            depth = selectors.inbox_depth(agent)
        if not depth:
            return "0"
        return format_html('<a href="{}">{}</a>', deliveries_url(agent=agent.agent_id, status=OPEN), depth)

    @admin.display(description="inbox")
    def inbox(self, agent: Agent) -> str:
        counts = selectors.delivery_counts(agent)
        depth = sum(counts.get(s, 0) for s in selectors.OPEN)
        endpoint = Endpoint.objects.filter(agent=agent).first()
        subscriptions = list(Subscription.objects.filter(agent=agent).values_list("pk", "pattern"))
        rows = [
            (
                "inbox depth",
                format_html('<a href="{}">{}</a>', deliveries_url(agent=agent.agent_id, status=OPEN), depth),
            ),
            (
                "deliveries",
                format_html_join(
                    " ",
                    '<a href="{}">{}</a>',
                    (
                        (deliveries_url(agent=agent.agent_id, status=s), badge(f"{n} {s}", DELIVERY_COLOURS[s]))
                        for s in DeliveryStatus.values
                        if (n := counts.get(s))
                    ),
                )
                or "–",
            ),
            ("messages sent", selectors.sent_count(agent)),
            ("transport", endpoint.get_transport_display() if endpoint else "HTTP inbox (no worker declared)"),
            ("handles", ", ".join(endpoint.handles) if endpoint and endpoint.handles else "anything"),
            (
                "subscriptions",
                format_html_join(
                    ", ",
                    '<a href="{}">{}</a>',
                    ((reverse("admin:messaging_subscription_change", args=[pk]), p) for pk, p in subscriptions),
                )
                or "–",
            ),
        ]
        table = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html(
            '<table>{}</table><a href="{}">all deliveries</a> · <a href="{}">dead ones</a>',
            table,
            deliveries_url(agent=agent.agent_id),
            deliveries_url(agent=agent.agent_id, status=DeliveryStatus.DEAD),
        )
