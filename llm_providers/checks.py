"""System checks, run by `manage.py check`, `migrate` and `runserver` before they start.

DRF reads the API's throttle rates on every request, so a rate it cannot
parse would answer every request 500, and one it misreads ("10/month", ten a
minute to DRF) would throttle at another rate than written. The settings read
the rates from the environment with throttle_rate_parse, which writes them as
DRF reads them; a rate set in Python settings is judged by the same function
here, with the same message (naming the environment variable of its scope),
and must be written as it writes it.

Settings that depend on one another (a budget reservation's TTL and the
call deadline, the Celery task time limit and the alert delivery time
limits...) are held to the rules of config/settings/consistency.py: the
settings refuse to start on a combination read from the environment, and
this check reports one set in Python with the same message.
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings

from config.settings.consistency import RULED, settings_conflicts
from config.settings.environment import throttle_rate_parse


@checks.register(checks.Tags.compatibility)
def throttle_rates_check(app_configs, **kwargs):
    errors = []
    for scope, rate in api_settings.DEFAULT_THROTTLE_RATES.items():
        if rate is None:  # not throttled
            continue
        setting = f'REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["{scope}"]'
        try:
            written = throttle_rate_parse(f"API_THROTTLE_{scope.upper()}", rate)
        except ImproperlyConfigured as refused:
            errors.append(
                checks.Error(str(refused), hint=f"The rate is {setting}.", id="llm_providers.E001")
            )
            continue
        if written != rate:
            # Only a rate set in Python (the environment's are read into this
            # form): DRF cannot read "10/MIN" or "10/ min", and would answer
            # every request 500.
            errors.append(
                checks.Error(
                    f"{setting} must be written as the throttle reads it, {written!r}, "
                    f"not {rate!r}.",
                    id="llm_providers.E001",
                )
            )
    return errors


@checks.register(checks.Tags.compatibility)
def settings_consistency_check(app_configs, **kwargs):
    values = {name: getattr(settings, name) for name in RULED if hasattr(settings, name)}
    return [
        checks.Error(message, id="llm_providers.E002") for message in settings_conflicts(values)
    ]
