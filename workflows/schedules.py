"""The workflows app's periodic tasks, added to the platform's (``agents.schedules.register``, in
``WorkflowsConfig.ready``), so they are created after ``migrate`` and by ``setup_periodic_tasks``."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def periodic_tasks() -> list[dict[str, Any]]:
    return [
        {
            "name": "workflows: purge finished executions past their retention",
            "task": "workflows.tasks.purge_executions",
            "every": settings.MASP_PURGE_INTERVAL,
            "description": "Deletes workflow executions finished more than MASP_EXECUTION_RETENTION_DAYS ago, "
            "with their task runs and their calls (invocations and attempts), in batches of "
            "MASP_EXECUTION_PURGE_BATCH_SIZE executions; never an execution that runs, is paused or "
            "still has an unfinished call.",
        },
    ]
