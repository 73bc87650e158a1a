"""A service too slow for its clients (Exercise 2): it answers a ``service_request`` after
``MASP_SLOW_SERVICE_SECONDS`` (default 3) seconds, so that a request with a shorter timeout times out.

    python manage.py run_agent agents.examples.slow_service --pool threads --concurrency 2

The requester gets ``RequestTimedOut`` when its timeout passes, not when the handler finishes; the late
response is still recorded (acked), but not as the request's answer.
"""

from __future__ import annotations

import os
import time

from django.utils import timezone

from agents.sdk import AgentDefinition

agent = AgentDefinition("slow_service", name="Slow service", tags=("service",), metadata={"exercise": 2})


@agent.on("service_request")
def service_request(message, ctx):
    seconds = float(os.environ.get("MASP_SLOW_SERVICE_SECONDS", "3"))
    time.sleep(seconds)
    return {
        "type": "service_response",
        "service": "slow",
        "result": {"slept_seconds": seconds},
        "request_id": message.content.get("request_id"),
        "processed_at": timezone.now().isoformat(),
    }
