from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from masplatform import embedded_broker
from masplatform.procs import ProcessGroup, beat_args, web_args, worker_args


class Command(BaseCommand):
    help = (
        "Run the web server (gunicorn), one Celery worker and beat together (make run). "
        "Ctrl-C stops all three, and the embedded broker if this command started it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="address:port of the web server")
        parser.add_argument(
            "--web-workers", type=int, default=None, help="web server processes (default MASP_WEB_WORKERS or 2)"
        )
        parser.add_argument(
            "--web-threads",
            type=int,
            default=None,
            help="threads per web process: the requests, long polls included, it serves at once "
            "(default MASP_WEB_THREADS or 64)",
        )
        parser.add_argument("--concurrency", type=int, default=2, help="Celery worker concurrency")

    def handle(self, *args, addr: str, web_workers: int | None, web_threads: int | None, concurrency: int, **options):
        for name, value in (("--web-workers", web_workers), ("--web-threads", web_threads)):
            if value is not None and value < 1:
                raise CommandError(f"{name} must be at least 1, got {value}")
        started_broker = False
        if settings.CELERY_BROKER_URL == settings.EMBEDDED_BROKER_URL:
            started_broker = embedded_broker.ensure_running(settings.VAR_DIR)
        group = ProcessGroup()
        try:
            group.start("web", web_args(addr, workers=web_workers, threads=web_threads))
            group.start("worker", worker_args(concurrency=concurrency))
            group.start("beat", beat_args(settings.VAR_DIR / "celerybeat.pid"))
            self.stdout.write(f"web http://{addr}/admin/  API docs http://{addr}/api/docs/  (Ctrl-C stops all)")
            code = group.supervise()
        finally:
            group.stop_all()
            if started_broker:  # queued messages stay in its append-only file for next time
                embedded_broker.stop(settings.VAR_DIR)
        raise SystemExit(code)
