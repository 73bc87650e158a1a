"""The agents app's state: the registry (agents, capabilities, events) and invocations."""

from agents.models.invocation import Invocation, InvocationAttempt, InvocationStatus
from agents.models.registry import (
    ALLOWED_TRANSITIONS,
    CAPABILITY_NAME_RE,
    Agent,
    AgentCallCounter,
    AgentCapability,
    AgentEvent,
    AgentEventKind,
    AgentState,
    Capability,
    Tag,
    capability_name_validator,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "CAPABILITY_NAME_RE",
    "Agent",
    "AgentCallCounter",
    "AgentCapability",
    "AgentEvent",
    "AgentEventKind",
    "AgentState",
    "Capability",
    "Invocation",
    "InvocationAttempt",
    "InvocationStatus",
    "Tag",
    "capability_name_validator",
]
