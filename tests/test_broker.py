"""The platform's Redis transport (masplatform/broker.py), on the run's real Redis (embedded or server):
calls' messages are acknowledged in memory, other tasks' through kombu's unacked index, and a message
handed back (or left unacknowledged at close) returns to its queue either way."""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu import Connection, Consumer, Producer

from agents import dispatch
from agents.dispatch import INVOKE_TASK
from masplatform import broker
from masplatform.celery import app

pytestmark = pytest.mark.skipif(not dispatch.broker_is_redis(), reason="the platform's transport serves Redis brokers")


@pytest.fixture
def server(broker_url):
    client = redis.Redis.from_url(broker_url.replace("redis+socket://", "unix://"))
    yield client
    client.close()


@pytest.fixture
def queue_name():
    return f"test.broker.{uuid.uuid4().hex[:8]}"


def _publish(conn: Connection, queue_name: str, task: str, n: int = 1) -> None:
    producer = Producer(conn.default_channel)
    for i in range(n):
        producer.publish({"i": i}, routing_key=queue_name, headers={"task": task}, declare=[dispatch.queue(queue_name)])


def _receive(conn: Connection, queue_name: str, n: int) -> list:
    received: list = []
    with Consumer(conn.default_channel, [dispatch.queue(queue_name)], callbacks=[lambda body, m: received.append(m)]):
        conn.default_channel.basic_qos(0, n, False)
        while len(received) < n:
            conn.drain_events(timeout=5)
    return received


def _waiting(server, queue_name: str) -> int:
    return sum(server.llen(key) for key in server.keys(f"{queue_name}*"))


def test_the_platform_app_uses_the_platform_transport(broker_url):
    with app.connection_for_write() as conn:
        assert type(conn.transport) is broker.Transport


def test_calls_messages_skip_the_unacked_index_other_tasks_keep_it(broker_url, server, queue_name):
    before = set(server.hkeys("unacked")), set(server.zrange("unacked_index", 0, -1))
    with app.connection_for_write() as conn:
        _publish(conn, queue_name, INVOKE_TASK, 2)
        _publish(conn, queue_name, "agents.tasks.sweep_stale_agents")
        messages = _receive(conn, queue_name, 3)
        calls = [m for m in messages if m.headers["task"] == INVOKE_TASK]
        (other,) = [m for m in messages if m.headers["task"] != INVOKE_TASK]
        # only the other task's message is in kombu's index (a hash entry and a sorted-set member)
        tag = other.delivery_tag.encode()
        assert set(server.hkeys("unacked")) - before[0] == {tag}
        assert set(server.zrange("unacked_index", 0, -1)) - before[1] == {tag}
        qos = conn.default_channel.qos
        assert not qos.can_consume()  # prefetch 3, three unacknowledged: the limit holds for all of them
        for message in messages:
            message.ack()
        assert set(server.hkeys("unacked")) == before[0] and set(server.zrange("unacked_index", 0, -1)) == before[1]
        assert qos.can_consume() and _waiting(server, queue_name) == 0
        assert all(m.acknowledged for m in calls)


def test_a_call_message_handed_back_returns_to_its_queue(broker_url, server, queue_name):
    with app.connection_for_write() as conn:
        _publish(conn, queue_name, INVOKE_TASK)
        (message,) = _receive(conn, queue_name, 1)
        message.reject(requeue=True)  # what Celery does when a pool process dies (reject_on_worker_lost)
        assert _waiting(server, queue_name) == 1 and message.delivery_tag.encode() not in server.hkeys("unacked")
        (again,) = _receive(conn, queue_name, 1)
        assert again.payload == message.payload and again.delivery_info["redelivered"] is True
        again.ack()
        assert _waiting(server, queue_name) == 0


def test_prefetched_messages_go_back_to_their_queue_when_the_channel_closes(broker_url, server, queue_name):
    conn = app.connection_for_write()
    _publish(conn, queue_name, INVOKE_TASK)
    _publish(conn, queue_name, "agents.tasks.sweep_stale_agents")
    tags = {m.delivery_tag.encode() for m in _receive(conn, queue_name, 2)}
    assert _waiting(server, queue_name) == 0
    conn.close()  # as a warm shutdown leaves the messages a worker had prefetched
    assert _waiting(server, queue_name) == 2
    assert not tags & set(server.hkeys("unacked"))


def test_one_redis_client_per_channel_and_pool(broker_url):
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        channel._disconnect_pools()  # as after a fork: a new pool, and a client of its own
        assert channel._create_client() is not first


def test_celery_options_by_broker_url():
    assert broker.INVOKE_TASK == INVOKE_TASK  # the task whose messages the transport acknowledges in memory
    assert broker.celery_options("redis://h:6379/1") == {"broker_transport": "masplatform.broker:Transport"}
    assert broker.celery_options("redis+socket:///v/redis.sock") == {"broker_url": "masp-redis+socket:///v/redis.sock"}
    assert broker.celery_options("rediss://h:6380/0") == {}
    assert broker.celery_options("amqp://guest@h//") == {}
