"""Invocations: create, dispatch, claim, record, retry, cancel, time out and re-queue.

The database is the truth; the broker only carries wake-ups to workers.
Delivery is at-least-once (acks_late, reject_on_worker_lost, and the
platform re-publishes from the database); the *recorded* outcome is
exactly-once because of the claim:

- ``claim`` moves a call ``queued -> running`` with a conditional UPDATE that
  also bumps ``attempt`` (the claim token). A duplicate or late message finds
  the call no longer queued and does nothing.
- ``record_success`` / ``record_failure`` write only where ``status='running'
  AND attempt=<the claimer's attempt>``; an attempt that was timed out or
  re-queued meanwhile records nothing.

Locks: ``record_failure``, ``cancel`` and the sweeps lock Invocation rows
(``select_for_update``); none of them also locks an Agent row, except that the
registry's stale sweep, holding its batch of Agent rows, re-queues their
running invocations (Agent rows first, then Invocation rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import traceback as tb
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, FloatField, Q, Value
from django.db.models.functions import Coalesce
from django.dispatch import Signal
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

from agents import dispatch
from agents.models import Agent, AgentState, Capability, Invocation, InvocationAttempt, InvocationStatus
from agents.models.invocation import FINISHED
from masplatform import notify
from masplatform.exceptions import Conflict, InvalidInput, NotFound

logger = logging.getLogger("agents")

# Sent inside the transaction that records a finished invocation (succeeded, failed,
# timed out or cancelled), so that a receiver (a workflow) commits together with it.
# Arguments: invocation_id, status.
invocation_finished = Signal()

Outcome = InvocationAttempt.Outcome
QUEUED, RUNNING = InvocationStatus.QUEUED, InvocationStatus.RUNNING


def schema_errors(schema: Any, instance: Any, limit: int = 5) -> list[str]:
    """'path: message' for each way ``instance`` fails ``schema`` (at most ``limit``)."""
    cls = validator_for(schema, default=Draft202012Validator)
    errors = sorted(cls(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors[:limit]:
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        out.append(f"{path}: {error.message}")
    return out


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def invoke(
    *,
    capability: str,
    input: dict[str, Any],
    requested_by: str,
    priority: int = 5,
    timeout: float | None = None,
    max_retries: int = 0,
    agent: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Invocation, bool]:
    """Queue a call of ``capability``; returns (invocation, created).

    Validates ``input`` against the capability's input schema (InvalidInput,
    nothing created). With an ``idempotency_key``, the same requester sending
    the same body again gets the first invocation back (created=False); a
    different body under the same key is a Conflict. The message is published
    after the transaction commits.
    """
    cap = Capability.objects.filter(name=capability).first()
    if cap is None:
        raise InvalidInput({"capability": [f"unknown capability '{capability}'"]})
    problems = schema_errors(cap.input_schema, input)
    if problems:
        raise InvalidInput({"input": [f"does not match the input schema of '{capability}': {p}" for p in problems]})
    if not 0 <= priority <= dispatch.MAX_PRIORITY:
        raise InvalidInput({"priority": [f"must be 0-9, got {priority}"]})
    timeout = settings.MASP_INVOCATION_TIMEOUT if timeout is None else timeout
    pinned = None
    if agent:
        pinned = Agent.objects.filter(agent_id=agent, unregistered_at__isnull=True).first()
        if pinned is None:
            raise InvalidInput({"agent": [f"no registered agent '{agent}'"]})
        if not pinned.offers.filter(capability=cap).exists():
            raise InvalidInput({"agent": [f"agent '{agent}' does not offer '{capability}'"]})
    body = {
        "capability": capability,
        "input": input,
        "priority": priority,
        "timeout": timeout,
        "max_retries": max_retries,
        "agent": agent,
    }
    digest = request_hash(body)
    if idempotency_key:
        existing = _by_key(requested_by, idempotency_key, digest)
        if existing:
            return existing, False
    now = timezone.now()
    try:
        with transaction.atomic():
            invocation = Invocation.objects.create(
                capability=cap,
                input=input,
                priority=priority,
                timeout=timeout,
                max_retries=max_retries,
                pinned_agent=pinned,
                idempotency_key=idempotency_key or None,
                request_hash=digest,
                requested_by=requested_by,
                created_at=now,
                queued_at=now,
                dispatched_at=now,
            )
            _dispatch_on_commit(invocation, cap.name, pinned.agent_id if pinned else None)
    except IntegrityError:
        if not idempotency_key:
            raise
        existing = _by_key(requested_by, idempotency_key, digest)  # a concurrent twin won the race
        if existing is None:
            raise
        return existing, False
    logger.info(
        "event=invocation_queued invocation=%s capability=%s priority=%d requested_by=%s",
        invocation.pk,
        capability,
        priority,
        requested_by,
    )
    return invocation, True


def _by_key(requested_by: str, key: str, digest: str) -> Invocation | None:
    existing = Invocation.objects.filter(requested_by=requested_by, idempotency_key=key).first()
    if existing is not None and existing.request_hash != digest:
        raise Conflict(
            f"idempotency key '{key}' was used for invocation {existing.pk} with a different request; "
            "use a new key for a new request."
        )
    return existing


def _dispatch_on_commit(
    invocation: Invocation, capability: str, pinned_agent_id: str | None, countdown: float = 0
) -> None:
    queue_name = (
        dispatch.agent_queue_name(pinned_agent_id) if pinned_agent_id else dispatch.capability_queue_name(capability)
    )
    args = (str(invocation.pk),)
    options = {
        "queue": dispatch.queue(queue_name),
        "priority": dispatch.broker_priority(invocation.priority),
        "soft_time_limit": invocation.timeout,
        "time_limit": invocation.timeout + settings.MASP_HARD_TIMEOUT_GRACE,
    }
    if countdown > 0:
        options["countdown"] = countdown

    def publish() -> None:
        from agents.tasks import run_invocation

        run_invocation.apply_async(args, **options)

    transaction.on_commit(publish)


def dispatch_again(invocation: Invocation, countdown: float = 0) -> None:
    """Publish a new message for a queued invocation (after this transaction commits)."""
    Invocation.objects.filter(pk=invocation.pk).update(dispatched_at=timezone.now())
    pinned = invocation.pinned_agent.agent_id if invocation.pinned_agent_id else None
    _dispatch_on_commit(invocation, invocation.capability.name, pinned, countdown)


@dataclass(frozen=True)
class Claim:
    invocation: Invocation
    attempt: int


def claim(invocation_id: str, *, agent: Agent) -> Claim | None:
    """Take a queued invocation for ``agent``: ``queued -> running``, bumping the attempt.

    Returns None, doing nothing, when the call is no longer queued (a
    duplicate or late message), was cancelled, is in its retry backoff, or is
    pinned to another agent.
    """
    now = timezone.now()
    invocation = (
        Invocation.objects.select_related("capability")
        .filter(pk=invocation_id, status=QUEUED, cancel_requested=False)
        .filter(Q(pinned_agent__isnull=True) | Q(pinned_agent=agent))
        .first()
    )
    if invocation is None:
        return None
    early = (invocation.not_before - now).total_seconds() if invocation.not_before else 0
    if early > 0.5:  # a message ahead of its backoff (clock skew, a duplicate): send it again for later
        with transaction.atomic():
            dispatch_again(invocation, countdown=early)
        return None
    previous = invocation.attempt
    claimed = {
        "status": RUNNING,
        "attempt": previous + 1,
        "agent": agent,
        "started_at": now,
        "deadline_at": now + timedelta(seconds=invocation.timeout + settings.MASP_HARD_TIMEOUT_GRACE),
        "not_before": None,
        "progress": None,
        "progress_message": "",
    }
    with transaction.atomic():
        # the compare-and-swap: only one claimer moves it from this attempt to the next
        if not Invocation.objects.filter(pk=invocation_id, status=QUEUED, attempt=previous).update(**claimed):
            return None
        InvocationAttempt.objects.create(invocation_id=invocation_id, number=previous + 1, agent=agent, started_at=now)
    for field, value in claimed.items():
        setattr(invocation, field, value)
    logger.info(
        "event=invocation_claimed invocation=%s attempt=%d agent_id=%s", invocation_id, previous + 1, agent.agent_id
    )
    return Claim(invocation, previous + 1)


def claim_of(invocation_id: str, *, agent: Agent) -> Claim | None:
    """The claim ``agent`` holds on a running invocation, if any (after a claim was interrupted)."""
    invocation = (
        Invocation.objects.select_related("capability").filter(pk=invocation_id, status=RUNNING, agent=agent).first()
    )
    return None if invocation is None else Claim(invocation, invocation.attempt)


def _finish_attempt(
    invocation_id: Any,
    attempt: int,
    outcome: str,
    now: datetime,
    *,
    error_type: str = "",
    error_message: str = "",
    error_traceback: str = "",
    started_at: datetime | None = None,
) -> float | None:
    started = started_at or (
        InvocationAttempt.objects.filter(invocation_id=invocation_id, number=attempt)
        .values_list("started_at", flat=True)
        .first()
    )
    duration_ms = (now - started).total_seconds() * 1000 if started else None
    InvocationAttempt.objects.filter(invocation_id=invocation_id, number=attempt).update(
        outcome=outcome,
        finished_at=now,
        duration_ms=duration_ms,
        error_type=error_type,
        error_message=error_message,
        error_traceback=error_traceback,
    )
    return duration_ms


def _count_on_agent(agent_id: int | None, *, succeeded: bool, duration_ms: float | None) -> None:
    if agent_id is None:
        return
    if succeeded:
        done = F("calls_completed")
        x = Value(duration_ms if duration_ms is not None else 0.0, output_field=FloatField())
        mean = Coalesce(F("avg_response_time_ms"), x)
        # one UPDATE: the running mean over completed calls, mean + (x - mean) / (n + 1)
        Agent.objects.filter(pk=agent_id).update(
            calls_completed=done + 1, avg_response_time_ms=mean + (x - mean) / (done + 1)
        )
    else:
        Agent.objects.filter(pk=agent_id).update(calls_failed=F("calls_failed") + 1)


def _finished(invocation: Invocation | str, status: str) -> None:
    pk = str(invocation.pk if isinstance(invocation, Invocation) else invocation)
    transaction.on_commit(lambda: notify.publish(f"invocation:{pk}", status))


def record_success(
    invocation_id: Any, *, attempt: int, output: Any, started_at: datetime | None = None, agent_pk: int | None = None
) -> bool:
    """Record the output of ``attempt``; False (nothing written) if that attempt no longer holds the call.

    The output must already be valid against the output schema (``check_output``).
    A call whose cancel was requested while it ran is recorded ``cancelled``.
    One conditional UPDATE in the common case; ``started_at`` and ``agent_pk``
    (which the worker knows from its claim) save reading them back.
    """
    now = timezone.now()
    with transaction.atomic():
        recorded = Invocation.objects.filter(
            pk=invocation_id, status=RUNNING, attempt=attempt, cancel_requested=False
        ).update(
            status=InvocationStatus.SUCCEEDED,
            output=output,
            finished_at=now,
            progress=1.0,
            # earlier attempts' errors stay on their attempts; the call itself no longer has one
            error_type="",
            error_message="",
            error_traceback="",
        )
        if not recorded:
            invocation = (
                Invocation.objects.select_for_update().filter(pk=invocation_id, status=RUNNING, attempt=attempt).first()
            )
            if invocation is None:
                return False  # this attempt no longer holds the call
            return _cancel_running(invocation, now)  # its cancel was requested while it ran
        if agent_pk is None:
            agent_pk = Invocation.objects.filter(pk=invocation_id).values_list("agent_id", flat=True).first()
        duration = _finish_attempt(invocation_id, attempt, Outcome.SUCCEEDED, now, started_at=started_at)
        _count_on_agent(agent_pk, succeeded=True, duration_ms=duration)
        invocation_finished.send(sender=Invocation, invocation_id=invocation_id, status=InvocationStatus.SUCCEEDED)
        _finished(invocation_id, InvocationStatus.SUCCEEDED)
    logger.info(
        "event=invocation_succeeded invocation=%s attempt=%d duration_ms=%.1f", invocation_id, attempt, duration or 0
    )
    return True


def check_output(capability: Capability, output: Any) -> list[str]:
    return schema_errors(capability.output_schema, output)


def backoff_seconds(failures: int) -> float:
    """Exponential backoff with equal jitter: half of base * 2^(n-1) (capped), plus up to that half again."""
    ceiling = min(settings.MASP_RETRY_BACKOFF_MAX, settings.MASP_RETRY_BACKOFF * 2 ** max(0, failures - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def record_failure(
    invocation_id: Any,
    *,
    attempt: int,
    error_type: str,
    error_message: str,
    error_traceback: str = "",
    timed_out: bool = False,
) -> bool:
    """Record that ``attempt`` failed (or timed out); retry with backoff while retries remain.

    False (nothing written) if that attempt no longer holds the call.
    """
    now = timezone.now()
    with transaction.atomic():
        invocation = (
            Invocation.objects.select_for_update(of=("self",))
            .select_related("capability", "pinned_agent")
            .filter(pk=invocation_id, status=RUNNING, attempt=attempt)
            .first()
        )
        if invocation is None:
            return False
        if invocation.cancel_requested:
            return _cancel_running(invocation, now)
        _fail_attempt(
            invocation,
            now,
            error_type=error_type,
            error_message=error_message,
            error_traceback=error_traceback,
            timed_out=timed_out,
        )
    return True


def _fail_attempt(
    invocation: Invocation, now: datetime, *, error_type: str, error_message: str, error_traceback: str, timed_out: bool
) -> None:
    """With the invocation row locked: close the attempt, then re-queue with backoff or finish it."""
    outcome = Outcome.TIMED_OUT if timed_out else Outcome.FAILED
    _finish_attempt(
        invocation.pk,
        invocation.attempt,
        outcome,
        now,
        error_type=error_type,
        error_message=error_message,
        error_traceback=error_traceback,
    )
    _count_on_agent(invocation.agent_id, succeeded=False, duration_ms=None)
    invocation.failed_attempts += 1
    invocation.error_type, invocation.error_message = error_type, error_message
    invocation.error_traceback = error_traceback
    fields = ["failed_attempts", "error_type", "error_message", "error_traceback", "status"]
    if invocation.failed_attempts <= invocation.max_retries:
        delay = backoff_seconds(invocation.failed_attempts)
        invocation.status = QUEUED
        invocation.agent = None
        invocation.queued_at = now
        invocation.not_before = now + timedelta(seconds=delay)
        invocation.save(update_fields=[*fields, "agent", "queued_at", "not_before"])
        dispatch_again(invocation, countdown=delay)
        logger.info(
            "event=invocation_retry invocation=%s failures=%d backoff=%.2f error=%s",
            invocation.pk,
            invocation.failed_attempts,
            delay,
            error_type,
        )
        return
    invocation.status = InvocationStatus.TIMED_OUT if timed_out else InvocationStatus.FAILED
    invocation.finished_at = now
    invocation.save(update_fields=[*fields, "finished_at"])
    invocation_finished.send(sender=Invocation, invocation_id=invocation.pk, status=invocation.status)
    _finished(invocation, invocation.status)
    logger.info(
        "event=invocation_%s invocation=%s attempts=%d error=%s",
        invocation.status,
        invocation.pk,
        invocation.attempt,
        error_type,
    )


def _cancel_running(invocation: Invocation, now: datetime) -> bool:
    invocation.status = InvocationStatus.CANCELLED
    invocation.finished_at = now
    invocation.save(update_fields=["status", "finished_at"])
    _finish_attempt(invocation.pk, invocation.attempt, Outcome.CANCELLED, now)
    invocation_finished.send(sender=Invocation, invocation_id=invocation.pk, status=invocation.status)
    _finished(invocation, invocation.status)
    logger.info("event=invocation_cancelled invocation=%s while=running", invocation.pk)
    return True


def failure_from_exception(exc: BaseException) -> dict[str, str]:
    return {
        "error_type": type(exc).__name__,
        "error_message": str(exc)[:5000],
        "error_traceback": "".join(tb.format_exception(exc))[-20000:],
    }


def cancel(invocation_id: Any) -> Invocation:
    """Cancel a call: a queued one at once (it will never run), a running one when its function
    stops (it sees ``context.cancelled``). A finished one is a Conflict naming its status."""
    now = timezone.now()
    with transaction.atomic():
        invocation = Invocation.objects.select_for_update().filter(pk=invocation_id).first()
        if invocation is None:
            raise NotFound(f"No invocation '{invocation_id}'.")
        if invocation.status in FINISHED:
            raise Conflict(f"Invocation {invocation.pk} is already {invocation.status}; it cannot be cancelled.")
        invocation.cancel_requested = True
        fields = ["cancel_requested"]
        if invocation.status == QUEUED:
            invocation.status = InvocationStatus.CANCELLED
            invocation.finished_at = now
            fields += ["status", "finished_at"]
            invocation_finished.send(sender=Invocation, invocation_id=invocation.pk, status=invocation.status)
            _finished(invocation, invocation.status)
        invocation.save(update_fields=fields)
    logger.info("event=invocation_cancel_requested invocation=%s status=%s", invocation_id, invocation.status)
    return invocation


def retry(invocation_id: Any) -> Invocation:
    """Run a finished, unsuccessful call again (a new attempt, same id). Conflict unless failed,
    timed out or cancelled."""
    now = timezone.now()
    with transaction.atomic():
        invocation = (
            Invocation.objects.select_for_update(of=("self",))
            .select_related("capability", "pinned_agent")
            .filter(pk=invocation_id)
            .first()
        )
        if invocation is None:
            raise NotFound(f"No invocation '{invocation_id}'.")
        if invocation.status not in (InvocationStatus.FAILED, InvocationStatus.TIMED_OUT, InvocationStatus.CANCELLED):
            raise Conflict(
                f"Invocation {invocation.pk} is {invocation.status}; only a failed, timed out or "
                "cancelled invocation can be retried."
            )
        invocation.status = QUEUED
        invocation.cancel_requested = False
        invocation.finished_at = None
        invocation.agent = None
        invocation.queued_at = now
        invocation.not_before = None
        invocation.failed_attempts = 0
        invocation.save(
            update_fields=[
                "status",
                "cancel_requested",
                "finished_at",
                "agent",
                "queued_at",
                "not_before",
                "failed_attempts",
            ]
        )
        dispatch_again(invocation)
    logger.info("event=invocation_retried invocation=%s", invocation_id)
    return invocation


def report_progress(invocation_id: Any, *, attempt: int, fraction: float | None, message: str = "") -> bool:
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise InvalidInput({"progress": [f"must be between 0 and 1, got {fraction}"]})
    return bool(
        Invocation.objects.filter(pk=invocation_id, status=RUNNING, attempt=attempt).update(
            progress=fraction, progress_message=message[:500]
        )
    )


def cancel_requested(invocation_id: Any, *, attempt: int) -> bool:
    """True when the call was cancelled, or this attempt no longer holds it."""
    return not Invocation.objects.filter(
        pk=invocation_id, status=RUNNING, attempt=attempt, cancel_requested=False
    ).exists()


def sweep_deadlines(*, batch_size: int | None = None) -> int:
    """Time out running calls past their deadline (their worker hung or vanished): retry or finish them."""
    batch_size = batch_size or settings.MASP_SWEEP_BATCH_SIZE
    now = timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            batch = list(
                Invocation.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("capability", "pinned_agent")
                .filter(status=RUNNING, deadline_at__lt=now)
                .order_by("deadline_at")[:batch_size]
            )
            for invocation in batch:
                if invocation.cancel_requested:
                    _cancel_running(invocation, now)
                    continue
                _fail_attempt(
                    invocation,
                    now,
                    error_type="TimeoutError",
                    error_message=f"no outcome within {invocation.timeout:g}s (+ grace); the worker "
                    "hung, was killed or vanished",
                    error_traceback="",
                    timed_out=True,
                )
        total += len(batch)
        if len(batch) < batch_size:
            break
    if total:
        logger.info("event=deadline_sweep timed_out=%d", total)
    return total


def redispatch_waiting(*, older_than: float | None = None, batch_size: int | None = None) -> int:
    """Publish again the queued calls whose message was published more than ``older_than`` seconds ago.

    A message can be lost outside the platform's reach (a publish that failed
    after the commit, a broker that lost its data, a delayed retry held by a
    worker that was killed). The database still says ``queued``, so the call
    is sent again; if the first message does arrive after all, the claim makes
    the second a no-op. A call that simply waits behind busy agents gets one
    extra message per period, which its claim also absorbs.
    """
    older_than = settings.MASP_REDISPATCH_AFTER if older_than is None else older_than
    batch_size = batch_size or settings.MASP_SWEEP_BATCH_SIZE
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than)
    with transaction.atomic():
        batch = list(
            Invocation.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("capability", "pinned_agent")
            .filter(status=QUEUED, dispatched_at__lt=cutoff)
            .filter(Q(not_before__isnull=True) | Q(not_before__lt=cutoff))
            .order_by("dispatched_at")[:batch_size]
        )
        for invocation in batch:
            dispatch_again(invocation)
    if batch:
        logger.info("event=invocations_redispatched count=%d older_than=%s", len(batch), older_than)
    return len(batch)


def requeue_running_on(agent_ids: list[int], *, now: datetime) -> int:
    """Put the running calls of agents that went offline back on the queue, for another agent.

    Called inside the stale sweep's transaction, which holds those Agent rows.
    The lost attempt is recorded as ``lost`` and does not count against max_retries; after
    MASP_MAX_LOST_ATTEMPTS lost attempts the call fails (``AgentLost``) instead of taking more agents down.
    """
    running = Invocation.objects.filter(status=RUNNING)
    if not running.exists():  # the common case, answered by the partial index of running calls
        return 0
    batch = list(
        running.select_for_update(of=("self",))
        .select_related("capability", "pinned_agent")
        .filter(agent_id__in=agent_ids)
    )
    for invocation in batch:
        _finish_attempt(
            invocation.pk,
            invocation.attempt,
            Outcome.LOST,
            now,
            error_message="the agent went offline (no heartbeat); re-queued",
        )
        lost = InvocationAttempt.objects.filter(invocation=invocation, outcome=Outcome.LOST).count()
        if lost >= settings.MASP_MAX_LOST_ATTEMPTS:  # it takes its agents down with it: stop passing it on
            invocation.status = InvocationStatus.FAILED
            invocation.finished_at = now
            invocation.error_type = "AgentLost"
            invocation.error_message = f"its agent went offline while running it {lost} times; not re-queued again"
            invocation.save(update_fields=["status", "finished_at", "error_type", "error_message"])
            invocation_finished.send(sender=Invocation, invocation_id=invocation.pk, status=invocation.status)
            _finished(invocation, invocation.status)
            continue
        if invocation.cancel_requested:
            invocation.status = InvocationStatus.CANCELLED
            invocation.finished_at = now
            invocation.save(update_fields=["status", "finished_at"])
            invocation_finished.send(sender=Invocation, invocation_id=invocation.pk, status=invocation.status)
            _finished(invocation, invocation.status)
            continue
        invocation.status = QUEUED
        invocation.agent = None
        invocation.queued_at = now
        invocation.save(update_fields=["status", "agent", "queued_at"])
        dispatch_again(invocation)
    if batch:
        logger.info("event=invocations_requeued count=%d agents=%d", len(batch), len(agent_ids))
    return len(batch)


def waiting_reason(invocation: Invocation) -> str | None:
    """Why a queued invocation waits, in an operator's words (None unless queued)."""
    if invocation.status != QUEUED:
        return None
    now = timezone.now()
    if invocation.not_before and invocation.not_before > now:
        seconds = (invocation.not_before - now).total_seconds()
        return f"retry {invocation.failed_attempts} of {invocation.max_retries} starts in {seconds:.1f} s (backoff)"
    if invocation.pinned_agent_id:
        pinned = invocation.pinned_agent
        if pinned.unregistered_at or pinned.state == AgentState.OFFLINE:
            return f"the pinned agent '{pinned.agent_id}' is offline"
        if pinned.state == AgentState.DRAINING:
            return f"the pinned agent '{pinned.agent_id}' is draining (taking no new calls)"
        return f"waiting for the pinned agent '{pinned.agent_id}' to take it"
    live = Agent.objects.filter(offers__capability_id=invocation.capability_id, unregistered_at__isnull=True).exclude(
        state=AgentState.OFFLINE
    )
    n_live = live.count()
    if n_live == 0:
        return f"no live agent offers '{invocation.capability.name}'"
    taking = live.exclude(state=AgentState.DRAINING)
    if not taking.exists():
        return f"all {n_live} agents that offer '{invocation.capability.name}' are draining"
    taking = taking.exclude(worker_name="")
    if not taking.exists():
        return (
            f"the {n_live} live agent(s) that offer '{invocation.capability.name}' run no worker "
            "(registered over the API, not with run_agent)"
        )
    ahead = (
        Invocation.objects.filter(capability_id=invocation.capability_id, status=QUEUED)
        .filter(
            Q(priority__gt=invocation.priority) | Q(priority=invocation.priority, queued_at__lt=invocation.queued_at)
        )
        .count()
    )
    free = taking.filter(in_flight__lt=F("max_concurrency")).count()
    if free == 0:
        return (
            f"all {taking.count()} agents that offer '{invocation.capability.name}' are busy "
            f"and {ahead} call(s) are ahead of it"
        )
    return f"{ahead} call(s) ahead of it; {free} agent(s) with free capacity should take it shortly"
