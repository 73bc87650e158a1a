"""Exercise 2 over the message bus, through real agent workers: publishers and subscribers, clients'
requests to services (with a timeout and a "no responders"), a subscriber killed and restarted, then
the inboxes and the bus's metrics.

Everything an agent sends, it sends itself, from inside a capability called through the API
(``POST /api/invocations/`` pinned to the agent): ``weather_pub`` publishes with ``ctx.publish`` and
``client1`` asks with ``ctx.request``, so the platform records them as the senders. What the
subscribers received is asked of them (a ``get_received`` request to each, answered from the worker's
memory) and read from the platform (their acked deliveries), which must agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from django.db.models import Count
from django.utils import timezone

from agents.models import Agent
from agents.sdk import REQUEST_ERRORS
from demo.client import Api
from masplatform.tables import table
from messaging import selectors
from messaging.models import Delivery, DeliveryStatus, Message, Subscription

Say = Callable[[str], None]

PUBLISHERS = {"weather_pub": "weather", "stock_pub": "stocks"}
SUBSCRIBERS = {"weather_sub": "weather", "stock_sub": "stocks", "multi_sub": "weather,stocks"}
CLIENTS = ["client1", "client2"]
SLOW_SERVICE = "slow_service"
SERVICES = ["calc_service", "validation_service"]  # started with Exercise 1's agents (invocation_scenario)
VICTIM = "multi_sub"  # the subscriber killed in the middle
SLOW_SECONDS = 3.0  # the slow service's handler (MASP_SLOW_SERVICE_SECONDS)
SLOW_TIMEOUT = 1.0  # the timeout of the request sent to it

WEATHER = [{"temperature": 20 + i, "humidity": 60 + i * 2, "location": "New York"} for i in range(5)]
STOCKS = [{"symbol": "AAPL", "price": 150.0 + i, "volume": 1_000_000 + i * 100_000} for i in range(3)]
CALC_REQUESTS = [{"a": 10, "b": 5}, {"a": 20, "b": 3}, {"a": 15, "b": 7}]
VALIDATION_REQUESTS = [{"data": "hello world"}, {"data": ""}, {"data": "test123"}]


def agents() -> list[tuple[str, str, dict[str, str]]]:
    """(agent id, example module, environment) of each worker process this scenario needs started."""
    rows = [(agent_id, "agents.examples.publisher", {}) for agent_id in PUBLISHERS]
    rows += [
        (agent_id, "agents.examples.subscriber", {"MASP_SUBSCRIBER_TOPICS": topics})
        for agent_id, topics in SUBSCRIBERS.items()
    ]
    rows += [(agent_id, "agents.examples.client", {}) for agent_id in CLIENTS]
    rows.append((SLOW_SERVICE, "agents.examples.slow_service", {"MASP_SLOW_SERVICE_SECONDS": str(SLOW_SECONDS)}))
    return rows


def invoke(api: Api, agent_id: str, capability: str, payload: dict) -> dict:
    """Call ``capability`` on that very agent and wait for its output."""
    inv = api.post("/api/invocations/?wait=30", {"capability": capability, "input": payload, "agent": agent_id})
    if inv["status"] != "succeeded":
        raise RuntimeError(f"{capability} on {agent_id}: {inv['status']} {inv.get('error')}")
    return inv["output"]


def publish(api: Api, publisher: str, readings: list[dict], first_sequence: int = 1) -> dict:
    payload = {"topic": PUBLISHERS[publisher], "readings": readings, "first_sequence": first_sequence}
    return invoke(api, publisher, "publish_readings", payload)


def ask(api: Api, client: str, service: str, requests: list[dict], **options) -> list[dict]:
    """``client`` sends each of ``requests`` to ``service`` over the bus; one entry per request."""
    return invoke(api, client, "make_requests", {"service": service, "requests": requests, **options})["responses"]


def received_by(api: Api, subscriber: str) -> dict:
    """The subscriber's own account (its answer to a ``get_received`` request from client1)."""
    (answer,) = ask(api, "client1", subscriber, [{}], type="get_received", timeout=10)
    return answer.get("response") or answer


def acked_updates(since: datetime) -> dict[str, int]:
    """The platform's account: each agent's acked deliveries of data_update messages sent since ``since``."""
    rows = (
        Delivery.objects.filter(
            status=DeliveryStatus.ACKED, message__content_type="data_update", message__created_at__gte=since
        )
        .values_list("agent__agent_id")
        .annotate(n=Count("pk"))
    )
    return dict(rows)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}; see the agents' logs")
        time.sleep(0.2)


def outcome(entry: dict) -> str:
    """A response's result, or the error as the client's code saw it (the exception ``ctx.request`` raised)."""
    if "response" in entry:
        return str(entry["response"].get("result", entry["response"]))
    error = REQUEST_ERRORS.get(entry["error"])
    return f"{error.__name__ if error else entry['error']}: {entry['detail']}"


def run(api: Api, say: Say, base: str, kill: Callable[[str], None], restart: Callable[[str], None]) -> None:
    since = timezone.now()
    pub_sub(api, say, since)
    request_response(api, say, base)
    subscriber_down(api, say, since, kill, restart)
    metrics(say, since, base)


def pub_sub(api: Api, say: Say, since: datetime) -> None:
    say(
        "\n== 11. Exercise 2 over the message bus: publish/subscribe"
        " (ctx.publish inside a capability called with POST /api/invocations/)"
    )
    subs = Subscription.objects.filter(agent__agent_id__in=SUBSCRIBERS).select_related("agent").order_by("agent_id")
    say("  the subscribers' subscriptions, declared by their SDK code when their workers started:")
    say(
        table(
            ["agent", "pattern", "types", "content filter"],
            [(s.agent.agent_id, s.pattern, s.message_types, s.content_filters) for s in subs],
        )
    )
    for publisher, readings in (("weather_pub", WEATHER), ("stock_pub", STOCKS)):
        out = publish(api, publisher, readings)
        say(f"  {publisher} published {out['published']} data_update messages to '{out['topic']}'")
    expected = {"weather_sub": len(WEATHER), "stock_sub": len(STOCKS), "multi_sub": len(WEATHER) + len(STOCKS)}
    wait_for(
        "the subscribers to ack their deliveries",
        lambda: all(acked_updates(since).get(a, 0) >= n for a, n in expected.items()),
    )
    acked = acked_updates(since)
    rows = []
    for subscriber, topics in SUBSCRIBERS.items():
        answer = received_by(api, subscriber)
        rows.append((subscriber, topics, answer.get("count"), acked.get(subscriber, 0), answer.get("sequences")))
        say(f"  {subscriber} received {answer.get('count')} messages")
    say(table(["subscriber", "topics", "received (its answer)", "acked (platform)", "sequences"], rows))


def request_response(api: Api, say: Say, base: str) -> None:
    say("\n== 12. Exercise 2 over the message bus: requests and responses (ctx.request inside a capability)")
    rows = []
    for client, service, requests in (
        ("client1", "calc_service", CALC_REQUESTS),
        ("client2", "validation_service", VALIDATION_REQUESTS),
    ):
        answers = ask(api, client, service, requests)
        for entry in answers:
            rows.append((client, service, entry["request_data"], outcome(entry), entry["ms"]))
        say(f"  {client} received {sum(1 for a in answers if 'response' in a)} responses from {service}")
    say(table(["client", "service", "request_data", "response result", "ms"], rows))
    (slow,) = ask(api, "client1", SLOW_SERVICE, [{"a": 1}], timeout=SLOW_TIMEOUT)
    say(
        f"  client1 -> {SLOW_SERVICE} (timeout {SLOW_TIMEOUT:g} s; its handler takes {SLOW_SECONDS:g} s): {outcome(slow)}"
        f" after {slow['ms']} ms"
    )
    (none,) = ask(api, "client2", "calc_service", [{"text": "hello"}], type="translate", timeout=10)
    say(f"  client2 -> calc_service, a 'translate' request: {outcome(none)} after {none['ms']} ms (at once)")
    say(f"  the timed-out request in the admin: {base}/admin/messaging/message/{slow['message_id']}/change/")


def subscriber_down(
    api: Api, say: Say, since: datetime, kill: Callable[[str], None], restart: Callable[[str], None]
) -> None:
    say(f"\n== 13. A subscriber is killed: {VICTIM}'s messages wait in its inbox until it is back")
    kill(VICTIM)
    say(f"  killed {VICTIM} (SIGKILL); waiting for the stale sweep to take it offline")
    started = time.monotonic()
    wait_for(f"{VICTIM} to go offline", lambda: api.get(f"/api/agents/{VICTIM}/")["state"] == "offline", timeout=60)
    say(f"  {VICTIM}: offline after {time.monotonic() - started:.1f} s")
    before = acked_updates(since)
    weather = publish(api, "weather_pub", WEATHER[:2], first_sequence=len(WEATHER) + 1)
    stocks = publish(api, "stock_pub", STOCKS[:1], first_sequence=len(STOCKS) + 1)
    missed = weather["published"] + stocks["published"]
    say(f"  meanwhile weather_pub published {weather['published']} more readings and stock_pub {stocks['published']}")
    wait_for(
        "the live subscribers to ack the new messages",
        lambda: (
            acked_updates(since).get("weather_sub", 0) >= before.get("weather_sub", 0) + weather["published"]
            and acked_updates(since).get("stock_sub", 0) >= before.get("stock_sub", 0) + stocks["published"]
        ),
    )
    depth = selectors.inbox_depth(_pk(VICTIM))
    waiting = Delivery.objects.filter(agent__agent_id=VICTIM, status__in=selectors.OPEN, message__created_at__gte=since)
    say(f"  {VICTIM}'s inbox depth: {depth} (" + ", ".join(f"{s}={n}" for s, n in _by_status(waiting).items()) + ")")
    (asked,) = ask(api, "client1", VICTIM, [{}], type="get_received", timeout=10)
    say(f"  client1 asks {VICTIM} what it received: {outcome(asked)} after {asked['ms']} ms")
    say(f"  restarting {VICTIM}")
    restart(VICTIM)
    wait_for(f"{VICTIM} to handle its backlog", lambda: selectors.inbox_depth(_pk(VICTIM)) == 0)
    answer = received_by(api, VICTIM)
    acked = acked_updates(since).get(VICTIM, 0)
    say(
        f"  {VICTIM} handled its backlog when it came back: it received {answer.get('count')} messages"
        f" since its restart (sequences {answer.get('sequences')}); inbox depth now"
        f" {selectors.inbox_depth(_pk(VICTIM))}; acked in all {acked} (missed nothing: "
        f"{len(WEATHER) + len(STOCKS)} + {missed})"
    )


def metrics(say: Say, since: datetime, base: str) -> None:
    say("\n== 14. Inboxes and the bus's metrics (messaging.selectors.stats(); GET /api/messaging/stats/)")
    ids = [*PUBLISHERS, *SUBSCRIBERS, *CLIENTS, *SERVICES, SLOW_SERVICE]
    agents = {a["agent_id"]: a for a in _agents(ids)}
    depths = selectors.inbox_depths([a["pk"] for a in agents.values()])
    sent = dict(
        Message.objects.filter(created_at__gte=since, sender_agent__agent_id__in=ids)
        .values_list("sender_agent__agent_id")
        .annotate(n=Count("pk"))
    )
    received: dict[str, dict[str, int]] = {}
    for agent_id, status, n in (
        Delivery.objects.filter(message__created_at__gte=since, agent__agent_id__in=ids)
        .values_list("agent__agent_id", "status")
        .annotate(n=Count("pk"))
    ):
        received.setdefault(agent_id, {})[status] = n
    say("  per agent, this run's messages (inbox depth: what waits now)")
    say(
        table(
            ["agent", "state", "sent", "received", "acked", "inbox depth"],
            [
                (
                    agent_id,
                    agents[agent_id]["state"] if agent_id in agents else "-",
                    sent.get(agent_id, 0),
                    sum(received.get(agent_id, {}).values()),
                    received.get(agent_id, {}).get(DeliveryStatus.ACKED, 0),
                    depths.get(agents[agent_id]["pk"], 0) if agent_id in agents else "-",
                )
                for agent_id in ids
            ],
        )
    )
    stats = selectors.stats()
    say("  the bus as a whole (every message in this database; latency over the last hour)")
    by_type = sorted(stats["messages_by_type"].items())
    by_status = list(stats["deliveries_by_status"].items())
    say(
        table(
            ["message type", "messages", "delivery status", "deliveries"],
            [
                (*(by_type[i] if i < len(by_type) else ("", "")), *(by_status[i] if i < len(by_status) else ("", "")))
                for i in range(max(len(by_type), len(by_status)))
            ],
        )
    )
    latency = stats["fanout_latency_ms"]
    say(
        table(
            ["fan-out latency p50 ms", "p95 ms", "acked in window", "failed", "dead", "subscriptions", "rules"],
            [
                (
                    latency["p50"],
                    latency["p95"],
                    stats["acked_in_window"],
                    stats["failed_deliveries"],
                    stats["dead_deliveries"],
                    stats["subscription_count"],
                    stats["routing_rule_count"],
                )
            ],
        )
    )
    say(f"  messages in the admin: {base}/admin/messaging/message/")


def _pk(agent_id: str) -> int:
    return Agent.objects.values_list("pk", flat=True).get(agent_id=agent_id)


def _agents(ids: list[str]) -> list[dict]:
    return list(Agent.objects.filter(agent_id__in=ids).values("pk", "agent_id", "state"))


def _by_status(deliveries) -> dict[str, int]:
    return dict(deliveries.values_list("status").annotate(n=Count("pk")).order_by("status"))
