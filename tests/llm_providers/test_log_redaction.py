"""Provider keys never reach the logs, even with every library logging at DEBUG.

An operator chasing a problem may turn the SDKs, the HTTP stack, botocore and
the SQL log up to DEBUG. These tests do that, drive each wire protocol through
its official SDK against a loopback upstream (calls, streams, embeddings,
connection tests, and a rejected key), and read what the project's own log
handler wrote and what reached pytest's capture.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys

import pytest

from llm_providers.completion import complete, embed, stream
from llm_providers.exceptions import ApplicationError
from llm_providers.log_redaction import SecretRedactingFilter, redact_log_text
from llm_providers.services import provider_config_create, provider_config_test_connection
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

KEYS = {
    "openai": "sk-proj-Vb7QmX2tLp9RwK4sHc6NjE1uYd3FgA8zTo5iMk0",
    "azure_openai": "3f9c7a1e5b2d48c6a0e4f7b9d1c3a5e7",
    "gemini": "AIzaSyD4vQ7mK2pX9rL6tW1nB8cH3jF5gE0aUoIs",
    "mistral": "Qm7Xv2Lp9RwK4sHc6NjE1uYd3FgA8zTo",
    "openai_compatible": "cmp-Tz8Hq3Wv6Nb1Xk5Lr9Jd2Fs7Gm4Pc0Ya",
    "anthropic": "sk-ant-api03-Hn4Rq8Wz2Ly6Tb0Kv5Mx9Jc3Fd7Gs1Pa",
}
AWS_KEY_ID = "AKIAZ4QH7LMN2VXC9RBY"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8LrT2vXk"
# Pieces a leak would show: each secret's middle, away from the public prefix and
# the last four characters that the mask shows.
FRAGMENTS = [
    *(key[8:-4] if key.startswith("sk-") else key[4:-4] for key in KEYS.values()),
    AWS_KEY_ID[4:-4],
    AWS_SECRET[4:-4],
]
DEBUG_LOGGERS = [
    "",
    "openai",
    "anthropic",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "botocore",
    "boto3",
    "urllib3",
    "django.db.backends",
    "celery",
]
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def debug_logs(caplog, allow_private_urls):
    """Every logger at DEBUG; yields a function returning all that was logged.

    The text is what the handler installed by settings.LOGGING wrote, plus
    every record pytest captured.
    """
    [handler] = [h for h in logging.getLogger().handlers if h.name == "console"]
    written = io.StringIO()
    previous_stream = handler.setStream(written)
    previous_levels = {name: logging.getLogger(name).level for name in DEBUG_LOGGERS}
    for name in DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    from django.db import connection

    connection.force_debug_cursor = True

    def read(*, handler_only: bool = False) -> str:
        if handler_only:
            return written.getvalue()
        captured = "\n".join(
            record.getMessage()
            + (caplog.handler.formatter.formatException(record.exc_info) if record.exc_info else "")
            for record in caplog.records
        )
        return written.getvalue() + "\n" + captured

    yield read
    connection.force_debug_cursor = False
    handler.setStream(previous_stream)
    for name, level in previous_levels.items():
        logging.getLogger(name).setLevel(level)


def _assert_no_secret(text: str) -> None:
    assert "HTTP Request" in text or "Sending http request" in text, "nothing was logged"
    for fragment in FRAGMENTS:
        assert fragment not in text


def _try(call) -> None:
    """Run `call` (draining a stream); its failure is expected, only the log is checked."""
    with contextlib.suppress(ApplicationError):
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (str, bytes)):
            list(result)


@pytest.mark.parametrize(
    "provider_type", ["openai", "azure_openai", "gemini", "mistral", "openai_compatible"]
)
def test_openai_protocol_at_debug_logs_no_key(debug_logs, openai_upstream, provider_type):
    tenant = TenantFactory()
    options = (
        {"api_version": "2024-10-21", "deployment": "chat"}
        if provider_type == "azure_openai"
        else {}
    )
    config = provider_config_create(
        tenant=tenant, name=provider_type, provider_type=provider_type,
        api_key=KEYS[provider_type], base_url=openai_upstream.base_url,
        default_model="gpt-4o", is_default=True, options=options,
    )  # fmt: skip
    openai_upstream.enqueue_chat("Hi")
    openai_upstream.enqueue_chat_stream(["Hi", " there"])
    openai_upstream.enqueue_embeddings([[0.1, 0.2]])
    openai_upstream.enqueue_models(["gpt-4o"])

    complete(tenant=tenant, messages=HELLO)
    list(stream(tenant=tenant, messages=HELLO))
    embed(tenant=tenant, inputs=["a"], model="gpt-4o")
    assert provider_config_test_connection(provider_config=config).ok
    for _ in range(3):
        openai_upstream.enqueue_invalid_key(KEYS[provider_type])
    _try(lambda: complete(tenant=tenant, messages=HELLO))
    _try(lambda: stream(tenant=tenant, messages=HELLO))
    assert not provider_config_test_connection(provider_config=config).ok

    _assert_no_secret(debug_logs())


def test_anthropic_at_debug_logs_no_key(debug_logs, anthropic_upstream):
    tenant = TenantFactory()
    config = provider_config_create(
        tenant=tenant, name="anthropic", provider_type="anthropic", api_key=KEYS["anthropic"],
        base_url=anthropic_upstream.base_url, default_model="claude-opus-4-7", is_default=True,
    )  # fmt: skip
    anthropic_upstream.enqueue_message("Hi")
    anthropic_upstream.enqueue_message_stream(["Hi", " there"])
    anthropic_upstream.enqueue_models(["claude-opus-4-7"])

    complete(tenant=tenant, messages=HELLO)
    list(stream(tenant=tenant, messages=HELLO))
    assert provider_config_test_connection(provider_config=config).ok
    anthropic_upstream.enqueue_error(
        401, type="authentication_error", message="invalid x-api-key", times=3
    )
    _try(lambda: complete(tenant=tenant, messages=HELLO))
    _try(lambda: stream(tenant=tenant, messages=HELLO))
    assert not provider_config_test_connection(provider_config=config).ok

    _assert_no_secret(debug_logs())


def test_bedrock_at_debug_logs_no_access_key_id(debug_logs, bedrock_upstream):
    """botocore logs every request with its headers at DEBUG, and SigV4's
    Authorization header names the access key id in full."""
    tenant = TenantFactory()
    config = provider_config_create(
        tenant=tenant, name="bedrock", provider_type="bedrock",
        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET, aws_region="us-east-1",
        base_url=bedrock_upstream.base_url,
        default_model="anthropic.claude-3-haiku-20240307-v1:0", is_default=True,
    )  # fmt: skip
    bedrock_upstream.enqueue_converse("Hi")
    bedrock_upstream.enqueue_converse_stream(["Hi", " there"])
    bedrock_upstream.enqueue_foundation_models(["anthropic.claude-3-haiku-20240307-v1:0"])

    complete(tenant=tenant, messages=HELLO)
    list(stream(tenant=tenant, messages=HELLO))
    assert provider_config_test_connection(provider_config=config).ok
    bedrock_upstream.enqueue_error(
        403, "UnrecognizedClientException", "The security token included in the request is "
        "invalid.", times=3,
    )  # fmt: skip
    _try(lambda: complete(tenant=tenant, messages=HELLO))
    assert not provider_config_test_connection(provider_config=config).ok

    logged = debug_logs()
    _assert_no_secret(logged)
    # The project's handler wrote the requests, their credential header redacted.
    assert "'Authorization': b'[redacted]'" in debug_logs(handler_only=True)


def test_response_body_quoting_a_key_at_debug_is_redacted(debug_logs, bedrock_upstream):
    """botocore logs every response body at DEBUG. A body that quotes the
    secret access key (which has no recognisable shape) is redacted too: the
    filter knows the secrets of the adapters built in this process."""
    tenant = TenantFactory()
    provider_config_create(
        tenant=tenant, name="bedrock", provider_type="bedrock",
        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET, aws_region="us-east-1",
        base_url=bedrock_upstream.base_url,
        default_model="anthropic.claude-3-haiku-20240307-v1:0", is_default=True,
    )  # fmt: skip
    bedrock_upstream.enqueue_error(
        403, "InvalidSignatureException", f"Signature of {AWS_SECRET[5:30]} does not match.",
        times=3,
    )  # fmt: skip

    _try(lambda: complete(tenant=tenant, messages=HELLO))

    logged = debug_logs()
    assert "Response body" in logged
    assert "Signature of [redacted] does not match." in debug_logs(handler_only=True)
    _assert_no_secret(logged)
    for start in range(len(AWS_SECRET) - 7):
        assert AWS_SECRET[start : start + 8] not in logged


# --- the filter itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"headers={{'api-key': b'{KEYS['azure_openai']}', 'Accept': b'json'}}", "'Accept'"),
        (f"x-api-key: {KEYS['mistral']}\r\nhost: example", "host: example"),
        (f"Authorization: Bearer {KEYS['openai_compatible']}", "Authorization: [redacted]"),
        (f"{{'x-goog-api-key': '{KEYS['gemini']}'}}", "'x-goog-api-key': '[redacted]'"),
        (f"Credential={AWS_KEY_ID}/20260101/us-east-1/bedrock", "/us-east-1/bedrock"),
    ],
    ids=["azure-bytes", "raw-header", "bearer", "gemini", "sigv4-scope"],
)
def test_redact_log_text_removes_credential_values(text, kept):
    redacted = redact_log_text(text)

    _assert_no_secret_anywhere(redacted)
    assert kept in redacted


def test_filter_keeps_records_without_secrets_as_they_are():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent %s tokens", (12,), None)

    assert SecretRedactingFilter().filter(record) is True
    assert (record.msg, record.args) == ("sent %s tokens", (12,))


def test_filter_redacts_a_logged_traceback():
    try:
        raise RuntimeError(f"refused key {AWS_KEY_ID}")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info(), sinfo="stack"
        )

    assert SecretRedactingFilter().filter(record) is True
    formatted = logging.Formatter().format(record)
    assert "RuntimeError: refused key [redacted]" in formatted
    _assert_no_secret_anywhere(formatted)


def _assert_no_secret_anywhere(text: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text
