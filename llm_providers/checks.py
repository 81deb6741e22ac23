"""System checks, run by `manage.py check`, `migrate` and `runserver` before they start.

DRF reads the API's throttle rates on every request, so a rate it cannot
parse would answer every request 500; it is refused here instead, naming the
environment variable it came from.
"""

from django.core import checks
from rest_framework.settings import api_settings

# DRF's throttle reads the unit by its first letter.
_RATE_UNITS = frozenset("smhd")


def _rate_readable(rate) -> bool:
    if not isinstance(rate, str):
        return False
    count, slash, unit = rate.partition("/")
    return bool(slash) and count.isascii() and count.isdigit() and unit[:1] in _RATE_UNITS


@checks.register(checks.Tags.compatibility)
def throttle_rates_check(app_configs, **kwargs):
    errors = []
    for scope, rate in api_settings.DEFAULT_THROTTLE_RATES.items():
        if rate is None or _rate_readable(rate):
            continue
        errors.append(
            checks.Error(
                f"API_THROTTLE_{scope.upper()} must be a rate written <count>/<sec|min|hour|day> "
                f"(e.g. 1200/min), not {rate!r}.",
                hint="See docs/OPERATIONS.md, settings.",
                id="llm_providers.E001",
            )
        )
    return errors
