from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        from agents import schedules as agent_schedules
        from agents.services import invocation_finished, record_in_transaction
        from agents.services.registry import agent_available, agents_offline
        from workflows import receivers, schedules, services

        # the engine advances inside the transaction that records a call's outcome
        record_in_transaction(services.REQUESTER_PREFIX)
        invocation_finished.connect(receivers.invocation_finished, dispatch_uid="workflows.invocation_finished")
        agents_offline.connect(receivers.agents_offline, dispatch_uid="workflows.agents_offline")
        agent_available.connect(receivers.agent_available, dispatch_uid="workflows.agent_available")
        # the workflows' periodic tasks are created with the platform's (after migrate, setup_periodic_tasks)
        agent_schedules.register(schedules.periodic_tasks)
