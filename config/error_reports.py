"""What Django's error reports (mail to ADMINS, error trackers) may show of settings.

Django hides settings and request environment entries whose names look
secret (KEY, PASS, TOKEN...). Connection URLs carry a password inside the
value under names that do not (EMAIL_URL, REDIS_URL, CELERY_BROKER_URL, a
cache LOCATION, DATABASE_URL in the environment): their password is starred
out too, the rest of the URL kept to help find the fault.

The variables of each frame of the traceback (shown by the HTML report: the
debug page, and mail or trackers that include it) can hold credentials: an
SDK's frames hold the request with its headers, ours hold a decrypted key.
Whether DEBUG is on or off, a string variable whose name looks secret is
starred out, and any other variable is shown as its representation with
credential headers, key-shaped tokens and pieces of the keys in use redacted
(llm_providers/log_redaction.py). The message of the exception, and of
each exception it was raised from or during, is redacted the same way in the
text and HTML reports.
"""

from __future__ import annotations

import pprint
import re

from django.views import debug
from django.views.debug import SafeExceptionReporterFilter

from llm_providers.log_redaction import redact_log_text

# scheme://[user]:password@ — the password is what lies between the first ":"
# after the scheme and the "@" that ends the credentials.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@")


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key, value):
        if isinstance(value, str):
            value = _URL_PASSWORD.sub(
                lambda match: f"{match['head']}{self.cleansed_substitute}@", value
            )
        return super().cleanse_setting(key, value)

    def get_traceback_frame_variables(self, request, tb_frame):
        return [
            (name, self._frame_variable_cleanse(name, value))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]

    def _frame_variable_cleanse(self, name, value):
        if value is self.cleansed_substitute:
            return value
        if isinstance(value, str | bytes) and value and self.hidden_settings.search(name):
            return self.cleansed_substitute
        try:
            shown = pprint.pformat(value)
        except Exception:  # noqa: BLE001 - the reporter shows its own placeholder
            return value
        redacted = redact_log_text(shown)
        return value if redacted == shown else _Shown(redacted)


class _Shown:
    """A frame variable's redacted representation, shown as it is."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class ExceptionReporter(debug.ExceptionReporter):
    def get_traceback_data(self):
        data = super().get_traceback_data()
        if "exception_value" in data:
            data["exception_value"] = redact_log_text(data["exception_value"])
        for frame in data.get("frames", ()):
            if frame.get("exc_cause") is not None:
                frame["exc_cause"] = redact_log_text(str(frame["exc_cause"]))
        return data
