"""Settings read from the environment; production refuses to start without secrets.

Each case starts a fresh Python process, because settings are read once per process.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Sum
from django.utils import timezone
from rest_framework.throttling import SimpleRateThrottle

from config.settings import environment
from config.settings.environment import (
    env_bool,
    env_choice,
    env_int,
    env_number,
    env_str,
    env_strings,
    env_throttle_rate,
    env_url,
    env_work_mem,
)
from tests.factories import CallLogFactory
from usage.aggregation import daily_usage_recompute_recent
from usage.budget import budget_reserve
from usage.models import Budget, BudgetHold, CallLog, DailyUsage
from usage.selectors import provider_error_rates
from usage.services import budget_create

BASE_DIR = Path(__file__).resolve().parent.parent.parent
SETTINGS_DIR = BASE_DIR / "config" / "settings"
OPERATIONS = BASE_DIR / "docs" / "OPERATIONS.md"

# Calls that read a variable named by their first argument: the readers of
# config/settings/environment.py and anything else that reads the environment.
_READER_CALL = re.compile(r"(^|\.)(_?env\w*|getenv)$|^os\.environ\.\w+$|^env\.\w+$")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _reads(path: Path) -> dict[str, str]:
    """The variables a settings module reads, each with the function that reads it."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        name = reader = None
        if isinstance(node, ast.Call) and node.args and _READER_CALL.search(_dotted(node.func)):
            name, reader = node.args[0], _dotted(node.func)
        elif isinstance(node, ast.Subscript) and _dotted(node.value) == "os.environ":
            name, reader = node.slice, "os.environ[]"
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            found[name.value] = reader
    return found


# Module name ("base", "production"...) -> {variable: reader}.
READS = {path.stem: _reads(path) for path in sorted(SETTINGS_DIR.glob("*.py"))}
READ_VARIABLES = {name for reads in READS.values() for name in reads}
# Removed from the child's environment so that the machine running the tests
# does not leak into the cases.
SETTINGS_VARIABLES = READ_VARIABLES | {"DJANGO_SETTINGS_MODULE"}
# A key as `secrets.token_urlsafe(50)` makes one: long and varied, as
# `check --deploy` wants.
STRONG_SECRET_KEY = "q3Zt8vK1mW9xR2pL6nB4cY7hJ0sD5fG8aE1uI3oT6yV9wQ2zX4kM7rN0bH5jC8lP"
PRODUCTION_ENV = {
    "SECRET_KEY": STRONG_SECRET_KEY,
    "SALT_KEY": "salt-2025,salt-2024",
    "ALLOWED_HOSTS": "llm.example.com",
    "REDIS_URL": "redis://cache.internal:6379/0",
}

SHOW_SETTINGS = """
import json
import logging
import django
django.setup()
from django.conf import settings as s
db = s.DATABASES["default"]
print(json.dumps({
    "DEBUG": s.DEBUG,
    "DB_ENGINE": db["ENGINE"], "DB_NAME": str(db["NAME"]), "DB_HOST": db.get("HOST", ""),
    "DB_PORT": str(db.get("PORT", "")),
    "CALL_LOG_DATABASE": s.CALL_LOG_DATABASE,
    "CALL_LOG_DB_OPTIONS": s.DATABASES.get(s.CALL_LOG_DATABASE, {}).get("OPTIONS", {}),
    "CACHE_BACKEND": s.CACHES["default"]["BACKEND"],
    "CACHE_LOCATION": s.CACHES["default"].get("LOCATION"),
    "CELERY_BROKER_URL": s.CELERY_BROKER_URL,
    "CELERY_TASK_ALWAYS_EAGER": s.CELERY_TASK_ALWAYS_EAGER,
    "USAGE_ROLL_UP_ON_READ": s.USAGE_ROLL_UP_ON_READ,
    "SECRET_KEY": s.SECRET_KEY, "SALT_KEY": s.SALT_KEY,
    "SECRET_KEY_FALLBACKS": s.SECRET_KEY_FALLBACKS,
    "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "EMAIL_BACKEND": s.EMAIL_BACKEND, "EMAIL_HOST": getattr(s, "EMAIL_HOST", ""),
    "EMAIL_PORT": getattr(s, "EMAIL_PORT", None),
    "ALERT_EMAIL_CONFIGURED": s.ALERT_EMAIL_CONFIGURED,
    "PROVIDER_ALLOW_PRIVATE_URLS": s.PROVIDER_ALLOW_PRIVATE_URLS,
    "THROTTLE_RATES": s.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
}))
"""


def _run(args: list[str], *, settings_module: str | None, env: dict[str, str] | None = None):
    """Run Python in a fresh process; `settings_module=None` leaves DJANGO_SETTINGS_MODULE unset."""
    child_env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    if settings_module is not None:
        child_env["DJANGO_SETTINGS_MODULE"] = settings_module
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _settings(settings_module: str, env: dict[str, str] | None = None) -> dict:
    result = _run(["-c", SHOW_SETTINGS], settings_module=settings_module, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def embedded():
    """Development settings with nothing set: the embedded defaults."""
    return _settings("config.settings.development")


@pytest.fixture(scope="module")
def from_environment():
    return _settings(
        "config.settings.production",
        {
            **PRODUCTION_ENV,
            "SALT_KEY": " salt-2025 , salt-2024 ",
            "SECRET_KEY_FALLBACKS": "previous-secret-key",
            "ALLOWED_HOSTS": "llm.example.com, api.example.com",
            "DATABASE_URL": "postgres://app:pw@db.internal:6432/llm",
            "REDIS_URL": "redis://cache.internal:6379/3",
            "CELERY_BROKER_URL": "redis://cache.internal:6379/4",
            "EMAIL_URL": "smtp+tls://mailer:pw@smtp.example.com:587",
            "PROVIDER_ALLOW_PRIVATE_URLS": "true",
            "API_THROTTLE_AUTH_FAILURE": "10/min",
            "DEBUG": "true",
        },
    )


# --- embedded defaults ---------------------------------------------------------------------


def test_default_database_is_sqlite_file_in_project(embedded):
    assert embedded["DB_ENGINE"] == "django.db.backends.sqlite3"
    assert embedded["DB_NAME"] == str(BASE_DIR / "db.sqlite3")


def test_default_cache_is_local_memory(embedded):
    assert embedded["CACHE_BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


def test_development_secrets_only_while_debug(embedded):
    assert embedded["DEBUG"] is True
    assert embedded["SECRET_KEY"].startswith("dev-insecure-")
    assert embedded["SALT_KEY"] == ["dev-insecure-salt"]
    assert embedded["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost"]


def test_without_a_broker_tasks_run_inline_and_readers_roll_usage_up(embedded):
    # No beat can run: the usage dashboard and the usage API roll up themselves.
    assert embedded["CELERY_BROKER_URL"] == "memory://localhost/"
    assert embedded["CELERY_TASK_ALWAYS_EAGER"] is True
    assert embedded["USAGE_ROLL_UP_ON_READ"] is True


def test_with_a_broker_the_beat_rolls_usage_up(from_environment):
    assert from_environment["CELERY_TASK_ALWAYS_EAGER"] is False
    assert from_environment["USAGE_ROLL_UP_ON_READ"] is False


def test_default_email_goes_to_console(embedded):
    assert embedded["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"


def test_private_provider_urls_refused_by_default(embedded):
    assert embedded["PROVIDER_ALLOW_PRIVATE_URLS"] is False


def test_call_logs_share_the_sqlite_connection(embedded):
    assert embedded["CALL_LOG_DATABASE"] == "default"


def test_call_logs_get_own_postgres_connection_without_waiting_for_flush(from_environment):
    assert from_environment["CALL_LOG_DATABASE"] == "call_logs"
    assert from_environment["CALL_LOG_DB_OPTIONS"] == {
        "options": "-c synchronous_commit=off",
        "server_side_binding": True,
    }


def test_development_without_debug_needs_secrets():
    result = _run(
        ["-c", SHOW_SETTINGS], settings_module="config.settings.development", env={"DEBUG": "0"}
    )
    assert result.returncode != 0
    assert (
        "SECRET_KEY and SALT_KEY must be set when DEBUG is off (see docs/OPERATIONS.md)."
        in result.stderr
    )


EMBEDDED_CONCURRENT_CALLS = """
import json
import logging
import threading
import time
from decimal import Decimal

import django
django.setup()
from django.core.management import call_command
from django.db import connections
from django.db.models import Sum

call_command("migrate", verbosity=0)

from llm_providers.completion import complete, stream
from llm_providers.demo import demo_seed
from llm_providers.models import Tenant
from usage.aggregation import daily_usage_roll_up_unscheduled
from usage.budget import BudgetExceeded
from usage.models import BudgetCounter, CallLog, DailyUsage
from usage.services import budget_create

demo_seed(known={})
tenant = Tenant.objects.get(slug="demo")
budget = budget_create(
    tenant=tenant, name="acme-cap", limit_usd=Decimal("0.0050"), period="daily",
    action="block", customer_id="acme",
)
lock = threading.Lock()
outcomes = {"ok": 0, "refused": 0, "failed": []}
calling = threading.Event()


def client(number):
    try:
        for i in range(20):
            arguments = {
                "tenant": tenant,
                "messages": [{"role": "user", "content": "word " * 200}],
                "customer_id": "acme" if i % 2 else "globex",
                "service_name": f"client-{number}",
                "max_tokens": 100,
            }
            try:
                if i % 3:
                    complete(**arguments)
                else:
                    list(stream(**arguments))
                outcome = "ok"
            except BudgetExceeded:
                outcome = "refused"
            except Exception as exc:
                outcome = repr(exc)
            with lock:
                if outcome in outcomes:
                    outcomes[outcome] += 1
                else:
                    outcomes["failed"].append(outcome)
    finally:
        connections.close_all()


def reader():
    # The usage API and dashboard roll the call logs up while calls are made.
    try:
        while calling.is_set():
            try:
                daily_usage_roll_up_unscheduled()
            except Exception as exc:
                with lock:
                    outcomes["failed"].append("roll-up: " + repr(exc))
            time.sleep(0.05)
    finally:
        connections.close_all()


calling.set()
rolling = threading.Thread(target=reader)
rolling.start()
clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
for thread in clients:
    thread.start()
for thread in clients:
    thread.join()
calling.clear()
rolling.join()
daily_usage_roll_up_unscheduled()

acme_ok = CallLog.objects.filter(tenant=tenant, customer_id="acme", status="ok")
counter = BudgetCounter.objects.get(budget=budget)
logged = CallLog.objects.aggregate(total=Sum("cost_usd"))["total"]
print(json.dumps({
    **outcomes,
    "ok_rows": CallLog.objects.filter(status="ok").count(),
    "blocked_rows": CallLog.objects.filter(status="blocked").count(),
    "acme_cost": str(acme_ok.aggregate(total=Sum("cost_usd"))["total"]),
    "acme_settled": str(counter.settled_usd),
    "held": counter.holds.filter(amount_usd__gt=0).count(),
    "logged_cost": str(logged),
    "daily_cost": str(DailyUsage.objects.aggregate(total=Sum("cost_usd"))["total"]),
    "daily_requests": DailyUsage.objects.aggregate(total=Sum("request_count"))["total"],
    "rows": CallLog.objects.count(),
}))
"""


def test_embedded_database_serves_concurrent_calls_and_roll_ups(tmp_path):
    # `make run`: SQLite in a file, calls on many threads (runserver's), the
    # usage readers rolling call logs up meanwhile, and a blocking budget.
    result = _run(
        ["-c", EMBEDDED_CONCURRENT_CALLS],
        settings_module="config.settings.development",
        env={"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "LOG_LEVEL": "CRITICAL"},
    )

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    # every call answered or was refused by the budget: none failed on the database
    assert shown["failed"] == []
    assert shown["ok"] + shown["refused"] == 160
    assert shown["refused"] > 0
    # every answered call has its row, every refusal its blocked row
    assert shown["ok_rows"] == shown["ok"]
    assert shown["blocked_rows"] >= shown["refused"]
    # the budget's counter holds exactly what its answered calls cost, within its limit
    assert shown["held"] == 0
    assert Decimal(shown["acme_settled"]) == Decimal(shown["acme_cost"])
    assert Decimal(shown["acme_settled"]) <= Decimal("0.0050")
    # and DailyUsage is the call logs' sum
    assert shown["daily_requests"] == shown["rows"]
    assert Decimal(shown["daily_cost"]) == Decimal(shown["logged_cost"])


# --- read from the environment ---------------------------------------------------------------


def test_database_url_read(from_environment):
    assert from_environment["DB_ENGINE"] == "django.db.backends.postgresql"
    assert (from_environment["DB_NAME"], from_environment["DB_HOST"]) == ("llm", "db.internal")
    assert from_environment["DB_PORT"] == "6432"


def test_redis_url_selects_django_redis(from_environment):
    assert from_environment["CACHE_BACKEND"] == "django_redis.cache.RedisCache"
    assert from_environment["CACHE_LOCATION"] == "redis://cache.internal:6379/3"


def test_failed_authentications_throttled_at_30_a_minute_by_default(embedded):
    assert embedded["THROTTLE_RATES"]["auth_failure"] == "30/min"


def test_failed_authentication_rate_read(from_environment):
    assert from_environment["THROTTLE_RATES"]["auth_failure"] == "10/min"


def test_celery_broker_url_read(from_environment):
    assert from_environment["CELERY_BROKER_URL"] == "redis://cache.internal:6379/4"


def test_salt_key_is_a_trimmed_list_first_first(from_environment):
    assert from_environment["SALT_KEY"] == ["salt-2025", "salt-2024"]
    assert from_environment["SECRET_KEY_FALLBACKS"] == ["previous-secret-key"]


def test_allowed_hosts_read(from_environment):
    assert from_environment["ALLOWED_HOSTS"] == ["llm.example.com", "api.example.com"]


def test_email_url_read(from_environment):
    assert from_environment["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (from_environment["EMAIL_HOST"], from_environment["EMAIL_PORT"]) == (
        "smtp.example.com",
        587,
    )


def test_production_with_email_url_sends_alert_emails(from_environment):
    assert from_environment["ALERT_EMAIL_CONFIGURED"] is True


def test_production_without_email_url_fails_alert_emails_rather_than_printing_them():
    shown = _settings("config.settings.production", PRODUCTION_ENV)
    assert shown["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    assert shown["ALERT_EMAIL_CONFIGURED"] is False


def test_development_sends_alert_emails_to_the_console(embedded):
    assert embedded["ALERT_EMAIL_CONFIGURED"] is True


def test_empty_email_url_means_the_console():
    shown = _settings("config.settings.development", {"EMAIL_URL": "  "})
    assert shown["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "smtp://mailer:hunter2-secret@:25",
            "EMAIL_URL names no mail host: expected e.g. smtp+tls://user:password@host:587.",
        ),
        (
            "mailer:hunter2-secret@smtp.example.com",
            "EMAIL_URL is not a mail URL: expected e.g. smtp+tls://user:password@host:587 "
            "or consolemail:// (see docs/OPERATIONS.md).",
        ),
    ],
)
def test_unusable_email_url_refuses_to_start_without_quoting_it(url, message):
    result = _run(
        ["manage.py", "check"],
        settings_module="config.settings.development",
        env={"EMAIL_URL": url},
    )
    assert result.returncode != 0
    assert f"django.core.exceptions.ImproperlyConfigured: {message}" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_private_provider_urls_allowed_by_setting(from_environment):
    assert from_environment["PROVIDER_ALLOW_PRIVATE_URLS"] is True


def test_production_ignores_debug_variable(from_environment):
    assert from_environment["DEBUG"] is False


# --- production -------------------------------------------------------------------------------


def test_production_passes_check_deploy_without_warnings():
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        settings_module="config.settings.production",
        env=PRODUCTION_ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


def test_production_with_redirect_left_to_the_proxy_passes_check_deploy():
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        settings_module="config.settings.production",
        env={**PRODUCTION_ENV, "SECURE_SSL_REDIRECT": "off"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (1 silenced)."


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (("SECRET_KEY",), "SECRET_KEY must be set in production (see docs/OPERATIONS.md)."),
        (("SALT_KEY",), "SALT_KEY must be set in production (see docs/OPERATIONS.md)."),
        (
            ("SECRET_KEY", "SALT_KEY"),
            "SECRET_KEY and SALT_KEY must be set in production (see docs/OPERATIONS.md).",
        ),
        (("ALLOWED_HOSTS",), "ALLOWED_HOSTS must be set in production."),
        (
            ("REDIS_URL",),
            "REDIS_URL must be set in production: processes share rate limits, budget "
            "counters and configuration changes through it (see docs/OPERATIONS.md).",
        ),
    ],
)
def test_production_refuses_to_start_without(missing, message):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k not in missing}
    result = _run(["manage.py", "check"], settings_module="config.settings.production", env=env)
    assert result.returncode != 0
    assert f"django.core.exceptions.ImproperlyConfigured: {message}" in result.stderr


def test_production_weak_secret_key_fails_check_deploy():
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        settings_module="config.settings.production",
        env={**PRODUCTION_ENV, "SECRET_KEY": "short"},
    )
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


# --- Celery worker and beat -------------------------------------------------------------------

# `celery -A config report` loads the app as `worker` and `beat` do and prints
# the Django settings it got, then exits.
CELERY_REPORT = ["-m", "celery", "-A", "config", "report"]


def test_celery_without_settings_module_uses_production_settings():
    result = _run(CELERY_REPORT, settings_module=None, env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert "SETTINGS_MODULE: 'config.settings.production'" in result.stdout
    assert "\nDEBUG: False\n" in result.stdout


def test_celery_without_settings_module_refuses_to_start_without_secrets():
    result = _run(CELERY_REPORT, settings_module=None)
    assert result.returncode != 0
    assert (
        "django.core.exceptions.ImproperlyConfigured: SECRET_KEY and SALT_KEY must be set in "
        "production (see docs/OPERATIONS.md)." in result.stderr
    )


def test_celery_uses_development_settings_when_told():
    result = _run(CELERY_REPORT, settings_module="config.settings.development")
    assert result.returncode == 0, result.stderr
    assert "SETTINGS_MODULE: 'config.settings.development'" in result.stdout
    assert "\nDEBUG: True\n" in result.stdout


HTTP_REQUESTS = """
import json
import logging
import django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="llm.example.com")
health = client.get("/api/v1/health/")
providers = client.get("/api/v1/providers/")
print(json.dumps({
    "health": [health.status_code, health["Content-Type"]],
    "providers": [providers.status_code, providers.get("Location")],
}))
"""


def test_production_answers_health_over_http_and_redirects_the_rest():
    # Load balancers probe the application directly over plain HTTP, without
    # the proxy's X-Forwarded-Proto; the cache and broker here are unreachable.
    result = _run(
        ["-c", HTTP_REQUESTS],
        settings_module="config.settings.production",
        env={
            **PRODUCTION_ENV,
            "DATABASE_URL": "sqlite://:memory:",
            "REDIS_URL": "redis://127.0.0.1:9/0",
        },
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "health": [503, "application/json"],
        "providers": [301, "https://llm.example.com/api/v1/providers/"],
    }


CSRF_ORIGIN_CHECKS = """
import json
import logging
import django
django.setup()
from django.http import HttpResponse
from django.middleware.csrf import CsrfViewMiddleware, _get_new_csrf_string
from django.test import RequestFactory
token = _get_new_csrf_string()
answers = {}
for origin in ("https://llm.example.com", "https://admin.example.com", "https://evil.example"):
    request = RequestFactory().post(
        "/admin/login/", secure=True, HTTP_HOST="llm.example.com", HTTP_ORIGIN=origin,
        HTTP_X_CSRFTOKEN=token,
    )
    request.COOKIES["csrftoken"] = token
    middleware = CsrfViewMiddleware(lambda request: HttpResponse())
    middleware.process_request(request)
    refused = middleware.process_view(request, lambda request: None, (), {})
    answers[origin] = refused.status_code if refused else 200
print(json.dumps(answers))
"""


def test_csrf_trusted_origins_listed_with_spaces_are_trusted():
    # The admin served on a second origin through the proxy, listed as the
    # other comma-separated settings are: with a space after the comma.
    result = _run(
        ["-c", CSRF_ORIGIN_CHECKS],
        settings_module="config.settings.production",
        env={
            **PRODUCTION_ENV,
            "ALLOWED_HOSTS": "llm.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://llm.example.com, https://admin.example.com ",
        },
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "https://llm.example.com": 200,
        "https://admin.example.com": 200,
        "https://evil.example": 403,
    }


def test_secrets_starting_with_a_dollar_sign_are_taken_as_written():
    # Django's get_random_secret_key() starts a key with "$" about once in
    # fifty; the value is the secret, not the name of another variable.
    shown = _settings(
        "config.settings.production",
        {
            **PRODUCTION_ENV,
            "SECRET_KEY": "$" + STRONG_SECRET_KEY,
            "SALT_KEY": "$salt-2025",
            "SECRET_KEY_FALLBACKS": "$$previous-secret-key",
            # What "$salt-2025" would name if it were a reference.
            "salt-2025": "not-the-salt",
        },
    )
    assert shown["SECRET_KEY"] == "$" + STRONG_SECRET_KEY
    assert shown["SALT_KEY"] == ["$salt-2025"]
    assert shown["SECRET_KEY_FALLBACKS"] == ["$$previous-secret-key"]


SHOW_BROKER = """
import json
import logging
import django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "broker": s.CELERY_BROKER_URL, "eager": s.CELERY_TASK_ALWAYS_EAGER,
    "budget_redis": s.USAGE_BUDGET_REDIS_URL,
}))
"""


def test_empty_broker_and_budget_redis_urls_mean_redis_url():
    # As a compose file writes `CELERY_BROKER_URL: ${CELERY_BROKER_URL}` when
    # the variable is unset: empty, like EMAIL_URL, means "not set".
    result = _run(
        ["-c", SHOW_BROKER],
        settings_module="config.settings.production",
        env={**PRODUCTION_ENV, "CELERY_BROKER_URL": "", "USAGE_BUDGET_REDIS_URL": " "},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "broker": "redis://cache.internal:6379/0",
        "eager": False,
        "budget_redis": "redis://cache.internal:6379/0",
    }


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # -1 read as "keep for ever" would delete every call log, today's too.
        (
            "USAGE_CALL_LOG_RETENTION_DAYS",
            "-1",
            "USAGE_CALL_LOG_RETENTION_DAYS must be a whole number of at least 0 and at most "
            "365000 (0 keeps call logs for ever), not '-1' (see docs/OPERATIONS.md).",
        ),
        (
            "USAGE_AGGREGATION_INTERVAL_SECONDS",
            "0",
            "USAGE_AGGREGATION_INTERVAL_SECONDS must be a whole number of at least 1 and at "
            "most 86400, not '0' (see docs/OPERATIONS.md).",
        ),
        (
            "USAGE_RETENTION_PURGE_INTERVAL_SECONDS",
            "1d",
            "USAGE_RETENTION_PURGE_INTERVAL_SECONDS must be a whole number of at least 1 and "
            "at most 604800, not '1d' (see docs/OPERATIONS.md).",
        ),
        # A share: 20 (meant as per cent) would never alert.
        (
            "USAGE_ERROR_RATE_THRESHOLD",
            "20",
            "USAGE_ERROR_RATE_THRESHOLD must be a number of at least 0 and at most 1, "
            "not '20' (see docs/OPERATIONS.md).",
        ),
        # A negative backoff would make every retry's sleep raise.
        (
            "LLM_RETRY_BACKOFF_SECONDS",
            "-0.5",
            "LLM_RETRY_BACKOFF_SECONDS must be a number of at least 0 and at most 60, "
            "not '-0.5' (see docs/OPERATIONS.md).",
        ),
        (
            "CACHE_OUTAGE_RETRY_SECONDS",
            "5s",
            "CACHE_OUTAGE_RETRY_SECONDS must be a number of at least 0 and at most 300, "
            "not '5s' (see docs/OPERATIONS.md).",
        ),
        (
            "CONFIG_VERSION_LOCAL_SECONDS",
            "nan",
            "CONFIG_VERSION_LOCAL_SECONDS must be a number of at least 0 and at most 60, "
            "not 'nan' (see docs/OPERATIONS.md).",
        ),
        # A call deadline too short for any answer, or over the bound a call may ask for.
        (
            "LLM_CALL_DEADLINE_SECONDS",
            "0.5",
            "LLM_CALL_DEADLINE_SECONDS must be a number of at least 1 and at most 600, not '0.5' "
            "(see docs/OPERATIONS.md).",
        ),
        (
            "LLM_CALL_DEADLINE_SECONDS",
            "900",
            "LLM_CALL_DEADLINE_SECONDS must be a number of at least 1 and at most 600, not '900' "
            "(see docs/OPERATIONS.md).",
        ),
        # No time at all to answer: every webhook would fail.
        (
            "USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS",
            "0",
            "USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS must be a number above 0 and at most 300, "
            "not '0' (see docs/OPERATIONS.md).",
        ),
    ],
)
def test_numbers_out_of_range_refuse_to_start_naming_the_variable(variable, value, message):
    result = _run(
        ["manage.py", "check"],
        settings_module="config.settings.production",
        env={**PRODUCTION_ENV, variable: value},
    )
    assert result.returncode != 0
    assert f"django.core.exceptions.ImproperlyConfigured: {message}" in result.stderr


def test_retention_zero_keeps_call_logs():
    shown = _run(
        [
            "-c",
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.USAGE_CALL_LOG_RETENTION_DAYS, s.USAGE_AGGREGATION_INTERVAL_SECONDS)",
        ],
        settings_module="config.settings.production",
        env={
            **PRODUCTION_ENV,
            "USAGE_CALL_LOG_RETENTION_DAYS": "0",
            "USAGE_AGGREGATION_INTERVAL_SECONDS": " 60 ",
        },
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["0", "60"]


def test_decimal_settings_in_range_are_read_and_empty_ones_take_the_default():
    shown = _run(
        [
            "-c",
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.USAGE_ERROR_RATE_THRESHOLD, s.CACHE_OUTAGE_RETRY_SECONDS, "
            "s.LLM_RETRY_BACKOFF_SECONDS)",
        ],
        settings_module="config.settings.production",
        env={
            **PRODUCTION_ENV,
            "USAGE_ERROR_RATE_THRESHOLD": " 0.35 ",
            "CACHE_OUTAGE_RETRY_SECONDS": "0",
            "LLM_RETRY_BACKOFF_SECONDS": "",
        },
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["0.35", "0.0", "0.5"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["manage.py", "runserver"], 0), (["manage.py", "migrate"], 60), (["gunicorn"], 60)],
)
def test_runserver_keeps_no_postgresql_connection_past_its_request(argv, expected):
    # runserver serves each request on a thread of its own: a connection kept
    # for CONN_MAX_AGE would stay open with the finished thread.
    show = (
        f"import sys; sys.argv = {argv!r}; "
        "from django.conf import settings; "
        "print(settings.DATABASES['default']['CONN_MAX_AGE'])"
    )
    result = _run(
        ["-c", show],
        settings_module="config.settings.development",
        env={"DATABASE_URL": "postgres://app:pw@db.internal:5432/llm"},
    )

    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == expected


# --- the documentation of the settings and the settings agree --------------------------------


def _documented() -> dict[str, tuple[str, str]]:
    """docs/OPERATIONS.md's settings tables: variable -> (its default, its range) as written."""
    rows: dict[str, list[tuple[str, str]]] = {}
    in_table = False
    for line in OPERATIONS.read_text().splitlines():
        if line.startswith("| variable | default | range | meaning |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            assert len(cells) == 4, line
            variable, default, written_range, _ = cells
            rows.setdefault(variable, []).append((default, written_range))
    # Each row documents one variable, written `NAME`, once.
    assert all(re.fullmatch(r"`[A-Z][A-Z0-9_]*`", variable) for variable in rows), list(rows)
    assert [variable for variable, written in rows.items() if len(written) > 1] == []
    return {variable.strip("`"): written[0] for variable, written in rows.items()}


DOCUMENTED_ROWS = _documented()
DOCUMENTED = {variable: default for variable, (default, _) in DOCUMENTED_ROWS.items()}
DOCUMENTED_RANGES = {variable: written for variable, (_, written) in DOCUMENTED_ROWS.items()}


def test_every_variable_the_settings_read_is_documented():
    assert sorted(READ_VARIABLES - set(DOCUMENTED)) == []


def test_every_documented_variable_is_read_by_the_settings():
    assert sorted(set(DOCUMENTED) - READ_VARIABLES) == []


def test_settings_read_every_variable_through_the_readers_of_their_kind():
    # One reader per kind of value (config/settings/environment.py): so every
    # variable takes its default when empty and refuses a value it cannot take.
    readers = {
        node.name
        for node in ast.parse(Path(environment.__file__).read_text()).body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    }
    read_otherwise = {
        f"{module}: {name} by {reader}"
        for module, reads in READS.items()
        for name, reader in reads.items()
        if reader not in readers
    }
    assert read_otherwise == set()


# How a variable shows in the settings, where it is not the setting of its name.
SETTING_OF = {
    "DATABASE_URL": [("DATABASES", "default", "NAME")],
    "CONN_MAX_AGE": [("DATABASES", "default", "CONN_MAX_AGE")],
    "EMAIL_URL": [("EMAIL_BACKEND",), ("ALERT_EMAIL_CONFIGURED",)],
    "LOG_LEVEL": [("LOGGING", "root", "level")],
    "NUM_PROXIES": [("REST_FRAMEWORK", "NUM_PROXIES")],
    "API_THROTTLE_SERVICE_KEY": [("REST_FRAMEWORK", "DEFAULT_THROTTLE_RATES", "service_key")],
    "API_THROTTLE_USER": [("REST_FRAMEWORK", "DEFAULT_THROTTLE_RATES", "user")],
    "API_THROTTLE_ANON": [("REST_FRAMEWORK", "DEFAULT_THROTTLE_RATES", "anon")],
    "API_THROTTLE_AUTH_FAILURE": [("REST_FRAMEWORK", "DEFAULT_THROTTLE_RATES", "auth_failure")],
}
NOT_SET = "<not set>"

# Loads a settings module as a server does, and prints the value of each
# variable's setting and the variables the settings modules looked up (not
# those the libraries they import look up).
SHOW_VARIABLES = """
import importlib.util, json, os, sys
from pathlib import Path

settings_dir = str(Path("config/settings").resolve())
environ_dir = str(Path(importlib.util.find_spec("environ").origin).parent)
looked_up = set()


def note(name):
    frame = sys._getframe(2)
    while frame and frame.f_code.co_filename.startswith(environ_dir):
        frame = frame.f_back
    if frame and frame.f_code.co_filename.startswith(settings_dir):
        looked_up.add(name)


class Recording(dict):
    def __getitem__(self, name):
        note(name)
        return super().__getitem__(name)

    def get(self, name, default=None):
        note(name)
        return super().get(name, default)

    def __contains__(self, name):
        note(name)
        return super().__contains__(name)


os.environ = Recording(os.environ)

# The bounds the settings read each whole and decimal number with.
import inspect
from config.settings import environment

bounds = {}


def bounded(reader):
    signature = inspect.signature(reader)

    def read(name, **kwargs):
        given = signature.bind(name, **kwargs)
        given.apply_defaults()
        bounds.setdefault(name, []).append([
            reader.__name__,
            given.arguments["minimum"],
            given.arguments["maximum"],
            given.arguments.get("above_minimum", False),
        ])
        return reader(name, **kwargs)

    return read


environment.env_int = bounded(environment.env_int)
environment.env_number = bounded(environment.env_number)
from django.conf import settings

values = {}
for variable, paths in json.loads(sys.argv[1]).items():
    shown = []
    for path in paths:
        try:
            value = getattr(settings, path[0])
            for key in path[1:]:
                value = value[key]
        except (AttributeError, KeyError):
            value = "<not set>"
        shown.append(value)
    values[variable] = shown[0] if len(shown) == 1 else shown
print(json.dumps(
    {"values": values, "looked_up": sorted(looked_up), "bounds": bounds}, default=str
))
"""

REFUSED = "refuses to start"
POSTGRES_URL = "postgres://app:pw@db.internal:5432/llm"
DEVELOPMENT = ("config.settings.development", ())
PRODUCTION = (
    "config.settings.production",
    tuple(sorted({**PRODUCTION_ENV, "DATABASE_URL": POSTGRES_URL}.items())),
)
CONSOLE_MAIL = "django.core.mail.backends.console.EmailBackend"


def _with(setup, **changes):
    """A setup with variables set, or removed where given None."""
    module, env = setup
    env = {**dict(env), **changes}
    return module, tuple(sorted((k, v) for k, v in env.items() if v is not None))


class StartsWith(str):
    """An expected text known by its start (the development secret key)."""


# Defaults that depend on the settings module or on other variables: each is
# checked where it applies, and the doc's default must say what the check expects.
# variable -> [(setup, expected value or REFUSED, words of the documented default)]
CONDITIONAL_DEFAULTS = {
    "SECRET_KEY": [
        (DEVELOPMENT, StartsWith("dev-insecure-"), "a development key while `DEBUG` is on"),
        (_with(PRODUCTION, SECRET_KEY=None), REFUSED, "required in production"),
    ],
    "SALT_KEY": [
        (DEVELOPMENT, ["dev-insecure-salt"], "a development salt while `DEBUG` is on"),
        (_with(PRODUCTION, SALT_KEY=None), REFUSED, "required in production"),
    ],
    "ALLOWED_HOSTS": [
        (DEVELOPMENT, ["127.0.0.1", "localhost"], "`127.0.0.1,localhost` while `DEBUG` is on"),
        (_with(PRODUCTION, ALLOWED_HOSTS=None), REFUSED, "required in production"),
    ],
    "DEBUG": [
        (DEVELOPMENT, True, "on in development"),
        (_with(PRODUCTION, DEBUG="on"), False, "off in production, whatever is set"),
    ],
    "DATABASE_URL": [
        (DEVELOPMENT, str(BASE_DIR / "db.sqlite3"), "`sqlite:///<project>/db.sqlite3`"),
    ],
    "CONN_MAX_AGE": [(PRODUCTION, 60, "60 with PostgreSQL")],
    "CALL_LOG_ASYNC": [
        (PRODUCTION, True, "on with PostgreSQL"),
        (DEVELOPMENT, False, "off with SQLite"),
    ],
    "REDIS_URL": [
        (DEVELOPMENT, "", "unset"),
        (_with(PRODUCTION, REDIS_URL=None), REFUSED, "production refuses to start without it"),
    ],
    "CELERY_BROKER_URL": [
        (PRODUCTION, PRODUCTION_ENV["REDIS_URL"], "`REDIS_URL`"),
        (DEVELOPMENT, "memory://localhost/", "else in-process (`memory://localhost/`)"),
    ],
    "EMAIL_URL": [
        (DEVELOPMENT, [CONSOLE_MAIL, True], "unset: the console"),
        (PRODUCTION, [CONSOLE_MAIL, False], "in production alert emails fail instead"),
    ],
    "NUM_PROXIES": [(DEVELOPMENT, 0, "0"), (PRODUCTION, 1, "1 in production")],
    "CELERY_TASK_ALWAYS_EAGER": [
        (DEVELOPMENT, True, "on without a broker"),
        (PRODUCTION, False, "off with one"),
    ],
    "USAGE_ROLL_UP_ON_READ": [
        (DEVELOPMENT, True, "on when tasks run in the caller"),
        (PRODUCTION, False, "else off"),
    ],
    "EMBEDDED_BEAT": [
        (DEVELOPMENT, True, "on"),
        (_with(PRODUCTION, EMBEDDED_BEAT="on"), False, "off in production, whatever is set"),
    ],
    "USAGE_BUDGET_BACKEND": [
        (PRODUCTION, "redis", "`redis` with `REDIS_URL`"),
        (DEVELOPMENT, "database", "else `database`"),
    ],
    "USAGE_BUDGET_REDIS_URL": [
        (PRODUCTION, PRODUCTION_ENV["REDIS_URL"], "`REDIS_URL`"),
        (DEVELOPMENT, "", "`REDIS_URL`"),
    ],
}

# A default the same wherever the variable is read: a number, on/off, empty or
# a `literal`, with at most a remark in brackets.
PLAIN_DEFAULT = re.compile(r"(on|off|empty|[0-9]+(?:\.[0-9]+)?|`[^`]*`)(?: \([^()]*\))?")

_loaded: dict = {}


def _load(setup) -> dict | subprocess.CompletedProcess:
    """Every documented variable's setting under a setup; the failed run if it refused."""
    if setup not in _loaded:
        module, env = setup
        paths = {name: SETTING_OF.get(name, [(name,)]) for name in DOCUMENTED}
        result = _run(
            ["-c", SHOW_VARIABLES, json.dumps(paths)], settings_module=module, env=dict(env)
        )
        _loaded[setup] = json.loads(result.stdout) if result.returncode == 0 else result
    return _loaded[setup]


def _values(setup) -> dict:
    loaded = _load(setup)
    assert isinstance(loaded, dict), loaded.stderr
    return loaded["values"]


def _same(expected, actual) -> bool:
    if isinstance(expected, StartsWith):
        return isinstance(actual, str) and actual.startswith(expected)
    return type(expected) is type(actual) and expected == actual


def _plain_value(written: str, actual) -> bool:
    if written in ("on", "off"):
        return actual is (written == "on")
    if written == "empty":
        return actual in ([], "")
    if written.startswith("`"):
        return actual == written.strip("`")
    return not isinstance(actual, bool | str) and float(actual) == float(written)


def _setups_reading(variable: str) -> list:
    """The baselines whose settings modules read the variable."""
    modules = {module for module, reads in READS.items() if variable in reads}
    setups = []
    if modules & {"base", "development"}:
        setups.append(DEVELOPMENT)
    if modules & {"base", "production"}:
        setups.append(PRODUCTION)
    return setups


@pytest.mark.parametrize("variable", sorted(DOCUMENTED))
def test_documented_default_is_the_default(variable):
    written = DOCUMENTED[variable]
    if variable in CONDITIONAL_DEFAULTS:
        for setup, expected, words in CONDITIONAL_DEFAULTS[variable]:
            assert words in written, f"{variable}: the documented default does not say {words!r}"
            if expected == REFUSED:
                refused = _load(setup)
                assert isinstance(refused, subprocess.CompletedProcess), setup
                assert f"ImproperlyConfigured: {variable} " in refused.stderr
            else:
                actual = _values(setup)[variable]
                assert _same(expected, actual), (variable, setup[0], actual)
        return
    plain = PLAIN_DEFAULT.fullmatch(written)
    assert plain, (
        f"{variable}: {written!r} is no plain default; a default that depends on "
        "something needs its cases in CONDITIONAL_DEFAULTS"
    )
    setups = _setups_reading(variable)
    assert setups
    for setup in setups:
        actual = _values(setup)[variable]
        assert _plain_value(plain[1], actual), (variable, setup[0], written, actual)


def _bounds(variable: str) -> list[list]:
    """[reader, minimum, maximum, above_minimum] of each read of a number, under the baselines."""
    return [
        found
        for setup in _setups_reading(variable)
        for found in _load(setup)["bounds"].get(variable, [])
    ]


def _range_written(reader: str, minimum, maximum, above_minimum: bool) -> str:
    shown = str if reader == "env_int" else "{:g}".format
    if above_minimum:
        return f"above {shown(minimum)}, at most {shown(maximum)}"
    return f"{shown(minimum)} to {shown(maximum)}"


@pytest.mark.parametrize("variable", sorted(DOCUMENTED))
def test_documented_range_is_the_range_read(variable):
    # The range column is the bounds the settings read the number with, as
    # written: "<minimum> to <maximum>" or "above <minimum>, at most <maximum>",
    # with at most a remark in brackets; empty for any other kind of value.
    written = DOCUMENTED_RANGES[variable]
    bounds = _bounds(variable)
    if not bounds:
        assert written == "", f"{variable} is no number, yet documents the range {written!r}"
        return
    # read with the same bounds wherever it is read (NUM_PROXIES: by production too)
    assert all(found == bounds[0] for found in bounds), (variable, bounds)
    expected = _range_written(*bounds[0])
    assert re.fullmatch(re.escape(expected) + r"(?: \([^()]*\))?", written), (
        f"{variable}: documented {written!r}, read from {expected}"
    )


# Settings another one must exceed (config/settings/consistency.py): with
# every other number at its minimum, the least the rules let each be. The
# rules' own boundaries are tested under "settings that depend on one another".
LEAST_WITH_THE_OTHERS_AT_MINIMUM = {
    # LLM_CALL_DEADLINE_SECONDS (1) and a minute to settle
    "USAGE_BUDGET_RESERVATION_TTL_SECONDS": "61",
    # an alert delivery's time limit (0.001) and a minute to record its outcome
    "CELERY_TASK_TIME_LIMIT": "61",
}


def _ends(end: str) -> dict[str, str]:
    """Every number the production settings read, set to one end of its range."""
    ends = {}
    for variable in sorted(DOCUMENTED):
        bounds = _bounds(variable)
        if not bounds:
            continue
        reader, minimum, maximum, above_minimum = bounds[0]
        if end == "maximum":
            ends[variable] = str(maximum)
        else:
            ends[variable] = LEAST_WITH_THE_OTHERS_AT_MINIMUM.get(
                variable, "0.001" if above_minimum else str(minimum)
            )
    return ends


@pytest.mark.parametrize("end", ["minimum", "maximum"])
def test_every_number_is_read_at_the_ends_of_its_documented_range(end):
    ends = _ends(end)
    assert len(ends) >= 30

    values = _values(_with(PRODUCTION, **ends))

    for variable, written in ends.items():
        number = int(written) if re.fullmatch("[0-9]+", written) else float(written)
        if _bounds(variable)[0][0] == "env_number":
            number = float(number)
        assert _same(number, values[variable]), (variable, written, values[variable])


def test_variables_looked_up_at_start_are_those_found_in_the_settings_source():
    # The source scan above misses nothing the settings read another way.
    looked_up = set()
    for setup in (DEVELOPMENT, PRODUCTION, _with(DEVELOPMENT, DATABASE_URL=POSTGRES_URL)):
        loaded = _load(setup)
        assert isinstance(loaded, dict), loaded.stderr
        looked_up |= set(loaded["looked_up"])
    assert looked_up <= READ_VARIABLES
    # and CONN_MAX_AGE, read only with PostgreSQL, was among them
    assert {"CONN_MAX_AGE", "SECURE_SSL_REDIRECT", "DEBUG"} <= looked_up


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize("setup", [DEVELOPMENT, PRODUCTION], ids=["development", "production"])
def test_every_variable_set_but_empty_takes_its_default(setup, blank):
    # As compose files and env files write a variable they have no value for.
    given = dict(setup[1])
    empty = _with(setup, **{name: blank for name in READ_VARIABLES if name not in given})

    assert _values(empty) == _values(setup)


# --- how each kind of value is read ----------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "value"),
    [
        *[(word, True) for word in ("true", "True", "TRUE", "1", "yes", "Yes", "on", "ON")],
        *[(word, False) for word in ("false", "False", "0", "no", "NO", "off", "Off", " off ")],
        ("", True),
        ("   ", True),
    ],
)
def test_on_off_settings_read_the_usual_words_in_any_case(monkeypatch, written, value):
    monkeypatch.setenv("CALL_LOG_ASYNC", written)

    assert env_bool("CALL_LOG_ASYNC", default=True) is value


@pytest.mark.parametrize("written", ["ture", "flase", "2", "yep", "enabled", "of"])
def test_on_off_setting_refuses_any_other_word_naming_the_variable(monkeypatch, written):
    # django-environ would have read every one of these as off.
    monkeypatch.setenv("CALL_LOG_ASYNC", written)

    with pytest.raises(ImproperlyConfigured) as refused:
        env_bool("CALL_LOG_ASYNC", default=True)
    assert str(refused.value) == (
        f"CALL_LOG_ASYNC must be true or false (or 1/0, yes/no, y/n, on/off, ok, in any case), "
        f"not {written!r} (see docs/OPERATIONS.md)."
    )


@pytest.mark.parametrize(("written", "value"), [("42", 42), (" 7 ", 7), ("+3", 3), ("", 10)])
def test_whole_number_settings_read_digits(monkeypatch, written, value):
    monkeypatch.setenv("EMAIL_TIMEOUT", written)

    assert env_int("EMAIL_TIMEOUT", default=10, maximum=300) == value


@pytest.mark.parametrize(
    "written",
    [
        "ten",
        "1.5",
        "1e3",
        "1_000",
        "0x10",
        "٣",
        "0",
        "-5",
        "301",
        # More digits than Python converts to a number: refused as any other.
        pytest.param("9" * 5000, id="5000-digits"),
    ],
)
def test_whole_number_setting_refuses_anything_else_naming_the_variable(monkeypatch, written):
    monkeypatch.setenv("EMAIL_TIMEOUT", written)

    with pytest.raises(ImproperlyConfigured) as refused:
        env_int("EMAIL_TIMEOUT", default=10, maximum=300)
    assert str(refused.value) == (
        f"EMAIL_TIMEOUT must be a whole number of at least 1 and at most 300, not {written!r} "
        "(see docs/OPERATIONS.md)."
    )


def test_whole_number_setting_refuses_a_value_above_its_maximum(monkeypatch):
    monkeypatch.setenv("USAGE_CALL_LOG_RETENTION_DAYS", "9999999")

    with pytest.raises(ImproperlyConfigured) as refused:
        env_int("USAGE_CALL_LOG_RETENTION_DAYS", default=90, minimum=0, maximum=365_000)
    assert str(refused.value) == (
        "USAGE_CALL_LOG_RETENTION_DAYS must be a whole number of at least 0 and at most 365000, "
        "not '9999999' (see docs/OPERATIONS.md)."
    )


@pytest.mark.parametrize(("written", "value"), [("0", 0), ("365000", 365_000), ("+0", 0)])
def test_whole_number_setting_reads_both_ends_of_its_range(monkeypatch, written, value):
    monkeypatch.setenv("USAGE_CALL_LOG_RETENTION_DAYS", written)

    read = env_int("USAGE_CALL_LOG_RETENTION_DAYS", default=90, minimum=0, maximum=365_000)

    assert (read, type(read)) == (value, int)


def test_every_whole_and_decimal_number_setting_has_a_maximum():
    # A maximum left out would make a reader unbounded again: it is required.
    for reader in (env_int, env_number):
        with pytest.raises(TypeError, match="maximum"):
            reader("EMAIL_TIMEOUT", default=10)


@pytest.mark.parametrize(("written", "value"), [("0", 0.0), ("300", 300.0), (" 2.5 ", 2.5)])
def test_decimal_settings_read_both_ends_of_their_range(monkeypatch, written, value):
    monkeypatch.setenv("STREAM_KEEPALIVE_SECONDS", written)

    assert env_number("STREAM_KEEPALIVE_SECONDS", default=10.0, maximum=300.0) == value


@pytest.mark.parametrize(
    "written",
    [
        "300.001",
        "1e10",
        "1e400",
        "inf",
        "-inf",
        "nan",
        "-0.001",
        pytest.param("9" * 5000, id="5000-digits"),
    ],
)
def test_decimal_setting_out_of_its_range_is_refused_naming_it(monkeypatch, written):
    monkeypatch.setenv("STREAM_KEEPALIVE_SECONDS", written)

    with pytest.raises(ImproperlyConfigured) as refused:
        env_number("STREAM_KEEPALIVE_SECONDS", default=10.0, maximum=300.0)
    assert str(refused.value) == (
        f"STREAM_KEEPALIVE_SECONDS must be a number of at least 0 and at most 300, "
        f"not {written!r} (see docs/OPERATIONS.md)."
    )


@pytest.mark.parametrize(("written", "refused"), [("0.001", False), ("0", True), ("600.5", True)])
def test_a_timeout_must_be_above_zero(monkeypatch, written, refused):
    monkeypatch.setenv("USAGE_ALERT_EMAIL_TIMEOUT_SECONDS", written)

    def read():
        return env_number(
            "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS", default=60.0, above_minimum=True, maximum=600.0
        )

    if not refused:
        assert read() == 0.001
        return
    with pytest.raises(ImproperlyConfigured) as refusal:
        read()
    assert str(refusal.value) == (
        f"USAGE_ALERT_EMAIL_TIMEOUT_SECONDS must be a number above 0 and at most 600, "
        f"not {written!r} (see docs/OPERATIONS.md)."
    )


@pytest.mark.parametrize(
    ("written", "value"),
    [("debug", "DEBUG"), ("Warning", "WARNING"), (" ERROR ", "ERROR"), ("", "INFO")],
)
def test_choice_settings_read_their_words_in_any_case(monkeypatch, written, value):
    monkeypatch.setenv("LOG_LEVEL", written)

    assert (
        env_choice("LOG_LEVEL", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO")
        == value
    )


@pytest.mark.parametrize(
    ("written", "rate"),
    [
        ("1200/min", "1200/min"),
        ("10/MIN", "10/min"),
        (" 5 / s ", "5/s"),
        ("30/minute", "30/minute"),
        ("2/hours", "2/hours"),
        ("100/Day", "100/day"),
        ("0/hour", "0/hour"),
        ("007/sec", "7/sec"),
        ("1000000/day", "1000000/day"),
        ("", "60/min"),
    ],
)
def test_throttle_rates_are_written_as_the_throttle_reads_them(monkeypatch, written, rate):
    monkeypatch.setenv("API_THROTTLE_ANON", written)

    read = env_throttle_rate("API_THROTTLE_ANON", default="60/min")

    assert read == rate

    throttle = type("Throttle", (SimpleRateThrottle,), {"rate": read})()
    count, seconds = read.split("/")
    assert throttle.num_requests == int(count)
    assert throttle.duration == {"s": 1, "m": 60, "h": 3600, "d": 86400}[seconds[0]]


@pytest.mark.parametrize(
    "written",
    [
        "10/month",
        "10/mins",
        "10",
        "/min",
        "ten/min",
        "-5/min",
        "1_000/min",
        "10/m/s",
        "1000001/min",
        pytest.param("9" * 5000 + "/min", id="5000-digit-count"),
    ],
)
def test_throttle_rate_written_otherwise_is_refused_naming_the_variable(monkeypatch, written):
    # DRF would read "10/month" as ten a minute: it reads a unit by its first letter.
    monkeypatch.setenv("API_THROTTLE_ANON", written)

    with pytest.raises(ImproperlyConfigured) as refused:
        env_throttle_rate("API_THROTTLE_ANON", default="60/min")
    assert str(refused.value) == (
        f"API_THROTTLE_ANON must be a rate written <count>/<sec|min|hour|day>, the count from 0 "
        f"to 1000000 (e.g. 1200/min), not {written!r} (see docs/OPERATIONS.md)."
    )


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("256MB", "256MB"),
        ("256mb", "256MB"),
        ("1 gb", "1GB"),
        ("65536", "65536kB"),
        ("64KB", "64kB"),
        ("1TB", "1TB"),
        ("", "256MB"),
    ],
)
def test_work_mem_is_written_as_postgresql_spells_it(monkeypatch, written, size):
    monkeypatch.setenv("USAGE_AGGREGATION_WORK_MEM", written)

    assert env_work_mem("USAGE_AGGREGATION_WORK_MEM", default="256MB") == size


@pytest.mark.parametrize(
    "written",
    ["32kB", "2TB", "256 megs", "1.5GB", "MB", "-1MB", pytest.param("9" * 5000, id="5000-digits")],
)
def test_work_mem_postgresql_cannot_take_is_refused_naming_the_variable(monkeypatch, written):
    monkeypatch.setenv("USAGE_AGGREGATION_WORK_MEM", written)

    with pytest.raises(ImproperlyConfigured) as refused:
        env_work_mem("USAGE_AGGREGATION_WORK_MEM", default="256MB")
    assert str(refused.value) == (
        "USAGE_AGGREGATION_WORK_MEM must be a size written <number><B|kB|MB|GB|TB> (kB if no "
        f"unit) from 64kB to 2147483647kB, e.g. 256MB, not {written!r} (see docs/OPERATIONS.md)."
    )


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_takes_every_work_mem_the_setting_reads(monkeypatch):
    from django.db import connection

    sizes = []
    for written in ("256mb", "1 gb", "65536", "64KB", "2147483647kB", "65536b"):
        monkeypatch.setenv("USAGE_AGGREGATION_WORK_MEM", written)
        sizes.append(env_work_mem("USAGE_AGGREGATION_WORK_MEM", default="256MB"))

    with connection.cursor() as cursor:
        taken = []
        for size in sizes:
            cursor.execute("SELECT set_config('work_mem', %s, true)", [size])
            cursor.execute("SHOW work_mem")
            taken.append(cursor.fetchone()[0])

    assert taken == ["256MB", "1GB", "64MB", "64kB", "2147483647kB", "64kB"]


def test_url_settings_refuse_another_scheme_without_quoting_the_url(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "cache.internal:6379")

    with pytest.raises(ImproperlyConfigured) as refused:
        env_url("REDIS_URL", schemes=("redis", "rediss"), example="redis://host:6379/0")
    assert str(refused.value) == (
        "REDIS_URL must be a URL starting redis:// or rediss://, e.g. redis://host:6379/0 "
        "(see docs/OPERATIONS.md)."
    )


def test_text_and_list_settings_take_their_default_when_blank(monkeypatch):
    monkeypatch.setenv("DEFAULT_FROM_EMAIL", "  ")
    monkeypatch.setenv("ALLOWED_HOSTS", " , ")

    assert env_str("DEFAULT_FROM_EMAIL", default="llm-layer@localhost") == "llm-layer@localhost"
    assert env_strings("ALLOWED_HOSTS") == []


# --- start errors -----------------------------------------------------------------------------


def _check(settings_module: str, **env: str):
    return _run(["manage.py", "check"], settings_module=settings_module, env=env)


@pytest.mark.parametrize(
    ("settings_module", "variable", "value", "message"),
    [
        # Read as off, a typo turned DEBUG off and asked for production secrets.
        (
            "config.settings.development",
            "DEBUG",
            "ture",
            "DEBUG must be true or false (or 1/0, yes/no, y/n, on/off, ok, in any case), "
            "not 'ture'",
        ),
        # Read as off, a typo turned the HTTPS redirect off and silenced its warning.
        (
            "config.settings.production",
            "SECURE_SSL_REDIRECT",
            "yes please",
            "SECURE_SSL_REDIRECT must be true or false "
            "(or 1/0, yes/no, y/n, on/off, ok, in any case), "
            "not 'yes please'",
        ),
        (
            "config.settings.production",
            "LOG_LEVEL",
            "verbose",
            "LOG_LEVEL must be one of DEBUG, INFO, WARNING, WARN, ERROR, CRITICAL, FATAL, NOTSET "
            "(in any case), "
            "not 'verbose'",
        ),
        (
            "config.settings.production",
            "USAGE_BUDGET_BACKEND",
            "memcached",
            "USAGE_BUDGET_BACKEND must be one of redis, database (in any case), not 'memcached'",
        ),
        (
            "config.settings.development",
            "USAGE_BUDGET_BACKEND",
            "redis",
            "USAGE_BUDGET_BACKEND is redis, which needs USAGE_BUDGET_REDIS_URL or REDIS_URL",
        ),
        (
            "config.settings.production",
            "API_THROTTLE_ANON",
            "10/fortnight",
            "API_THROTTLE_ANON must be a rate written <count>/<sec|min|hour|day>, the count "
            "from 0 to 1000000 (e.g. 1200/min), not '10/fortnight'",
        ),
        (
            "config.settings.production",
            "BOOKKEEPING_QUEUE_SIZE",
            "10k",
            "BOOKKEEPING_QUEUE_SIZE must be a whole number of at least 1 and at most 1000000, "
            "not '10k'",
        ),
        (
            "config.settings.production",
            "USAGE_CALL_LOG_RETENTION_DAYS",
            "9999999",
            "USAGE_CALL_LOG_RETENTION_DAYS must be a whole number of at least 0 and at most "
            "365000 (0 keeps call logs for ever), not '9999999'",
        ),
        (
            "config.settings.production",
            "USAGE_AGGREGATION_WORK_MEM",
            "lots",
            "USAGE_AGGREGATION_WORK_MEM must be a size written <number><B|kB|MB|GB|TB> (kB if "
            "no unit) from 64kB to 2147483647kB, e.g. 256MB, not 'lots'",
        ),
    ],
)
def test_a_value_the_settings_cannot_take_stops_the_start_naming_it(
    settings_module, variable, value, message
):
    env = PRODUCTION_ENV if settings_module.endswith("production") else {}

    result = _check(settings_module, **{**env, variable: value})

    assert result.returncode != 0
    assert (
        f"django.core.exceptions.ImproperlyConfigured: {message} (see docs/OPERATIONS.md)."
        in result.stderr
    )


@pytest.mark.parametrize(
    ("variable", "url", "message"),
    [
        (
            "DATABASE_URL",
            "mysql://app:hunter2-secret@db.internal/llm",
            "DATABASE_URL must be a URL starting postgres:// or postgresql:// or pgsql:// "
            "or psql:// or sqlite://, "
            "e.g. postgres://user:password@host:5432/llm",
        ),
        (
            "DATABASE_URL",
            "postgres://app:hunter2-secret@db.internal:54x2/llm",
            "DATABASE_URL is not a database URL: expected e.g. "
            "postgres://user:password@host:5432/llm",
        ),
        (
            "REDIS_URL",
            "cache.internal:6379?password=hunter2-secret",
            "REDIS_URL must be a URL starting redis:// or rediss:// or unix://, "
            "e.g. redis://host:6379/0",
        ),
        (
            "USAGE_BUDGET_REDIS_URL",
            "http://:hunter2-secret@cache.internal:6379/0",
            "USAGE_BUDGET_REDIS_URL must be a URL starting redis:// or rediss:// or unix://, "
            "e.g. redis://host:6379/0",
        ),
    ],
)
def test_an_unusable_url_stops_the_start_without_quoting_it(variable, url, message):
    result = _check("config.settings.production", **{**PRODUCTION_ENV, variable: url})

    assert result.returncode != 0
    assert (
        f"django.core.exceptions.ImproperlyConfigured: {message} (see docs/OPERATIONS.md)."
        in result.stderr
    )
    assert "hunter2" not in result.stderr + result.stdout


# Counts and durations the settings took before each had a maximum, and the
# run-time code that then failed on them: each is run with the setting at its
# maximum (it works), then at the old value (it overflowed), and the start now
# refuses that value.
def _recompute_recent_days(tenant) -> int:
    CallLogFactory(tenant=tenant, created_at=timezone.now() - timedelta(days=6))
    daily_usage_recompute_recent(now=timezone.now())
    return DailyUsage.objects.filter(tenant=tenant).aggregate(n=Sum("request_count"))["n"]


def _error_rates(tenant) -> list:
    CallLogFactory(
        tenant=tenant,
        status=CallLog.Status.ERROR,
        error_code="provider_timeout",
        created_at=timezone.now() - timedelta(hours=23),
    )
    return [row[2:] for row in provider_error_rates(now=timezone.now(), tenant=tenant)]


def _reserve(tenant) -> timedelta:
    if not Budget.objects.filter(tenant=tenant).exists():
        budget_create(
            tenant=tenant, name="cap", limit_usd=Decimal("1"), period="daily", action="block"
        )
    before = timezone.now()
    reservation = budget_reserve(
        tenant=tenant,
        provider_config_id=None,
        service_name="summarizer",
        customer_id="acme",
        amount_usd=Decimal("0.01"),
        request_id=uuid.uuid4(),
    )
    hold = BudgetHold.objects.get(reservation_id=reservation.reservation_id)
    return timedelta(seconds=round((hold.expires_at - before).total_seconds()))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("variable", "overflowing", "minimum", "maximum", "run", "at_maximum"),
    [
        # 190 000 years back: before year 1.
        ("USAGE_AGGREGATION_LOOKBACK_MINUTES", "99999999999", 0, 10_080, _recompute_recent_days, 1),
        ("USAGE_ERROR_RATE_WINDOW_MINUTES", "1000000000000", 1, 1440, _error_rates, [(1, 1)]),
        # More days than a timedelta holds.
        (
            "USAGE_BUDGET_RESERVATION_TTL_SECONDS",
            "100000000000000",
            1,
            86_400,
            _reserve,
            timedelta(days=1),
        ),
    ],
)
def test_a_value_that_overflowed_at_run_time_now_stops_the_start(
    settings, tenant, variable, overflowing, minimum, maximum, run, at_maximum
):
    settings.USAGE_BUDGET_BACKEND = "database"
    setattr(settings, variable, maximum)
    assert run(tenant) == at_maximum

    setattr(settings, variable, int(overflowing))
    with pytest.raises(OverflowError):
        run(tenant)

    result = _check("config.settings.production", **{**PRODUCTION_ENV, variable: overflowing})
    assert result.returncode != 0
    assert (
        f"django.core.exceptions.ImproperlyConfigured: {variable} must be a whole number of at "
        f"least {minimum} and at most {maximum}, not {overflowing!r} (see docs/OPERATIONS.md)."
    ) in result.stderr
    assert "OverflowError" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # Python converts no more than 4300 digits: a ValueError from int() stopped the start.
        (
            "EMAIL_TIMEOUT",
            "9" * 5000,
            "EMAIL_TIMEOUT must be a whole number of at least 1 and at most 300, "
            f"not {'9' * 5000!r}",
        ),
        (
            "USAGE_AGGREGATION_WORK_MEM",
            "9" * 5000 + "MB",
            "USAGE_AGGREGATION_WORK_MEM must be a size written <number><B|kB|MB|GB|TB> (kB if no "
            f"unit) from 64kB to 2147483647kB, e.g. 256MB, not {'9' * 5000 + 'MB'!r}",
        ),
        (
            "API_THROTTLE_USER",
            "9" * 5000 + "/min",
            "API_THROTTLE_USER must be a rate written <count>/<sec|min|hour|day>, the count from 0 "
            f"to 1000000 (e.g. 1200/min), not {'9' * 5000 + '/min'!r}",
        ),
        # 2 ** 1999 times the backoff is more than a float holds: the retry would fail.
        (
            "LLM_RETRY_ATTEMPTS",
            "2000",
            "LLM_RETRY_ATTEMPTS must be a whole number of at least 1 and at most 10, not '2000'",
        ),
        # A wait longer than the longest a thread can wait for.
        (
            "STREAM_KEEPALIVE_SECONDS",
            "1e10",
            "STREAM_KEEPALIVE_SECONDS must be a number of at least 0 and at most 300, not '1e10'",
        ),
        # Another worker would run the task again while the first still runs it.
        (
            "CELERY_TASK_TIME_LIMIT",
            "7200",
            "CELERY_TASK_TIME_LIMIT must be a whole number of at least 1 and at most 3600, "
            "not '7200'",
        ),
    ],
    ids=["int-digits", "work-mem-digits", "rate-digits", "retries", "keepalive", "time-limit"],
)
def test_an_absurd_value_stops_the_start_with_a_clean_error(variable, value, message):
    result = _check("config.settings.production", **{**PRODUCTION_ENV, variable: value})

    assert result.returncode != 0
    assert (
        f"django.core.exceptions.ImproperlyConfigured: {message} (see docs/OPERATIONS.md)."
        in result.stderr
    )
    assert "ValueError" not in result.stderr


SHOW_LOGGING = """
import json, logging
import django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "root": logging.getLogger().level,
    "rates": s.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
    "budget": s.USAGE_BUDGET_BACKEND,
    "work_mem": s.USAGE_AGGREGATION_WORK_MEM,
    "eager": s.CELERY_TASK_ALWAYS_EAGER,
    "private": s.PROVIDER_ALLOW_PRIVATE_URLS,
}))
"""


def test_words_in_another_case_are_read_as_meant():
    result = _run(
        ["-c", SHOW_LOGGING],
        settings_module="config.settings.production",
        env={
            **PRODUCTION_ENV,
            "LOG_LEVEL": "debug",
            "API_THROTTLE_USER": "100/MIN",
            "USAGE_BUDGET_BACKEND": "Database",
            "USAGE_AGGREGATION_WORK_MEM": "512mb",
            "CELERY_TASK_ALWAYS_EAGER": "YES",
            "PROVIDER_ALLOW_PRIVATE_URLS": "Off",
        },
    )

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["root"] == 10  # logging.DEBUG
    assert shown["rates"]["user"] == "100/min"
    assert (shown["budget"], shown["work_mem"]) == ("database", "512MB")
    assert (shown["eager"], shown["private"]) == (True, False)


def test_production_with_empty_optional_variables_passes_check_deploy():
    # An empty SECURE_SSL_REDIRECT was read as off: no redirect, its warning silenced.
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        settings_module="config.settings.production",
        env={
            **PRODUCTION_ENV,
            "SECURE_SSL_REDIRECT": "",
            "SECURE_HSTS_SECONDS": "",
            "DEBUG": "",
            "LOG_LEVEL": "",
            "API_THROTTLE_AUTH_FAILURE": "",
        },
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


# --- spellings the settings took before their readers were strict -------------


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "pgsql", "psql"])
def test_every_postgresql_scheme_of_django_environ_is_taken(scheme):
    shown = _settings(
        "config.settings.production",
        {**PRODUCTION_ENV, "DATABASE_URL": f"{scheme}://app:pw@db.internal:6432/llm"},
    )

    assert shown["DB_ENGINE"] == "django.db.backends.postgresql"


@pytest.mark.parametrize(
    ("written", "level"), [("warn", "WARN"), ("Fatal", "FATAL"), ("NOTSET", "NOTSET")]
)
def test_log_level_takes_the_aliases_python_logging_knows(written, level):
    result = _run(
        ["-c", "import django, json, logging; django.setup(); "
               "from django.conf import settings as s; "
               "print(json.dumps([s.LOGGING['root']['level'], logging.getLogger().level]))"],
        settings_module="config.settings.development",
        env={"LOG_LEVEL": written},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [level, logging.getLevelName(level)]


@pytest.mark.parametrize(("written", "value"), [("y", True), ("OK", True), ("N", False)])
def test_on_off_takes_django_environs_short_spellings(monkeypatch, written, value):
    monkeypatch.setenv("CALL_LOG_ASYNC", written)

    assert env_bool("CALL_LOG_ASYNC", default=not value) is value


def test_a_redis_unix_socket_url_is_also_the_broker_in_kombus_spelling():
    result = _run(
        ["-c", SHOW_BROKER],
        settings_module="config.settings.production",
        env={**PRODUCTION_ENV, "REDIS_URL": "unix:///run/redis/redis.sock?db=6"},
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "broker": "redis+socket:///run/redis/redis.sock?virtual_host=6",
        "eager": False,
        "budget_redis": "unix:///run/redis/redis.sock?db=6",
    }


@pytest.mark.redis
def test_a_redis_unix_socket_broker_carries_a_task_message(tmp_path):
    # given a Redis listening on a unix socket only, named as REDIS_URL names it
    socket_path = tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(socket_path), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            if socket_path.exists():
                break
            time.sleep(0.1)
        script = (
            "import django; django.setup(); from config.celery import app; "
            "conn = app.connection_for_write(); q = conn.SimpleQueue('probe'); "
            "q.put({'task': 'x'}); print(q.get(timeout=5).payload['task'])"
        )

        # when the settings derive the broker from it and a message goes through
        result = _run(
            ["-c", script],
            settings_module="config.settings.development",
            env={"REDIS_URL": f"unix://{socket_path}?db=5"},
        )

        # then it came back, through database 5 of that server
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "x"
        keys = subprocess.run(
            ["redis-cli", "-s", str(socket_path), "-n", "5", "keys", "*probe*"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "probe" in keys
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_call_log_retention_of_a_thousand_years_is_taken_and_purges():
    # "keep them for ages" as operators write it: the purge's cut-off is a real date
    shown = _run(
        [
            "-c",
            "import django; django.setup(); from django.conf import settings as s; "
            "from django.core.management import call_command; "
            "call_command('migrate', verbosity=0); "
            "from usage.tasks import purge_call_logs; "
            "print(s.USAGE_CALL_LOG_RETENTION_DAYS, purge_call_logs.delay().successful())",
        ],
        settings_module="config.settings.development",
        env={"USAGE_CALL_LOG_RETENTION_DAYS": "99999", "DATABASE_URL": "sqlite:///:memory:"},
    )

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[-2:] == ["99999", "True"]


# --- settings that depend on one another --------------------------------------------------------

# Each combination breaks a rule of config/settings/consistency.py by the
# least it can, beside the defaults of the production settings.
CONFLICTS = [
    pytest.param(
        {"USAGE_BUDGET_RESERVATION_TTL_SECONDS": "149"},
        "USAGE_BUDGET_RESERVATION_TTL_SECONDS is 149, but a call holds its budget reservation "
        "for up to LLM_CALL_DEADLINE_SECONDS (90) and 60 s more until it is settled: its "
        "reservation would lapse while it runs, and calls in flight could spend past a blocking "
        "budget. Set USAGE_BUDGET_RESERVATION_TTL_SECONDS to at least 150, or "
        "LLM_CALL_DEADLINE_SECONDS to at most 89",
        id="reservation-ttl",
    ),
    pytest.param(
        {"LLM_CALL_DEADLINE_SECONDS": "600", "USAGE_BUDGET_RESERVATION_TTL_SECONDS": "659"},
        "USAGE_BUDGET_RESERVATION_TTL_SECONDS is 659, but a call holds its budget reservation "
        "for up to LLM_CALL_DEADLINE_SECONDS (600) and 60 s more until it is settled: its "
        "reservation would lapse while it runs, and calls in flight could spend past a blocking "
        "budget. Set USAGE_BUDGET_RESERVATION_TTL_SECONDS to at least 660, or "
        "LLM_CALL_DEADLINE_SECONDS to at most 599",
        id="call-deadline",
    ),
    pytest.param(
        {"LLM_CALL_DEADLINE_SECONDS": "90.5", "USAGE_BUDGET_RESERVATION_TTL_SECONDS": "150"},
        "USAGE_BUDGET_RESERVATION_TTL_SECONDS is 150, but a call holds its budget reservation "
        "for up to LLM_CALL_DEADLINE_SECONDS (90.5) and 60 s more until it is settled: its "
        "reservation would lapse while it runs, and calls in flight could spend past a blocking "
        "budget. Set USAGE_BUDGET_RESERVATION_TTL_SECONDS to at least 151, or "
        "LLM_CALL_DEADLINE_SECONDS to at most 90",
        id="fractional-call-deadline",
    ),
    pytest.param(
        # No deadline of at least a second fits in it: only the TTL can change.
        {"USAGE_BUDGET_RESERVATION_TTL_SECONDS": "60", "LLM_CALL_DEADLINE_SECONDS": "1"},
        "USAGE_BUDGET_RESERVATION_TTL_SECONDS is 60, but a call holds its budget reservation "
        "for up to LLM_CALL_DEADLINE_SECONDS (1) and 60 s more until it is settled: its "
        "reservation would lapse while it runs, and calls in flight could spend past a blocking "
        "budget. Set USAGE_BUDGET_RESERVATION_TTL_SECONDS to at least 61",
        id="reservation-ttl-of-a-minute",
    ),
    pytest.param(
        {"CELERY_TASK_TIME_LIMIT": "119"},
        "CELERY_TASK_TIME_LIMIT is 119, but an alert delivery may take "
        "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS (60) to send and 60 s more to record its outcome and "
        "schedule its retry: Celery would kill the task before it does, and the attempt would "
        "be lost. Set CELERY_TASK_TIME_LIMIT to at least 120, or "
        "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS to at most 59",
        id="task-time-limit",
    ),
    pytest.param(
        {"USAGE_ALERT_EMAIL_TIMEOUT_SECONDS": "540.5"},
        "CELERY_TASK_TIME_LIMIT is 600, but an alert delivery may take "
        "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS (540.5) to send and 60 s more to record its outcome "
        "and schedule its retry: Celery would kill the task before it does, and the attempt "
        "would be lost. Set CELERY_TASK_TIME_LIMIT to at least 601, or "
        "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS to at most 540",
        id="email-timeout",
    ),
    pytest.param(
        {"USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS": "300", "CELERY_TASK_TIME_LIMIT": "359"},
        "CELERY_TASK_TIME_LIMIT is 359, but an alert delivery may take "
        "USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS (300) to send and 60 s more to record its outcome "
        "and schedule its retry: Celery would kill the task before it does, and the attempt "
        "would be lost. Set CELERY_TASK_TIME_LIMIT to at least 360, or "
        "USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS to at most 299",
        id="webhook-timeout",
    ),
    pytest.param(
        {"USAGE_CALL_LOG_RETENTION_DAYS": "1"},
        "USAGE_CALL_LOG_RETENTION_DAYS is 1, but a day is aggregated only until it is that many "
        "days old, and the aggregation, every USAGE_AGGREGATION_INTERVAL_SECONDS (300), must "
        "run once after the day has ended, with 2 hours to spare: the last call logs of a day "
        "would never be counted in its daily usage. Set USAGE_CALL_LOG_RETENTION_DAYS to at "
        "least 2, or to 0 to keep call logs for ever",
        id="retention-of-a-day",
    ),
    pytest.param(
        {
            "USAGE_CALL_LOG_RETENTION_DAYS": "2",
            "USAGE_AGGREGATION_INTERVAL_SECONDS": "79201",
            "USAGE_ERROR_RATE_WINDOW_MINUTES": "1440",
        },
        "USAGE_CALL_LOG_RETENTION_DAYS is 2, but a day is aggregated only until it is that many "
        "days old, and the aggregation, every USAGE_AGGREGATION_INTERVAL_SECONDS (79201), must "
        "run once after the day has ended, with 2 hours to spare: the last call logs of a day "
        "would never be counted in its daily usage. Set USAGE_CALL_LOG_RETENTION_DAYS to at "
        "least 3, or to 0 to keep call logs for ever, or USAGE_AGGREGATION_INTERVAL_SECONDS to "
        "at most 79200",
        id="aggregation-interval-for-retention",
    ),
    pytest.param(
        {"USAGE_AGGREGATION_INTERVAL_SECONDS": "901"},
        "USAGE_ERROR_RATE_WINDOW_MINUTES is 15, but error rates are checked after each "
        "aggregation, every USAGE_AGGREGATION_INTERVAL_SECONDS (901): the errors between the "
        "end of one window and the start of the next would never be checked. Set "
        "USAGE_ERROR_RATE_WINDOW_MINUTES to at least 16, or USAGE_AGGREGATION_INTERVAL_SECONDS "
        "to at most 900",
        id="error-rate-window",
    ),
]

# The same combinations at their rules' boundaries: each starts.
BOUNDARIES = [
    pytest.param({"USAGE_BUDGET_RESERVATION_TTL_SECONDS": "150"}, id="reservation-ttl"),
    pytest.param(
        {"LLM_CALL_DEADLINE_SECONDS": "600", "USAGE_BUDGET_RESERVATION_TTL_SECONDS": "660"},
        id="call-deadline",
    ),
    pytest.param(
        {"LLM_CALL_DEADLINE_SECONDS": "90.5", "USAGE_BUDGET_RESERVATION_TTL_SECONDS": "151"},
        id="fractional-call-deadline",
    ),
    pytest.param(
        {"USAGE_BUDGET_RESERVATION_TTL_SECONDS": "61", "LLM_CALL_DEADLINE_SECONDS": "1"},
        id="reservation-ttl-of-a-minute",
    ),
    pytest.param({"CELERY_TASK_TIME_LIMIT": "120"}, id="task-time-limit"),
    pytest.param({"USAGE_ALERT_EMAIL_TIMEOUT_SECONDS": "540"}, id="email-timeout"),
    pytest.param(
        {"USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS": "300", "CELERY_TASK_TIME_LIMIT": "360"},
        id="webhook-timeout",
    ),
    pytest.param({"USAGE_CALL_LOG_RETENTION_DAYS": "2"}, id="retention-of-two-days"),
    pytest.param(
        {
            "USAGE_CALL_LOG_RETENTION_DAYS": "2",
            "USAGE_AGGREGATION_INTERVAL_SECONDS": "79200",
            "USAGE_ERROR_RATE_WINDOW_MINUTES": "1320",
        },
        id="aggregation-interval-for-retention",
    ),
    pytest.param({"USAGE_AGGREGATION_INTERVAL_SECONDS": "900"}, id="error-rate-window"),
]


@pytest.mark.parametrize(("variables", "message"), CONFLICTS)
def test_settings_that_break_a_rule_between_them_stop_the_start_naming_both(variables, message):
    result = _check("config.settings.production", **{**PRODUCTION_ENV, **variables})

    assert result.returncode != 0
    assert (
        f"django.core.exceptions.ImproperlyConfigured: {message} (see docs/OPERATIONS.md).\n"
        in result.stderr
    )


@pytest.mark.parametrize("variables", BOUNDARIES)
def test_settings_at_the_boundary_of_a_rule_between_them_start(variables):
    shown = _run(
        [
            "-c",
            "import django, json; django.setup(); from django.conf import settings as s; "
            f"print(json.dumps({{name: getattr(s, name) for name in {sorted(variables)!r}}}))",
        ],
        settings_module="config.settings.production",
        env={**PRODUCTION_ENV, **variables},
    )

    assert shown.returncode == 0, shown.stderr
    assert {name: float(value) for name, value in json.loads(shown.stdout).items()} == {
        name: float(value) for name, value in variables.items()
    }


def test_a_worker_refuses_to_start_on_settings_that_break_a_rule_between_them():
    # Workers and beat load the settings as the web application does: no system check runs there.
    result = _run(
        CELERY_REPORT,
        settings_module=None,
        env={**PRODUCTION_ENV, "CELERY_TASK_TIME_LIMIT": "100"},
    )

    assert result.returncode != 0
    assert (
        "django.core.exceptions.ImproperlyConfigured: CELERY_TASK_TIME_LIMIT is 100, but an "
        "alert delivery may take USAGE_ALERT_EMAIL_TIMEOUT_SECONDS (60)" in result.stderr
    )
