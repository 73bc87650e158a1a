"""Agent tokens: ``Authorization: Agent <token>``. Only the token's sha256 is stored.

A token stops working when its agent re-registers (a new token replaces it) or is unregistered:
both are read from the agent's row on every request, so either takes effect at once."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from agents.models import Agent
from agents.selectors import agent_for_token
from agents.services import hash_token


class AgentPrincipal:
    """Who a request is when it carries an agent token: the agent, with no user rights."""

    is_agent = True
    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, agent: Agent):
        self.agent = agent
        self.agent_id = agent.agent_id
        self.username = f"agent:{agent.agent_id}"

    def __str__(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False


class AgentTokenAuthentication(BaseAuthentication):
    keyword = "Agent"

    def authenticate(self, request: Request) -> tuple[AgentPrincipal, Agent] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Invalid Authorization header: expected 'Agent <token>'.")
        try:
            token = parts[1].decode()
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid agent token.") from None
        agent = agent_for_token(hash_token(token))
        if agent is None:
            raise AuthenticationFailed("Invalid agent token (unknown, or replaced by a later registration).")
        if agent.unregistered_at is not None:
            # Checked on every request (no cache): unregistering revokes the token at once.
            raise AuthenticationFailed(
                f"Agent token revoked: agent '{agent.agent_id}' was unregistered at "
                f"{agent.unregistered_at.isoformat()}; registering it again issues a new token."
            )
        return AgentPrincipal(agent), agent

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class AgentTokenScheme(OpenApiAuthenticationExtension):
    target_class = "agents.auth.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Agent token from registration, sent as `Agent <token>`.",
        }
