"""Retention of the agents app's history: finished invocations (with their attempts), agents long gone,
and agent events. Run by beat (``agents.tasks``; schedules in ``agents.schedules``).

What goes, and what never does:

- An invocation goes once it is finished (``FINISHED``: succeeded, failed, timed out, cancelled) and
  finished before ``now - MASP_INVOCATION_RETENTION_DAYS``; queued and running ones never do. Its
  attempts go with it. The agents' call counters (``AgentCallCounter``) are totals kept apart from the
  attempts, so they do not change.
- An invocation that a row of another app refers to (today: a workflow's ``TaskCall``) is not this
  purge's: it belongs to that app's retention, which deletes it with its owner through
  ``delete_finished_invocations`` (a finished workflow execution takes its calls along). This app
  knows no higher app: it finds such references from the model's reverse relations, so no delete
  here cascades into another app's rows.
- An agent goes once unregistered (or offline) for ``MASP_AGENT_RETENTION_DAYS``, unless a queued or
  running call still names it (as its agent or its pinned agent): deleting it would set those to
  NULL, and a pinned call would lose its pin. Its events, offers and counters go with it; its
  finished calls and attempts stay (their agent becomes NULL).
- Events go after ``MASP_EVENT_RETENTION_DAYS``.

Each batch (``MASP_RETENTION_BATCH_SIZE`` rows) is its own short transaction: the rows are locked
(``SKIP LOCKED`` where the database has it, so a batch never waits on a call being recorded), their
condition is checked again under the lock, then they are deleted. Lock order: invocations, then
attempts (the same order as the recording of an outcome).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.models import (
    Agent,
    AgentCapability,
    AgentEvent,
    AgentState,
    Invocation,
    InvocationAttempt,
    InvocationStatus,
)
from agents.models.invocation import FINISHED

logger = logging.getLogger("agents.retention")

UNFINISHED = (InvocationStatus.QUEUED, InvocationStatus.RUNNING)


def _batch_size(batch_size: int | None) -> int:
    return max(1, batch_size or settings.MASP_RETENTION_BATCH_SIZE)


def _locked(queryset: QuerySet) -> QuerySet:
    # SQLite has no row locks (its writer lock serialises the batch)
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def _held_elsewhere() -> Q:
    """Invocations that a row of another app's model refers to (their owner's retention deletes them)."""
    held = Q()
    for relation in Invocation._meta.related_objects:
        if relation.related_model is InvocationAttempt:
            continue
        held |= Q(**{f"{relation.name}__isnull": False})
    return held


def finished_before(cutoff: datetime) -> QuerySet[Invocation]:
    """Finished invocations that finished before ``cutoff`` (by the created-at index: a call finished
    before the cutoff was created before it)."""
    return Invocation.objects.filter(status__in=FINISHED, created_at__lt=cutoff, finished_at__lt=cutoff)


def purge_invocations(*, batch_size: int | None = None, now: datetime | None = None) -> int:
    """Delete the standalone invocations finished past ``MASP_INVOCATION_RETENTION_DAYS``, with their
    attempts, in batches; returns how many invocations went. Idempotent; safe beside running workers."""
    size = _batch_size(batch_size)
    cutoff = (now or timezone.now()) - timedelta(days=settings.MASP_INVOCATION_RETENTION_DAYS)
    held = _held_elsewhere()
    candidates = finished_before(cutoff)
    if held:
        candidates = candidates.exclude(held)
    total = 0
    while True:
        with transaction.atomic():
            ids = list(_locked(candidates.order_by("created_at")).values_list("pk", flat=True)[:size])
            if not ids:
                break
            total += _delete_invocations(ids)
        if len(ids) < size:
            break
    if total:
        logger.info("event=invocations_purged invocations=%d cutoff=%s", total, cutoff.isoformat())
    return total


def delete_finished_invocations(invocation_ids: Iterable[Any]) -> int:
    """Delete those of ``invocation_ids`` that are finished, with their attempts, in the caller's
    transaction (another app's retention, after deleting its own rows that refer to them); unfinished
    ones stay. Returns how many went."""
    ids = list(invocation_ids)
    if not ids:
        return 0
    ids = list(_locked(Invocation.objects.filter(pk__in=ids, status__in=FINISHED)).values_list("pk", flat=True))
    return _delete_invocations(ids)


def _delete_invocations(ids: list[Any]) -> int:
    if not ids:
        return 0
    # the attempts go by one DELETE (Django's collector: no signals, nothing refers to an attempt)
    deleted = Invocation.objects.filter(pk__in=ids).delete()[1]
    return deleted.get(Invocation._meta.label, 0)


def purge_history(*, batch_size: int | None = None, now: datetime | None = None) -> dict[str, int]:
    """Delete agents unregistered (or offline) for longer than the agent retention, unless a queued or
    running call still names them, and events older than the event retention."""
    size = _batch_size(batch_size)
    now = now or timezone.now()
    agent_cutoff = now - timedelta(days=settings.MASP_AGENT_RETENTION_DAYS)
    event_cutoff = now - timedelta(days=settings.MASP_EVENT_RETENTION_DAYS)
    gone = (
        Agent.objects.filter(
            Q(unregistered_at__lt=agent_cutoff) | Q(state=AgentState.OFFLINE, state_changed_at__lt=agent_cutoff)
        )
        .exclude(invocations__status__in=UNFINISHED)
        .exclude(pinned_invocations__status__in=UNFINISHED)
    )
    purged = {"agents": _delete_in_batches(gone, size), "events": 0}
    purged["events"] = _delete_in_batches(AgentEvent.objects.filter(at__lt=event_cutoff), size)
    if purged["agents"] or purged["events"]:
        logger.info("event=history_purged agents=%d events=%d", purged["agents"], purged["events"])
    return purged


def _delete_in_batches(queryset: QuerySet, batch_size: int) -> int:
    """Delete the rows of ``queryset`` in batches, re-checking each batch's condition under a lock
    (an agent revived or re-registered meanwhile no longer matches and stays)."""
    model = queryset.model
    total = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return total
        with transaction.atomic():
            ids = list(queryset.filter(pk__in=ids).select_for_update().values_list("pk", flat=True))
            if model is Agent:
                AgentEvent.objects.filter(agent_id__in=ids).delete()
                AgentCapability.objects.filter(agent_id__in=ids).delete()
                Agent.tags.through.objects.filter(agent_id__in=ids).delete()
            model.objects.filter(pk__in=ids).delete()
        total += len(ids)
        if len(ids) < batch_size:
            return total
