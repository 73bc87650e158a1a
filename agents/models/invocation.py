"""Invocations: one call of a capability, queued, claimed by an agent's worker, recorded once."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from agents.models.registry import Agent, Capability


class InvocationStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    TIMED_OUT = "timed_out", "timed out"
    CANCELLED = "cancelled", "cancelled"


FINISHED = frozenset(
    {InvocationStatus.SUCCEEDED, InvocationStatus.FAILED, InvocationStatus.TIMED_OUT, InvocationStatus.CANCELLED}
)


class Invocation(models.Model):
    """A capability call. ``attempt`` is the claim token: each claim bumps it, and only the
    holder of the current attempt may record an outcome, so a late or duplicate delivery does nothing."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    capability = models.ForeignKey(Capability, on_delete=models.PROTECT, related_name="invocations", db_index=False)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=InvocationStatus.choices, default=InvocationStatus.QUEUED)
    priority = models.PositiveSmallIntegerField(
        default=5, validators=[MaxValueValidator(9)], help_text="0 (lowest) to 9 (highest)"
    )
    timeout = models.FloatField(default=300.0, validators=[MinValueValidator(0.1)], help_text="seconds per attempt")
    max_retries = models.PositiveSmallIntegerField(default=0)
    attempt = models.PositiveIntegerField(default=0, help_text="number of the current (or last) attempt")
    failed_attempts = models.PositiveIntegerField(default=0)
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="invocations",
        db_index=False,
        help_text="the agent running (or that ran) the current attempt",
    )
    pinned_agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="pinned_invocations",
        db_index=False,
        help_text="only this agent may run it",
    )
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, default="")
    requested_by = models.CharField(max_length=160, help_text="user:<username> or agent:<agent_id>")
    error_type = models.CharField(max_length=200, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")
    progress = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    queued_at = models.DateTimeField(help_text="when it was (last) put on the queue")
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="when its last message was published")
    not_before = models.DateTimeField(null=True, blank=True, help_text="retry backoff: not to run before")
    started_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Whether a request waits (or waited) for the outcome (``?wait=``): only then does recording the outcome
    # publish a wake-up (masplatform.notify), a broker round trip that most calls do not need. Nullable
    # (NULL: no one), so that adding it altered the table in place on SQLite too.
    waited_on = models.BooleanField(null=True, editable=False, help_text="a request waits for its outcome")

    class Meta:
        ordering = ["-created_at"]
        # Few and partial indexes: a call's row is written three times (queued, running, finished), and on
        # PostgreSQL each version of it enters every index whose condition it meets (the claim and the
        # outcome change the status, so they are never HOT updates). Here a queued version enters five
        # indexes, a running one five, a finished one five: 15 entries per call, where one index per
        # foreign key and full indexes made 26. The foreign keys have no index of their own: the partial
        # ones on agent and pinned agent serve their ON DELETE SET NULL (``agent_id = X`` implies NOT
        # NULL), invocation_capability_idx the capability's (and PROTECT's check).
        indexes = [
            # queued calls of a capability in the order they are taken ("K calls ahead of it")
            models.Index(
                fields=["capability", "-priority", "queued_at"],
                name="invocation_queued_idx",
                condition=Q(status="queued"),
            ),
            # an agent's calls (in flight: status running), and its foreign key
            models.Index(fields=["agent", "status"], name="invocation_agent_idx", condition=Q(agent__isnull=False)),
            models.Index(
                fields=["pinned_agent"], name="invocation_pinned_idx", condition=Q(pinned_agent__isnull=False)
            ),
            models.Index(fields=["deadline_at"], name="invocation_deadline_idx", condition=Q(status="running")),
            models.Index(fields=["-created_at"], name="invocation_created_idx"),
            # a capability's calls, newest first (the API's and the admin's capability filter)
            models.Index(fields=["capability", "-created_at"], name="invocation_capability_idx"),
            models.Index(fields=["dispatched_at"], name="invocation_waiting_idx", condition=Q(status="queued")),
            # a capability's outcomes over the last hour (fleet statistics)
            models.Index(
                fields=["capability", "-finished_at"],
                name="invocation_finished_idx",
                condition=Q(finished_at__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                name="invocation_idempotency",
                condition=Q(idempotency_key__isnull=False),
            ),
            models.CheckConstraint(condition=Q(priority__lte=9), name="invocation_priority_0_9"),
        ]

    def __str__(self) -> str:
        return f"{self.capability_id}:{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


class InvocationAttempt(models.Model):
    """One try of an invocation on one agent, with its own outcome and error."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        TIMED_OUT = "timed_out", "timed out"
        CANCELLED = "cancelled", "cancelled"
        LOST = "lost", "lost (agent went offline; re-queued)"

    # no index of its own: the unique (invocation, number) serves lookups by invocation
    invocation = models.ForeignKey(Invocation, on_delete=models.CASCADE, related_name="attempts", db_index=False)
    number = models.PositiveIntegerField()
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error_type = models.CharField(max_length=200, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["invocation", "number"]
        constraints = [models.UniqueConstraint(fields=["invocation", "number"], name="attempt_unique_number")]

    def __str__(self) -> str:
        return f"{self.invocation_id}#{self.number} {self.outcome}"
