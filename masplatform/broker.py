"""The Redis transport of the platform's Celery app: kombu's, with two changes measured on the call path.

1. One synchronous ``redis.Redis`` client per channel. kombu's channel builds a new one for each
   publish, each acknowledgement and each update of its unacknowledged-message index
   (``conn_or_acquire``); with redis-py 8 each costs about 50 µs (it copies ~170 response callbacks
   into a new dictionary), about three per call. The clients share the channel's connection pool
   either way, so one kept per channel (and per pool: a pool replaced after a fork or an error gets a
   new client) behaves the same.

2. The messages of capability calls (``agents.tasks.run_invocation``) and of the bus's deliveries
   (``messaging.tasks.deliver``) are acknowledged in the
   worker's memory only. kombu emulates acknowledgements on Redis by copying each delivered message
   into a hash and a sorted set (one round trip, a MULTI of four commands) and deleting it from both
   at the ack (another), so that ``restore_visible`` can put it back on its queue after the
   visibility timeout (an hour by default) if the worker vanished. For a call, the database already
   does that, sooner and without re-running long calls: a call whose worker vanished before claiming
   it is still ``queued`` and ``redispatch_waiting`` publishes it again (after
   ``MASP_REDISPATCH_AFTER``, 300 s by default); one claimed by a worker that vanished is re-queued by
   the stale sweep or timed out by the deadline sweep; and the claim makes any late duplicate
   harmless. So the index bought nothing for calls but two Redis round trips per call in the worker's
   event loop. Prefetch limits still hold (kombu counts unacknowledged messages in memory), and a
   message the worker hands back (``reject(requeue=True)``, a warm shutdown with messages still
   prefetched) is pushed back on its queue from memory. Every other task (the sweeps, workflow
   tasks) keeps kombu's acknowledgement emulation unchanged.

Wire format and keys are kombu's: workers on this transport and on kombu's own share queues.

Celery uses it for the broker URLs ``redis://`` and ``redis+socket://`` (the embedded broker), through
``celery_config``; ``rediss://`` (TLS) keeps kombu's transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual

INVOKE_TASK = "agents.tasks.run_invocation"  # agents.dispatch.INVOKE_TASK (masplatform does not import agents)
# The bus's deliveries are recovered by the database in the same way: one whose worker vanished before
# claiming it is still waiting (sent again by the agent's next start, or by the sweep after
# MASP_MESSAGE_REDISPATCH_AFTER); one claimed is handed out again after its visibility deadline.
DELIVER_TASK = "messaging.tasks.deliver"
ACKED_IN_MEMORY = frozenset({INVOKE_TASK, DELIVER_TASK})
# For the embedded broker's URL: kombu takes the transport of a ``<transport>+socket://`` URL from its
# aliases (Celery's ``broker_transport`` does not apply to such URLs).
ALIAS = "masp-redis"
TRANSPORT_ALIASES.setdefault(ALIAS, "masplatform.broker:Transport")


def _acked_in_memory(message: Any) -> bool:
    headers = getattr(message, "headers", None) or {}
    return headers.get("task") in ACKED_IN_MEMORY


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, but calls' messages are tracked in memory only (the module's point 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_memory: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        if _acked_in_memory(message):
            self._in_memory.add(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in self._in_memory:
            self._in_memory.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if delivery_tag not in self._in_memory:
            super().reject(delivery_tag, requeue=requeue)
            return
        if requeue:
            self.channel._restore_from_memory(self._delivered[delivery_tag], leftmost=True)
        self._in_memory.discard(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> None:
        """Put every delivered, unacknowledged message back on its queue (at shutdown)."""
        with self.channel.conn_or_acquire(client) as client:
            for tag, message in list(self._delivered.items()):
                if tag in self._in_memory:
                    self.channel._restore_from_memory(message, client=client)
                else:
                    self.restore_by_tag(tag, client=client)
        self._delivered.clear()
        self._in_memory.clear()


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the event loop's client (BRPOP, LISTEN): kombu keeps one already
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get("_masp_client")
        if cached is None or cached[0] is not pool:
            cached = self.__dict__["_masp_client"] = (pool, super()._create_client())
        return cached[1]

    def _restore_from_memory(self, message: Any, client: Any = None, leftmost: bool = False) -> None:
        delivery = message.delivery_info
        with self.conn_or_acquire(client) as client:
            self._do_restore_message(
                dict(message._raw), delivery["exchange"], delivery["routing_key"], client, leftmost
            )


class Transport(kombu_redis.Transport):
    Channel = Channel


def celery_options(broker_url: str) -> dict[str, str]:
    """The Celery settings that put the platform's app on this transport for ``broker_url``: ``{}``
    for a broker it does not serve (RabbitMQ, Redis over TLS)."""
    if broker_url.startswith("redis://"):
        return {"broker_transport": "masplatform.broker:Transport"}
    if broker_url.startswith("redis+socket://"):
        return {"broker_url": f"{ALIAS}+socket://{broker_url[len('redis+socket://') :]}"}
    return {}
