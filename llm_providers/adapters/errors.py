"""One error tree for every provider, and scrubbing of secrets from messages."""

from __future__ import annotations

import re
from collections.abc import Iterable

from llm_providers.exceptions import ApplicationError


class ProviderError(ApplicationError):
    """A provider call failed. `retryable` says whether trying again (or the
    next fallback) can help; `retry_after` is the provider's hint in seconds."""

    code = "provider_error"
    http_status = 502
    retryable = False

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
    r"|(?i:bearer)\s+[A-Za-z0-9._\-~+/=*]{8,}|api[-_]?key[\"']?\s*[:=]\s*[\"']?[^\s\"',}]{4,})"
)
# Fragments shorter than this are too common to scrub without mangling text.
_MIN_FRAGMENT = 8
# 500 characters: what a CallLog row and an API error body keep of a message.
MAX_MESSAGE_LENGTH = 500


def scrub_secrets(message: str, secrets: Iterable[str] = ()) -> str:
    """Remove secrets, any 8+ character piece of them, and key-shaped tokens."""
    text = message
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, _REDACTED)
        if len(secret) >= _MIN_FRAGMENT * 2:
            # Partial quotes: any window of the secret that survived.
            for size in (len(secret) // 2, _MIN_FRAGMENT):
                for start in range(0, len(secret) - size + 1):
                    piece = secret[start : start + size]
                    if piece in text:
                        text = text.replace(piece, _REDACTED)
    text = _KEY_PATTERNS.sub(_REDACTED, text)
    return text[:MAX_MESSAGE_LENGTH]
