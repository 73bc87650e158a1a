"""Workflow definitions (a DAG of capability calls) and their executions.

An execution copies its definition (``Execution.definition`` and one
``TaskRun`` per task), so editing or deleting a definition never changes an
execution that runs. Each TaskRun keeps ``waiting_on``, the number of its
dependencies that have not finished; the engine decrements it when one
finishes, which is what makes scheduling event-driven and O(out-edges).
"""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from agents.models import Agent, Capability, Invocation


class FailureStrategy(models.TextChoices):
    STOP = "stop", "stop: fail the execution, cancel the rest"
    CONTINUE = "continue", "continue: skip the failed task's dependents, finish the other branches"
    RETRY = "retry", "retry: re-run a failed task up to its retries, then stop"


class Aggregation(models.TextChoices):
    AVERAGE = "average", "average"
    MIN = "min", "min"
    MAX = "max", "max"
    SUM = "sum", "sum"
    LIST = "list", "list"
    MAJORITY = "majority", "majority"


class Workflow(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    global_timeout = models.FloatField(
        default=3600.0, validators=[MinValueValidator(1.0)], help_text="seconds the whole execution may take"
    )
    max_parallel_tasks = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    failure_strategy = models.CharField(max_length=16, choices=FailureStrategy.choices, default=FailureStrategy.STOP)
    metadata = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1, help_text="bumped by every edit")
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WorkflowTask(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="tasks")
    position = models.PositiveIntegerField()
    key = models.CharField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    capability = models.ForeignKey(Capability, on_delete=models.PROTECT, related_name="workflow_tasks")
    input = models.JSONField(default=dict, blank=True)
    depends_on = models.JSONField(default=list, blank=True)
    timeout = models.FloatField(default=300.0, validators=[MinValueValidator(0.1)])
    retries = models.PositiveSmallIntegerField(default=0)
    priority = models.PositiveSmallIntegerField(default=5, validators=[MaxValueValidator(9)])
    condition = models.TextField(blank=True)
    required_agents = models.PositiveSmallIntegerField(null=True, blank=True)
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices, blank=True)
    reads = models.JSONField(default=list, blank=True, help_text="keys of the upstream tasks its references read")
    dependents = models.JSONField(default=list, blank=True, help_text="keys of the tasks that depend on it")

    class Meta:
        ordering = ["workflow_id", "position"]
        constraints = [models.UniqueConstraint(fields=["workflow", "key"], name="workflow_task_key_unique")]

    def __str__(self) -> str:
        return self.key


class ExecutionStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"
    TIMED_OUT = "timed_out", "timed out"


EXECUTION_ACTIVE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.PAUSED)


class Execution(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions")
    workflow_name = models.CharField(max_length=200)
    workflow_version = models.PositiveIntegerField(default=1)
    definition = models.JSONField(
        help_text="the workflow's own fields as they were when the execution started (its task runs copy the tasks)"
    )
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING)
    context = models.JSONField(default=dict, blank=True)
    failure_strategy = models.CharField(max_length=16, choices=FailureStrategy.choices)
    max_parallel_tasks = models.PositiveIntegerField()
    global_timeout = models.FloatField()
    # counters kept by the engine in the same transactions that change tasks
    tasks_total = models.PositiveIntegerField(default=0)
    tasks_running = models.PositiveIntegerField(default=0)
    tasks_ready = models.PositiveIntegerField(default=0, help_text="ready tasks waiting for a slot (or agents)")
    tasks_succeeded = models.PositiveIntegerField(default=0)
    tasks_failed = models.PositiveIntegerField(default=0)
    tasks_skipped = models.PositiveIntegerField(default=0)
    tasks_cancelled = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="execution_status_idx"),
            models.Index(
                fields=["deadline_at"], name="execution_deadline_idx", condition=Q(status__in=EXECUTION_ACTIVE)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_name} {str(self.pk)[:8]}"

    @property
    def tasks_finished(self) -> int:
        return self.tasks_succeeded + self.tasks_failed + self.tasks_skipped + self.tasks_cancelled

    @property
    def is_finished(self) -> bool:
        return self.status not in EXECUTION_ACTIVE


class TaskStatus(models.TextChoices):
    PENDING = "pending", "pending"  # waiting for its dependencies
    READY = "ready", "ready"  # dependencies done; waiting for a free slot (or for enough agents)
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped"
    CANCELLED = "cancelled", "cancelled"


TASK_FINISHED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED)


class TaskRun(models.Model):
    """One task of one execution: its copy of the task's definition and what happened to it."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="task_runs")
    position = models.PositiveIntegerField()
    key = models.CharField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    capability = models.CharField(max_length=100)
    input = models.JSONField(default=dict, blank=True, help_text="as defined, with its ${...} references")
    condition = models.TextField(blank=True)
    priority = models.PositiveSmallIntegerField(default=5)
    timeout = models.FloatField(default=300.0)
    retries = models.PositiveSmallIntegerField(default=0)
    required_agents = models.PositiveSmallIntegerField(null=True, blank=True)
    aggregation = models.CharField(max_length=16, blank=True)
    depends_on = models.JSONField(default=list, blank=True)
    dependents = models.JSONField(default=list, blank=True)
    reads = models.JSONField(default=list, blank=True, help_text="keys of the upstream tasks its references read")
    waiting_on = models.PositiveIntegerField(default=0, help_text="dependencies not finished yet")
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    resolved_input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    skip_reason = models.CharField(max_length=300, blank=True)
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    attempts = models.PositiveIntegerField(default=0)
    ready_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["execution_id", "position"]
        constraints = [models.UniqueConstraint(fields=["execution", "key"], name="taskrun_key_unique")]
        indexes = [
            # the next ready tasks of an execution, highest priority first
            models.Index(
                fields=["execution", "-priority", "position"],
                name="taskrun_ready_idx",
                condition=Q(status="ready"),
            ),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def is_finished(self) -> bool:
        return self.status in TASK_FINISHED

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class TaskCall(models.Model):
    """An invocation made for a task run: one, or one per share of a scatter task."""

    invocation = models.OneToOneField(
        Invocation, primary_key=True, on_delete=models.CASCADE, related_name="workflow_call"
    )
    task_run = models.ForeignKey(TaskRun, on_delete=models.CASCADE, related_name="calls")
    share = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["task_run_id", "share"]

    def __str__(self) -> str:
        return f"{self.task_run.key}#{self.share}"
