"""The seed's subscriber (Exercise 2): records the ``data_update`` messages of the topics it follows.

The topics come from ``MASP_SUBSCRIBER_TOPICS`` (comma-separated) in the agent's environment, so that
one module runs as several subscribers::

    MASP_SUBSCRIBER_TOPICS=weather python manage.py run_agent agents.examples.subscriber --agent-id weather_sub
    MASP_SUBSCRIBER_TOPICS=weather,stocks python manage.py run_agent agents.examples.subscriber --agent-id multi_sub

Each topic ``t`` becomes the subscription ``t.#`` (``t`` and everything below it, e.g. ``weather.nyc``)
for events whose content has ``"type": "data_update"``: the platform, not the handler, picks what
arrives (the seed's subscribers received everything and checked the topic themselves).

What it received is kept in the worker process's memory (run it with ``--pool threads``, as the demo
does, so that every handler shares it), once per message id (delivery is at least once: a handler
that ran but whose ack was lost runs again), and a request ``{"type": "get_received"}`` answers with it.
A message sent while the worker is down waits in its inbox and is handled when it comes back.
"""

from __future__ import annotations

import os
import threading

from django.utils import timezone

from agents.examples._common import request_delay
from agents.sdk import AgentDefinition

agent = AgentDefinition("subscriber", name="Subscriber", tags=("subscriber",), metadata={"exercise": 2})
TOPICS = [t.strip() for t in os.environ.get("MASP_SUBSCRIBER_TOPICS", "").split(",") if t.strip()]
for topic in TOPICS:
    agent.subscribe(f"{topic}.#", types=["event"], where={"type": "data_update"})

STARTED_AT = timezone.now().isoformat()
_lock = threading.Lock()
_received: list[dict] = []
_seen: set[str] = set()  # message ids: delivery is at least once, so a message may come twice


@agent.on("data_update")
def data_update(message, ctx):
    with _lock:
        if message.id in _seen:
            return
        _seen.add(message.id)
        _received.append(
            {"topic": message.topic, "sender": message.sender, "sequence": message.content.get("sequence")}
        )
    ctx.logger.info(
        "event=data_update_received agent_id=%s topic=%s sender=%s sequence=%s",
        ctx.agent_id,
        message.topic,
        message.sender,
        message.content.get("sequence"),
    )
    request_delay()  # the seed's processing of the data


@agent.on("get_received")
def get_received(message, ctx):
    """How many messages this worker process received since it started, per topic, with their sequences."""
    with _lock:
        received = list(_received)
    by_topic: dict[str, list] = {}
    for item in received:
        by_topic.setdefault(item["topic"], []).append(item["sequence"])
    return {
        "type": "received",
        "agent_id": ctx.agent_id,
        "topics": TOPICS,
        "count": len(received),
        "sequences": {t: sorted(s, key=_order) for t, s in sorted(by_topic.items())},
        "since": STARTED_AT,
    }


def _order(sequence: object) -> tuple:
    """Numbers in order, then anything else a publisher called a sequence (as text)."""
    if isinstance(sequence, int | float) and not isinstance(sequence, bool):
        return (0, sequence, "")
    return (1, 0, str(sequence))
