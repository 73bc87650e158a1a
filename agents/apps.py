from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agent registry"

    def ready(self) -> None:
        from agents import schedules

        # Idempotent: creates the registry's periodic sweeps if they are missing,
        # after every migrate (and after test flushes), never overriding an
        # operator's changes made in the admin.
        post_migrate.connect(schedules.ensure_periodic_tasks_on_migrate, sender=self)
