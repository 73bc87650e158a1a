"""The HTTP inbox on a real web server (gunicorn, as `make run` serves): the long poll returns as soon as
a message is sent, ack once (twice is a 409), nack retried after its backoff then dead, the visibility
deadline, and a request answered by an HTTP agent's ack reaching a `POST /api/messages/?wait=` caller."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlparse

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from messaging import services
from messaging.models import Delivery, DeliveryStatus, Endpoint, Message, Transport
from tests.factories import AgentFactory, token_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BACKOFF = 0.5


def call(base: str, method: str, path: str, auth: str, body: dict | None = None) -> tuple[int, dict]:
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


def agent_auth(agent_id: str) -> str:
    return f"Agent {token_for(agent_id)}"


class Background(threading.Thread):
    """One request in a thread of its own; ``result`` is (status, body), ``elapsed`` its seconds."""

    def __init__(self, *args) -> None:
        super().__init__(daemon=True)
        self.args, self.result, self.elapsed = args, None, None

    def run(self) -> None:
        started = time.monotonic()
        self.result = call(*self.args)
        self.elapsed = time.monotonic() - started


@pytest.fixture
def web(processes):
    return processes.web(workers=1, threads=8, MASP_MESSAGE_MAX_ATTEMPTS="2", MASP_MESSAGE_RETRY_BACKOFF=str(BACKOFF))


def test_the_long_poll_returns_as_soon_as_a_message_is_sent_and_an_ack_counts_once(web):
    agent = AgentFactory(agent_id="http-agent")
    sender = AgentFactory(agent_id="sender")
    poll = Background(web, "GET", "/api/agents/http-agent/inbox/?wait=20", agent_auth("http-agent"))
    poll.start()
    time.sleep(1.5)  # the poll is blocked by now
    assert poll.is_alive()
    message = services.send(services.Sender.of_agent(sender), {"type": "hello", "n": 1}, to="http-agent")
    poll.join(20)
    status, body = poll.result
    assert status == 200, body
    assert poll.elapsed < 6, f"the poll returned after {poll.elapsed:.1f} s of its 20"
    [taken] = body["deliveries"]
    assert taken["message"]["id"] == str(message.pk) and taken["message"]["sender"] == "sender"
    assert taken["attempt"] == 1 and taken["visible_at"]
    assert Endpoint.objects.get(agent=agent).transport == Transport.HTTP
    assert Delivery.objects.get().status == DeliveryStatus.DELIVERED

    path = f"/api/agents/http-agent/inbox/{taken['id']}/ack/"
    status, acked = call(web, "POST", path, agent_auth("http-agent"), {})
    assert status == 200 and acked["status"] == "acked" and acked["acked_at"], acked
    status, again = call(web, "POST", path, agent_auth("http-agent"), {})
    assert status == 409 and "acked" in again["detail"]
    # nothing more to take: an empty inbox answers at once without wait
    status, empty = call(web, "GET", "/api/agents/http-agent/inbox/", agent_auth("http-agent"))
    assert status == 200 and empty == {"deliveries": []}
    # another agent's token reads nothing of it
    status, _ = call(web, "GET", "/api/agents/http-agent/inbox/", agent_auth("sender"))
    assert status == 403


def test_a_nack_is_retried_after_its_backoff_then_dead_after_max_attempts(web):
    AgentFactory(agent_id="http-agent")
    services.send(services.PLATFORM_SENDER, {"type": "job"}, to="http-agent")
    auth = agent_auth("http-agent")
    status, body = call(web, "GET", "/api/agents/http-agent/inbox/?wait=5", auth)
    [first] = body["deliveries"]
    status, nacked = call(web, "POST", f"/api/agents/http-agent/inbox/{first['id']}/nack/", auth, {"error": "busy"})
    assert status == 200 and nacked["status"] == "failed" and nacked["last_error"] == "busy", nacked
    # the poll sleeps until the backoff ends (no wake-up is published then) and takes it again
    started = time.monotonic()
    status, body = call(web, "GET", "/api/agents/http-agent/inbox/?wait=20", auth)
    elapsed = time.monotonic() - started
    [second] = body["deliveries"]
    assert second["id"] == first["id"] and second["attempt"] == 2
    assert elapsed < 5, f"the retry came after {elapsed:.1f} s (backoff {BACKOFF} s)"
    status, dead = call(web, "POST", f"/api/agents/http-agent/inbox/{first['id']}/nack/", auth, {"error": "still"})
    assert status == 200 and dead["status"] == "dead" and dead["attempts"] == 2
    status, body = call(web, "GET", "/api/agents/http-agent/inbox/?wait=1.5", auth)
    assert body == {"deliveries": []}
    assert Delivery.objects.get().status == DeliveryStatus.DEAD


def test_a_delivery_not_acked_by_its_visibility_deadline_is_handed_out_again(web):
    AgentFactory(agent_id="http-agent")
    services.send(services.PLATFORM_SENDER, {"type": "job"}, to="http-agent")
    auth = agent_auth("http-agent")
    status, body = call(web, "GET", "/api/agents/http-agent/inbox/?visibility=1", auth)
    [first] = body["deliveries"]
    assert first["attempt"] == 1
    time.sleep(1.2)
    assert services.return_invisible() == 1  # what the beat sweep (messaging.tasks.sweep_messages) runs
    status, body = call(web, "GET", "/api/agents/http-agent/inbox/?wait=5", auth)
    [second] = body["deliveries"]
    assert second["id"] == first["id"] and second["attempt"] == 2
    # the first hand-out's ack names its attempt: refused, the second's counts
    path = f"/api/agents/http-agent/inbox/{first['id']}/ack/"
    status, stale = call(web, "POST", path, auth, {"attempt": 1})
    assert status == 409, stale
    status, acked = call(web, "POST", path, auth, {"attempt": 2})
    assert status == 200 and acked["status"] == "acked" and acked["attempts"] == 2


def test_a_request_answered_by_an_http_agents_ack_reaches_the_waiting_caller(web, staff_user):
    AgentFactory(agent_id="calc")
    staff = f"Token {Token.objects.create(user=staff_user).key}"
    asking = Background(
        web, "POST", "/api/messages/?wait=20", staff, {"type": "request", "to": "calc", "content": {"a": 1, "b": 2}}
    )
    asking.start()
    status, body = call(web, "GET", "/api/agents/calc/inbox/?wait=10", agent_auth("calc"))
    [request] = body["deliveries"]
    assert request["message"]["type"] == "request" and request["message"]["sender"] == "user:staff"
    content = request["message"]["content"]
    status, _ = call(
        web,
        "POST",
        f"/api/agents/calc/inbox/{request['id']}/ack/",
        agent_auth("calc"),
        {"response": {"sum": content["a"] + content["b"]}},
    )
    assert status == 200
    asking.join(25)
    status, answer = asking.result
    assert status == 201, answer
    assert answer["request_status"] == "answered" and answer["response"] == {"sum": 3}
    assert asking.elapsed < 10, f"the caller waited {asking.elapsed:.1f} s of its 20"
    response = Message.objects.get(correlation_id=answer["id"])
    assert response.type == "response" and response.sender == "calc"


def test_long_polls_hold_no_database_connection_while_they_wait(processes):
    """Three long polls on a web process whose pool has one PostgreSQL connection: another request is
    still answered at once, and each poll still takes its message when it comes."""
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's (an SQLite connection is a file handle)")
    web = processes.web(
        workers=1, threads=8, MASP_DB_POOL_MIN_SIZE="0", MASP_DB_POOL_MAX_SIZE="1", MASP_DB_POOL_TIMEOUT="3"
    )
    for n in range(3):
        AgentFactory(agent_id=f"http-{n}")
    polls = [Background(web, "GET", f"/api/agents/http-{n}/inbox/?wait=20", agent_auth(f"http-{n}")) for n in range(3)]
    for poll in polls:
        poll.start()
    time.sleep(2)
    assert all(poll.is_alive() for poll in polls)
    started = time.monotonic()
    status, stats = call(web, "GET", "/api/messaging/stats/", agent_auth("http-0"))
    assert status == 200, stats
    assert time.monotonic() - started < 2.5, "the other request waited for the pool's one connection"
    for n in range(3):
        services.send(services.PLATFORM_SENDER, {"n": n}, to=f"http-{n}")
    for n, poll in enumerate(polls):
        poll.join(20)
        status, body = poll.result
        assert status == 200 and [d["message"]["content"] for d in body["deliveries"]] == [{"n": n}]
        assert poll.elapsed < 15
