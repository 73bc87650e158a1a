"""Celery entry points of the workflows app; each only calls a service."""

from celery import shared_task

from workflows import retention, services


@shared_task(ignore_result=True)
def sweep_workflows() -> dict[str, int]:
    return services.sweep()


@shared_task(ignore_result=True)
def purge_executions() -> dict[str, int]:
    return retention.purge_executions()
