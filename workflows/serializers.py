"""Shapes of workflows and executions in the API. Definitions are checked by the services
(``services.check_definition``), which name each task and problem; these only present."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from workflows import services
from workflows.models import Execution, TaskRun, Workflow


class WorkflowTaskInputSerializer(serializers.Serializer):
    """One task of a definition (documentation of the request body; checked by the services)."""

    key = serializers.CharField(help_text="unique in the workflow: letters, digits, '_' or '-'")
    name = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    capability = serializers.CharField(help_text="name of a registered capability")
    input = serializers.JSONField(required=False, allow_null=True, help_text='may contain "${context.x}" / "${tasks.k.output.y}"')
    depends_on = serializers.ListField(child=serializers.CharField(), required=False)
    timeout = serializers.FloatField(
        required=False, min_value=0.1, max_value=86400, help_text="seconds per attempt (default 300)"
    )
    retries = serializers.IntegerField(required=False, min_value=0, max_value=100, help_text="re-runs under the 'retry' strategy")
    priority = serializers.IntegerField(required=False, min_value=0, max_value=9, help_text="0-9, higher first (default 5)")
    condition = serializers.CharField(required=False, allow_blank=True, allow_null=True, help_text='e.g. tasks.a.output.count > 10 and context.x == "y"')
    required_agents = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1000)
    aggregation = serializers.ChoiceField(
        choices=["average", "min", "max", "sum", "list", "majority"], required=False, allow_blank=True
    )


class WorkflowInputSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    global_timeout = serializers.FloatField(
        required=False, min_value=1, max_value=10_000_000, help_text="seconds (default 3600)"
    )
    max_parallel_tasks = serializers.IntegerField(required=False, min_value=1, max_value=100_000, help_text="default 10")
    failure_strategy = serializers.ChoiceField(choices=["stop", "continue", "retry"], required=False)
    metadata = serializers.JSONField(required=False, allow_null=True)
    tasks = WorkflowTaskInputSerializer(many=True, allow_empty=False)


class WorkflowSerializer(serializers.ModelSerializer):
    tasks = serializers.SerializerMethodField()
    execution_count = serializers.IntegerField(source="executions_count", read_only=True, default=None)

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "description",
            "global_timeout",
            "max_parallel_tasks",
            "failure_strategy",
            "metadata",
            "version",
            "created_by",
            "created_at",
            "updated_at",
            "execution_count",
            "tasks",
        ]

    def get_tasks(self, workflow: Workflow) -> list[dict[str, Any]]:
        return services.definition_of(workflow)["tasks"]


class WorkflowListSerializer(WorkflowSerializer):
    tasks = serializers.IntegerField(source="tasks_count", read_only=True)


class ExecuteSerializer(serializers.Serializer):
    context = serializers.JSONField(required=False, help_text="the execution's starting context (an object)")


class ShareSerializer(serializers.Serializer):
    share = serializers.IntegerField()
    invocation = serializers.UUIDField()
    status = serializers.CharField()
    agent = serializers.CharField(allow_null=True)
    pinned_agent = serializers.CharField(allow_null=True)
    attempt = serializers.IntegerField()
    output = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class TaskRunSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="agent_id", read_only=True, allow_null=True)
    calls = serializers.SerializerMethodField()
    waiting_reason = serializers.SerializerMethodField()
    duration_seconds = serializers.FloatField(read_only=True)

    class Meta:
        model = TaskRun
        fields = [
            "key",
            "name",
            "capability",
            "status",
            "depends_on",
            "priority",
            "condition",
            "required_agents",
            "aggregation",
            "attempts",
            "agent",
            "input",
            "resolved_input",
            "output",
            "error",
            "skip_reason",
            "waiting_reason",
            "ready_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "calls",
        ]

    def get_calls(self, run: TaskRun) -> list[dict[str, Any]]:
        out = []
        for call in run.calls.all():
            inv = call.invocation
            out.append(
                {
                    "share": call.share,
                    "invocation": inv.pk,
                    "status": inv.status,
                    "agent": inv.agent.agent_id if inv.agent else None,
                    "pinned_agent": inv.pinned_agent.agent_id if inv.pinned_agent else None,
                    "attempt": inv.attempt,
                    "output": inv.output,
                    "error": f"{inv.error_type}: {inv.error_message}" if inv.error_type else "",
                    "started_at": inv.started_at,
                    "finished_at": inv.finished_at,
                }
            )
        return out

    def get_waiting_reason(self, run: TaskRun) -> str | None:
        return services.waiting_reason(run, self.context["execution"])


class ExecutionSerializer(serializers.ModelSerializer):
    workflow = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = [
            "id",
            "workflow",
            "workflow_name",
            "workflow_version",
            "status",
            "progress",
            "error",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "deadline_at",
        ]

    def get_progress(self, execution: Execution) -> dict[str, Any]:
        return services.progress(execution)


class ExecutionDetailSerializer(ExecutionSerializer):
    tasks = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()

    class Meta(ExecutionSerializer.Meta):
        fields = [
            *ExecutionSerializer.Meta.fields,
            "failure_strategy",
            "max_parallel_tasks",
            "global_timeout",
            "context",
            "summary",
            "tasks",
        ]

    def _runs(self, execution: Execution) -> list[TaskRun]:
        if not hasattr(self, "_cached_runs"):
            self._cached_runs = list(
                execution.task_runs.select_related("agent").prefetch_related(
                    "calls__invocation__agent", "calls__invocation__pinned_agent"
                )
            )
        return self._cached_runs

    def get_tasks(self, execution: Execution) -> list[dict[str, Any]]:
        return TaskRunSerializer(self._runs(execution), many=True, context={"execution": execution}).data

    def get_summary(self, execution: Execution) -> dict[str, Any]:
        return services.summary(execution, self._runs(execution))
