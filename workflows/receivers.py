"""Signal receivers: how the agents app's events reach the workflow engine."""

from __future__ import annotations

import logging
from typing import Any

from workflows import services

logger = logging.getLogger("workflows")


def invocation_finished(sender: Any, invocation_id: Any, status: str, **kwargs: Any) -> None:
    # Inside the recording transaction: an error here rolls the recording back, and the
    # worker's message is redelivered (acks_late), so the step is retried rather than lost.
    services.on_invocation_finished(invocation_id, status)


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
