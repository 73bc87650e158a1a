"""The seed's publisher (Exercise 2): publishes readings to a topic over the message bus.

Run one process per publisher, each under its own agent id::

    python manage.py run_agent agents.examples.publisher --agent-id weather_pub

Its capability ``publish_readings`` (called through ``POST /api/invocations/``, pinned to the
publisher with ``"agent": "weather_pub"``) publishes each reading as the seed's ``data_update``
message. ``ctx.publish`` sends as the agent running the call: subscribers see ``sender`` =
``weather_pub`` because the platform says so, not because the message claims it.
"""

from __future__ import annotations

from django.utils import timezone

from agents.sdk import AgentDefinition

agent = AgentDefinition("publisher", name="Publisher", tags=("publisher",), metadata={"exercise": 2})


@agent.capability(
    "publish_readings",
    description="Publish each reading to a topic as a data_update message",
    input_schema={
        "type": "object",
        "properties": {
            "topic": {"type": "string", "minLength": 1, "maxLength": 255},
            "readings": {"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": 1000},
            "first_sequence": {"type": "integer", "minimum": 1},
        },
        "required": ["topic", "readings"],
    },
    output_schema={
        "type": "object",
        "properties": {
            "topic": {"type": "string"},
            "published": {"type": "integer"},
            "message_ids": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["topic", "published", "message_ids"],
    },
)
def publish_readings(data, ctx):
    topic = data["topic"]
    first = data.get("first_sequence", 1)
    ids = []
    for offset, reading in enumerate(data["readings"]):
        ctx.raise_if_cancelled()
        ids.append(
            ctx.publish(
                topic,
                {
                    "type": "data_update",
                    "topic": topic,
                    "data": reading,
                    "timestamp": timezone.now().isoformat(),
                    "sequence": first + offset,
                },
            )
        )
    return {"topic": topic, "published": len(ids), "message_ids": ids}
