"""Development settings: the embedded defaults (SQLite, local memory cache, eager Celery)."""

import sys

from .base import *  # noqa: F403
from .base import ALLOWED_HOSTS, DATABASES, SALT_KEY, SECRET_KEY
from .environment import env_bool

DEBUG = env_bool("DEBUG", default=True)

if DEBUG:
    # Development-only secrets, used solely while DEBUG is on and nothing is set.
    SECRET_KEY = SECRET_KEY or "dev-insecure-secret-key-change-me-0123456789abcdefghijklmnop"
    SALT_KEY = SALT_KEY or ["dev-insecure-salt"]
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["127.0.0.1", "localhost"]

if not SECRET_KEY or not SALT_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "SECRET_KEY and SALT_KEY must be set when DEBUG is off (see docs/OPERATIONS.md)."
    )

if sys.argv[1:2] == ["runserver"]:
    # The development server serves each request on a thread of its own, so a
    # connection kept past its request would stay open with the finished thread
    # until PostgreSQL runs out of connections.
    for alias in DATABASES:
        DATABASES[alias]["CONN_MAX_AGE"] = 0
