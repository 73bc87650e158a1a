"""masplatform: a multi-agent task platform on Django, Celery and DRF."""

from masplatform.celery import app as celery_app

__all__ = ["celery_app"]
