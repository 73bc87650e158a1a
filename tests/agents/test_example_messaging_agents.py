"""The example agents of Exercise 2 as code (their run through real workers is tests/test_demo.py)."""

from __future__ import annotations

import importlib
import logging

from django.utils import timezone

from agents.management.commands.run_agent import load_definition
from agents.sdk import AgentDefinition, HandlerContext, IncomingMessage, SubscriptionDefinition


def incoming(content: dict, *, message_id: str = "m-1", topic: str = "", type: str = "event") -> IncomingMessage:
    return IncomingMessage(
        id=message_id,
        type=type,
        sender="weather_pub",
        topic=topic,
        content=content,
        correlation_id=None,
        priority=5,
        created_at=timezone.now(),
        delivery_id=1,
        attempt=1,
    )


def handle(definition: AgentDefinition, message: IncomingMessage) -> dict | None:
    handler = definition.handler_for(message.content.get("type", ""), message.type)
    assert handler is not None, f"{definition.agent_id} has no handler for {message.content.get('type')}"
    ctx = HandlerContext(
        agent_id=definition.agent_id, definition=definition, message=message, logger=logging.getLogger("test")
    )
    return handler(message, ctx)


def test_subscriber_subscribes_to_its_topics_and_counts_each_message_once(monkeypatch):
    monkeypatch.setenv("MASP_SUBSCRIBER_TOPICS", "weather, stocks")
    monkeypatch.setenv("MASP_EXAMPLE_DELAY", "0")
    module = importlib.reload(importlib.import_module("agents.examples.subscriber"))
    try:
        definition = load_definition("agents.examples.subscriber").with_id("multi_sub")
        assert definition.subscriptions == [
            SubscriptionDefinition("weather.#", ("event",), (), {"type": "data_update"}),
            SubscriptionDefinition("stocks.#", ("event",), (), {"type": "data_update"}),
        ]
        for message_id, topic, sequence in (("a", "weather", 2), ("b", "weather", 1), ("c", "stocks", 1)):
            handle(
                definition, incoming({"type": "data_update", "sequence": sequence}, message_id=message_id, topic=topic)
            )
        handle(definition, incoming({"type": "data_update", "sequence": 2}, message_id="a", topic="weather"))  # again
        answer = handle(definition, incoming({"type": "get_received"}, type="request"))
        assert answer["count"] == 3
        assert answer["sequences"] == {"stocks": [1], "weather": [1, 2]}
        assert answer["topics"] == ["weather", "stocks"]
    finally:
        monkeypatch.delenv("MASP_SUBSCRIBER_TOPICS")
        importlib.reload(module)


def test_services_answer_the_seeds_service_request(monkeypatch):
    monkeypatch.setenv("MASP_EXAMPLE_DELAY", "0")
    calc = load_definition("agents.examples.calculation_service")
    validation = load_definition("agents.examples.validation_service")
    request = {"type": "service_request", "request_id": "req_1", "request_data": {"a": 15, "b": 7}}
    answer = handle(calc, incoming(request, type="request"))
    assert answer["type"] == "service_response" and answer["request_id"] == "req_1"
    assert answer["result"] == {"sum": 22, "product": 105}
    answer = handle(calc, incoming({**request, "request_data": {"a": "ten", "b": 1}}, type="request"))
    assert answer["result"] == {"error": "a and b must be numbers"}
    answer = handle(validation, incoming({"type": "service_request", "request_data": {"data": ""}}, type="request"))
    assert answer["result"] == {"valid": False, "length": 0}
    answer = handle(
        validation, incoming({"type": "service_request", "request_data": {"data": "test123"}}, type="request")
    )
    assert answer["result"] == {"valid": True, "length": 7}
    assert "service_request" in calc.handled_keys() and "calculation" in calc.capabilities


def test_publisher_and_client_declare_their_capabilities():
    publisher = load_definition("agents.examples.publisher")
    client = load_definition("agents.examples.client")
    assert set(publisher.capabilities) == {"publish_readings"}
    assert set(client.capabilities) == {"make_requests"}
    slow = load_definition("agents.examples.slow_service")
    assert "service_request" in slow.handlers and not slow.capabilities
