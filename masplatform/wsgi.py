"""WSGI entry point for any WSGI server (``masplatform.wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masplatform.settings")
application = get_wsgi_application()
