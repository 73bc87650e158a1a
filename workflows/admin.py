"""Operator pages of workflows: definitions with a picture of their DAG, executions with the same
picture coloured by task status, live progress, a timeline and a task table.

Every change goes through ``workflows.services`` (the API's code path): the
definition form re-checks the whole definition before ``update_workflow``,
and execute/cancel/pause/resume report refusals as admin messages. Tasks of a
definition are edited through the API (``PUT /api/workflows/{id}/``); the
admin shows them read-only.

Permissions: editing and executing a definition (its Execute button and action)
need "Can change workflow"; cancelling, pausing and resuming an execution (its
buttons and actions) need "Can change execution", although executions have no
edit form. Without them the buttons and actions are not shown, and a hand-made
POST of one is answered 403 and changes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from agents.admin import run_each
from agents.models import InvocationStatus
from masplatform.admin import PermissionCheckedActions
from masplatform.exceptions import InvalidInput, ServiceError
from workflows import diagram, services
from workflows.models import (
    EXECUTION_ACTIVE,
    Execution,
    ExecutionStatus,
    TaskCall,
    TaskRun,
    TaskStatus,
    Workflow,
    WorkflowTask,
)

TIMELINE_LIMIT = 300  # rows of the timeline; the rest is counted, not drawn
TASK_TABLE_LIMIT = 1000  # rows of the task tables
# waiting_reason() runs a few queries for a running task whose call still waits in the queue, or a
# ready scatter task (live agents): ask it for at most this many per page view
COSTLY_REASONS_LIMIT = 10


def status_badge(status: str, label: str | None = None) -> SafeString:
    return format_html('<span class="wf-badge st-{}">{}</span>', status, label or status)


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def progress_bar(execution: Execution, *, wide: bool = False) -> SafeString:
    """Finished tasks as coloured segments (pure HTML/CSS), then "done/total (percent)"."""
    p = services.progress(execution)
    total = p["total"] or 1
    segments = format_html_join(
        "",
        '<span class="st-{}" style="width:{}%" title="{}: {}"></span>',
        (
            (status, f"{100.0 * p[status] / total:.2f}", status, p[status])
            for status in ("succeeded", "failed", "skipped", "cancelled", "running")
            if p[status]
        ),
    )
    done = p["total"] - p["pending"] - p["running"]
    return format_html(
        '<span class="wf-progress{}" role="progressbar" aria-valuenow="{}" aria-valuemin="0" '
        'aria-valuemax="100">{}</span><span class="wf-progress-text">{}/{} ({}%)</span>',
        " wide" if wide else "",
        p["percent"],
        segments,
        done,
        p["total"],
        p["percent"],
    )


def pretty_json(value: Any) -> SafeString:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


def _short_json(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _words(detail: Any) -> str:
    """A service's error detail (text, or problems by field and task) as one line."""
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_words(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return "; ".join(_words(v) for v in detail)
    return str(detail)


def _post_only(request: HttpRequest) -> HttpResponse | None:
    return None if request.method == "POST" else HttpResponseNotAllowed(["POST"])


# -- definitions ------------------------------------------------------------------------------------


class WorkflowForm(forms.ModelForm):
    """The definition's own fields; the whole definition (tasks included) is re-checked by the service."""

    class Meta:
        model = Workflow
        fields = ["name", "description", "global_timeout", "max_parallel_tasks", "failure_strategy"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def definition(self) -> dict[str, Any]:
        """The stored definition (tasks as they are now) with this form's fields."""
        data = services.definition_of(self.instance)
        data.update({f: self.cleaned_data[f] for f in self.Meta.fields if f in self.cleaned_data})
        return data

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance.pk and not self.errors:
            try:
                services.check_definition(self.definition())
            except InvalidInput as exc:
                detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": [exc.detail]}
                for key, problems in detail.items():
                    text = _words(problems)
                    if key in self.fields:
                        self.add_error(key, text)
                    else:
                        self.add_error(None, f"{key}: {text}" if key != "non_field_errors" else text)
        return cleaned


@admin.register(Workflow)
class WorkflowAdmin(PermissionCheckedActions, admin.ModelAdmin):
    form = WorkflowForm
    list_display = [
        "name",
        "tasks_count",
        "failure_strategy",
        "max_parallel_tasks",
        "version",
        "executions_link",
        "updated_at",
    ]
    list_filter = ["failure_strategy"]
    search_fields = ["name", "description"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["execute_selected"]
    readonly_fields = ["version", "tasks_count", "executions_link", "created_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        ("Running", {"fields": ["global_timeout", "max_parallel_tasks", "failure_strategy"]}),
        (
            "History",
            {"fields": ["version", "tasks_count", "executions_link", "created_by", "created_at", "updated_at"]},
        ),
    ]

    class Media:
        css = {"all": ["workflows/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workflow]:
        # counts as subqueries: two joined COUNTs would multiply tasks by executions
        def count_of(model) -> Coalesce:
            rows = model.objects.filter(workflow=OuterRef("pk")).order_by().values("workflow")
            return Coalesce(Subquery(rows.annotate(n=Count("pk")).values("n"), output_field=IntegerField()), 0)

        return (
            super()
            .get_queryset(request)
            .annotate(tasks_count=count_of(WorkflowTask), executions_count=count_of(Execution))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # definitions are created through the API (POST /api/workflows/), which checks every task

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletion goes through the service, one definition at a time
        return actions

    def delete_model(self, request: HttpRequest, obj: Workflow) -> None:
        services.delete_workflow(obj.pk)

    @admin.display(description="tasks", ordering="tasks_count")
    def tasks_count(self, workflow: Workflow) -> int:
        return workflow.tasks_count

    @admin.display(description="executions", ordering="executions_count")
    def executions_link(self, workflow: Workflow) -> str:
        url = reverse("admin:workflows_execution_changelist") + f"?workflow__id__exact={workflow.pk}"
        return format_html('<a href="{}">{}</a>', url, workflow.executions_count)

    def save_model(self, request: HttpRequest, obj: Workflow, form: WorkflowForm, change: bool) -> None:
        try:
            services.update_workflow(obj.pk, form.definition())
        except ServiceError as exc:  # changed between the form's check and now (a capability deleted, ...)
            request._workflow_not_saved = True  # type: ignore[attr-defined]
            self.message_user(request, f"Not saved: {_words(exc.detail)}", messages.ERROR)
        else:
            obj.refresh_from_db()

    def response_change(self, request: HttpRequest, obj: Workflow) -> HttpResponse:
        if getattr(request, "_workflow_not_saved", False):
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def render_change_form(
        self, request: HttpRequest, context: dict, add: bool = False, change: bool = False, form_url: str = "", obj=None
    ) -> HttpResponse:
        if obj is not None:
            tasks = list(obj.tasks.select_related("capability").order_by("position"))
            context["wf_svg"] = diagram.render_svg(
                [
                    diagram.DiagramTask(key=t.key, capability=t.capability.name, depends_on=t.depends_on, name=t.name)
                    for t in tasks
                ]
            )
            context["wf_tasks"] = [
                {
                    "task": t,
                    "input": _short_json(t.input),
                    "depends_on": ", ".join(t.depends_on),
                    "scatter": f"{t.required_agents} agents, {t.aggregation}" if t.required_agents else "",
                }
                for t in tasks[:TASK_TABLE_LIMIT]
            ]
            context["wf_tasks_hidden"] = max(0, len(tasks) - TASK_TABLE_LIMIT)
            context["wf_api_url"] = f"/api/workflows/{obj.pk}/"
            context["wf_recent"] = [
                {"execution": e, "badge": status_badge(e.status, e.get_status_display()), "bar": progress_bar(e)}
                for e in obj.executions.order_by("-created_at")[:10]
            ]
            context["wf_can_execute"] = self.has_change_permission(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list:
        return [
            path(
                "<path:object_id>/execute/",
                self.admin_site.admin_view(self.execute_view),
                name="workflows_workflow_execute",
            ),
            *super().get_urls(),
        ]

    def execute_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        refused = _post_only(request)
        if refused:
            return refused
        if not self.has_change_permission(request):
            raise PermissionDenied("You need the permission 'Can change workflow' to execute a workflow.")
        workflow = get_object_or_404(Workflow, pk=object_id)
        back = reverse("admin:workflows_workflow_change", args=[workflow.pk])
        try:
            execution = services.execute(workflow.pk, context={}, requested_by=_requester(request))
        except ServiceError as exc:
            self.message_user(request, f"Not started: {_words(exc.detail)}", messages.WARNING)
            return HttpResponseRedirect(back)
        self.message_user(request, f"Started execution {str(execution.pk)[:8]} of {workflow.name}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:workflows_execution_change", args=[execution.pk]))

    @admin.action(description="Execute selected workflows (empty context)", permissions=["change"])
    def execute_selected(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        started: list[Execution] = []

        def start(pk: int) -> None:
            started.append(services.execute(pk, context={}, requested_by=_requester(request)))

        run_each(self, request, queryset.values_list("pk", flat=True), start, "Started {} execution(s).")
        if started:
            links = format_html_join(
                ", ",
                '<a href="{}">{} {}</a>',
                (
                    (reverse("admin:workflows_execution_change", args=[e.pk]), e.workflow_name, str(e.pk)[:8])
                    for e in started
                ),
            )
            self.message_user(request, format_html("New execution(s): {}", links), messages.INFO)


def _requester(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"  # as the API records it (masplatform.permissions.requester)


# -- executions -------------------------------------------------------------------------------------


@admin.register(Execution)
class ExecutionAdmin(PermissionCheckedActions, admin.ModelAdmin):
    list_display = [
        "short_id",
        "workflow_link",
        "status_badge",
        "progress",
        "started_at",
        "duration",
        "requested_by",
    ]
    list_display_links = ["short_id"]
    list_filter = ["status", "workflow"]
    search_fields = ["workflow_name", "requested_by"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["cancel_selected", "pause_selected", "resume_selected"]
    readonly_fields = [
        "id",
        "workflow_link",
        "workflow_version",
        "status_badge",
        "progress_wide",
        "requested_by",
        "error_text",
        "created_at",
        "started_at",
        "finished_at",
        "deadline_at",
        "duration",
        "failure_strategy",
        "max_parallel_tasks",
        "global_timeout",
        "pretty_context",
    ]
    fieldsets = [
        (None, {"fields": ["id", "workflow_link", "workflow_version", "status_badge", "progress_wide", "error_text"]}),
        ("Timing", {"fields": ["created_at", "started_at", "finished_at", "deadline_at", "duration", "requested_by"]}),
        (
            "Settings (copied from the definition)",
            {"fields": ["failure_strategy", "max_parallel_tasks", "global_timeout"]},
        ),
        ("Context", {"fields": ["pretty_context"]}),
    ]

    class Media:
        css = {"all": ["workflows/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # started from a definition (its Execute button, or POST /api/workflows/{id}/execute/)

    def has_change_permission(self, request: HttpRequest, obj: Execution | None = None) -> bool:
        return False  # the engine owns executions; operators act through cancel/pause/resume

    def has_delete_permission(self, request: HttpRequest, obj: Execution | None = None) -> bool:
        return False

    @admin.display(description="id")
    def short_id(self, execution: Execution) -> str:
        return str(execution.pk)[:8]

    @admin.display(description="workflow", ordering="workflow_name")
    def workflow_link(self, execution: Execution) -> str:
        if not execution.workflow_id:
            return format_html("{} <small>(definition deleted)</small>", execution.workflow_name)
        url = reverse("admin:workflows_workflow_change", args=[execution.workflow_id])
        return format_html('<a href="{}">{}</a>', url, execution.workflow_name)

    @admin.display(description="status", ordering="status")
    def status_badge(self, execution: Execution) -> str:
        return status_badge(execution.status, execution.get_status_display())

    @admin.display(description="progress")
    def progress(self, execution: Execution) -> str:
        return progress_bar(execution)

    @admin.display(description="progress")
    def progress_wide(self, execution: Execution) -> str:
        return progress_bar(execution, wide=True)

    @admin.display(description="duration")
    def duration(self, execution: Execution) -> str:
        if not execution.started_at:
            return "–"
        end = execution.finished_at or timezone.now()
        text = seconds_text((end - execution.started_at).total_seconds())
        return text if execution.finished_at else f"{text} so far"

    @admin.display(description="error")
    def error_text(self, execution: Execution) -> str:
        return format_html('<span class="wf-error">{}</span>', execution.error) if execution.error else "–"

    @admin.display(description="context")
    def pretty_context(self, execution: Execution) -> str:
        return pretty_json(execution.context)

    # the detail page ---------------------------------------------------------------------------------
    def render_change_form(
        self, request: HttpRequest, context: dict, add: bool = False, change: bool = False, form_url: str = "", obj=None
    ) -> HttpResponse:
        if obj is not None:
            context.update(execution_page(obj))
            context["wf_can_operate"] = self.has_operate_permission(request)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.operate_view)
        return [
            *(
                path(f"<path:object_id>/{verb}/", view, {"verb": verb}, name=f"workflows_execution_{verb}")
                for verb in OPERATIONS
            ),
            *super().get_urls(),
        ]

    def operate_view(self, request: HttpRequest, object_id: str, verb: str) -> HttpResponse:
        refused = _post_only(request)
        if refused:
            return refused
        if not self.has_operate_permission(request):
            raise PermissionDenied(f"You need the permission 'Can change execution' to {verb} an execution.")
        execution = get_object_or_404(Execution, pk=object_id)
        back = reverse("admin:workflows_execution_change", args=[execution.pk])
        service, message = OPERATIONS[verb]
        who = _requester(request)
        run_each(self, request, [execution.pk], lambda pk: service(pk, who), message)
        return HttpResponseRedirect(back)

    def _each(self, request: HttpRequest, queryset: QuerySet[Execution], verb: str) -> None:
        service, message = OPERATIONS[verb]
        who = _requester(request)
        run_each(self, request, queryset.values_list("pk", flat=True), lambda pk: service(pk, who), message)

    @admin.action(description="Cancel selected executions", permissions=["operate"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        self._each(request, queryset, "cancel")

    @admin.action(description="Pause selected executions (start nothing new)", permissions=["operate"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        self._each(request, queryset, "pause")

    @admin.action(description="Resume selected paused executions", permissions=["operate"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        self._each(request, queryset, "resume")


# verb -> (service(execution id, who asks), message); the cancel reason is stored as the execution's error
OPERATIONS = {
    "cancel": (
        lambda pk, who: services.cancel_execution(pk, reason=f"cancelled in the admin by {who}"),
        "Cancelled {} execution(s).",
    ),
    "pause": (lambda pk, who: services.pause_execution(pk), "Paused {} execution(s)."),
    "resume": (lambda pk, who: services.resume_execution(pk), "Resumed {} execution(s)."),
}


def execution_page(execution: Execution) -> dict[str, Any]:
    """What the execution page shows beyond its fields: the picture, summary, timeline and task table.

    Two queries (task runs with their agent, their calls with theirs) plus at most COSTLY_REASONS_LIMIT
    waiting reasons of tasks whose call waits in the queue.
    """
    calls = TaskCall.objects.select_related("invocation__agent").only(
        "share", "task_run_id", "invocation__status", "invocation__agent__agent_id"
    )
    runs = list(
        TaskRun.objects.filter(execution=execution)
        .select_related("agent")
        .defer("input", "resolved_input", "output", "agent__metadata", "agent__description")
        .prefetch_related(Prefetch("calls", queryset=calls.order_by("share"), to_attr="shares"))
        .order_by("position")
    )
    summary = services.summary(execution, runs)
    critical = summary["critical_path"] if execution.tasks_finished else []
    svg = diagram.render_svg(
        [
            diagram.DiagramTask(
                key=r.key, capability=r.capability, depends_on=r.depends_on, status=r.status, name=r.name
            )
            for r in runs
        ],
        critical_path=critical,
    )
    agents = {r.pk: _agents_of(r) for r in runs}
    return {
        "wf_svg": svg,
        "wf_summary": {
            "duration": seconds_text(summary["duration_seconds"]),
            "critical_path": " → ".join(summary["critical_path"]) if critical else "",
            "critical_path_seconds": seconds_text(summary["critical_path_seconds"]),
            "slowest": summary["slowest_task"],
            "slowest_seconds": seconds_text(summary["slowest_task"]["seconds"]) if summary["slowest_task"] else "",
        },
        "wf_live": execution.status in EXECUTION_ACTIVE,
        "wf_refresh_seconds": 2,
        "wf_timeline": timeline(execution, runs, agents),
        "wf_tasks": task_rows(execution, runs, agents),
        "wf_tasks_hidden": max(0, len(runs) - TASK_TABLE_LIMIT),
        "wf_actions": [
            (verb, label)
            for verb, label, allowed in (
                ("pause", "Pause", execution.status == ExecutionStatus.RUNNING),
                ("resume", "Resume", execution.status == ExecutionStatus.PAUSED),
                ("cancel", "Cancel", execution.status in EXECUTION_ACTIVE),
            )
            if allowed
        ],
    }


def _agents_of(run: TaskRun) -> list[str]:
    """The agent(s) that ran (or run) a task: one per share of a scatter task, from its calls."""
    found = [c.invocation.agent.agent_id for c in run.shares if c.invocation.agent_id]
    if not found and run.agent_id:
        found = [run.agent.agent_id]
    return list(dict.fromkeys(found))


def timeline(execution: Execution, runs: list[TaskRun], agents: dict[int, list[str]]) -> dict[str, Any]:
    """Gantt rows (percent offsets from the execution's start) for the task runs that started."""
    started = sorted((r for r in runs if r.started_at), key=lambda r: (r.started_at, r.position))
    origin = execution.started_at or (started[0].started_at if started else None)
    if origin is None or not started:
        return {"rows": [], "ticks": [], "hidden": 0, "never_started": len(runs) - len(started)}
    now = timezone.now()
    end: datetime = execution.finished_at or now
    end = max([end, *(r.finished_at or now for r in started)])
    span = max((end - origin).total_seconds(), 0.001)
    rows = []
    for r in started[:TIMELINE_LIMIT]:
        start = (r.started_at - origin).total_seconds()
        length = ((r.finished_at or now) - r.started_at).total_seconds()
        left, width = 100.0 * start / span, 100.0 * length / span
        # the label goes after the bar if there is room, else before it, else inside it
        place = "" if left + width <= 70 else ("before" if left >= 30 else "inside")
        who = agents.get(r.pk) or []
        rows.append(
            {
                "key": r.key,
                "status": r.status,
                "left": f"{left:.3f}",
                "width": f"{width:.3f}",
                "label_place": place,
                "label": f"{', '.join(who) or 'no agent yet'} · {seconds_text(length)}"
                + ("" if r.finished_at else " so far"),
                "title": f"{r.key}: {r.status}, from +{seconds_text(start)} for {seconds_text(length)}"
                + (f" on {', '.join(who)}" if who else ""),
            }
        )
    ticks = [
        {"left": f"{p}", "text": "0" if p == 0 else f"+{seconds_text(span * p / 100)}", "edge": edge}
        for p, edge in ((0, "first"), (25, ""), (50, ""), (75, ""), (100, "last"))
    ]
    return {
        "rows": rows,
        "ticks": ticks,
        "hidden": max(0, len(started) - TIMELINE_LIMIT),
        "never_started": len(runs) - len(started),
    }


def task_rows(execution: Execution, runs: list[TaskRun], agents: dict[int, list[str]]) -> list[dict[str, Any]]:
    rows = []
    costly = 0
    for r in runs[:TASK_TABLE_LIMIT]:
        reason: str | None = None
        if not r.is_finished:
            queued = any(c.invocation.status == InvocationStatus.QUEUED for c in r.shares)
            if r.status == TaskStatus.RUNNING and not queued:
                rows.append(_task_row(r, agents, ""))  # every call was taken: nothing to explain
                continue
            expensive = r.status == TaskStatus.RUNNING or (r.status == TaskStatus.READY and r.required_agents)
            if not expensive or costly < COSTLY_REASONS_LIMIT:
                costly += bool(expensive)
                reason = services.waiting_reason(r, execution)
            else:
                reason = "(not computed: too many active tasks on one page; see the API)"
        rows.append(_task_row(r, agents, reason or ""))
    return rows


def _task_row(run: TaskRun, agents: dict[int, list[str]], reason: str) -> dict[str, Any]:
    return {
        "run": run,
        "badge": status_badge(run.status),
        "agents": ", ".join(agents.get(run.pk) or []),
        "duration": seconds_text(run.duration_seconds),
        "problem": run.error or run.skip_reason,
        "reason": reason,
    }
