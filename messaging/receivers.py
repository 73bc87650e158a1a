"""What the bus does when the registry or Celery says something happened."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("messaging")


def agent_available(sender: Any, agent_pk: int, **kwargs: Any) -> None:
    """An agent registered, revived or is idle again: send its worker what waited meanwhile (sent while
    it was offline, when nothing is published for it). A duplicate of a message already queued claims
    nothing."""
    from django.db.models import F

    from messaging.models import Endpoint, Transport
    from messaging.services import dispatch_waiting

    # Its worker is up (the process that registered it set the endpoint up): a revival, a resume. A new
    # registration (another pid) is a worker about to start, which drains the inbox itself.
    if Endpoint.objects.filter(agent_id=agent_pk, transport=Transport.WORKER, worker_pid=F("agent__pid")).exists():
        try:
            dispatch_waiting(agent_pk)
        except Exception:
            logger.warning("event=dispatch_waiting_failed agent=%s", agent_pk, exc_info=True)


def worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """A Celery worker is ready: if it is an agent's (run_agent), set up its side of the bus."""
    from agents import runtime
    from messaging import worker

    rt = runtime.current()
    if rt is None:
        return
    try:
        worker.start(rt)
    except Exception:
        logger.exception("event=messaging_start_failed agent_id=%s", rt.definition.agent_id)
