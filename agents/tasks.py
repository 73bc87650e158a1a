"""Celery entry points of the agents app; each only calls a service (or the agent runtime)."""

from celery import Task, shared_task

from agents import runtime, services


@shared_task(ignore_result=True)
def sweep_stale_agents() -> int:
    return services.sweep_stale_agents()


@shared_task(ignore_result=True)
def purge_agent_history() -> dict[str, int]:
    return services.purge_history()


@shared_task(ignore_result=True)
def purge_invocations() -> int:
    return services.purge_invocations()


@shared_task(ignore_result=True)
def sweep_invocation_deadlines() -> dict[str, int]:
    return {"timed_out": services.sweep_deadlines(), "redispatched": services.redispatch_waiting()}


@shared_task(bind=True, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_invocation(self: Task, invocation_id: str) -> str:
    """Run one invocation on the agent of this worker (routed here by capability or pinned agent)."""
    # the message's soft time limit is the call's timeout: a hint that lets the claim skip a statement
    limits = self.request.timelimit or (None, None)
    soft = limits[1] if len(limits) > 1 else None
    return runtime.execute(invocation_id, timeout=float(soft) if soft else None)
