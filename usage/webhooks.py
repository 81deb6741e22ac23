"""Alert webhooks: URL checks (SSRF), a display label that hides the secret path, the POST."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import threading
import urllib.error
import urllib.request
from contextlib import suppress
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


class _Deadline:
    """Shuts down the POST's connections once it has taken `seconds` in all.

    The socket timeout bounds each read, not the answer: a receiver sending a
    byte at a time would hold the worker past the delivery's claim, and a
    second worker would send the alert again.

    A connection made once the time is up (resolving the host took it all) is
    closed before anything is sent: the POST would start after the deadline
    had already fired, and nothing would end it in time.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self.connections: list[http.client.HTTPConnection] = []
        # Sockets connected and not yet handed to their connection.
        self.sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()

    def connection(self, connection_class):
        def create(*args, **kwargs):
            connection = connection_class(*args, **kwargs)
            connection._create_connection = self._connect_in_time(connection._create_connection)
            with self._lock:
                self.connections.append(connection)
            return connection

        return create

    def _connect_in_time(self, connect):
        def create_connection(*args, **kwargs):
            sock = connect(*args, **kwargs)
            with self._lock:
                if self.expired:
                    sock.close()
                    raise TimeoutError("the POST's time limit passed before it was sent")
                # Until the connection holds it: the deadline may fire in between.
                self.sockets.append(sock)
            return sock

        return create_connection

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            held = [c.sock for c in self.connections if c.sock is not None]
            for sock in [*held, *self.sockets]:
                # The plain socket's shutdown, also under TLS: a blocked read returns.
                # (A socket TLS has since wrapped is closed here: its wrapper is held.)
                with suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(self.deadline.connection(_HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(self.deadline.connection(_HTTPSConnection), req, context=self._context)


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        _NoRedirects(),
        _HTTPHandler(deadline),
        _HTTPSHandler(deadline),
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
    timeout = settings.USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS
    deadline = _Deadline(timeout)
    try:
        with deadline, _opener(deadline).open(request, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            # The Location is not quoted: it may carry the new secret path.
            raise WebhookFailed(
                f"{label} answered HTTP {exc.code}, a redirect: alerts do not follow "
                "redirects, so enter the URL it redirects to."
            ) from None
        raise WebhookFailed(f"{label} answered HTTP {exc.code}.") from None
    except Exception as exc:  # noqa: BLE001 - every failure is a failed attempt
        raise WebhookFailed(_failure_message(label, exc, deadline)) from None


def _failure_message(label: str, exc: Exception, deadline: _Deadline) -> str:
    if deadline.expired:
        return f"{label} did not answer within {deadline.seconds:g} s."
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, _PrivateAddress):
            return str(exc.reason)
        return f"{label} could not be reached: {exc.reason}."
    if isinstance(exc, OSError):
        return f"{label} could not be reached: {type(exc).__name__}."
    # Only the type: the message of an unexpected error (http.client.InvalidURL…)
    # may quote the URL.
    return f"{label} could not be called: {type(exc).__name__}."
