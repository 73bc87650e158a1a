"""Celery's settings: Django's ``CELERY_*`` settings, read once when Celery first needs them.

Celery reads its settings on every publish (about six per ``apply_async``). Through
Django's settings object, under the ``CELERY`` namespace, each lookup tried two
names and each miss (most settings are Celery's defaults) raised an
``AttributeError`` inside ``LazySettings.__getattr__``: 12 µs a lookup, 90 µs of
every publish (309 -> 218 µs per ``apply_async`` on the memory transport). Here the
``CELERY_`` prefix is dropped once (``CELERY_BROKER_URL`` -> ``broker_url``), into a
plain dict. Django settings changed after the app is configured (``override_settings``
in a test) do not reach Celery; set ``app.conf`` for that.
"""

from __future__ import annotations

from django.conf import settings

from masplatform.broker import celery_options

CONFIG = {
    name[len("CELERY_") :].lower(): getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")
}
# read by Celery's Django fix-up under this exact name
CONFIG["CELERY_DB_REUSE_MAX"] = getattr(settings, "CELERY_DB_REUSE_MAX", None)
# The platform's Redis transport (one client per channel; calls' messages acknowledged in memory, as
# the database recovers them): masplatform/broker.py.
CONFIG.update(celery_options(settings.CELERY_BROKER_URL))
