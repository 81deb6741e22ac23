"""Error reports (mail to ADMINS, error trackers, the log) quote no password.

Django's report lists every setting and the request's environment, hiding
only names that look secret (KEY, PASS, TOKEN...). Connection URLs carry
their password inside the value, under names that do not look secret.
"""

from __future__ import annotations

import logging
import sys

import boto3
import pytest
from django.test import RequestFactory
from django.views.debug import ExceptionReporter, get_exception_reporter_class

from llm_providers.adapters.registry import adapter_build
from llm_providers.adapters.types import AdapterSettings
from llm_providers.log_redaction import SecretRedactingFilter
from tests.upstreams.server import json_reply

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


AWS_KEY_ID = "AKIAZ4QH7LMN2VXC9RBY"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8LrT2vXk"
OPENAI_COMPATIBLE_KEY = "ZqW3rT9yU1iO5pA7sD2fG4hJ6kL8mN0b"


def _pieces(secret: str) -> list[str]:
    return [secret[start : start + 8] for start in range(len(secret) - 7)]


@pytest.mark.parametrize("debug", [True, False], ids=["debug-page", "email-report"])
def test_report_frame_variables_show_no_credential(settings, bedrock_upstream, debug):
    # given: a live Bedrock adapter holding the key pair, and a failure inside
    # botocore (an answer its parser cannot read, on a client without the
    # adapter's checks, which turn that into an error) whose frames hold the
    # signed request (its Authorization header names the key id)
    adapter = adapter_build(
        AdapterSettings("bedrock", base_url=bedrock_upstream.base_url, aws_region="us-east-1",
                        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET)
    )  # fmt: skip
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=bedrock_upstream.base_url,
        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET,
    )  # fmt: skip
    bedrock_upstream.enqueue(json_reply({"output": 5}))
    with pytest.raises(AttributeError) as failure:
        client.converse(
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            messages=[{"role": "user", "content": [{"text": "hello"}]}],
        )
    client.close()
    settings.DEBUG = debug

    # when
    html = ExceptionReporter(
        RequestFactory().get("/"), failure.type, failure.value, failure.tb, is_email=not debug
    ).get_traceback_html()

    # then: the frames and their variables are shown, no credential in them
    assert "botocore/parsers.py" in html
    assert "X-Amz-Date" in html
    assert "Authorization" in html
    for piece in _pieces(AWS_KEY_ID) + _pieces(AWS_SECRET):
        assert piece not in html
    adapter.close()


@pytest.mark.django_db
def test_report_frame_variables_hide_a_key_no_pattern_recognises(settings, allow_private_urls):
    # given: an adapter holding a key no pattern recognises, and a frame where
    # the key is a variable of its own
    settings.DEBUG = True
    adapter = adapter_build(
        AdapterSettings("openai_compatible", base_url="http://127.0.0.1:9/v1",
                        api_key=OPENAI_COMPATIBLE_KEY)
    )  # fmt: skip

    def fails(api_key: str) -> None:
        attempts = [f"refused {api_key}"]
        raise RuntimeError(f"refused after {len(attempts)} attempt")

    try:
        fails(OPENAI_COMPATIBLE_KEY)
    except RuntimeError:
        html = ExceptionReporter(RequestFactory().get("/"), *sys.exc_info()).get_traceback_html()

    # then
    assert "api_key" in html
    assert "refused [redacted]" in html
    for piece in _pieces(OPENAI_COMPATIBLE_KEY):
        assert piece not in html
    adapter.close()


def _failure_quoting_keys() -> tuple:
    """An exception whose message, and its cause's, quote credentials."""
    try:
        try:
            raise ValueError(f"header value refused: Bearer {OPENAI_COMPATIBLE_KEY}")
        except ValueError as exc:
            raise RuntimeError(f"signing with {AWS_KEY_ID} failed") from exc
    except RuntimeError:
        return sys.exc_info()


def test_report_quotes_no_credential_from_exception_messages(settings):
    settings.DEBUG = True
    request = RequestFactory().get("/")
    reporter = get_exception_reporter_class(request)(request, *_failure_quoting_keys())

    for report in (reporter.get_traceback_text(), reporter.get_traceback_html()):
        assert "signing with [redacted] failed" in report
        assert "(header value refused: [redacted]) was the direct cause" in report
        for piece in _pieces(AWS_KEY_ID) + _pieces(OPENAI_COMPATIBLE_KEY):
            assert piece not in report


@pytest.mark.parametrize("include_html", [False, True])
def test_error_mail_to_admins_quotes_no_credential(production_like, mailoutbox, include_html):
    production_like.ADMINS = [("Ops", "ops@example.com")]
    [handler] = [h for h in logging.getLogger("django").handlers if h.name == "mail_admins"]
    handler.include_html = include_html
    request = RequestFactory().get("/admin/")

    try:
        logging.getLogger("django.request").error(
            "Internal Server Error: %s", request.path,
            exc_info=_failure_quoting_keys(), extra={"status_code": 500, "request": request},
        )  # fmt: skip
    finally:
        handler.include_html = False

    [mail] = mailoutbox
    sent = mail.subject + mail.body + "".join(str(part[0]) for part in mail.alternatives)
    assert "signing with [redacted] failed" in mail.body
    for piece in _pieces(AWS_KEY_ID) + _pieces(OPENAI_COMPATIBLE_KEY):
        assert piece not in sent


def test_django_loggers_write_through_the_redacting_filter():
    handlers = [
        handler
        for name in ("django", "django.request", "django.server", "django.security")
        for handler in logging.getLogger(name).handlers
        if not type(handler).__module__.startswith("_pytest")
    ]

    assert {handler.name for handler in handlers} == {"mail_admins", "django.server"}
    for handler in handlers:
        assert any(isinstance(f, SecretRedactingFilter) for f in handler.filters)
