"""System checks: settings the API reads per request are refused at start, named."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from rest_framework.throttling import SimpleRateThrottle

from config.settings.consistency import settings_conflicts_refuse
from config.settings.environment import env_throttle_rate
from llm_providers.checks import settings_consistency_check, throttle_rates_check


def _rates(settings, **rates):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
    }


def test_default_rates_pass(settings):
    assert throttle_rates_check(None) == []


@pytest.mark.parametrize(
    "rate",
    ["1200/min", "5/s", "0/hour", "30/minute", "100/day", "2/hours", "1000000/sec", None],
)
def test_rates_the_throttle_reads_pass(settings, rate):
    _rates(settings, user=rate)

    assert throttle_rates_check(None) == []
    if rate is not None:
        # and the throttle reads them as written
        throttle = type("Throttle", (SimpleRateThrottle,), {"rate": rate})()
        count, unit = rate.split("/")
        assert (throttle.num_requests, throttle.duration) == (
            int(count),
            {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit[0]],
        )


@pytest.mark.parametrize(
    "rate",
    [
        "abc",
        "10/fortnight",
        # DRF reads a unit by its first letter: ten a minute, ten a second.
        "10/month",
        "10/mins",
        "10/sexagesimal",
        "-5/min",
        "+5/min",
        "1_000/min",
        "1000001/min",
        pytest.param("1" * 5000 + "/min", id="5000-digit-count"),
        "10",
        "/min",
        "10/m/s",
        "",
        600,
    ],
)
def test_a_rate_the_settings_would_refuse_is_an_error_with_their_message(
    settings, monkeypatch, rate
):
    _rates(settings, user=rate)

    errors = throttle_rates_check(None)

    message = (
        f"API_THROTTLE_USER must be a rate written <count>/<sec|min|hour|day>, the count from "
        f"0 to 1000000 (e.g. 1200/min), not {rate!r} (see docs/OPERATIONS.md)."
    )
    assert [(e.id, e.msg, e.hint) for e in errors] == [
        (
            "llm_providers.E001",
            message,
            'The rate is REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"].',
        )
    ]
    # The same verdict and message as for the rate set in the environment.
    if isinstance(rate, str) and rate:
        monkeypatch.setenv("API_THROTTLE_USER", rate)
        with pytest.raises(ImproperlyConfigured) as refused:
            env_throttle_rate("API_THROTTLE_USER", default="1200/min")
        assert str(refused.value) == message


@pytest.mark.parametrize(
    ("rate", "written"),
    [("10/MIN", "10/min"), ("10/ min", "10/min"), (" 10/min", "10/min"), ("010/Day", "10/day")],
)
def test_a_rate_set_in_python_must_be_written_as_the_throttle_reads_it(settings, rate, written):
    # The environment may write a rate so (it is read into DRF's form); DRF
    # itself cannot read "10/MIN" or "10/ min", and answers every request 500.
    _rates(settings, anon=rate)

    errors = throttle_rates_check(None)

    assert [(e.id, e.msg) for e in errors] == [
        (
            "llm_providers.E001",
            f'REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["anon"] must be written as the throttle '
            f"reads it, {written!r}, not {rate!r}.",
        )
    ]


def test_every_scope_is_checked_and_named(settings):
    _rates(settings, service_key="10/month", auth_failure="30/MIN")

    errors = throttle_rates_check(None)

    assert [e.msg.split(" must ")[0] for e in errors] == [
        "API_THROTTLE_SERVICE_KEY",
        'REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["auth_failure"]',
    ]


def test_manage_py_check_stops_on_a_bad_rate(settings):
    _rates(settings, auth_failure="30/fortnight")

    with pytest.raises(SystemCheckError, match="API_THROTTLE_AUTH_FAILURE"):
        call_command("check")


def test_manage_py_check_stops_on_a_rate_the_throttle_would_misread(settings):
    _rates(settings, anon="10/month")

    with pytest.raises(SystemCheckError, match=r"API_THROTTLE_ANON .*not '10/month'"):
        call_command("check")


# --- settings that depend on one another ---------------------------------------------------

TTL_TOO_SHORT = (
    "USAGE_BUDGET_RESERVATION_TTL_SECONDS is 149, but a call holds its budget reservation for up "
    "to LLM_CALL_DEADLINE_SECONDS (90) and 60 s more until it is settled: its reservation would "
    "lapse while it runs, and calls in flight could spend past a blocking budget. Set "
    "USAGE_BUDGET_RESERVATION_TTL_SECONDS to at least 150, or LLM_CALL_DEADLINE_SECONDS to at "
    "most 89 (see docs/OPERATIONS.md)."
)


def test_default_settings_agree_with_one_another(settings):
    assert settings_consistency_check(None) == []


def test_settings_set_in_python_that_break_a_rule_are_an_error_with_the_start_message(settings):
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 149
    settings.LLM_CALL_DEADLINE_SECONDS = 90.0

    errors = settings_consistency_check(None)

    assert [(e.id, e.msg) for e in errors] == [("llm_providers.E002", TTL_TOO_SHORT)]
    # The same message as for the settings read from the environment.
    with pytest.raises(ImproperlyConfigured) as refused:
        settings_conflicts_refuse(
            {"USAGE_BUDGET_RESERVATION_TTL_SECONDS": 149, "LLM_CALL_DEADLINE_SECONDS": 90.0}
        )
    assert str(refused.value) == TTL_TOO_SHORT


def test_settings_set_in_python_at_a_rules_boundary_pass(settings):
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 150
    settings.LLM_CALL_DEADLINE_SECONDS = 90.0
    settings.CELERY_TASK_TIME_LIMIT = 120
    settings.USAGE_ALERT_EMAIL_TIMEOUT_SECONDS = 60.0

    assert settings_consistency_check(None) == []


def test_every_rule_a_python_setting_breaks_is_reported(settings):
    settings.CELERY_TASK_TIME_LIMIT = 100
    settings.USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS = 50.0
    settings.USAGE_AGGREGATION_INTERVAL_SECONDS = 901

    errors = settings_consistency_check(None)

    assert [e.msg.split(",")[0] for e in errors] == [
        "CELERY_TASK_TIME_LIMIT is 100",
        "CELERY_TASK_TIME_LIMIT is 100",
        "USAGE_ERROR_RATE_WINDOW_MINUTES is 15",
    ]
    assert "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS (60)" in errors[0].msg
    assert "USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS (50)" in errors[1].msg


def test_manage_py_check_stops_on_settings_that_break_a_rule(settings):
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 149

    with pytest.raises(SystemCheckError, match="USAGE_BUDGET_RESERVATION_TTL_SECONDS is 149"):
        call_command("check")
