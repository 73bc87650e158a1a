"""An agent that offers no capability (it must never be sent work)."""

from agents.sdk import AgentDefinition

agent = AgentDefinition("idle_one", name="Offers nothing")
