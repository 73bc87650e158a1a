"""gunicorn's settings for the platform's web server: ``gunicorn -c python:masplatform.gunicorn masplatform.wsgi``.

Threaded workers (gthread): a request waiting in ``?wait=`` sleeps in its thread
and holds no database connection (masplatform/notify.py), so threads, not
connections, bound the long polls a process serves. Command-line options
override these; docs/operations.md says how to size them.
"""

import os

bind = os.environ.get("MASP_WEB_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("MASP_WEB_WORKERS", "2"))
threads = int(os.environ.get("MASP_WEB_THREADS", "64"))
# Connections a worker accepts and queues for its threads (keep-alive ones included).
worker_connections = int(os.environ.get("MASP_WEB_CONNECTIONS", "1000"))
backlog = 2048
keepalive = 5
# A long poll lasts up to 30 s: a graceful stop lets it answer first.
graceful_timeout = 35
timeout = 60
accesslog = "-" if os.environ.get("MASP_WEB_ACCESS_LOG", "1") != "0" else None
access_log_format = 'event=http method=%(m)s path="%(U)s" query="%(q)s" status=%(s)s bytes=%(B)s ms=%(M)s client=%(h)s'
errorlog = "-"
loglevel = os.environ.get("MASP_WEB_LOG_LEVEL", "info")
proc_name = "masplatform-web"
# gunicorn's control socket sits at one path per user: two servers on a machine (a demo beside tests) would
# fight over it. Nothing of the platform uses it.
control_socket_disable = True
