"""Rules between settings that depend on one another, checked once each is read.

environment.py reads each variable within its own range; some ranges depend
on another setting, and a combination outside them would break a guarantee
without any error: a budget reservation lapsing while its call still runs,
Celery killing an alert delivery before it records its outcome. The settings
refuse such a combination at start with ImproperlyConfigured naming both
settings, their values and what to change (settings_conflicts_refuse, called
at the end of base.py), and a system check holds settings set in Python to
the same rules with the same messages (llm_providers/checks.py).
docs/OPERATIONS.md states each rule beside its settings.
"""

import math
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

_SEE = "(see docs/OPERATIONS.md)"
_DAY = 86_400

# A minute from the end of a call to its budget settlement: the after-call
# writer writes the call's log row, then settles, each retried for about 13 s
# when the database or Redis fails (usage/bookkeeping.py), and the hosts that
# reserve and settle may read clocks a few seconds apart.
RESERVATION_SETTLE_SECONDS = 60
# A minute beyond an alert delivery's own time limit (the email's or the
# webhook's): rendering it, resolving a webhook's host, recording the outcome
# and scheduling the retry (usage/alerts.py).
ALERT_DELIVERY_MARGIN_SECONDS = 60
# Two hours beyond a day and an aggregation interval: a day a clock change
# makes 25 hours long, and call logs written late (the after-call writer's
# retries, a queue drained as a process ends).
AGGREGATION_LATE_SECONDS = 7_200

# The settings the rules read.
RULED = (
    "USAGE_BUDGET_RESERVATION_TTL_SECONDS",
    "LLM_CALL_DEADLINE_SECONDS",
    "CELERY_TASK_TIME_LIMIT",
    "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS",
    "USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS",
    "USAGE_CALL_LOG_RETENTION_DAYS",
    "USAGE_AGGREGATION_INTERVAL_SECONDS",
    "USAGE_ERROR_RATE_WINDOW_MINUTES",
)


def call_deadline_most(reservation_ttl_seconds: float, maximum: float) -> float:
    """The longest deadline a call may set: `maximum`, or less when a reservation
    would lapse before a call that long is settled."""
    return min(maximum, reservation_ttl_seconds - RESERVATION_SETTLE_SECONDS)


def _reservation_outlives_call(values: Mapping[str, float]) -> str | None:
    ttl = values["USAGE_BUDGET_RESERVATION_TTL_SECONDS"]
    deadline = values["LLM_CALL_DEADLINE_SECONDS"]
    least = math.ceil(deadline + RESERVATION_SETTLE_SECONDS)
    if ttl >= least:
        return None
    most = ttl - RESERVATION_SETTLE_SECONDS
    other = f", or LLM_CALL_DEADLINE_SECONDS to at most {most:g}" if most >= 1 else ""
    return (
        f"USAGE_BUDGET_RESERVATION_TTL_SECONDS is {ttl:g}, but a call holds its budget "
        f"reservation for up to LLM_CALL_DEADLINE_SECONDS ({deadline:g}) and "
        f"{RESERVATION_SETTLE_SECONDS} s more until it is settled: its reservation would lapse "
        f"while it runs, and calls in flight could spend past a blocking budget. Set "
        f"USAGE_BUDGET_RESERVATION_TTL_SECONDS to at least {least}{other} {_SEE}."
    )


def _delivery_fits_task(values: Mapping[str, float], timeout_setting: str) -> str | None:
    limit = values["CELERY_TASK_TIME_LIMIT"]
    timeout = values[timeout_setting]
    least = math.ceil(timeout + ALERT_DELIVERY_MARGIN_SECONDS)
    if limit >= least:
        return None
    most = limit - ALERT_DELIVERY_MARGIN_SECONDS
    other = f", or {timeout_setting} to at most {most:g}" if most > 0 else ""
    return (
        f"CELERY_TASK_TIME_LIMIT is {limit:g}, but an alert delivery may take "
        f"{timeout_setting} ({timeout:g}) to send and {ALERT_DELIVERY_MARGIN_SECONDS} s more "
        f"to record its outcome and schedule its retry: Celery would kill the task before it "
        f"does, and the attempt would be lost. Set CELERY_TASK_TIME_LIMIT to at least "
        f"{least}{other} {_SEE}."
    )


def _email_delivery_fits_task(values: Mapping[str, float]) -> str | None:
    return _delivery_fits_task(values, "USAGE_ALERT_EMAIL_TIMEOUT_SECONDS")


def _webhook_delivery_fits_task(values: Mapping[str, float]) -> str | None:
    return _delivery_fits_task(values, "USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS")


def _retention_outlives_aggregation(values: Mapping[str, float]) -> str | None:
    days = values["USAGE_CALL_LOG_RETENTION_DAYS"]
    interval = values["USAGE_AGGREGATION_INTERVAL_SECONDS"]
    if not days or days * _DAY >= _DAY + interval + AGGREGATION_LATE_SECONDS:
        return None
    least = math.ceil((_DAY + interval + AGGREGATION_LATE_SECONDS) / _DAY)
    most = (days - 1) * _DAY - AGGREGATION_LATE_SECONDS
    other = f", or USAGE_AGGREGATION_INTERVAL_SECONDS to at most {most:g}" if most >= 1 else ""
    return (
        f"USAGE_CALL_LOG_RETENTION_DAYS is {days:g}, but a day is aggregated only until it is "
        f"that many days old, and the aggregation, every USAGE_AGGREGATION_INTERVAL_SECONDS "
        f"({interval:g}), must run once after the day has ended, with "
        f"{AGGREGATION_LATE_SECONDS // 3600} hours to spare: the last call logs of a day would "
        f"never be counted in its daily usage. Set USAGE_CALL_LOG_RETENTION_DAYS to at least "
        f"{least}, or to 0 to keep call logs for ever{other} {_SEE}."
    )


def _error_rate_window_covers_interval(values: Mapping[str, float]) -> str | None:
    minutes = values["USAGE_ERROR_RATE_WINDOW_MINUTES"]
    interval = values["USAGE_AGGREGATION_INTERVAL_SECONDS"]
    if minutes * 60 >= interval:
        return None
    return (
        f"USAGE_ERROR_RATE_WINDOW_MINUTES is {minutes:g}, but error rates are checked after "
        f"each aggregation, every USAGE_AGGREGATION_INTERVAL_SECONDS ({interval:g}): the errors "
        f"between the end of one window and the start of the next would never be checked. Set "
        f"USAGE_ERROR_RATE_WINDOW_MINUTES to at least {math.ceil(interval / 60)}, or "
        f"USAGE_AGGREGATION_INTERVAL_SECONDS to at most {minutes * 60:g} {_SEE}."
    )


_RULES = (
    _reservation_outlives_call,
    _email_delivery_fits_task,
    _webhook_delivery_fits_task,
    _retention_outlives_aggregation,
    _error_rate_window_covers_interval,
)


def settings_conflicts(values: Mapping[str, object]) -> list[str]:
    """The message of each rule that `values` (setting name -> value) break.

    A rule whose settings are not all numbers is left to the check of their
    own kind: only the environment's readers and Python settings set them.
    """
    numbers = {
        name: values.get(name)
        for name in RULED
        if isinstance(values.get(name), int | float) and not isinstance(values.get(name), bool)
    }
    conflicts = []
    for rule in _RULES:
        try:
            conflict = rule(numbers)
        except KeyError:
            continue
        if conflict is not None:
            conflicts.append(conflict)
    return conflicts


def settings_conflicts_refuse(values: Mapping[str, object]) -> None:
    """Stop the start with the first rule `values` break, as a value out of its range does."""
    conflicts = settings_conflicts(values)
    if conflicts:
        raise ImproperlyConfigured(conflicts[0])
