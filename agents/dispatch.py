"""Routing of invocations to Celery queues, and the broker-specific meaning of priority.

One queue per capability (``cap.<name>``) and one per agent (``agent.<agent_id>``,
for pinned calls). Every worker of an agent consumes the queues of its
capabilities and its own, with prefetch 1: competing consumers send each call
to an agent with free capacity, with no central dispatcher.

Priority is 0 (lowest) to 9 (highest) in the API. RabbitMQ honours it per
queue (declared with ``x-max-priority`` 9; higher is first). Celery's Redis
transport emulates it with one list per level, where 0 is first, so the
platform sends ``9 - priority`` there (``priority_steps`` 0-9). Priority
orders the calls still waiting in a queue; a call already prefetched by a
worker (one per worker process) is not overtaken.
"""

from __future__ import annotations

import functools

from django.conf import settings
from kombu import Queue

MAX_PRIORITY = 9
INVOKE_TASK = "agents.tasks.run_invocation"


def capability_queue_name(capability: str) -> str:
    return f"cap.{capability}"


def agent_queue_name(agent_id: str) -> str:
    return f"agent.{agent_id}"


@functools.lru_cache(maxsize=1024)
def queue(name: str) -> Queue:
    """The queue as every publisher and consumer declares it (the arguments must match on RabbitMQ).
    One object per name and process: kombu binds a copy of it to each channel, never the object itself."""
    return Queue(name, routing_key=name, queue_arguments={"x-max-priority": MAX_PRIORITY})


def broker_is_redis() -> bool:
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "redis+socket://"))


def publish_declares() -> list[Queue] | None:
    """The ``declare`` option of a call's message: None (declare its queue: on RabbitMQ a message for a
    queue that does not exist yet is dropped) or, on Redis, where a queue is a list that its first
    message creates, ``[]``: nothing to declare (kombu would copy and bind the queue on each publish)."""
    return [] if broker_is_redis() else None


def broker_priority(priority: int) -> int:
    return MAX_PRIORITY - priority if broker_is_redis() else priority
