from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from masplatform import embedded_broker


class Command(BaseCommand):
    help = "Start, stop or show the embedded broker (the default when MASP_BROKER_URL is not set)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["start", "stop", "status"])

    def handle(self, *args, action: str, **options):
        embedded = settings.CELERY_BROKER_URL == settings.EMBEDDED_BROKER_URL
        if action == "status":
            running = embedded_broker.is_running(settings.VAR_DIR)
            where = "embedded" if embedded else "external (MASP_BROKER_URL)"
            self.stdout.write(f"broker: {settings.CELERY_BROKER_URL} [{where}]")
            self.stdout.write(f"embedded server: {'running' if running else 'stopped'}")
            return
        if not embedded:
            raise CommandError(
                f"MASP_BROKER_URL is set ({settings.CELERY_BROKER_URL}): that broker is not ours to {action}."
            )
        if action == "start":
            started = embedded_broker.ensure_running(settings.VAR_DIR)
            self.stdout.write("started" if started else "already running")
        else:
            self.stdout.write("stopped" if embedded_broker.stop(settings.VAR_DIR) else "was not running")
