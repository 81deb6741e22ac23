"""Fixtures of the usage tests: budget counter backends, a loopback mail server."""

import contextlib
import socket
import threading

import pytest


@pytest.fixture(
    params=["database", pytest.param("redis", marks=pytest.mark.redis)],
)
def counters(request, settings):
    """Run the test once with database counters and once with Redis counters."""
    settings.USAGE_BUDGET_BACKEND = request.param
    return request.param


class _RefusingSmtpServer:
    """A loopback SMTP server that takes each message, refusing the RCPT of the
    addresses in `refused` (550, as for an unknown mailbox) and, the first time
    only, of those in `deferred` (450, "try again later", as a greylisting server)."""

    def __init__(self, refused, deferred=()):
        self.refused = set(refused)
        self.deferred = set(deferred)
        self.sessions = 0
        self.messages = []  # (accepted recipients, message text)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with client, client.makefile("rb") as lines, contextlib.suppress(OSError):
                self.session(client, lines)

    def session(self, client, lines):
        self.sessions += 1
        client.sendall(b"220 loopback ESMTP\r\n")
        recipients = []
        for raw in lines:
            command = raw.decode().rstrip("\r\n")
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                client.sendall(b"250 loopback\r\n")
            elif verb == "MAIL":
                recipients = []
                client.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                address = command.split("<", 1)[1].split(">", 1)[0]
                if address in self.refused:
                    client.sendall(
                        f"550 5.1.1 <{address}>: Recipient address rejected: "
                        "User unknown\r\n".encode()
                    )
                elif address in self.deferred:
                    self.deferred.discard(address)
                    client.sendall(
                        f"450 4.2.0 <{address}>: Recipient address rejected: "
                        "Greylisted, try again later\r\n".encode()
                    )
                else:
                    recipients.append(address)
                    client.sendall(b"250 2.1.5 Ok\r\n")
            elif verb == "DATA":
                client.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                body = []
                for data in lines:
                    if data == b".\r\n":
                        break
                    body.append(data.decode())
                self.messages.append((recipients, "".join(body)))
                client.sendall(b"250 2.0.0 Ok: queued\r\n")
            elif verb == "QUIT":
                client.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                client.sendall(b"250 Ok\r\n")

    def close(self):
        # The shutdown wakes the waiting accept(), which a close alone does not.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def smtp_refusing_gone(settings):
    """Alert email through a loopback SMTP server that refuses gone@example.com
    for good (550) and busy@example.com for now (450, the first time)."""
    server = _RefusingSmtpServer(refused={"gone@example.com"}, deferred={"busy@example.com"})
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_TIMEOUT = 5
    yield server
    server.close()
