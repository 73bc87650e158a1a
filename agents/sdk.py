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

Run it with ``python manage.py run_agent my.module``. See docs/agents.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.utils import timezone

CapabilityFunction = Callable[[Any, "CallContext"], Any]


class Cancelled(Exception):
    """Raised by ``CallContext.raise_if_cancelled()``: the call was cancelled; stop and return."""


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

    def with_id(self, agent_id: str) -> AgentDefinition:
        """The same agent under another id (``run_agent --agent-id``), e.g. to run several of it."""
        return replace(self, agent_id=agent_id)


class CallContext:
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
