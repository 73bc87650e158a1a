"""Cross-process wake-ups ("invocation X finished") so that waiters block instead of polling.

On a Redis broker (the embedded one or a server) this is Redis pub/sub on the
broker's server; on other brokers (RabbitMQ) a kombu topic exchange with one
exclusive, auto-deleted queue per waiter. A notification is only a hint:
waiters re-read the database, so a lost one costs at most the wait's timeout.

A waiter hands its thread's PostgreSQL connection back before it blocks (to the web
process's pool, or closes it): a long poll must not hold one of a bounded number
of connections for up to 30 s. Each check of ``done()`` takes one again briefly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from urllib.parse import urlparse

from django.conf import settings

logger = logging.getLogger("masplatform.notify")
EXCHANGE = "masp.notify"


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://"))


@lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    if url == settings.EMBEDDED_BROKER_URL:
        from masplatform import embedded_broker

        embedded_broker.ensure_running(settings.VAR_DIR)
    if url.startswith("redis+socket://"):
        return redis.Redis(unix_socket_path=urlparse(url).path, socket_timeout=5)
    return redis.Redis.from_url(url, socket_timeout=5)


_local = threading.local()


def _publisher(url: str):
    """This thread's client for PUBLISH, on a connection of its own: no pool checkout per message (which
    polls the socket, takes a lock and records metrics: about a third of a publish's CPU in a worker).
    Keyed by process too: a pool process must not write to its parent's socket."""
    import redis

    key = (os.getpid(), url)
    client = getattr(_local, "publishers", {}).get(key)
    if client is None:
        client = redis.Redis(connection_pool=_redis(url).connection_pool, single_connection_client=True)
        _local.publishers = {key: client}
    return client


def _channel(name: str) -> str:
    return f"masp:{name}"


def _publish_redis(url: str, channel: str, message: str) -> None:
    """PUBLISH on this thread's own connection, without redis-py's retry and response-callback layers (a
    third of a PUBLISH's CPU in a worker). A connection the server closed (a restart, an idle timeout)
    fails on first use: then once more on a new connection, as redis-py's own retry would."""
    from redis.exceptions import ConnectionError, TimeoutError

    for last_try in (False, True):
        try:
            connection = _publisher(url).connection
            connection.send_command("PUBLISH", channel, message)
            connection.read_response()
            return
        except Exception as exc:
            _drop_publisher()
            if last_try or not isinstance(exc, ConnectionError | TimeoutError):
                raise


def _drop_publisher() -> None:
    for client in getattr(_local, "publishers", {}).values():
        try:
            client.close()
        except Exception:
            pass
    _local.publishers = {}


def publish(name: str, message: str = "") -> None:
    """Wake whoever waits on ``name``. Never raises: a lost wake-up only delays a waiter."""
    url = settings.CELERY_BROKER_URL
    try:
        if _is_redis(url):
            _publish_redis(url, _channel(name), message)
        else:
            from kombu import Connection, Exchange

            with Connection(url, connect_timeout=5) as conn:
                conn.Producer().publish(
                    message,
                    exchange=Exchange(EXCHANGE, "topic", durable=False),
                    routing_key=name,
                    declare=[Exchange(EXCHANGE, "topic", durable=False)],
                )
    except Exception:
        logger.warning("event=notify_failed channel=%s", name, exc_info=True)


def _release_database_connection() -> None:
    """In a web process, give the thread's connection back to the pool before sleeping, unless a
    transaction is open on it: a long poll must not hold one of a bounded number. Elsewhere (an agent's
    worker waiting on a request, a script) the process keeps its one connection: closing it would only
    cost a new connection after each wait. An SQLite connection is a file handle, which costs nobody else."""
    from django.conf import settings
    from django.db import connection

    if settings.MASP_WEB_PROCESS and connection.vendor != "sqlite" and not connection.in_atomic_block:
        connection.close()


def wait(name: str, timeout: float, done: Callable[[], bool], *, notified_means_done: bool = False) -> bool:
    """Block until ``done()`` is true or ``timeout`` seconds pass; returns ``done()``.

    Subscribes first, then checks ``done()``, then sleeps on the subscription,
    so a notification sent between the check and the sleep is not missed;
    ``done()`` is checked again when a notification for ``name`` arrives, or,
    with ``notified_means_done`` (the caller reads the state afterwards anyway,
    and every notification on ``name`` is sent after what it announces has
    committed), the notification itself ends the wait with True. If the
    broker cannot be reached, it falls back to checking ``done()`` twice a
    second (and logs it), rather than failing the request.
    """
    if timeout <= 0:
        return done()
    deadline = time.monotonic() + timeout
    try:
        return _wait(name, deadline, done, notified_means_done)
    except Exception:
        logger.warning("event=notify_unavailable channel=%s fallback=poll", name, exc_info=True)
        while not done() and time.monotonic() < deadline:
            _release_database_connection()
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return done()


class Waiter:
    """A subscription made before what it waits for can happen (``subscribed``)."""

    def __init__(self, name: str, channel: bytes | None, pubsub) -> None:
        self.name, self._channel, self._pubsub = name, channel, pubsub

    def wait(self, timeout: float, done: Callable[[], bool]) -> bool:
        """Block until the notification on this name or ``timeout`` seconds; True if notified, else
        ``done()``. Unlike ``wait``, ``done()`` is not asked first: the caller subscribed before the
        event could happen, so it cannot have been missed. It is asked after each 5 s without a
        message (a lost wake-up costs at most that) and at the deadline. On a broker without Redis
        pub/sub, and if the broker could not be reached when subscribing, this is ``wait`` itself."""
        if self._pubsub is None:
            return wait(self.name, timeout, done, notified_means_done=True)
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                _release_database_connection()
                message = self._pubsub.get_message(timeout=min(left, 5.0))
                if message is None:
                    if result := done():  # every 5 s without a message: a lost wake-up costs at most that
                        return result
                    continue
                if message["type"] == "message" and message["channel"] == self._channel:
                    return True
        except Exception:
            logger.warning("event=notify_unavailable channel=%s fallback=poll", self.name, exc_info=True)
            _drop_subscriber()
            self._pubsub = None
            return wait(self.name, max(0.0, deadline - time.monotonic()), done)
        return done()


@contextlib.contextmanager
def subscribed(name: str) -> Iterator[Waiter]:
    """Subscribe to ``name`` now, for a wait on it later (``Waiter.wait``): for a caller that starts the
    work it will wait for after subscribing, and so needs no check that it is already done (a query, on
    the path of every ``?wait=``). On Redis, SUBSCRIBE is sent here and its confirmation read while
    waiting; on other brokers the wait subscribes then checks, as ``wait`` does."""
    url = settings.CELERY_BROKER_URL
    pubsub = channel = None
    if _is_redis(url):
        channel = _channel(name).encode()
        try:
            pubsub = _subscriber(url)
            pubsub.subscribe(channel)
        except Exception:
            logger.warning("event=notify_unavailable channel=%s fallback=poll", name, exc_info=True)
            _drop_subscriber()
            pubsub = None
    waiter = Waiter(name, channel, pubsub)
    try:
        yield waiter
    finally:
        if waiter._pubsub is not None:
            try:
                waiter._pubsub.unsubscribe(channel)
            except Exception:
                _drop_subscriber()


# Per thread: one Redis pub/sub connection, kept between waits (subscribing on a new connection
# each time would cost a connect and its handshake per wait).
_subscribers = threading.local()


def _subscriber(url: str):
    pubsub = getattr(_subscribers, "pubsub", None)
    if pubsub is None or _subscribers.url != url:
        pubsub = _redis(url).pubsub()
        _subscribers.pubsub, _subscribers.url = pubsub, url
    return pubsub


def _drop_subscriber() -> None:
    pubsub = getattr(_subscribers, "pubsub", None)
    _subscribers.pubsub = None
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:
            pass


def _wait(name: str, deadline: float, done: Callable[[], bool], notified_means_done: bool = False) -> bool:
    url = settings.CELERY_BROKER_URL
    if _is_redis(url):
        pubsub = _subscriber(url)
        channel = _channel(name).encode()
        try:
            pubsub.subscribe(channel)
            try:
                while not done():
                    # sleep until a notification for this channel (not the confirmations of
                    # (un)subscribing, nor a late one for an earlier wait of this thread) or the deadline
                    while True:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return done()
                        _release_database_connection()
                        message = pubsub.get_message(timeout=min(left, 5.0))
                        if message is None:
                            break
                        if message["type"] == "message" and message["channel"] == channel:
                            if notified_means_done:
                                return True
                            break
            finally:
                pubsub.unsubscribe(channel)
        except Exception:
            _drop_subscriber()
            raise
        return done()
    from kombu import Connection, Exchange, Queue

    with Connection(url, connect_timeout=5) as conn:
        q = Queue(
            exclusive=True, auto_delete=True, exchange=Exchange(EXCHANGE, "topic", durable=False), routing_key=name
        )
        notified = []
        with conn.Consumer(q, callbacks=[lambda body, msg: (msg.ack(), notified.append(body))]):
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    _release_database_connection()
                    conn.drain_events(timeout=min(left, 5.0))
                except TimeoutError:
                    pass
                if notified and notified_means_done:
                    return True
    return done()
