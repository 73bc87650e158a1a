from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery import signals
        from django.db.models.signals import post_delete, post_save

        from agents import schedules as agent_schedules
        from agents import sdk
        from agents.services.registry import agent_available
        from messaging import receivers, schedules
        from messaging.models import RoutingRule
        from messaging.sdk_bus import PlatformBus
        from messaging.services.sending import forget_rules

        sdk.install_bus(PlatformBus())
        for signal in (post_save, post_delete):
            signal.connect(forget_rules, sender=RoutingRule, dispatch_uid=f"messaging.forget_rules.{signal}")
        agent_schedules.register(schedules.periodic_tasks)
        agent_available.connect(receivers.agent_available, dispatch_uid="messaging.agent_available")
        signals.worker_ready.connect(receivers.worker_ready, dispatch_uid="messaging.worker_ready", weak=False)
