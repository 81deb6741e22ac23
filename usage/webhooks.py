"""Alert webhooks: URL checks (SSRF), a display label that hides the secret path, the POST."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from llm_providers.network import address_forbidden_kind, base_url_validate


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


class _PrivateAddress(OSError):
    """The host resolved to a private address when the POST connected to it."""


def _public_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
    """socket.create_connection, refusing the host if it now resolves to a private address.

    The URL check before the POST resolved the name once; a name whose answer
    changed since (DNS rebinding) would otherwise reach the private host.
    Unless PROVIDER_ALLOW_PRIVATE_URLS, only the addresses checked here are connected to.
    """
    if settings.PROVIDER_ALLOW_PRIVATE_URLS:
        return socket.create_connection(address, timeout, source_address)
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        kind = address_forbidden_kind(ip)
        if kind:
            raise _PrivateAddress(
                f"The webhook URL points at a {kind} address ({ip}); webhook URLs must be "
                "public unless PROVIDER_ALLOW_PRIVATE_URLS is on."
            )
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
        else:
            return sock
    raise error or OSError(f"no address for {host}")


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _public_connection


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _public_connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


_opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), _NoRedirects(), _HTTPHandler(), _HTTPSHandler()
)


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
        if isinstance(exc.reason, _PrivateAddress):
            raise WebhookFailed(str(exc.reason)) from None
        raise WebhookFailed(f"{label} could not be reached: {exc.reason}.") from None
    except (TimeoutError, OSError) as exc:
        raise WebhookFailed(f"{label} could not be reached: {type(exc).__name__}.") from None
    except Exception as exc:  # noqa: BLE001 - e.g. http.client.InvalidURL
        # Only the type: the message of an unexpected error may quote the URL.
        raise WebhookFailed(f"{label} could not be called: {type(exc).__name__}.") from None
