"""Alert emails: sending one within an overall time limit, and telling which
recipients the mail server refused.

EMAIL_TIMEOUT bounds each SMTP read or write, not the session: a mail server
answering a line at a time, or slowly taking many recipients, would hold the
worker past the delivery's claim, and a second worker would send the email
again. Over SMTP, the session's sockets are shut down once the limit has
passed; the other backends (console, file, memory) do not go over a network.

A mail server that accepts some recipients and refuses others takes the
message for those it accepted: smtplib returns the refused ones, which
Django's backend drops. The send keeps them, so the caller can say who did
not get the email.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends import smtp

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


class EmailTimedOut(Exception):
    """The send had not finished within its time limit and was cut off."""


class _Deadline:
    """Shuts down the sockets of the SMTP sessions it tracks once `seconds` have passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self.sessions: list = []
        self._ends_at = time.monotonic() + seconds
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _Deadline:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()

    def remaining(self) -> float:
        return self._ends_at - time.monotonic()

    def track(self, session) -> None:
        with self._lock:
            self.sessions.append(session)

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.expired = True
        # Until the send gives up: a session may not have its socket yet.
        while True:
            with self._lock:
                for session in self.sessions:
                    if getattr(session, "sock", None) is not None:
                        # The plain socket's shutdown, also under TLS: a blocked read returns.
                        with suppress(OSError):
                            socket.socket.shutdown(session.sock, socket.SHUT_RDWR)
            if self._done.wait(0.05):
                return


# Recipient address → (SMTP reply code, reply text), as smtplib reports them.
Refused = dict[str, tuple[int, str]]


class _DeadlineSmtpBackend(smtp.EmailBackend):
    """Django's SMTP backend, whose sessions a _Deadline cuts off, keeping the
    recipients the server refused while taking the message for the others."""

    deadline: _Deadline

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refused: Refused = {}

    @property
    def connection_class(self):
        deadline = self.deadline
        refused = self.refused

        class Session(super().connection_class):
            def __init__(self, *args, **kwargs):
                deadline.track(self)
                super().__init__(*args, **kwargs)

            def sendmail(self, *args, **kwargs):
                answer = super().sendmail(*args, **kwargs)
                for address, (code, text) in (answer or {}).items():
                    reply = text.decode(errors="replace") if isinstance(text, bytes) else text
                    refused[address] = (code, reply)
                return answer

            def _get_socket(self, host, port, timeout):
                # Connecting, too, ends by the deadline.
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise TimeoutError("the send's time limit has passed")
                if isinstance(timeout, int | float):
                    remaining = min(timeout, remaining)
                return super()._get_socket(host, port, remaining)

        return Session


def email_send(message: EmailMessage, *, seconds: float) -> Refused:
    """Send `message`; raise EmailTimedOut if it has not finished within `seconds` in all.

    Returns the recipients the mail server refused while it took the message
    for the others (empty: all took it). A server that refuses every
    recipient raises smtplib.SMTPRecipientsRefused."""
    if settings.EMAIL_BACKEND != SMTP_BACKEND:
        message.send(fail_silently=False)
        return {}
    deadline = _Deadline(seconds)
    connection = _DeadlineSmtpBackend(fail_silently=False)
    connection.deadline = deadline
    message.connection = connection
    try:
        with deadline:
            message.send(fail_silently=False)
    except Exception:
        if deadline.expired:
            raise EmailTimedOut from None
        raise
    return dict(connection.refused)
