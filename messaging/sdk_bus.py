"""The SDK's view of the bus (``agents.sdk.install_bus``): sending as an agent, by its agent id."""

from __future__ import annotations

from typing import Any

from agents.models import Agent
from agents.sdk import REQUEST_ERRORS, RequestFailed, RequestTimedOut
from masplatform.exceptions import NotFound
from messaging.models import RequestStatus
from messaging.services import requests as requests_service
from messaging.services import sending


def _sender(agent_id: str) -> sending.Sender:
    agent = Agent.objects.filter(agent_id=agent_id).first()
    if agent is None:
        raise NotFound(f"no agent '{agent_id}' is registered")
    return sending.Sender.of_agent(agent)


class PlatformBus:
    def send(self, sender_agent_id: str, content: dict[str, Any], **options: Any) -> str:
        return str(sending.send(_sender(sender_agent_id), content, **options).pk)

    def request(self, sender_agent_id: str, to: str, content: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        outcome = requests_service.request(_sender(sender_agent_id), to, content, timeout=timeout)
        if outcome.ok:
            return outcome.response.content if outcome.response is not None else {}
        request_id = str(outcome.request.pk)
        if outcome.status == RequestStatus.PENDING:  # cannot happen: the wait lasts the whole timeout
            raise RequestTimedOut(f"no response within {outcome.request.timeout:g}s", request_id=request_id)
        detail = (outcome.response.content.get("detail") if outcome.response else "") or outcome.status
        raise REQUEST_ERRORS.get(
            {"timed_out": "timed_out", "no_responders": "no_responders"}.get(outcome.status, "failed"), RequestFailed
        )(detail, request_id=request_id)
