"""One error tree for every provider, and scrubbing of secrets from messages."""

from __future__ import annotations

import math
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress
from email.utils import parsedate_to_datetime
from typing import TypeVar

from llm_providers.exceptions import ApplicationError

from .types import Usage


class ProviderError(ApplicationError):
    """A provider call failed. `retryable` says whether trying again (or the
    next fallback) can help; `retry_after` is the provider's hint in seconds.

    `paid_usage` is what the provider answered, and charged for, before the
    call failed (the batches of an embedding call sent before the one that
    failed; an answer the provider ended as failed, with the usage it
    reported), with the model that answered and whether it was estimated;
    `paid_vectors` are those batches' vectors, in input order, so that a
    retry on the same target sends only the inputs that follow them, and
    `paid_vectors_usage` the part of `paid_usage` those batches used (the
    rest, if any, is the batch that failed: answered with vectors that were
    refused, but with its usage, which the provider charges).
    `paid_usage_final`: `paid_usage` is the provider's own figure for the
    whole attempt (an answer it ended as failed, or found malformed), not
    only a part of it.
    """

    code = "provider_error"
    http_status = 502
    retryable = False
    paid_usage: Usage | None = None
    paid_usage_estimated: bool = False
    paid_model: str = ""
    paid_usage_final: bool = False
    paid_vectors: list[list[float]] | None = None
    paid_vectors_usage: Usage | None = None

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message, extra=extra)
        self.retry_after = retry_after
        self.status_code = status_code


class ProviderAuthenticationError(ProviderError):
    code = "provider_authentication"


class ProviderPermissionError(ProviderError):
    code = "provider_permission"


class ProviderRateLimited(ProviderError):
    code = "provider_rate_limited"
    http_status = 429
    retryable = True


class ProviderTimeout(ProviderError):
    code = "provider_timeout"
    http_status = 504
    retryable = True


class CallDeadlineReached(ProviderTimeout):
    """The call's deadline left no time for the next request of a call sent
    in parts (an embedding batch): nothing more was sent."""


class ProviderBadRequest(ProviderError):
    code = "provider_bad_request"
    http_status = 400


class ContextTooLong(ProviderBadRequest):
    code = "context_too_long"


class ContentRefused(ProviderError):
    code = "content_refused"
    http_status = 422


class UpstreamUnavailable(ProviderError):
    code = "upstream_unavailable"
    retryable = True


class MalformedAnswer(UpstreamUnavailable):
    """The provider answered (HTTP 200) with a body that is not what its wire
    format promises: not JSON, or JSON not shaped like an answer (a stream's
    chunk included). Another attempt, or another provider, may answer
    properly, so it is retried and fallen back from as any outage is."""


def malformed_answer(label: str, problem: str) -> MalformedAnswer:
    """The error of an answer of `label` (a provider type) that is not one;
    `problem` says what is wrong with it ("it is not JSON")."""
    return MalformedAnswer(f"The {label} answer is malformed: {problem}.")


_Error = TypeVar("_Error", bound=ProviderError)


def paid_usage_attach(error: _Error, usage: Usage | None, model: str) -> _Error:
    """`error`, of an answer the provider reported `usage` for (by the model
    `model`), carrying that usage as paid: the provider's own figure for the
    whole attempt, which it charges whatever became of the answer. Nothing
    is attached when `usage` is None (none reported, or none usable)."""
    if usage is not None:
        error.paid_usage = usage
        error.paid_model = model
        error.paid_usage_final = True
    return error


def failed_answer_error(message: str, usage: Usage | None, model: str) -> UpstreamUnavailable:
    """The error of an answer the provider ended as failed; the `usage` it
    reported for it (the answer's usage object, a stream's closing figures),
    when it did, is what the attempt used, and is paid."""
    return paid_usage_attach(UpstreamUnavailable(message), usage, model)


class NotSupported(ProviderError):
    """The protocol has no such operation (e.g. embeddings on Anthropic)."""

    code = "not_supported"
    http_status = 400


_REDACTED = "[redacted]"
# Token-shaped strings: vendor key formats, and runs of a key with the middle
# starred out (the OpenAI SDK's 401 message quotes "sk-proj-****...abcd").
_KEY_PATTERNS = re.compile(
    r"(?:sk-[A-Za-z0-9_\-*]{4,}|gsk_[A-Za-z0-9*]{4,}|AIza[0-9A-Za-z_\-*]{8,}"
    r"|A[KS]IA[0-9A-Z*]{8,}|[A-Za-z0-9_\-]*\*{4,}[A-Za-z0-9_\-]*"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-~+/=*]{8,}|api[-_]?key[\"']?\s*[:=]\s*[\"']?(?!\[redacted\])[^\s\"',}]{4,})"
)
# Fragments shorter than this are too common to scrub without mangling text.
_MIN_FRAGMENT = 8
# 500 characters: what a CallLog row and an API error body keep of a message.
MAX_MESSAGE_LENGTH = 500


def _secret_cover(text: str, secret: str, covered: list[bool]) -> None:
    """Mark the text's occurrences of `secret` and its runs of 8+ character
    windows of it, so that no quoted piece survives, however short the key."""
    found = text.find(secret)
    while found != -1:
        covered[found : found + len(secret)] = [True] * len(secret)
        found = text.find(secret, found + 1)
    for start in range(len(secret) - _MIN_FRAGMENT + 1):
        piece = secret[start : start + _MIN_FRAGMENT]
        found = text.find(piece)
        while found != -1:
            covered[found : found + _MIN_FRAGMENT] = [True] * _MIN_FRAGMENT
            found = text.find(piece, found + 1)


def _shapes_cover(text: str, covered: list[bool]) -> None:
    """Mark the text's key-shaped tokens."""
    for match in _KEY_PATTERNS.finditer(text):
        covered[match.start() : match.end()] = [True] * (match.end() - match.start())


def _covered_replaced(text: str, covered: list[bool]) -> str:
    if not any(covered):
        return text
    kept: list[str] = []
    for position, character in enumerate(text):
        if not covered[position]:
            kept.append(character)
        elif position == 0 or not covered[position - 1]:
            kept.append(_REDACTED)
    return "".join(kept)


class _SecretsInUse:
    """The secrets of the adapters alive in this process, as the set of their
    8-character windows, for redacting text that knows no key (log records,
    error reports). An adapter adds its secrets when built; they leave when
    the last adapter holding them is garbage-collected.

    A release runs as a finalizer, whenever the garbage collector does: in
    any thread, also one that holds the lock already (the collector can run
    inside `hold`). It therefore never waits for the lock: it queues the
    secrets, and whoever holds the lock applies the queue before letting go.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._released: deque[list[str]] = deque()
        self.windows: frozenset[str] = frozenset()

    def hold(self, owner: object, secrets: Iterable[str]) -> None:
        held = [secret for secret in secrets if len(secret) >= _MIN_FRAGMENT]
        if not held:
            return
        with self._lock:
            for secret in held:
                self._counts[secret] = self._counts.get(secret, 0) + 1
            self._update()
        self._releases_apply()
        weakref.finalize(owner, self._release, held)

    def _release(self, secrets: list[str]) -> None:
        self._released.append(secrets)
        self._releases_apply()

    def _releases_apply(self) -> None:
        """Apply the queued releases unless another holder of the lock will."""
        while self._released and self._lock.acquire(blocking=False):
            try:
                self._update()
            finally:
                self._lock.release()

    def _update(self) -> None:
        """Apply the queued releases and rebuild the windows (with the lock held)."""
        while True:
            while self._released:
                for secret in self._released.popleft():
                    self._counts[secret] -= 1
                    if not self._counts[secret]:
                        del self._counts[secret]
            self._windows_rebuild()
            if not self._released:
                return

    def _windows_rebuild(self) -> None:
        self.windows = frozenset(
            secret[start : start + _MIN_FRAGMENT]
            for secret in self._counts
            for start in range(len(secret) - _MIN_FRAGMENT + 1)
        )


secrets_in_use = _SecretsInUse()


def redact_secrets_in_use(text: str) -> str:
    """`text` with every key-shaped token, and every run made of 8+ character
    pieces of a live adapter's secret, replaced by one marker.

    Both are found in the text as given and replaced together: a key that
    shares a piece with a live secret (the "sk-proj-" of two OpenAI keys) is
    still matched by its shape whole, not cut short by the piece first.
    """
    covered = [False] * len(text)
    windows = secrets_in_use.windows
    if windows:
        for start in range(len(text) - _MIN_FRAGMENT + 1):
            if text[start : start + _MIN_FRAGMENT] in windows:
                covered[start : start + _MIN_FRAGMENT] = [True] * _MIN_FRAGMENT
    _shapes_cover(text, covered)
    return _covered_replaced(text, covered)


def scrub_secrets(message: str, secrets: Iterable[str] = ()) -> str:
    """Remove secrets, any 8+ character piece of them, and key-shaped tokens,
    all found in the message as given and replaced together."""
    covered = [False] * len(message)
    for secret in secrets:
        if secret:
            _secret_cover(message, secret, covered)
    _shapes_cover(message, covered)
    return _covered_replaced(message, covered)[:MAX_MESSAGE_LENGTH]


# What vendors say when a prompt does not fit the model's window: OpenAI and
# OpenAI-compatible servers ("maximum context length", code
# context_length_exceeded), Anthropic ("prompt is too long", "exceed context
# limit"), Bedrock ("Input is too long", "too many input tokens", Nova's
# "Number of input tokens exceeds maximum length"), Gemini
# ("input token count ... exceeds the maximum number of tokens"), Together and
# other TGI servers ("`inputs` tokens + `max_new_tokens` must be <= 8193").
# Embeddings: OpenAI ("maximum input length is 8192 tokens" per input, "max
# 300000 tokens per request" per call), TEI servers ("`inputs` must have less
# than 512 tokens").
_CONTEXT_TOO_LONG = re.compile(
    r"context[ _-]?(?:length|window|limit)|maximum context|prompt is too long"
    r"|input is too long|too many (?:input )?tokens|exceeds? the maximum (?:number of )?tokens"
    r"|input tokens exceeds? (?:the )?maximum"
    r"|reduce the length of the messages|inputs`? tokens \+ `?max_new_tokens`? must be"
    r"|maximum input length|tokens per request|inputs`? must have less than \d+ tokens",
    re.IGNORECASE,
)
_CONTEXT_TOO_LONG_CODES = frozenset({"context_length_exceeded", "request_too_large"})
_CONTENT_REFUSED_CODES = frozenset({"content_filter", "content_policy_violation"})
# Codes that say the key is wrong whatever the status: Gemini answers a wrong
# key with 400 INVALID_ARGUMENT and the reason API_KEY_INVALID.
_AUTHENTICATION_CODES = frozenset({"api_key_invalid", "invalid_api_key"})
# Codes that say the account has no credit left: OpenAI answers it with 429
# insufficient_quota, which no wait cures (another provider may serve).
_BILLING_CODES = frozenset({"insufficient_quota"})


def message_says_context_too_long(message: str, code: str | None = None) -> bool:
    """Whether a vendor's error message or code says the prompt is too long."""
    if code and code.lower() in _CONTEXT_TOO_LONG_CODES:
        return True
    return bool(_CONTEXT_TOO_LONG.search(message or ""))


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait according to `retry-after-ms` or `retry-after` (seconds or a date)."""
    if not headers:
        return None
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        with suppress(ValueError):
            seconds = float(millis) / 1000
            if math.isfinite(seconds):
                return max(seconds, 0.0)
    value = lowered.get("retry-after")
    if not value:
        return None
    with suppress(ValueError):
        seconds = float(value)
        # "nan" and "inf" parse as floats but say nothing usable.
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def error_for_status(
    status: int | None,
    message: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The error of the tree that an HTTP status (and the vendor's code) stands for.

    `message` must already be scrubbed.
    """
    lowered_code = (code or "").lower()
    options = {"status_code": status, "retry_after": retry_after}
    if lowered_code in _CONTENT_REFUSED_CODES:
        return ContentRefused(message, **options)
    if lowered_code in _AUTHENTICATION_CODES:
        return ProviderAuthenticationError(message, **options)
    if lowered_code in _BILLING_CODES:
        return ProviderPermissionError(message, **options)
    if status == 413 and lowered_code == "rate_limit_exceeded":
        # Groq: the request alone is over the account's tokens-per-minute
        # limit. Waiting cannot help; another provider may serve it.
        error = ProviderRateLimited(message, **options)
        error.retryable = False
        return error
    if status in (400, 404, 413, 422) and message_says_context_too_long(message, code):
        return ContextTooLong(message, **options)
    if status == 413:
        return ContextTooLong(message, **options)
    if status == 401:
        return ProviderAuthenticationError(message, **options)
    if status in (402, 403):
        return ProviderPermissionError(message, **options)
    if status == 429:
        return ProviderRateLimited(message, **options)
    if status in (408, 504):
        return ProviderTimeout(message, **options)
    if status == 409 or (status is not None and status >= 500):
        return UpstreamUnavailable(message, **options)
    if status is not None and 400 <= status < 500:
        return ProviderBadRequest(message, **options)
    return UpstreamUnavailable(message, **options)


def is_redirect(status: int | None) -> bool:
    return status is not None and 300 <= status < 400


def redirect_refused(label: str, status: int) -> ProviderBadRequest:
    """A provider's redirect, which the SDK clients do not follow: it could
    lead to a private address that the base URL check never saw (SSRF)."""
    return ProviderBadRequest(
        f"{label} answered {status}, a redirect, which is not followed; "
        "set the base URL to the address the provider documents.",
        status_code=status,
    )


# Transport errors (httpx, botocore, urllib3, the OS) that mean nothing was
# reached, as opposed to a connection that broke off mid-answer.
_UNREACHABLE_ERRORS = frozenset(
    {"ConnectError", "EndpointConnectionError", "NewConnectionError", "ConnectionRefusedError"}
)


def connection_failure(label: str, exc: BaseException) -> str:
    """Say whether the provider could not be reached or the connection broke off."""
    cause = exc.__cause__ or exc
    name = type(cause).__name__
    if name in _UNREACHABLE_ERRORS or type(exc).__name__ in _UNREACHABLE_ERRORS:
        return f"{label} could not be reached ({name})."
    return f"The connection to {label} broke off ({name})."
