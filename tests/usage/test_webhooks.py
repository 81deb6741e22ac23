"""Alert webhook URL checks: messages that speak of the webhook URL and say what to fix."""

import contextlib
import json
import socket
import threading
import time

import pytest
from django.core.exceptions import ValidationError

from usage.webhooks import WebhookFailed, webhook_label, webhook_post, webhook_url_validate


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "https://alerts:hunter22@hooks.example.com/T0/B0",
            "The webhook URL must not carry credentials (user:password@); put a token the "
            "receiver needs in the URL's path or query.",
        ),
        (
            "https://hooks.nowhere.invalid/T0/B0",
            "The host “hooks.nowhere.invalid” could not be resolved; check the webhook URL.",
        ),
        ("ftp://hooks.example.com/T0", "The webhook URL must start with http:// or https://."),
    ],
)
def test_webhook_url_refusal_names_the_webhook_url_and_the_fix(url, message):
    with pytest.raises(ValidationError) as refused:
        webhook_url_validate(url)

    assert refused.value.messages == [message]


# Stored before URLs with an unreadable port were refused on save.
LEGACY_TOKEN = "Zq8sLegacyHookToken"
LEGACY_URL = f"https://93.184.215.14:{LEGACY_TOKEN}/hooks/T0001"


def test_label_of_unparsable_url_says_so_without_quoting_it():
    assert webhook_label(LEGACY_URL) == "invalid URL — enter it again"


def test_post_to_unparsable_url_fails_without_quoting_it():
    with pytest.raises(WebhookFailed) as failed:
        webhook_post(LEGACY_URL, {"text": "budget crossed"})

    assert str(failed.value) == (
        "The webhook URL is not a valid URL (Port could not be cast to integer value)."
    )


class _RebindingDns:
    """A name that resolves to a public address the first time, then to loopback."""

    name = "hooks.rebind.example"

    def __init__(self, monkeypatch):
        self.answers = ["93.184.216.34", "127.0.0.1"]
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host, port, *args, **kwargs):
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        address = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]


def test_post_refuses_a_host_whose_name_turned_private_after_the_url_check(
    httpserver, settings, monkeypatch
):
    # given a receiver on loopback and a name that answers public, then loopback
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    httpserver.expect_request("/hooks/T0", method="POST").respond_with_data("ok")
    dns = _RebindingDns(monkeypatch)
    url = f"http://{dns.name}:{httpserver.port}/hooks/T0"

    # when the alert is posted
    with pytest.raises(WebhookFailed) as failed:
        webhook_post(url, {"text": "budget crossed"})

    # then nothing reached the loopback receiver, and the refusal says why
    assert httpserver.log == []
    assert str(failed.value) == (
        "The webhook URL points at a loopback address (127.0.0.1); webhook URLs must be "
        "public unless PROVIDER_ALLOW_PRIVATE_URLS is on."
    )


def test_post_reaches_a_private_receiver_when_private_urls_are_allowed(
    httpserver, settings, monkeypatch
):
    # given a name that resolves to the loopback receiver, and private URLs allowed
    settings.PROVIDER_ALLOW_PRIVATE_URLS = True
    httpserver.expect_request("/hooks/T0", method="POST").respond_with_data("ok")
    dns = _RebindingDns(monkeypatch)
    dns.answers = ["127.0.0.1"]

    status = webhook_post(f"http://{dns.name}:{httpserver.port}/hooks/T0", {"text": "x"})

    assert status == 200
    assert [json.loads(request.data) for request, _ in httpserver.log] == [{"text": "x"}]


class _DrippingReceiver:
    """A loopback receiver that answers one byte at a time, each well within the timeout."""

    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

    def __init__(self, pause):
        self.pause = pause
        self.sent = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hooks/T0"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        connection, _ = self.server.accept()
        with connection:
            connection.recv(65536)
            # The client hanging up half-way through is the case under test.
            with contextlib.suppress(OSError):
                for byte in self.answer:
                    connection.sendall(bytes([byte]))
                    self.sent += 1
                    time.sleep(self.pause)

    def close(self):
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def dripping_receiver():
    receiver = _DrippingReceiver(pause=0.1)
    yield receiver
    receiver.close()


def test_post_gives_up_when_the_receiver_answers_slower_than_the_timeout_in_all(
    dripping_receiver, settings
):
    # given a receiver whose whole answer takes about 7 s, each byte within 0.1 s
    settings.PROVIDER_ALLOW_PRIVATE_URLS = True
    settings.USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS = 0.5

    # when the alert is posted
    started = time.monotonic()
    with pytest.raises(WebhookFailed) as failed:
        webhook_post(dripping_receiver.url, {"text": "budget crossed"})
    elapsed = time.monotonic() - started

    # then the POST ends at the timeout, not when the receiver is done
    assert 0.5 <= elapsed < 1.5
    assert dripping_receiver.sent < len(_DrippingReceiver.answer)
    port = dripping_receiver.server.getsockname()[1]
    assert str(failed.value) == f"http://127.0.0.1:{port}/… did not answer within 0.5 s."


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_post_does_not_follow_a_redirect_and_says_so(httpserver, allow_private_urls, status):
    # given a receiver that redirects elsewhere on the same host
    httpserver.expect_request("/hooks/T0/secret", method="POST").respond_with_data(
        "", status=status, headers={"Location": httpserver.url_for("/elsewhere")}
    )

    with pytest.raises(WebhookFailed) as failed:
        webhook_post(httpserver.url_for("/hooks/T0/secret"), {"text": "x"})

    # then the failure says why the alert did not go, and nothing followed the redirect
    assert str(failed.value) == (
        f"http://localhost:{httpserver.port}/… answered HTTP {status}, a redirect: alerts do "
        "not follow redirects, so enter the URL it redirects to."
    )
    assert [request.path for request, _ in httpserver.log] == ["/hooks/T0/secret"]


class _SlowDns:
    """A resolver that takes `seconds` to answer a test-only name with 127.0.0.1."""

    name = "slow-resolver.alerts.test"

    def __init__(self, monkeypatch, seconds):
        self.seconds = seconds
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host, port, *args, **kwargs):
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        # A resolver that is slow to answer, not a wait for another thread.
        threading.Event().wait(self.seconds)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port or 0))]


@pytest.mark.parametrize("private_allowed", [True, False])
def test_post_is_not_sent_once_its_time_limit_passed_while_resolving_the_host(
    httpserver, settings, monkeypatch, private_allowed
):
    # given a receiver whose host takes longer to resolve than the POST may take in all
    settings.PROVIDER_ALLOW_PRIVATE_URLS = True
    settings.USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS = 0.3
    httpserver.expect_request("/hooks/T0", method="POST").respond_with_data("ok")
    dns = _SlowDns(monkeypatch, seconds=1.0)
    url = f"http://{dns.name}:{httpserver.port}/hooks/T0"
    if not private_allowed:
        # (the URL check passes; the connection's own resolution then finds loopback)
        monkeypatch.setattr("usage.webhooks.webhook_url_validate", lambda url: None)
        monkeypatch.setattr("usage.webhooks.address_forbidden_kind", lambda ip: "")
        settings.PROVIDER_ALLOW_PRIVATE_URLS = False

    # when the alert is posted
    with pytest.raises(WebhookFailed) as failed:
        webhook_post(url, {"text": "budget crossed"})

    # then nothing was sent after the time limit (a send then could outlast the
    # delivery's claim and go out twice), and the failure says why
    assert httpserver.log == []
    assert str(failed.value) == (
        f"http://{dns.name}:{httpserver.port}/… did not answer within 0.3 s."
    )
