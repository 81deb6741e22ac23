"""Settings shared by every environment, read through config/settings/environment.py."""

from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from .consistency import settings_conflicts_refuse
from .environment import (
    env_bool,
    env_choice,
    env_int,
    env_number,
    env_secret,
    env_secrets,
    env_str,
    env_strings,
    env_text,
    env_throttle_rate,
    env_url,
    env_work_mem,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# A .env file is optional; the environment always wins over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env_bool("DEBUG", default=False)

ALLOWED_HOSTS = env_strings("ALLOWED_HOSTS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "llm_providers",
    "overrides",
    "usage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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

# PostgreSQL (psycopg 3), or SQLite. Errors about the URL never quote it: it holds a password.
_DATABASE_URL_EXAMPLE = "postgres://user:password@host:5432/llm"
try:
    DATABASES = {
        "default": environ.Env.db_url_config(
            env_url(
                "DATABASE_URL",
                schemes=("postgres", "postgresql", "pgsql", "psql", "sqlite"),
                example=_DATABASE_URL_EXAMPLE,
            )
            or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
        ),
    }
except ValueError:  # a port that is not a number
    raise ImproperlyConfigured(
        f"DATABASE_URL is not a database URL: expected e.g. {_DATABASE_URL_EXAMPLE} "
        "(see docs/OPERATIONS.md)."
    ) from None
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections: a completion must not pay for a new connection.
    DATABASES["default"]["CONN_MAX_AGE"] = env_int(
        "CONN_MAX_AGE", default=60, minimum=0, maximum=86_400
    )
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Call logs are written on a connection of their own: a log must outlive a
    # caller's transaction that rolls back (the provider was paid anyway), and
    # the write need not wait for the WAL flush. A database crash can lose the
    # last fraction of a second of logs; nothing else is written there.
    DATABASES["call_logs"] = {
        **DATABASES["default"],
        "OPTIONS": {
            **DATABASES["default"].get("OPTIONS", {}),
            "options": "-c synchronous_commit=off",
            # Server-side parameters: psycopg prepares the one INSERT it repeats.
            "server_side_binding": True,
        },
        "TEST": {"MIRROR": "default"},
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded database serves every thread of the server. A transaction
    # takes the write lock when it begins, so that one which read first (the
    # budget gate, settlements, the roll-up) waits its turn instead of failing
    # at once with "database is locked" when it comes to write; WAL lets
    # readers go on while one writes; 20 s is the longest a write waits.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL",
        **DATABASES["default"].get("OPTIONS", {}),
    }
CALL_LOG_DATABASE = "call_logs" if "call_logs" in DATABASES else "default"
# Write call logs and settle budgets on a background thread after each call
# (usage/bookkeeping.py); on by default with PostgreSQL, inline with SQLite.
CALL_LOG_ASYNC = env_bool("CALL_LOG_ASYNC", default="call_logs" in DATABASES)
# Bookkeeping items a process may hold before callers write their own inline.
BOOKKEEPING_QUEUE_SIZE = env_int("BOOKKEEPING_QUEUE_SIZE", default=10_000, maximum=1_000_000)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_REDIS_SCHEMES = ("redis", "rediss", "unix")
REDIS_URL = env_url("REDIS_URL", schemes=_REDIS_SCHEMES, example="redis://host:6379/0")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "llmpl",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # 1 s socket timeouts: a cache that takes longer is down, and
                # the completion path must not hang on it.
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "llm-provider-layer",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# After a Redis command fails (connection error or timeout), the process sends
# that Redis nothing for this many seconds: each use fails at once, as if
# refused, instead of waiting for its socket timeout; then one command tries it
# again (llm_providers.redis_outage). 0 turns this off.
CACHE_OUTAGE_RETRY_SECONDS = env_number("CACHE_OUTAGE_RETRY_SECONDS", default=5.0, maximum=300.0)
DJANGO_REDIS_CONNECTION_FACTORY = "llm_providers.redis_outage.ConnectionFactory"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# Days read YYYY-MM-DD in the admin, as its times do (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "admin:login"

# --- Secrets -----------------------------------------------------------------
# SALT_KEY is a list: the first entry encrypts, every entry decrypts. Rotating
# means prepending a new salt, running `manage.py rotate_keys`, then dropping
# the old one (docs/OPERATIONS.md).
SECRET_KEY = env_secret("SECRET_KEY")
SALT_KEY = env_secrets("SALT_KEY")
# Previous SECRET_KEYs: sessions, signatures and encrypted fields still read
# with them; encrypted fields are rewritten under SECRET_KEY by `rotate_keys`.
SECRET_KEY_FALLBACKS = env_secrets("SECRET_KEY_FALLBACKS")

# Error reports star out passwords inside connection URLs (EMAIL_URL,
# REDIS_URL...) as well as the settings whose names look secret.
DEFAULT_EXCEPTION_REPORTER = "config.error_reports.ExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.error_reports.ExceptionReporterFilter"

# --- Provider safety ---------------------------------------------------------
# Refuse provider base URLs that resolve to private, loopback, link-local or
# multicast addresses (SSRF) unless explicitly allowed, e.g. for a local Ollama.
PROVIDER_ALLOW_PRIVATE_URLS = env_bool("PROVIDER_ALLOW_PRIVATE_URLS", default=False)

# --- Email -------------------------------------------------------------------
# Unset or empty: mail goes to the console (development). Production keeps
# that default but fails alert emails instead of calling them delivered
# (ALERT_EMAIL_CONFIGURED, see production.py). The URL holds a password:
# errors about it never quote it.
EMAIL_URL = env_text("EMAIL_URL")
ALERT_EMAIL_CONFIGURED = True
try:
    EMAIL_CONFIG = environ.Env.email_url_config(EMAIL_URL or "consolemail://")
except Exception:  # noqa: BLE001 - django-environ raises several kinds for a bad URL
    raise ImproperlyConfigured(
        "EMAIL_URL is not a mail URL: expected e.g. smtp+tls://user:password@host:587 "
        "or consolemail:// (see docs/OPERATIONS.md)."
    ) from None
if EMAIL_CONFIG["EMAIL_BACKEND"].endswith(".smtp.EmailBackend") and not EMAIL_CONFIG.get(
    "EMAIL_HOST"
):
    raise ImproperlyConfigured(
        "EMAIL_URL names no mail host: expected e.g. smtp+tls://user:password@host:587."
    )
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", default="llm-layer@localhost")
# 10 s per SMTP operation: a mail server that takes longer is down; the
# alert delivery is retried later.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", default=10, maximum=300)

# --- Celery, usage, budgets and alerts (usage app) ------------------------------
# The broker is CELERY_BROKER_URL, else REDIS_URL. With neither, tasks run eagerly
# in the calling process (the embedded default: `make run` needs no worker).
# Empty counts as unset, as a compose file writes a variable that is not set.
# The in-process transport names a host, as kombu otherwise warns on every first task.
EMBEDDED_BROKER_URL = "memory://localhost/"


def _broker_url(redis_url: str) -> str:
    """The broker URL of a Redis URL: kombu names a Redis unix socket
    `redis+socket://` and its database `virtual_host`, where redis-py says
    `unix://` and `db`."""
    parts = urlsplit(redis_url)
    if parts.scheme != "unix":
        return redis_url
    query = parse_qs(parts.query)
    query["virtual_host"] = query.pop("db", ["0"])
    return f"redis+socket://{parts.netloc}{parts.path}?{urlencode(query, doseq=True)}"


CELERY_BROKER_URL = env_text("CELERY_BROKER_URL") or (
    _broker_url(REDIS_URL) if REDIS_URL else EMBEDDED_BROKER_URL
)
CELERY_TASK_ALWAYS_EAGER = env_bool(
    "CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL.startswith("memory://")
)
CELERY_TASK_EAGER_PROPAGATES = True
# Without a broker the usage dashboard and the usage API roll the call logs up
# themselves before they read DailyUsage, fresher than the last scheduled run.
USAGE_ROLL_UP_ON_READ = env_bool("USAGE_ROLL_UP_ON_READ", default=CELERY_TASK_ALWAYS_EAGER)
# Without a broker there is no `celery beat` either: the serving process runs
# CELERY_BEAT_SCHEDULE itself on a thread (config/embedded_beat.py). Off, nothing
# runs on a schedule then. Never used with a broker.
EMBEDDED_BEAT = env_bool("EMBEDDED_BEAT", default=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TIMEZONE = "UTC"
# Usage tasks are idempotent: acknowledge after running, so a worker that dies
# mid-task leaves it to be run again rather than lost.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Socket timeouts on the broker connection: without them a broker that hangs
# (paused, failed over, a dropped connection) holds whatever queues a task, an
# admin request or an alert, for ever. Longer than the worker's 1 s BRPOP.
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 5}
# 10 minutes: no usage task is expected to take longer; a hung one is killed.
# At most an hour, the Redis broker's visibility timeout: a task not acknowledged
# by then (acks late) is handed to another worker while the first still runs it.
# At least an alert delivery's time limit and a minute (config/settings/consistency.py).
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", default=600, maximum=3600)

# How often CallLog is rolled up into DailyUsage (threshold, error-rate and
# unpriced checks follow each run), and how far back every run recomputes.
# The roll-up runs at least daily; it looks back a week at most, as a late log's
# day is recomputed whatever its age.
USAGE_AGGREGATION_INTERVAL_SECONDS = env_int(
    "USAGE_AGGREGATION_INTERVAL_SECONDS", default=300, maximum=86_400
)
USAGE_AGGREGATION_LOOKBACK_MINUTES = env_int(
    "USAGE_AGGREGATION_LOOKBACK_MINUTES", default=120, minimum=0, maximum=10_080
)
# PostgreSQL work_mem of the aggregation transaction: room to group a month of
# logs in memory (a backfill of a busy month may want more).
USAGE_AGGREGATION_WORK_MEM = env_work_mem("USAGE_AGGREGATION_WORK_MEM", default="256MB")
# Connections a recompute of several days (a backfill, a recount, the
# dashboard's "Recompute") shares its days among on PostgreSQL, each with its
# own work_mem; the periodic run uses one.
USAGE_AGGREGATION_WORKERS = env_int("USAGE_AGGREGATION_WORKERS", default=2, maximum=32)
# Call logs older than this are deleted; DailyUsage is kept. 0 keeps them forever.
# Else long enough for an aggregation to run over a day once it has ended
# (config/settings/consistency.py).
# At most 1,000 years: a "for ever" written as 9999999 days reaches back before
# year 1, which no date can, and every aggregation and purge would fail.
USAGE_CALL_LOG_RETENTION_DAYS = env_int(
    "USAGE_CALL_LOG_RETENTION_DAYS",
    default=90,
    minimum=0,
    maximum=365_000,
    zero="0 keeps call logs for ever",
)
USAGE_RETENTION_PURGE_INTERVAL_SECONDS = env_int(
    "USAGE_RETENTION_PURGE_INTERVAL_SECONDS", default=86_400, maximum=604_800
)
# Budget counters: "redis" when REDIS_URL is set, else "database" (row locks).
USAGE_BUDGET_BACKEND = env_choice(
    "USAGE_BUDGET_BACKEND",
    choices=("redis", "database"),
    default="redis" if REDIS_URL else "database",
)
USAGE_BUDGET_REDIS_URL = (
    env_url("USAGE_BUDGET_REDIS_URL", schemes=_REDIS_SCHEMES, example="redis://host:6379/0")
    or REDIS_URL
)
if USAGE_BUDGET_BACKEND == "redis" and not USAGE_BUDGET_REDIS_URL:
    raise ImproperlyConfigured(
        "USAGE_BUDGET_BACKEND is redis, which needs USAGE_BUDGET_REDIS_URL or REDIS_URL "
        "(see docs/OPERATIONS.md)."
    )
# A reservation not settled within this time is given back (a crashed worker
# cannot hold budget for longer). A day at most; at least LLM_CALL_DEADLINE_SECONDS
# and a minute to settle, and a call may set a deadline up to this less that
# minute (config/settings/consistency.py).
USAGE_BUDGET_RESERVATION_TTL_SECONDS = env_int(
    "USAGE_BUDGET_RESERVATION_TTL_SECONDS", default=900, maximum=86_400
)
# Warm Redis counters are rebuilt from CallLog at least this often, which bounds
# any drift (e.g. a worker that died between logging and settling).
USAGE_BUDGET_COUNTER_REBUILD_SECONDS = env_int(
    "USAGE_BUDGET_COUNTER_REBUILD_SECONDS", default=3600, maximum=86_400
)
# Provider error-rate alerts: more than this share of errors among at least
# MIN_REQUESTS attempts over the last WINDOW_MINUTES, checked after each
# aggregation: the window spans at least the aggregation interval.
USAGE_ERROR_RATE_THRESHOLD = env_number("USAGE_ERROR_RATE_THRESHOLD", default=0.2, maximum=1.0)
USAGE_ERROR_RATE_WINDOW_MINUTES = env_int(
    "USAGE_ERROR_RATE_WINDOW_MINUTES", default=15, maximum=1440
)
USAGE_ERROR_RATE_MIN_REQUESTS = env_int(
    "USAGE_ERROR_RATE_MIN_REQUESTS", default=20, maximum=1_000_000
)
# Alert delivery: failed sends are retried with exponential backoff
# (base, doubled per attempt, capped), up to MAX_ATTEMPTS; state is kept either way.
# Deliveries are sent at least daily; a backoff is a week at most, and a delivery
# is tried 100 times at most.
USAGE_ALERT_RETRY_INTERVAL_SECONDS = env_int(
    "USAGE_ALERT_RETRY_INTERVAL_SECONDS", default=60, maximum=86_400
)
USAGE_ALERT_RETRY_BASE_SECONDS = env_int(
    "USAGE_ALERT_RETRY_BASE_SECONDS", default=60, minimum=0, maximum=86_400
)
USAGE_ALERT_RETRY_MAX_SECONDS = env_int(
    "USAGE_ALERT_RETRY_MAX_SECONDS", default=3600, maximum=604_800
)
USAGE_ALERT_MAX_ATTEMPTS = env_int("USAGE_ALERT_MAX_ATTEMPTS", default=24, maximum=100)
# 5 s: a webhook receiver that takes longer is treated as down and retried.
USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS = env_number(
    "USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS", default=5.0, above_minimum=True, maximum=300.0
)
# 60 s: an alert email whose SMTP session takes longer in all is cut off and
# retried (EMAIL_TIMEOUT bounds each read or write, not the session).
USAGE_ALERT_EMAIL_TIMEOUT_SECONDS = env_number(
    "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS", default=60.0, above_minimum=True, maximum=600.0
)
# Admin lists of CallLog and DailyUsage count at most this many rows.
USAGE_ADMIN_COUNT_CAP = env_int("USAGE_ADMIN_COUNT_CAP", default=10_000, maximum=10_000_000)

CELERY_BEAT_SCHEDULE = {
    "usage-aggregate": {
        "task": "usage.aggregate_daily_usage",
        "schedule": USAGE_AGGREGATION_INTERVAL_SECONDS,
        # A run that waited a whole interval in the queue is superseded by the next.
        "options": {"expires": USAGE_AGGREGATION_INTERVAL_SECONDS},
    },
    "usage-alert-deliveries": {
        "task": "usage.send_due_alert_deliveries",
        "schedule": USAGE_ALERT_RETRY_INTERVAL_SECONDS,
        "options": {"expires": USAGE_ALERT_RETRY_INTERVAL_SECONDS},
    },
    "usage-call-log-retention": {
        "task": "usage.purge_call_logs",
        "schedule": USAGE_RETENTION_PURGE_INTERVAL_SECONDS,
        "options": {"expires": USAGE_RETENTION_PURGE_INTERVAL_SECONDS},
    },
}
# --- end of the usage block ---------------------------------------------------

# --- REST framework (the API: docs/API.md) -------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Token first: an unauthenticated request gets 401 with `WWW-Authenticate: Token`.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "llm_providers.api.authentication.TokenAuthentication",
        "llm_providers.api.authentication.ServiceKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["llm_providers.api.permissions.TenantRolePermission"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["llm_providers.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "llm_providers.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["llm_providers.api.throttling.CredentialRateThrottle"],
    # Requests per credential: a service key, a user, or (unauthenticated) a client address;
    # failed authentications (API credentials and login forms) per client address.
    "DEFAULT_THROTTLE_RATES": {
        "service_key": env_throttle_rate("API_THROTTLE_SERVICE_KEY", default="6000/min"),
        "user": env_throttle_rate("API_THROTTLE_USER", default="1200/min"),
        "anon": env_throttle_rate("API_THROTTLE_ANON", default="60/min"),
        "auth_failure": env_throttle_rate("API_THROTTLE_AUTH_FAILURE", default="30/min"),
    },
    # Proxies in front of the application: anonymous clients and failed authentications
    # are told apart by the address that many hops back in X-Forwarded-For, which a
    # client cannot forge; 0 uses the connecting address. Production assumes one proxy.
    "NUM_PROXIES": env_int("NUM_PROXIES", default=0, minimum=0, maximum=10),
    "EXCEPTION_HANDLER": "llm_providers.api.exception_handlers.api_exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LLM Provider Layer API",
    "DESCRIPTION": "Provider keys, routing, completions and usage for many tenants.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Tags and operation ids from the path after the version: "providers", "calls"...
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Separate request and response components: write-only secrets appear
    # only in requests, read-only fields only in responses.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "llm_providers.api.schema.postprocess_add_tenant_and_errors",
    ],
    "ENUM_NAME_OVERRIDES": {
        "CallStatusEnum": "usage.models.CallLog.Status",
        "PriceSourceEnum": "usage.models.CallLog.PriceSource",
        "ProviderTypeEnum": "llm_providers.provider_types.ProviderType",
        "TestStatusEnum": "llm_providers.models.ProviderConfig.TestStatus",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    # Key-shaped text and credential headers are redacted from every record a
    # handler writes (llm_providers/log_redaction.py): list this filter on any
    # handler added here.
    "filters": {
        "redact_secrets": {"()": "llm_providers.log_redaction.SecretRedactingFilter"},
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        },
        # Django's own handlers, replaced by these so that they carry the filter
        # (Django's console handler goes: the root's writes the same records).
        "mail_admins": {
            "level": "ERROR",
            "class": "django.utils.log.AdminEmailHandler",
            "filters": ["require_debug_false", "redact_secrets"],
        },
        "django.server": {
            "level": "INFO",
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["redact_secrets"],
        },
    },
    "root": {
        "handlers": ["console"],
        "level": env_choice(
            "LOG_LEVEL",
            choices=("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "NOTSET"),
            default="INFO",
        ),
    },
    "loggers": {
        "django": {"handlers": ["mail_admins"], "level": "INFO"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
        # The SDKs log request details at DEBUG (botocore: every request's
        # headers, the SigV4 Authorization header naming the access key id);
        # keep them quiet. Turned up to debug, the filter above still redacts.
        "openai": {"level": "WARNING"},
        "anthropic": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# --- Completion service ------------------------------------------------------
# How long a process trusts the config versions it read (routes, prices and
# budgets of a tenant): a change made in another process applies within this.
CONFIG_VERSION_LOCAL_SECONDS = env_number("CONFIG_VERSION_LOCAL_SECONDS", default=1.0, maximum=60.0)
# Attempts per route target before moving to the next fallback (1 = no retry).
LLM_RETRY_ATTEMPTS = env_int("LLM_RETRY_ATTEMPTS", default=2, maximum=10)
# Exponential backoff between attempts: base, doubled per attempt, capped.
LLM_RETRY_BACKOFF_SECONDS = env_number("LLM_RETRY_BACKOFF_SECONDS", default=0.5, maximum=60.0)
LLM_RETRY_BACKOFF_MAX_SECONDS = env_number(
    "LLM_RETRY_BACKOFF_MAX_SECONDS", default=8.0, maximum=600.0
)
# A provider asking us to wait longer than this is skipped for the next fallback.
LLM_RETRY_AFTER_MAX_SECONDS = env_number("LLM_RETRY_AFTER_MAX_SECONDS", default=20.0, maximum=600.0)
# The whole call's deadline (attempts, retries, waits and fallbacks), unless a
# call sets its own. 90 s: one attempt at the default 60 s provider timeout
# keeps all of it, with 30 s left for a retry or fallback; and it ends before
# the 100 s that common proxies and CDNs give a request. Set it below the
# timeout of whatever is in front of the API (docs/OPERATIONS.md).
LLM_CALL_DEADLINE_SECONDS = env_number(
    "LLM_CALL_DEADLINE_SECONDS", default=90.0, minimum=1.0, maximum=600.0
)
# A streamed answer over HTTP writes a keep-alive comment after this many
# seconds without an event, so that a client gone away is noticed and its
# upstream request stopped while the provider sends nothing. 0 turns them off.
STREAM_KEEPALIVE_SECONDS = env_number("STREAM_KEEPALIVE_SECONDS", default=10.0, maximum=300.0)
# Output tokens assumed for TPM limits and budget reservations when a call sets
# no max_tokens.
LLM_DEFAULT_MAX_TOKENS_ESTIMATE = env_int(
    "LLM_DEFAULT_MAX_TOKENS_ESTIMATE", default=4096, maximum=1_000_000
)

# --- Settings that depend on one another ----------------------------------------
# Each is read within its own range above; a combination that would break a
# guarantee stops the start here, naming both settings (config/settings/consistency.py).
settings_conflicts_refuse(globals())
