"""An SDK agent for the messaging tests (run_agent tests.messaging_agents --agent-id ...).

Its subscriptions come from MASP_TEST_SUBSCRIPTIONS (a JSON list of {"pattern", "types", "senders",
"where"}), so that each test's agents subscribe as it needs. Handlers write one line per run to the file
named by the content's "path", so that a test counts how often a handler ran."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from agents.sdk import AgentDefinition, RequestError

agent = AgentDefinition("messenger", name="Messaging test agent", tags=("test",))

for spec in json.loads(os.environ.get("MASP_TEST_SUBSCRIPTIONS", "[]")):
    agent.subscribe(
        spec["pattern"], types=spec.get("types", ()), senders=spec.get("senders", ()), where=spec.get("where")
    )


def _note(message, ctx, extra: str = "") -> None:
    path = message.content.get("path")
    if path:
        with open(path, "a") as f:
            f.write(
                f"{ctx.agent_id} {message.id} {message.topic or '-'} {message.content.get('seq', '-')} {ctx.attempt}{extra}\n"
            )


@agent.on("note")
def note(message, ctx):
    _note(message, ctx)
    time.sleep(message.content.get("sleep", 0))


@agent.on("event")
def any_event(message, ctx):
    _note(message, ctx)


@agent.on("broadcast")
def any_broadcast(message, ctx):
    _note(message, ctx)


@agent.on("fail")
def fail(message, ctx):
    _note(message, ctx)
    if ctx.attempt <= message.content.get("fail_times", 1000):
        raise ValueError(f"failure number {ctx.attempt}")
    return {"ok": True}


@agent.on("slow")
def slow(message, ctx):
    marker = message.content.get("started_marker")
    if marker:
        Path(marker).write_text(str(ctx.attempt))
    _note(message, ctx, " start")
    time.sleep(message.content.get("seconds", 1))
    _note(message, ctx, " end")
    return {"slept": message.content.get("seconds", 1)}


@agent.on("add")
def add(message, ctx):
    return {"sum": message.content["a"] + message.content["b"], "by": ctx.agent_id}


@agent.on("ask")
def ask(message, ctx):
    """Relays a request to another agent from inside a handler (ctx.request), answering with its answer."""
    try:
        return {
            "relayed": ctx.request(
                message.content["to"], message.content["request"], timeout=message.content.get("timeout", 5)
            )
        }
    except RequestError as exc:
        return {"error": exc.kind, "detail": exc.detail}


@agent.capability("announce", input_schema={"type": "object"}, output_schema={"type": "object"})
def announce(data, ctx):
    """A capability that publishes (ctx.publish) and sends (ctx.send) from inside a call."""
    published = ctx.publish(data["topic"], {"type": "note", "path": data.get("path"), "seq": 1})
    return {"published": published}
