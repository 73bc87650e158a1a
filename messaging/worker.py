"""Handling deliveries inside an SDK agent's worker (``run_agent``): claim, run the handler, ack once.
At the worker's start: declare what the agent handles and its subscriptions, then drain its inbox."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from agents import runtime
from agents.sdk import HandlerContext, IncomingMessage
from masplatform.exceptions import Conflict
from messaging import builtins, services
from messaging.models import Delivery, Endpoint, MessageType, Transport

logger = logging.getLogger("messaging.worker")


def start(rt: runtime.Runtime) -> int:
    """The agent's worker is ready: record that it takes messages from its queue and what it handles,
    make its declared subscriptions, and send it what waited while it was away. Returns how many."""
    definition = rt.definition
    agent = rt.agent
    Endpoint.objects.update_or_create(
        agent_id=agent.pk,
        defaults={"transport": Transport.WORKER, "handles": definition.handled_keys(), "worker_pid": os.getpid()},
    )
    services.declare(
        agent,
        [(s.pattern, list(s.types), list(s.senders), s.where) for s in definition.subscriptions],
    )
    drained = services.drain_at_start(agent.pk, started_at=rt.started_at)
    logger.info("event=inbox_drained agent_id=%s deliveries=%d", agent.agent_id, drained)
    return drained


def handle(delivery_id: int) -> str:
    """Claim and handle one delivery on this process's agent; returns what happened (for the log)."""
    rt = runtime.current()
    if rt is None:
        logger.error("event=delivery_without_agent delivery=%s: this worker was not started by run_agent", delivery_id)
        return "no agent"
    runtime.check_connection()
    try:
        return _handle(rt, delivery_id)
    finally:
        runtime.note_activity()


def _handle(rt: runtime.Runtime, delivery_id: int) -> str:
    visibility = settings.MASP_MESSAGE_HANDLER_TIMEOUT + settings.MASP_HARD_TIMEOUT_GRACE
    claimed = services.claim(delivery_id, agent_pk=rt.agent_pk, visibility=visibility)
    if claimed is None:
        return "not claimed"
    delivery, attempt = claimed.delivery, claimed.attempt
    message = delivery.message
    incoming = IncomingMessage(
        id=str(message.pk),
        type=message.type,
        sender=message.sender,
        topic=message.topic,
        content=message.content,
        correlation_id=str(message.correlation_id) if message.correlation_id else None,
        priority=message.priority,
        created_at=message.created_at,
        delivery_id=delivery.pk,
        attempt=attempt,
    )
    handler = rt.definition.handler_for(message.content_type, message.type) or builtins.HANDLERS.get(
        message.content_type
    )
    log = logging.LoggerAdapter(logging.getLogger("messaging.handlers"), {})
    ctx = HandlerContext(agent_id=rt.definition.agent_id, definition=rt.definition, message=incoming, logger=log)
    if handler is None:
        if message.type == MessageType.REQUEST:
            return _fail(
                delivery.pk,
                attempt,
                f"agent '{rt.definition.agent_id}' has no handler for '{message.content_type}'",
                final=True,
            )
        logger.info(
            "event=no_handler delivery=%s type=%s content_type=%s", delivery.pk, message.type, message.content_type
        )
        return _ack(delivery, attempt, None)
    try:
        result = handler(incoming, ctx)
    except SoftTimeLimitExceeded:
        runtime.drop_interrupted_connection()
        return _fail(
            delivery.pk, attempt, f"still running after the {settings.MASP_MESSAGE_HANDLER_TIMEOUT:g}s time limit"
        )
    except Exception as exc:
        logger.warning("event=handler_failed delivery=%s attempt=%d", delivery.pk, attempt, exc_info=True)
        return _fail(delivery.pk, attempt, f"{type(exc).__name__}: {exc}")
    if message.type == MessageType.REQUEST:
        if result is None:
            result = {}
        if not isinstance(result, dict):
            result = {"result": result}
        return _ack(delivery, attempt, result)
    return _ack(delivery, attempt, None)


def _ack(delivery: Delivery, attempt: int, response: dict[str, Any] | None) -> str:
    try:
        services.ack(delivery.pk, attempt=attempt, response=response, claimed=delivery)
    except Conflict as exc:  # taken back meanwhile (visibility deadline, an operator): its next attempt counts
        logger.info("event=ack_refused delivery=%s attempt=%d detail=%s", delivery.pk, attempt, exc.detail)
        return "not acked"
    return "acked"


def _fail(delivery_id: int, attempt: int, error: str, *, final: bool = False) -> str:
    try:
        delivery = services.fail(delivery_id, attempt=attempt, error=error, final=final)
    except Conflict:
        return "not recorded"
    return str(delivery.status)
