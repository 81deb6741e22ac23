"""The shared error helpers: Retry-After parsing, status mapping, context-length detection."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from llm_providers.adapters.errors import (
    ContentRefused,
    ContextTooLong,
    ProviderAuthenticationError,
    ProviderBadRequest,
    ProviderPermissionError,
    ProviderRateLimited,
    ProviderTimeout,
    UpstreamUnavailable,
    _SecretsInUse,
    connection_failure,
    error_for_status,
    malformed_answer,
    message_says_context_too_long,
    redact_secrets_in_use,
    retry_after_from_headers,
    scrub_secrets,
    secrets_in_use,
)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "20"}, 20.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after-ms": "nan", "retry-after": "4"}, 4.0),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_from_headers_reads_seconds_and_milliseconds(headers, expected):
    assert retry_after_from_headers(headers) == expected


def test_retry_after_from_headers_reads_an_http_date():
    # An HTTP date has whole seconds.
    moment = (datetime.now(UTC) + timedelta(seconds=30)).replace(microsecond=0)

    before = time.time()
    seconds = retry_after_from_headers({"Retry-After": format_datetime(moment, usegmt=True)})
    after = time.time()

    # Bounded by the clock around the call, so a slow machine cannot make it flake.
    assert moment.timestamp() - after <= seconds <= moment.timestamp() - before


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 128000 tokens. However, your messages resulted "
        "in 130412 tokens.",
        "prompt is too long: 208310 tokens > 200000 maximum",
        "input length and `max_tokens` exceed context limit: 197202 + 21333 > 200000",
        "Input is too long for requested model.",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        "Please reduce the length of the messages or completion.",
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8193. Given: "
        "8000 `inputs` tokens and 512 `max_new_tokens`",
        # Embeddings: OpenAI per input and per request, Together and other TEI servers.
        "Invalid 'input[3]': maximum input length is 8192 tokens.",
        "Requested 312345 tokens, max 300000 tokens per request",
        "Input validation error: `inputs` must have less than 512 tokens. Given: 600",
    ],
)
def test_message_says_context_too_long_when_vendors_word_it_their_way(message):
    assert message_says_context_too_long(message) is True


def test_message_says_context_too_long_is_false_for_other_bad_requests():
    assert message_says_context_too_long("Invalid value for 'temperature': 3.") is False
    assert message_says_context_too_long("max_tokens is too large: 100000.") is False
    assert (
        message_says_context_too_long("Input validation error: `max_new_tokens` must be <= 192")
        is False
    )


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, None, ProviderBadRequest),
        (400, "context_length_exceeded", ContextTooLong),
        (400, "content_filter", ContentRefused),
        (401, None, ProviderAuthenticationError),
        (402, None, ProviderPermissionError),
        (403, None, ProviderPermissionError),
        (404, None, ProviderBadRequest),
        (408, None, ProviderTimeout),
        (409, None, UpstreamUnavailable),
        (413, None, ContextTooLong),
        (422, None, ProviderBadRequest),
        (429, None, ProviderRateLimited),
        (429, "insufficient_quota", ProviderPermissionError),
        (400, "API_KEY_INVALID", ProviderAuthenticationError),
        (500, None, UpstreamUnavailable),
        (502, None, UpstreamUnavailable),
        (504, None, ProviderTimeout),
        (529, None, UpstreamUnavailable),
        (None, None, UpstreamUnavailable),
    ],
)
def test_error_for_status_picks_the_error_of_the_tree(status, code, expected):
    error = error_for_status(status, "said the provider", code=code, retry_after=2.0)

    assert type(error) is expected
    assert error.status_code == status
    assert error.retry_after == 2.0
    assert error.message == "said the provider"


def test_request_over_the_accounts_token_rate_is_rate_limited_without_retry():
    # Groq answers 413 rate_limit_exceeded to a request larger than the
    # account's tokens-per-minute limit: the next provider may serve it.
    error = error_for_status(
        413,
        "Request too large for model `llama-3.3-70b` on tokens per minute (TPM): "
        "Limit 6000, Requested 9000, please reduce your message size and try again.",
        code="rate_limit_exceeded",
    )

    assert type(error) is ProviderRateLimited
    assert error.retryable is False


def test_connection_failure_tells_unreachable_from_broken_off():
    refused = ConnectionRefusedError(111, "Connection refused")
    broken = EOFError("peer closed")

    assert (
        connection_failure("groq", refused) == "groq could not be reached (ConnectionRefusedError)."
    )
    assert connection_failure("groq", broken) == "The connection to groq broke off (EOFError)."


def test_malformed_answer_is_a_retryable_upstream_unavailable_saying_what_is_wrong():
    error = malformed_answer("openai", "it is not JSON")

    assert isinstance(error, UpstreamUnavailable)
    assert (error.code, error.http_status, error.retryable) == ("upstream_unavailable", 502, True)
    assert error.message == "The openai answer is malformed: it is not JSON."


class _Owner:
    """An object holding secrets (an adapter, in the service)."""


def test_secrets_released_by_the_collector_inside_hold_are_applied_without_deadlock():
    # given the secrets of two owners, the first of which the garbage collector
    # finalizes while this thread holds the lock (inside hold, as it may)
    secrets = _SecretsInUse()
    owners = {"first": _Owner()}
    secrets.hold(owners["first"], ["sk-first-0123456789"])
    rebuild = secrets._windows_rebuild

    def rebuild_while_collecting():
        owners.pop("first", None)  # its finalizer runs now, with the lock held
        rebuild()

    secrets._windows_rebuild = rebuild_while_collecting
    second = _Owner()

    # when another owner is added (in a thread, so that a deadlock fails the test)
    thread = threading.Thread(
        target=secrets.hold, args=(second, ["sk-second-0123456789"]), daemon=True
    )
    thread.start()
    thread.join(timeout=5)

    # then hold returned, and only the second owner's secret is redacted
    assert not thread.is_alive()
    assert "sk-secon" in secrets.windows
    assert "sk-first" not in secrets.windows


HELD_KEY = "sk-proj-HeLd0123456789abcdefXYZ"
OTHER_KEY = "sk-proj-Vb7QmX2tLp9RwK4sHc6NjE1uYd3FgA8zTo5iMk0"


def test_scrub_secrets_removes_another_key_sharing_a_piece_with_the_secret_whole():
    # given a message quoting a second key that begins like the adapter's own
    message = f"rejected {OTHER_KEY} and {HELD_KEY[:-3]}"

    # when it is scrubbed with the adapter's secret
    scrubbed = scrub_secrets(message, [HELD_KEY])

    # then both are gone: the shared "sk-proj-" did not cut the other key's shape short
    assert scrubbed == "rejected [redacted] and [redacted]"


def test_redact_secrets_in_use_removes_another_key_sharing_a_piece_with_a_live_secret():
    # given a live adapter holding a key that shares "sk-proj-" with another one
    owner = _Owner()
    secrets_in_use.hold(owner, [HELD_KEY])

    # when text quoting the other key is redacted
    redacted = redact_secrets_in_use(f"retrying with {OTHER_KEY}; held {HELD_KEY[5:20]}")

    # then the other key is removed whole, and the live secret's piece too
    assert redacted == "retrying with [redacted]; held [redacted]"
    del owner
