from django.core.management.base import BaseCommand

from agents.schedules import ensure_periodic_tasks


class Command(BaseCommand):
    help = "Create the platform's periodic sweeps in django-celery-beat's tables (idempotent)."

    def handle(self, *args, **options):
        created = ensure_periodic_tasks()
        self.stdout.write(f"created: {', '.join(created)}" if created else "periodic tasks already present")
