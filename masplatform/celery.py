"""The Celery app ``masplatform``: ``celery -A masplatform worker`` / ``beat``.

Every setting comes from Django settings under the ``CELERY_`` namespace
(JSON only, acks_late, reject_on_worker_lost, prefetch 1, UTC, the
django-celery-beat DatabaseScheduler), copied once into a dict
(``masplatform.celery_config``) when Celery first reads them.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masplatform.settings")

app = Celery("masplatform")
app.config_from_object("masplatform.celery_config:CONFIG")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _start_embedded_broker(sender: Celery, **kwargs: object) -> None:
    """With the default (embedded) broker, make sure its server is up before anyone connects."""
    from django.conf import settings

    if settings.CELERY_BROKER_URL == settings.EMBEDDED_BROKER_URL:
        from masplatform import embedded_broker

        embedded_broker.ensure_running(settings.VAR_DIR)


@task_prerun.connect
def _check_database_connection(sender: object = None, **kwargs: object) -> None:
    """CELERY_DB_REUSE_MAX keeps each worker's connection across tasks; check it before a task (a broken one,
    or one past MASP_DB_CONN_MAX_AGE, is dropped). The agent runtime checks its own before each call,
    only after idling (agents/runtime.py), so invocations skip this. Not for a task run eagerly (in the
    caller's process and transaction), as Celery's own fix-up."""
    from django.db import close_old_connections

    from agents.dispatch import INVOKE_TASK

    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    if getattr(sender, "name", None) != INVOKE_TASK:
        close_old_connections()
