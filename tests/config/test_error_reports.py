"""Error reports (mail to ADMINS, error trackers, the log) quote no password.

Django's report lists every setting and the request's environment, hiding
only names that look secret (KEY, PASS, TOKEN...). Connection URLs carry
their password inside the value, under names that do not look secret.
"""

from __future__ import annotations

import sys

import pytest
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

SMTP_PASSWORD = "hunter2smtpQx7"
REDIS_PASSWORD = "rPw9Lk3mZq"
DATABASE_PASSWORD = "pgSecret77Tz"


def _report_text(request) -> str:
    try:
        raise RuntimeError("database went away")
    except RuntimeError:
        return ExceptionReporter(request, *sys.exc_info()).get_traceback_text()


@pytest.fixture
def production_like(settings):
    settings.DEBUG = False
    settings.EMAIL_URL = f"smtp+tls://alerts:{SMTP_PASSWORD}@mail.example.com:587"
    redis_url = f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0"
    settings.REDIS_URL = redis_url
    settings.CELERY_BROKER_URL = redis_url
    settings.USAGE_BUDGET_REDIS_URL = redis_url
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": redis_url},
    }
    return settings


def test_report_hides_passwords_in_connection_url_settings(production_like):
    text = _report_text(RequestFactory().get("/api/v1/providers/"))

    assert "database went away" in text
    for password in (SMTP_PASSWORD, REDIS_PASSWORD):
        assert password not in text
    # What helps find the fault stays: scheme, user, host, port.
    assert "EMAIL_URL = 'smtp+tls://alerts:********************@mail.example.com:587'" in text
    assert "REDIS_URL = 'redis://:********************@cache.internal:6379/0'" in text


def test_report_hides_passwords_in_the_request_environment(production_like):
    # runserver and some WSGI servers pass the process environment in META.
    request = RequestFactory().get(
        "/", DATABASE_URL=f"postgres://llm:{DATABASE_PASSWORD}@db.internal:5432/llm"
    )

    text = _report_text(request)

    assert DATABASE_PASSWORD not in text
    assert "postgres://llm:********************@db.internal:5432/llm" in text


def test_report_keeps_urls_without_password(production_like):
    production_like.LOGIN_REDIRECT_URL = "https://user@example.com/after-login"

    text = _report_text(RequestFactory().get("/"))

    assert "LOGIN_REDIRECT_URL = 'https://user@example.com/after-login'" in text
