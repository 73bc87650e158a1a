"""The HTTP inbox's long poll: take what waits, or block on the agent's wake-up channel until something
arrives (or a retry's backoff ends), holding no database connection while blocked."""

from __future__ import annotations

import time

from django.utils import timezone

from agents.models import Agent
from masplatform import notify
from messaging.models import Delivery, Endpoint, Transport
from messaging.services.delivery import claim_batch, next_due

# a retry due "now" may still be a few ms in the future for the database's clock: never spin on it
MIN_SLEEP = 0.05


def as_http_agent(agent: Agent) -> None:
    """An agent that polls its inbox takes its messages over HTTP: give it an endpoint saying so, unless
    it has one (an SDK worker's stays: its worker records it at each start)."""
    Endpoint.objects.get_or_create(agent=agent, defaults={"transport": Transport.HTTP})


def poll(agent: Agent, *, wait: float, limit: int, visibility: float) -> list[Delivery]:
    """Up to ``limit`` of ``agent``'s waiting deliveries, handed out (``delivered``, visible again after
    ``visibility`` seconds unless acked). With none waiting, block up to ``wait`` seconds on
    ``inbox:<agent_id>`` (published after each send commits) and until the soonest retry is due; no
    polling loop, and ``notify.wait`` hands the database connection back while it blocks."""
    taken: list[Delivery] = []

    def take() -> bool:
        # called by notify.wait once subscribed (so nothing sent meanwhile is missed) and on each wake-up
        if len(taken) < limit:
            taken.extend(claim_batch(agent, limit=limit - len(taken), visibility=visibility))
        return bool(taken)

    if take() or wait <= 0:
        return taken
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        due = next_due(agent)
        if due is not None:
            left = min(left, max(MIN_SLEEP, (due - timezone.now()).total_seconds()))
        if notify.wait(f"inbox:{agent.agent_id}", left, take):
            break
    return taken
