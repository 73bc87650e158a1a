from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery import signals

        from agents import schedules as agent_schedules
        from agents import sdk
        from agents.services.registry import agent_available
        from messaging import receivers, schedules
        from messaging.sdk_bus import PlatformBus

        sdk.install_bus(PlatformBus())
        agent_schedules.register(schedules.periodic_tasks)
        agent_available.connect(receivers.agent_available, dispatch_uid="messaging.agent_available")
        signals.worker_ready.connect(receivers.worker_ready, dispatch_uid="messaging.worker_ready", weak=False)
