"""The bus end to end: real `run_agent` worker processes on this run's database and broker."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from messaging import selectors, services
from messaging.models import Delivery, DeliveryStatus, Endpoint, Message, RequestStatus, Subscription
from messaging.services.sending import publish_deliveries
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
MODULE = "tests.messaging_agents"
PLATFORM = services.PLATFORM_SENDER


def start(processes, agent_id: str, subscriptions=(), **env):
    child = processes.agent(MODULE, agent_id=agent_id, MASP_TEST_SUBSCRIPTIONS=json.dumps(list(subscriptions)), **env)
    # its side of the bus is set up once the worker is ready: endpoint, subscriptions, drained inbox
    wait_until(lambda: Endpoint.objects.filter(agent__agent_id=agent_id).exists(), message=f"{agent_id}'s endpoint")
    return child


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def acked(message: Message, count: int = 1, timeout: float = 30) -> list[Delivery]:
    def done():
        rows = list(Delivery.objects.filter(message=message, status=DeliveryStatus.ACKED))
        return rows if len(rows) >= count else None

    return wait_until(done, timeout=timeout, interval=0.1, message=f"{count} acks of message {message.pk}")


def test_direct_topic_and_broadcast_messages_are_handled_by_the_agents_workers(processes, tmp_path):
    start(processes, "weather_sub", [{"pattern": "weather.#"}])
    start(processes, "stock_sub", [{"pattern": "stocks.*", "where": {"type": "note"}}])
    path = str(tmp_path / "notes")
    assert Subscription.objects.get(agent__agent_id="weather_sub").declared
    direct = services.send(PLATFORM, {"type": "note", "path": path, "seq": 1}, to="stock_sub")
    topic = services.send(PLATFORM, {"type": "note", "path": path, "seq": 2}, topic="weather.nyc.today")
    unmatched = services.send(PLATFORM, {"type": "other", "path": path, "seq": 3}, topic="stocks.aapl")
    everyone = services.send(PLATFORM, {"path": path, "seq": 4}, broadcast=True)
    for message, count in [(direct, 1), (topic, 1), (everyone, 2)]:
        acked(message, count)
    assert unmatched.recipient_count == 0
    handled = sorted((agent, seq) for agent, _, *rest in lines(tmp_path / "notes") for seq in [rest[-2]])
    assert handled == [("stock_sub", "1"), ("stock_sub", "4"), ("weather_sub", "2"), ("weather_sub", "4")]


def test_an_offline_agent_misses_nothing_and_handles_its_backlog_in_priority_order_when_it_returns(processes, tmp_path):
    child = start(processes, "sub", [{"pattern": "weather"}])
    child.signal(signal.SIGTERM)  # a warm shutdown: the worker goes offline
    wait_until(lambda: Agent.objects.get(agent_id="sub").state == "offline", message="sub to go offline")
    wait_until(lambda: not child.alive(), message="the worker to exit")
    path = str(tmp_path / "notes")
    sent = [
        services.send(PLATFORM, {"type": "note", "path": path, "seq": seq}, topic="weather", priority=prio)
        for seq, prio in [(1, 1), (2, 9), (3, 5)]
    ]
    assert selectors.inbox_depth(Agent.objects.get(agent_id="sub")) == 3
    assert not (tmp_path / "notes").exists()
    start(processes, "sub", [{"pattern": "weather"}])
    for message in sent:
        acked(message)
    assert [row[3] for row in lines(tmp_path / "notes")] == ["2", "3", "1"]  # priority, then age


def test_a_message_past_its_expiry_while_the_agent_was_away_is_never_handled(processes, tmp_path):
    child = start(processes, "sub")
    child.signal(signal.SIGTERM)
    wait_until(lambda: not child.alive(), message="the worker to exit")
    path = str(tmp_path / "notes")
    message = services.send(PLATFORM, {"type": "note", "path": path, "seq": 1}, to="sub", ttl=1)
    keep = services.send(PLATFORM, {"type": "note", "path": path, "seq": 2}, to="sub")
    Delivery.objects.filter(message=message).update(expires_at=timezone.now())
    assert services.expire_deliveries() == 1
    start(processes, "sub")
    acked(keep)
    assert Delivery.objects.get(message=message).status == DeliveryStatus.EXPIRED
    assert [row[3] for row in lines(tmp_path / "notes")] == ["2"]


def test_a_worker_killed_mid_handler_handles_it_again_when_it_comes_back_and_it_is_acked_once(processes, tmp_path):
    child = start(processes, "victim")
    marker = tmp_path / "started"
    path = str(tmp_path / "notes")
    message = services.send(
        PLATFORM, {"type": "slow", "seconds": 2, "started_marker": str(marker), "path": path}, to="victim"
    )
    wait_until(marker.exists, message="the handler to start")
    child.signal(signal.SIGKILL, group=True)  # the worker and its pool, as an OOM kill would
    wait_until(lambda: not child.alive(), message="the worker to die")
    assert Delivery.objects.get(message=message).status == DeliveryStatus.DELIVERED
    start(processes, "victim")
    (delivery,) = acked(message)
    runs = lines(tmp_path / "notes")
    assert [row[-1] for row in runs] == ["start", "start", "end"]  # killed once, then run to its end
    assert delivery.attempts == 2 and Delivery.objects.filter(message=message).count() == 1


def test_the_same_celery_message_delivered_twice_is_handled_once(processes, tmp_path):
    start(processes, "sub")
    path = str(tmp_path / "notes")
    message = services.send(PLATFORM, {"type": "note", "path": path, "seq": 1, "sleep": 0.5}, to="sub")
    delivery = Delivery.objects.get(message=message)
    publish_deliveries([(delivery.pk, "sub", 5), (delivery.pk, "sub", 5)])  # two more copies of its message
    acked(message)
    again = services.send(PLATFORM, {"type": "note", "path": path, "seq": 2}, to="sub")  # queued behind the copies
    acked(again)
    assert [row[3] for row in lines(tmp_path / "notes")] == ["1", "2"]
    assert Delivery.objects.get(pk=delivery.pk).attempts == 1


def test_a_failing_handler_is_retried_with_backoff_then_dead_and_redelivered(processes, tmp_path):
    start(processes, "flaky", MASP_MESSAGE_MAX_ATTEMPTS="3", MASP_MESSAGE_RETRY_BACKOFF="0.2")
    path = str(tmp_path / "notes")
    message = services.send(PLATFORM, {"type": "fail", "path": path}, to="flaky")

    def dead():
        return Delivery.objects.filter(message=message, status=DeliveryStatus.DEAD).first()

    delivery = wait_until(dead, timeout=30, message="the delivery to be dead")
    assert delivery.attempts == 3 and delivery.last_error == "ValueError: failure number 3"
    assert [row[-1] for row in lines(tmp_path / "notes")] == ["1", "2", "3"]
    services.redeliver(delivery.pk)
    wait_until(lambda: len(lines(tmp_path / "notes")) == 6, message="the redelivered message to be handled again")
    wait_until(dead, message="the redelivered one to die again")


def test_requests_are_answered_by_handlers_builtins_and_fail_fast_or_time_out(processes):
    start(processes, "svc")
    start(processes, "relay")
    outcome = services.request(PLATFORM, "svc", {"type": "add", "a": 2, "b": 3}, timeout=10)
    assert outcome.ok and outcome.response.content == {"sum": 5, "by": "svc"}
    assert outcome.response.correlation_id == outcome.request.pk and outcome.response.sender == "svc"
    pong = services.request(PLATFORM, "svc", {"type": "ping"}, timeout=10).response.content
    assert pong["type"] == "pong" and pong["agent_id"] == "svc"
    caps = services.request(PLATFORM, "svc", {"type": "get_capabilities"}, timeout=10).response.content
    assert caps["capabilities"]["announce"]["cost"] == 1.0 and "add" in caps["handles"]
    status = services.request(PLATFORM, "svc", {"type": "get_status"}, timeout=10).response.content
    assert status["state"] in {"idle", "busy"} and status["metrics"]["messages_received"] >= 3
    load = services.request(PLATFORM, "svc", {"type": "get_load_info"}, timeout=10).response.content
    assert load["max_concurrency"] == 1 and load["inbox_depth"] >= 1  # this request itself
    # no handler for it: an error at once, not after the timeout
    started = timezone.now()
    none = services.request(PLATFORM, "svc", {"type": "multiply"}, timeout=30)
    assert none.status == RequestStatus.NO_RESPONDERS and "no handler" in none.response.content["detail"]
    assert (timezone.now() - started).total_seconds() < 5
    slow = services.request(PLATFORM, "svc", {"type": "slow", "seconds": 3}, timeout=0.5)
    assert slow.status == RequestStatus.TIMED_OUT and slow.response.content["error"] == "timed_out"
    # a handler asking another agent from inside (ctx.request), and getting its error when there is none
    relayed = services.request(
        PLATFORM, "relay", {"type": "ask", "to": "svc", "request": {"type": "add", "a": 1, "b": 1}}, timeout=15
    )
    assert relayed.response.content == {"relayed": {"sum": 2, "by": "svc"}}
    agent_services.change_state(agent_id="svc", state="offline", reason="test")
    refused = services.request(PLATFORM, "relay", {"type": "ask", "to": "svc", "request": {"type": "add"}}, timeout=15)
    assert refused.response.content["error"] == "no_responders"


def test_a_capability_publishes_as_its_agent(processes, tmp_path):
    start(processes, "announcer")
    start(processes, "listener", [{"pattern": "news.#", "senders": ["announcer"]}])
    invocation, _ = agent_services.invoke(
        capability="announce",
        input={"topic": "news.today", "path": str(tmp_path / "notes")},
        requested_by="user:t",
        agent="announcer",
    )
    message = wait_until(lambda: Message.objects.filter(topic="news.today").first(), message="the publication")
    assert message.sender == "announcer" and message.sender_agent.agent_id == "announcer"
    acked(message)
    assert lines(tmp_path / "notes")[0][0] == "listener"
