"""Alert webhooks: URL checks (SSRF), a display label that hides the secret path, the POST."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from llm_providers.network import base_url_validate


class WebhookFailed(Exception):
    """The receiver could not be reached or did not answer 2xx; the message names no secret."""


# What to fix, where the provider URL check's advice is about provider configs.
_WEBHOOK_MESSAGES = {
    "credentials_in_url": "The webhook URL must not carry credentials (user:password@); put a "
    "token the receiver needs in the URL's path or query.",
}


def _webhook_message(error: ValidationError) -> str:
    if error.code in _WEBHOOK_MESSAGES:
        return _WEBHOOK_MESSAGES[error.code]
    (message,) = error.messages
    return (
        message.replace("The base URL", "The webhook URL")
        .replace("the base URL", "the webhook URL")
        .replace("provider URLs", "webhook URLs")
    )


def webhook_url_validate(url: str) -> None:
    """Raise ValidationError unless `url` is http(s) on a public host (or private, if allowed)."""
    try:
        base_url_validate(url)
    except ValidationError as exc:
        raise ValidationError([_webhook_message(error) for error in exc.error_list]) from None


# The label of a stored URL that cannot be parsed (stored before such URLs
# were refused): posting to it fails, and it must be entered again.
UNPARSABLE_WEBHOOK_LABEL = "invalid URL — enter it again"


def webhook_label(url: str) -> str:
    """scheme://host[:port]/… — the path and query of a webhook URL are often its secret."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        # The parser's message quotes the part it could not read: often the token.
        return UNPARSABLE_WEBHOOK_LABEL
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{port}/…"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead to a private address the URL check never saw.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def webhook_post(url: str, payload: dict) -> int:
    """POST `payload` as JSON; return the status, or raise WebhookFailed."""
    try:
        webhook_url_validate(url)
    except ValidationError as exc:
        raise WebhookFailed(" ".join(exc.messages)) from None
    label = webhook_label(url)
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "llm-provider-layer-alerts"},
        method="POST",
    )
    try:
        with _opener.open(request, timeout=settings.USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"{label} answered HTTP {exc.code}.") from None
    except urllib.error.URLError as exc:
        raise WebhookFailed(f"{label} could not be reached: {exc.reason}.") from None
    except (TimeoutError, OSError) as exc:
        raise WebhookFailed(f"{label} could not be reached: {type(exc).__name__}.") from None
    except Exception as exc:  # noqa: BLE001 - e.g. http.client.InvalidURL
        # Only the type: the message of an unexpected error may quote the URL.
        raise WebhookFailed(f"{label} could not be called: {type(exc).__name__}.") from None
