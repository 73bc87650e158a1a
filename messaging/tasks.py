"""Celery entry points of the messaging app; each only calls a service (or the worker's handler)."""

from celery import shared_task

from messaging import services, worker


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def deliver(delivery_id: int) -> str:
    """Handle one delivery on the agent of this worker (sent to its queue ``agent.<agent_id>``)."""
    return worker.handle(delivery_id)


@shared_task(ignore_result=True)
def sweep_messages() -> dict[str, int]:
    return services.sweep()


@shared_task(ignore_result=True)
def purge_messages() -> int:
    return services.purge_messages()
