"""Celery entry points of the registry; each only calls a service."""

from celery import shared_task

from agents import services


@shared_task(ignore_result=True)
def sweep_stale_agents() -> int:
    return services.sweep_stale_agents()


@shared_task(ignore_result=True)
def purge_agent_history() -> dict[str, int]:
    return services.purge_history()
