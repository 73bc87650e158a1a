"""The bus's periodic tasks, created with the platform's (agents.schedules)."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def periodic_tasks() -> list[dict[str, Any]]:
    return [
        {
            "name": "messaging: expire, re-deliver unacked, time out requests",
            "task": "messaging.tasks.sweep_messages",
            "every": settings.MASP_MESSAGE_SWEEP_INTERVAL,
            "description": "Waiting deliveries past their expiry: expired. Deliveries not acked by their visibility "
            "deadline: handed out again (dead after MASP_MESSAGE_MAX_ATTEMPTS). Requests past their timeout: "
            "timed out with an error response. Celery messages older than MASP_MESSAGE_REDISPATCH_AFTER: sent again.",
        },
        {
            "name": "messaging: purge old messages",
            "task": "messaging.tasks.purge_messages",
            "every": settings.MASP_PURGE_INTERVAL,
            "description": "Deletes messages (with their deliveries) older than MASP_MESSAGE_RETENTION_DAYS whose "
            "deliveries are all final, in batches of MASP_RETENTION_BATCH_SIZE.",
        },
    ]
