"""The agent SDK: declare an agent and its capabilities as plain Python functions.

    from agents.sdk import AgentDefinition

    agent = AgentDefinition("calc_service", name="Calculation service", tags=["service"])

    @agent.capability(
        "calculation",
        description="Sum and product of two numbers",
        input_schema={"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                      "required": ["a", "b"]},
        output_schema={"type": "object", "required": ["sum", "product"]},
        cost=1.0,
    )
    def calculation(data, ctx):
        ctx.report_progress(0.5, "adding")
        return {"sum": data["a"] + data["b"], "product": data["a"] * data["b"]}

    @agent.subscribe("weather.#", types=["event"], where={"type": "data_update"})
    @agent.on("data_update")
    def data_update(message, ctx):
        ctx.publish("weather.processed", {"type": "processed", "seq": message.content["sequence"]})

Run it with ``python manage.py run_agent my.module``. See docs/agents.md and docs/messaging.md.

The bus itself lives in the ``messaging`` app, above this one: it installs itself here
(``install_bus``) when Django starts, so that ``ctx.send`` and friends reach it without this
module importing a higher layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from django.utils import timezone

CapabilityFunction = Callable[[Any, "CallContext"], Any]
MessageHandler = Callable[["IncomingMessage", "HandlerContext"], Any]
# the built-in requests every SDK agent answers (messaging/builtins.py), as the seed's BaseAgent does
BUILTIN_HANDLERS = ("ping", "get_capabilities", "get_status", "get_load_info")


class Cancelled(Exception):
    """Raised by ``CallContext.raise_if_cancelled()``: the call was cancelled; stop and return."""


class RequestError(Exception):
    """A request over the bus got no response: ``kind`` is ``no_responders``, ``timed_out`` or ``failed``;
    ``detail`` says why; ``request_id`` names the request."""

    kind = "failed"

    def __init__(self, detail: str, *, request_id: str = ""):
        super().__init__(detail)
        self.detail = detail
        self.request_id = request_id


class NoResponders(RequestError):
    kind = "no_responders"


class RequestTimedOut(RequestError):
    kind = "timed_out"


class RequestFailed(RequestError):
    kind = "failed"


REQUEST_ERRORS = {cls.kind: cls for cls in (NoResponders, RequestTimedOut, RequestFailed)}


@dataclass(frozen=True)
class SubscriptionDefinition:
    pattern: str
    types: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    where: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IncomingMessage:
    """A message as a handler sees it."""

    id: str
    type: str
    sender: str
    topic: str
    content: dict[str, Any]
    correlation_id: str | None
    priority: int
    created_at: datetime
    delivery_id: int
    attempt: int


@dataclass(frozen=True)
class CapabilityDefinition:
    name: str
    function: CapabilityFunction
    description: str = ""
    # None: adopt the capability's existing contract ({} for a new capability), as in the API
    input_schema: dict[str, Any] | bool | None = None
    output_schema: dict[str, Any] | bool | None = None
    cost: float = 1.0


@dataclass(frozen=True)
class AgentDefinition:
    """An agent: its id (a slug), name, tags, metadata and capabilities."""

    agent_id: str
    name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    capabilities: dict[str, CapabilityDefinition] = field(default_factory=dict)
    handlers: dict[str, MessageHandler] = field(default_factory=dict)
    subscriptions: list[SubscriptionDefinition] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))

    def capability(
        self,
        name: str | None = None,
        *,
        description: str = "",
        input_schema: dict[str, Any] | bool | None = None,
        output_schema: dict[str, Any] | bool | None = None,
        cost: float = 1.0,
    ) -> Callable[[CapabilityFunction], CapabilityFunction]:
        """Decorator: the function ``f(data, ctx) -> output`` implements capability ``name``."""

        def register(function: CapabilityFunction) -> CapabilityFunction:
            cap_name = name or function.__name__
            if cap_name in self.capabilities:
                raise ValueError(f"capability '{cap_name}' is declared twice on agent '{self.agent_id}'")
            self.capabilities[cap_name] = CapabilityDefinition(
                name=cap_name,
                function=function,
                description=description or (function.__doc__ or "").strip(),
                input_schema={} if input_schema is None else input_schema,
                output_schema={} if output_schema is None else output_schema,
                cost=cost,
            )
            return function

        return register

    def on(self, key: str) -> Callable[[MessageHandler], MessageHandler]:
        """Decorator: ``f(message, ctx)`` handles the messages whose ``content["type"]`` is ``key`` (as in
        the seed), or else whose message type is ``key`` (``request``, ``event``, ``broadcast``, ...). For
        a request, its return value (an object) is the response. The built-in ``ping``,
        ``get_capabilities``, ``get_status`` and ``get_load_info`` may be replaced the same way."""

        def register(function: MessageHandler) -> MessageHandler:
            if not isinstance(key, str) or not key:
                raise ValueError("a handler's key is a content type or a message type")
            if key in self.handlers:
                raise ValueError(f"a handler for '{key}' is declared twice on agent '{self.agent_id}'")
            self.handlers[key] = function
            return function

        return register

    def subscribe(
        self,
        pattern: str,
        *,
        types: list[str] | tuple[str, ...] = (),
        senders: list[str] | tuple[str, ...] = (),
        where: dict[str, Any] | None = None,
    ) -> Callable[[Any], Any]:
        """Declare a subscription (made when the worker starts): topics matching ``pattern`` (``*`` one
        word, ``#`` zero or more), optionally only ``types``, senders matching ``senders`` (globs) and
        content equal to ``where`` (dotted keys). Usable as a decorator (of a handler) or a plain call."""
        self.subscriptions.append(SubscriptionDefinition(pattern, tuple(types), tuple(senders), dict(where or {})))

        def keep(function: Any) -> Any:
            return function

        return keep

    def handler_for(self, content_type: str, message_type: str) -> MessageHandler | None:
        """The author's handler of a message: by content type first, then by message type."""
        return self.handlers.get(content_type) or self.handlers.get(message_type)

    def handled_keys(self) -> list[str]:
        """What this agent answers: its handlers' keys and the built-in requests."""
        return sorted({*self.handlers, *BUILTIN_HANDLERS})

    def with_id(self, agent_id: str) -> AgentDefinition:
        """The same agent under another id (``run_agent --agent-id``), e.g. to run several of it."""
        return replace(self, agent_id=agent_id)


class Bus(Protocol):
    """What the SDK needs of the message bus (``messaging.sdk_bus`` provides it)."""

    def send(self, sender_agent_id: str, content: dict[str, Any], **options: Any) -> str: ...

    def request(
        self, sender_agent_id: str, to: str, content: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]: ...


_bus: Bus | None = None


def install_bus(bus: Bus) -> None:
    global _bus
    _bus = bus


def bus() -> Bus:
    if _bus is None:
        raise RuntimeError("the message bus is not installed: add 'messaging' to INSTALLED_APPS")
    return _bus


class Messenger:
    """Sending from inside a capability or a handler, as the agent running it."""

    agent_id: str

    def send(self, agent_id: str, content: dict[str, Any], *, type: str = "event", **options: Any) -> str:
        """A direct message to one agent; returns its id."""
        return bus().send(self.agent_id, content, to=agent_id, type=type, **options)

    def publish(self, topic: str, content: dict[str, Any], *, type: str = "event", **options: Any) -> str:
        """A message to every agent subscribed to a pattern matching ``topic``; returns its id."""
        return bus().send(self.agent_id, content, topic=topic, type=type, **options)

    def broadcast(self, content: dict[str, Any], **options: Any) -> str:
        """A message to every registered agent but this one; returns its id."""
        return bus().send(self.agent_id, content, broadcast=True, type="broadcast", **options)

    def request(self, agent_id: str, content: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Send a request and wait for the response's content. Raises ``NoResponders`` at once when the
        agent is offline, unregistered or has no handler for it, ``RequestTimedOut`` after ``timeout``
        seconds, ``RequestFailed`` when its handler failed for good."""
        return bus().request(self.agent_id, agent_id, content, timeout)


class HandlerContext(Messenger):
    """What a message handler knows: the agent it runs as, the delivery and its attempt."""

    def __init__(self, *, agent_id: str, definition: AgentDefinition, message: IncomingMessage, logger: Any):
        self.agent_id = agent_id
        self.definition = definition
        self.message = message
        self.delivery_id = message.delivery_id
        self.attempt = message.attempt
        self.logger = logger


class CallContext(Messenger):
    """What a capability function knows about the call it is running."""

    def __init__(
        self,
        *,
        invocation_id: str,
        attempt: int,
        deadline: datetime,
        agent_id: str,
        capability: str,
        logger: logging.LoggerAdapter | logging.Logger,
    ):
        self.invocation_id = invocation_id
        self.attempt = attempt
        self.deadline = deadline
        self.agent_id = agent_id
        self.capability = capability
        self.logger = logger
        self._cancel_checked_at = 0.0
        self._cancelled = False

    @property
    def remaining(self) -> float:
        """Seconds left before the soft time limit."""
        return (self.deadline - timezone.now()).total_seconds()

    def report_progress(self, fraction: float | None, message: str = "") -> None:
        """Record progress (0-1) and a short message, shown on the invocation."""
        from agents import services

        services.report_progress(self.invocation_id, attempt=self.attempt, fraction=fraction, message=message)

    @property
    def cancelled(self) -> bool:
        """True once the call was cancelled (or taken from this attempt). Checked at most every 0.2 s."""
        if not self._cancelled and time.monotonic() - self._cancel_checked_at >= 0.2:
            from agents import services

            self._cancel_checked_at = time.monotonic()
            self._cancelled = services.cancel_requested(self.invocation_id, attempt=self.attempt)
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled(f"invocation {self.invocation_id} was cancelled")
