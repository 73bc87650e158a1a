"""The seed's client (Exercise 2): sends requests over the message bus and collects the responses.

    python manage.py run_agent agents.examples.client --agent-id client1

Its capability ``make_requests`` (called through ``POST /api/invocations/``, pinned to the client)
sends one request per item of ``requests`` to the agent ``service`` with ``ctx.request`` and waits for
each response, up to ``timeout`` seconds. A request that gets no response is an entry with ``error``
(``timed_out``, ``no_responders`` when the service is offline or has no handler for it, ``failed``),
the platform's ``detail`` and ``message_id`` (the request's id on the bus), not a failed call: the
seed's client, too, answered ``{"error": ...}``.
Each entry says how long its request took (``ms``).
"""

from __future__ import annotations

import time
import uuid

from agents.sdk import AgentDefinition, RequestError

agent = AgentDefinition("client", name="Client", tags=("client",), metadata={"exercise": 2})


@agent.capability(
    "make_requests",
    description="Send requests to a service agent over the bus and collect its responses",
    input_schema={
        "type": "object",
        "properties": {
            "service": {"type": "string", "minLength": 1, "maxLength": 100},
            "requests": {"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": 100},
            "type": {"type": "string", "minLength": 1, "maxLength": 100, "default": "service_request"},
            "timeout": {"type": "number", "minimum": 0.1, "maximum": 60, "default": 10},
        },
        "required": ["service", "requests"],
    },
    output_schema={
        "type": "object",
        "properties": {
            "service": {"type": "string"},
            "responses": {"type": "array", "items": {"type": "object"}},
            "received": {"type": "integer"},
        },
        "required": ["service", "responses", "received"],
    },
)
def make_requests(data, ctx):
    responses = []
    for request_data in data["requests"]:
        ctx.raise_if_cancelled()
        request_id = f"req_{uuid.uuid4().hex[:12]}"
        content = {
            "type": data.get("type", "service_request"),
            "request_id": request_id,
            "request_data": request_data,
            "client_id": ctx.agent_id,
        }
        started = time.monotonic()
        entry = {"request_id": request_id, "request_data": request_data}
        try:
            entry["response"] = ctx.request(data["service"], content, timeout=data.get("timeout", 10))
        except RequestError as exc:
            entry.update(error=exc.kind, detail=exc.detail, message_id=exc.request_id)
        entry["ms"] = round((time.monotonic() - started) * 1000)
        responses.append(entry)
    return {
        "service": data["service"],
        "responses": responses,
        "received": sum(1 for r in responses if "response" in r),
    }
