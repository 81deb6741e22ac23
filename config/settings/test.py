"""Test settings: PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set, else embedded."""

from .base import *  # noqa: F403
from .base import DATABASES
from .environment import env_bool

DEBUG = False
SECRET_KEY = "test-secret-key-not-for-production-0123456789abcdefghijklmnopqrstuv"
SALT_KEY = ["test-salt-primary"]
SECRET_KEY_FALLBACKS: list[str] = []
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Loopback upstream servers are how the tests speak to "providers".
PROVIDER_ALLOW_PRIVATE_URLS = False

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Tests open and close connections from many threads; do not keep them.
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# Tests write call logs on the default connection, inside each test's
# transaction, so that they roll back with it; tests/usage/test_call_logs.py
# opens the production-style separate connection itself.
DATABASES.pop("call_logs", None)
CALL_LOG_DATABASE = "default"
# Rows are there when complete() returns; tests/usage/test_bookkeeping.py
# covers the background writer.
CALL_LOG_ASYNC = False

# Streams are read on the request's thread, inside each test's transaction;
# tests that need keep-alives (a thread reading the stream) turn them on with a
# committed database (tests/llm_providers/api/test_events.py).
STREAM_KEEPALIVE_SECONDS = 0.0

# Retries in tests wait milliseconds, not seconds.
LLM_RETRY_BACKOFF_SECONDS = 0.001
LLM_RETRY_BACKOFF_MAX_SECONDS = 0.01

# Tasks run inline unless a test starts a real worker (tests/usage/test_tasks.py).
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=True)
# Tests stand for a deployment with a beat: readers of DailyUsage read what is
# stored; tests of the embedded defaults turn this on.
USAGE_ROLL_UP_ON_READ = env_bool("USAGE_ROLL_UP_ON_READ", default=False)
