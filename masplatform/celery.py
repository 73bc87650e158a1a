"""The Celery app ``masplatform``: ``celery -A masplatform worker`` / ``beat``.

Every setting comes from Django settings under the ``CELERY_`` namespace
(JSON only, acks_late, reject_on_worker_lost, prefetch 1, UTC, the
django-celery-beat DatabaseScheduler).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masplatform.settings")

app = Celery("masplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _start_embedded_broker(sender: Celery, **kwargs: object) -> None:
    """With the default (embedded) broker, make sure its server is up before anyone connects."""
    from django.conf import settings

    if settings.CELERY_BROKER_URL == settings.EMBEDDED_BROKER_URL:
        from masplatform import embedded_broker

        embedded_broker.ensure_running(settings.VAR_DIR)
