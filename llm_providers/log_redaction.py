"""A logging filter that redacts key-shaped text from every record a handler emits.

The SDKs, botocore and the HTTP stack log requests at DEBUG, and some of what
they log carries a credential: botocore's "Sending http request" shows the
SigV4 `Authorization` header, which names the AWS access key id in full.
settings.LOGGING keeps those loggers at WARNING, but an operator chasing a
problem may turn them up; this filter, attached to the project's handlers,
keeps the output free of keys even then.

It removes what looks like a key (vendor key formats, AWS access key ids,
bearer tokens, `api-key`/`x-api-key`/`Authorization` values) and any 8+
character piece of a secret held by an adapter built in this process (a
response body botocore logs may quote a secret access key, which has no
recognisable shape), in the message, its arguments, a logged traceback and
stack. The record is changed in place, so handlers that run after this one
see the redacted text too.
"""

from __future__ import annotations

import logging
import re

from .adapters.errors import redact_secrets_in_use

_REDACTED = "[redacted]"
# A credential header's value as dict reprs and HTTP dumps show it:
#   'Authorization': b'AWS4-HMAC-SHA256 Credential=...'   x-api-key: sk-ant-...
# The whole value goes (up to its closing quote, or the end of the line).
_CREDENTIAL_HEADERS = re.compile(
    r"""(?P<name>["']?(?:authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key"""
    r"""|x-amz-security-token)["']?\s*[:=]\s*(?:b(?=["']))?)"""
    r"""(?:(?P<quote>["'])(?:\\.|(?!(?P=quote)).)*(?P=quote)|[^\r\n,}]+)""",
    re.IGNORECASE,
)


def redact_log_text(text: str) -> str:
    """`text` without credential header values, key-shaped tokens, or pieces
    of a secret an adapter of this process holds."""
    text = _CREDENTIAL_HEADERS.sub(
        lambda match: f"{match['name']}{match['quote'] or ''}{_REDACTED}{match['quote'] or ''}",
        text,
    )
    return redact_secrets_in_use(text)


class SecretRedactingFilter(logging.Filter):
    """Redact credentials from a record before its handler formats it; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's to report
            return True
        redacted = redact_log_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_log_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_log_text(record.stack_info)
        return True
