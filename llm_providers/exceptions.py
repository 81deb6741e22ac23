"""The application's error base: one class, subclassed per concern, mapped once to HTTP."""

from __future__ import annotations

from typing import Any

# The error code of a call cut off on our side (Ctrl-C, a worker shutting
# down): recorded as an error, but no fault of the provider.
CALL_INTERRUPTED_CODE = "interrupted"


class ApplicationError(Exception):
    """An error a caller can act on: a message meant for people plus structured extras.

    `code` is stable and machine-readable; `http_status` is what the API answers with.
    """

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}

    def __str__(self) -> str:
        return self.message


class SecretUnreadableError(ApplicationError):
    """A stored secret does not decrypt with the configured SECRET_KEY / SALT_KEY."""

    code = "secret_unreadable"
    http_status = 500
