"""The platform's periodic sweeps (registry, invocations, workflows), created in the database for django-celery-beat.

``ensure_periodic_tasks`` runs after every ``migrate`` (post_migrate) and from
``manage.py setup_periodic_tasks``. It creates what is missing and leaves
what exists alone, so an operator's retuning in the admin survives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

_providers: list[Callable[[], list[dict[str, Any]]]] = []


def register(provider: Callable[[], list[dict[str, Any]]]) -> None:
    """Add another app's periodic tasks (a function returning specs like ``periodic_tasks``) to those
    ``ensure_periodic_tasks`` creates (``manage.py setup_periodic_tasks`` and after ``migrate``)."""
    if provider not in _providers:
        _providers.append(provider)


def periodic_tasks() -> list[dict[str, Any]]:
    return [
        {
            "name": "registry: mark stale agents offline",
            "task": "agents.tasks.sweep_stale_agents",
            "every": settings.MASP_SWEEP_INTERVAL,
            "description": "Agents with no heartbeat for MASP_STALE_TIMEOUT seconds go offline.",
        },
        {
            "name": "invocations: time out calls past their deadline, re-send lost messages",
            "task": "agents.tasks.sweep_invocation_deadlines",
            "every": settings.MASP_DEADLINE_SWEEP_INTERVAL,
            "description": "Running calls with no outcome past timeout + grace: retried or timed out. Queued "
            "calls whose message is older than MASP_REDISPATCH_AFTER: published again.",
        },
        {
            "name": "workflows: end executions past their global timeout",
            "task": "workflows.tasks.sweep_workflows",
            "every": settings.MASP_WORKFLOW_SWEEP_INTERVAL,
            "description": "Executions past their global timeout end as timed_out (their calls are cancelled); "
            "calls left by finished executions are cancelled; scatter shares pinned to dead agents move.",
        },
        {
            "name": "registry: purge old agents and events",
            "task": "agents.tasks.purge_agent_history",
            "every": settings.MASP_PURGE_INTERVAL,
            "description": "Deletes agents unregistered or offline past MASP_AGENT_RETENTION_DAYS (unless a "
            "queued or running call names them), and events older than MASP_EVENT_RETENTION_DAYS.",
        },
        {
            "name": "invocations: purge finished calls past their retention",
            "task": "agents.tasks.purge_invocations",
            "every": settings.MASP_PURGE_INTERVAL,
            "description": "Deletes invocations (with their attempts) finished more than "
            "MASP_INVOCATION_RETENTION_DAYS ago, in batches of MASP_RETENTION_BATCH_SIZE; never queued or "
            "running ones, nor the calls of workflow executions (those go with their execution).",
        },
    ]


def ensure_periodic_tasks(using: str = "default", specs: list[dict[str, Any]] | None = None) -> list[str]:
    """Create the missing periodic tasks (``specs``, by default this app's and those that other apps
    registered with ``register``); returns the names created."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    created = []
    if specs is None:
        specs = [*periodic_tasks(), *(spec for provider in _providers for spec in provider())]
    for spec in specs:
        if PeriodicTask.objects.using(using).filter(name=spec["name"]).exists():
            continue
        every = max(1, round(spec["every"]))
        interval, _ = IntervalSchedule.objects.using(using).get_or_create(every=every, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.using(using).create(
            name=spec["name"],
            task=spec["task"],
            interval=interval,
            description=spec["description"],
            # A sweep that waited longer than two periods for a worker is stale: the next one will do.
            expire_seconds=max(2, every * 2),
        )
        created.append(spec["name"])
    return created


def ensure_periodic_tasks_on_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    ensure_periodic_tasks(using=using)
