"""What Django's error reports (mail to ADMINS, error trackers) may show of settings.

Django hides settings and request environment entries whose names look
secret (KEY, PASS, TOKEN...). Connection URLs carry a password inside the
value under names that do not (EMAIL_URL, REDIS_URL, CELERY_BROKER_URL, a
cache LOCATION, DATABASE_URL in the environment): their password is starred
out too, the rest of the URL kept to help find the fault.
"""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter

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
