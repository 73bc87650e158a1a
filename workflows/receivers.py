"""Signal receivers: how the agents app's events reach the workflow engine."""

from __future__ import annotations

import logging
from typing import Any

from django.db import OperationalError, transaction

from workflows import services

logger = logging.getLogger("workflows")


def invocation_finished(
    sender: Any, invocation_id: Any, status: str, requested_by: str | None = None, **kwargs: Any
) -> None:
    # Inside the transaction that records the call. Calls that no workflow asked for are skipped
    # without a query. The engine's step runs in a savepoint: if it fails, the step alone is
    # rolled back, the call's outcome is still recorded, and the execution is failed with the
    # error (a bug in one workflow must not block recording calls). A database conflict
    # (deadlock, serialization failure) is not a bug: it aborts the recording, which is retried.
    execution_id = services.execution_of_requester(requested_by)
    if requested_by is not None and execution_id is None:
        return
    try:
        with transaction.atomic():
            services.on_invocation_finished(invocation_id, status, execution_id=execution_id)
    except OperationalError:
        raise
    except Exception as exc:
        logger.exception("event=engine_step_failed invocation=%s", invocation_id)
        services.fail_execution_of(invocation_id, f"the workflow engine failed on this task's outcome: {exc!r}")


def agents_offline(sender: Any, agent_pks: list[int], **kwargs: Any) -> None:
    try:
        services.on_agents_offline(agent_pks)
    except Exception:  # after the registry's commit: the beat sweep re-pins what this missed
        logger.exception("event=repin_failed agents=%d", len(agent_pks))


def agent_available(sender: Any, agent_pk: int, **kwargs: Any) -> None:
    try:
        services.on_agent_available(agent_pk)
    except Exception:
        logger.exception("event=agent_available_failed agent=%s", agent_pk)
