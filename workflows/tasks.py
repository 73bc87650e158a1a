"""Celery entry points of the workflows app; each only calls a service."""

from celery import shared_task

from workflows import services


@shared_task(ignore_result=True)
def sweep_workflows() -> dict[str, int]:
    return services.sweep()
