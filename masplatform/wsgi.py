"""WSGI entry point for the web server (``gunicorn masplatform.wsgi:application``, see masplatform/gunicorn.py)."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masplatform.settings")
# A web process: on PostgreSQL its requests share a bounded connection pool (masplatform/settings.py).
os.environ.setdefault("MASP_WEB_PROCESS", "1")

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
# Move everything loaded so far (Django, DRF, Celery...) out of the collector's sight: full
# collections then walk only what requests create, which cut p99 pauses in bench/registry.py.
# gunicorn imports this module in each worker after the fork (no --preload), so this runs there.
gc.freeze()
