"""Retention of workflow executions: a finished execution goes, with its task runs and its calls, once
it finished more than ``MASP_EXECUTION_RETENTION_DAYS`` ago. Run by beat (``workflows.tasks``).

The calls (invocations) of an execution belong to it: the agents app's invocation purge leaves every
invocation that a ``TaskCall`` refers to (``agents.services.retention``), and this purge deletes them
with their execution, through the agents app's service (``delete_finished_invocations``), so a call
that a pending, running or paused execution needs is never deleted, and no app writes another's rows.

An execution goes only when it is finished and none of its calls is unfinished (a call cancelled by
its execution's end may still be running on a worker until it notices). Each batch
(``MASP_EXECUTION_PURGE_BATCH_SIZE`` executions, with all their tasks and calls) is one short
transaction. Lock order: executions, then invocations; the engine takes them the other way
round (a call's outcome, then its execution), so both locks here skip what is locked instead of
waiting (``SKIP LOCKED``): a skipped execution waits for the next batch, a skipped invocation loses its
execution and becomes a standalone one, which the invocation retention purges later.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents import services as agent_services
from agents.models import InvocationStatus
from workflows.models import EXECUTION_ACTIVE, Execution, TaskCall

logger = logging.getLogger("workflows.retention")


def purgeable(cutoff: datetime) -> QuerySet[Execution]:
    """Finished executions that finished before ``cutoff`` and have no unfinished call."""
    unfinished = (InvocationStatus.QUEUED, InvocationStatus.RUNNING)
    return (
        Execution.objects.exclude(status__in=EXECUTION_ACTIVE)
        .filter(created_at__lt=cutoff, finished_at__lt=cutoff)
        .exclude(task_runs__calls__invocation__status__in=unfinished)
    )


def purge_executions(*, batch_size: int | None = None, now: datetime | None = None) -> dict[str, int]:
    """Delete the finished executions past their retention with their task runs and calls, in batches;
    returns how many executions and invocations went. Idempotent; safe beside running workflows."""
    size = max(1, batch_size or settings.MASP_EXECUTION_PURGE_BATCH_SIZE)
    cutoff = (now or timezone.now()) - timedelta(days=settings.MASP_EXECUTION_RETENTION_DAYS)
    purged = {"executions": 0, "invocations": 0}
    while True:
        with transaction.atomic():
            batch = purgeable(cutoff).order_by("created_at")
            if connection.features.has_select_for_update_skip_locked:
                batch = batch.select_for_update(skip_locked=True, of=("self",))
            ids = list(batch.values_list("pk", flat=True)[:size])
            if not ids:
                break
            calls = list(TaskCall.objects.filter(task_run__execution_id__in=ids).values_list("pk", flat=True))
            Execution.objects.filter(pk__in=ids).delete()  # its task runs and task calls cascade
            purged["invocations"] += agent_services.delete_finished_invocations(calls)
            purged["executions"] += len(ids)
        if len(ids) < size:
            break
    if purged["executions"]:
        logger.info(
            "event=executions_purged executions=%d invocations=%d cutoff=%s",
            purged["executions"],
            purged["invocations"],
            cutoff.isoformat(),
        )
    return purged
