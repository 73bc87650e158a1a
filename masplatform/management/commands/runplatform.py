from django.conf import settings
from django.core.management.base import BaseCommand

from masplatform import embedded_broker
from masplatform.procs import ProcessGroup, beat_args, web_args, worker_args


class Command(BaseCommand):
    help = "Run the web server, one Celery worker and beat together (make run). Ctrl-C stops all three."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="address:port of the web server")
        parser.add_argument("--concurrency", type=int, default=2, help="worker concurrency")

    def handle(self, *args, addr: str, concurrency: int, **options):
        started_broker = False
        if settings.CELERY_BROKER_URL == settings.EMBEDDED_BROKER_URL:
            started_broker = embedded_broker.ensure_running(settings.VAR_DIR)
        group = ProcessGroup()
        group.start("web", web_args(addr))
        group.start("worker", worker_args(concurrency=concurrency))
        group.start("beat", beat_args(settings.VAR_DIR / "celerybeat.pid"))
        self.stdout.write(f"web http://{addr}/admin/  API docs http://{addr}/api/docs/  (Ctrl-C stops all)")
        try:
            code = group.supervise()
        finally:
            if started_broker:  # queued messages stay in its append-only file for next time
                embedded_broker.stop(settings.VAR_DIR)
        raise SystemExit(code)
