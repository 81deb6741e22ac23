"""System checks: settings the API reads per request are refused at start, named."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from llm_providers.checks import throttle_rates_check


def _rates(settings, **rates):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
    }


def test_default_rates_pass(settings):
    assert throttle_rates_check(None) == []


@pytest.mark.parametrize("rate", ["1200/min", "5/s", "0/hour", "30/minute", "100/day", None])
def test_rates_the_throttle_reads_pass(settings, rate):
    _rates(settings, user=rate)

    assert throttle_rates_check(None) == []


@pytest.mark.parametrize("rate", ["abc", "10/fortnight", "-5/min", "1_000/min", "10", "/min", ""])
def test_a_rate_the_throttle_cannot_read_is_an_error_naming_its_variable(settings, rate):
    _rates(settings, user=rate)

    errors = throttle_rates_check(None)

    assert [(e.id, e.msg) for e in errors] == [
        (
            "llm_providers.E001",
            f"API_THROTTLE_USER must be a rate written <count>/<sec|min|hour|day> "
            f"(e.g. 1200/min), not {rate!r}.",
        )
    ]


def test_manage_py_check_stops_on_a_bad_rate(settings):
    _rates(settings, auth_failure="30/fortnight")

    with pytest.raises(SystemCheckError, match="API_THROTTLE_AUTH_FAILURE"):
        call_command("check")
