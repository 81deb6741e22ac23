"""How the settings modules read the environment: one reader per kind of value.

Every reader treats a variable alike. Unset, empty or blank, it takes its
default: compose files and env files write a variable they have no value for
as empty. A value it cannot take stops the process at start with
ImproperlyConfigured naming the variable and saying what it accepts; the
message quotes the value, except a URL's (it may hold a password) and a
secret's. docs/OPERATIONS.md lists the variables (tests/config/test_settings.py
holds the two to each other).
"""

import math
import os
import re
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()

_SEE = "(see docs/OPERATIONS.md)"
_TRUE = frozenset({"true", "1", "yes", "y", "on", "ok"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def env_text(name: str) -> str:
    """The variable's value without blanks around it; "" when unset."""
    return env.str(name, default="").strip()


def env_str(name: str, *, default: str) -> str:
    """A free-text setting."""
    return env_text(name) or default


def env_bool(name: str, *, default: bool) -> bool:
    """An on/off setting: true/false, 1/0, yes/no, y/n, on/off or ok in any case, nothing else.

    django-environ would read any other word, a typo such as "ture" too, as false.
    """
    raw = env_text(name)
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name} must be true or false (or 1/0, yes/no, y/n, on/off, ok, in any case), "
        f"not {raw!r} {_SEE}."
    )


def _whole(text: str) -> int | None:
    """The whole number `text` writes (digits, a sign before them), else None.

    Python refuses to convert more than a few thousand digits; such a value is
    no number a setting can take either.
    """
    if not _WHOLE_NUMBER.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def env_int(name: str, *, default: int, minimum: int = 1, maximum: int, zero: str = "") -> int:
    """A whole-number setting, from `minimum` to `maximum`.

    Every count and duration has a maximum: a value past what the code can
    compute with (a timedelta, a date, a timeout) would fail at run time
    instead of at start. `zero` says what 0 means where 0 is allowed, for the
    message.
    """
    raw = env_text(name)
    if not raw:
        return default
    value = _whole(raw)
    if value is None or not minimum <= value <= maximum:
        meaning = f" ({zero})" if zero else ""
        raise ImproperlyConfigured(
            f"{name} must be a whole number of at least {minimum} and at most {maximum}"
            f"{meaning}, not {raw!r} {_SEE}."
        )
    return value


def env_number(
    name: str,
    *,
    default: float,
    minimum: float = 0.0,
    maximum: float,
    above_minimum: bool = False,
) -> float:
    """A decimal-number setting: finite, from `minimum` (or above it) to `maximum`."""
    raw = env_text(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    too_low = value <= minimum if above_minimum else value < minimum
    if not math.isfinite(value) or too_low or value > maximum:
        bound = f"above {minimum:g}" if above_minimum else f"of at least {minimum:g}"
        raise ImproperlyConfigured(
            f"{name} must be a number {bound} and at most {maximum:g}, not {raw!r} {_SEE}."
        )
    return value


def env_choice(name: str, *, choices: tuple[str, ...], default: str) -> str:
    """One of a few words, in any case; the value is the word as `choices` spells it."""
    raw = env_text(name)
    if not raw:
        return default
    spelled = {choice.lower(): choice for choice in choices}
    try:
        return spelled[raw.lower()]
    except KeyError:
        raise ImproperlyConfigured(
            f"{name} must be one of {', '.join(choices)} (in any case), not {raw!r} {_SEE}."
        ) from None


def env_strings(name: str) -> list[str]:
    """A comma-separated setting as a list, blanks around entries removed."""
    return [item.strip() for item in env_text(name).split(",") if item.strip()]


def env_secret(name: str) -> str:
    """A secret exactly as written: django-environ would read a leading "$" as a reference.

    (Django's get_random_secret_key() starts a key with "$" about once in fifty.)
    Blank counts as unset, as for every other variable.
    """
    value = os.environ.get(name, "")
    return value if value.strip() else ""


def env_secrets(name: str) -> list[str]:
    """A comma-separated list of secrets, each exactly as written, blanks around entries removed."""
    return [item.strip() for item in env_secret(name).split(",") if item.strip()]


def env_url(name: str, *, schemes: tuple[str, ...], example: str) -> str:
    """A URL of one of `schemes`, "" when unset; the message never quotes it."""
    raw = env_text(name)
    if raw and urlsplit(raw).scheme.lower() not in schemes:
        raise ImproperlyConfigured(
            f"{name} must be a URL starting {' or '.join(f'{s}://' for s in schemes)}, "
            f"e.g. {example} {_SEE}."
        )
    return raw


# DRF's throttle reads a rate's unit by its first letter; these are the words
# that letter stands for, as written in docs/API.md.
_RATE_UNITS = frozenset(
    {"s", "sec", "second", "seconds", "m", "min", "minute", "minutes"}
    | {"h", "hour", "hours", "d", "day", "days"}
)
# The throttle keeps the time of each request it counts, for a whole period,
# per credential: a rate counts at most this many.
RATE_COUNT_MAX = 1_000_000


def throttle_rate_parse(name: str, rate: object) -> str:
    """A DRF throttle rate, `<count>/<unit>`, written as DRF reads it (no blanks, lower case).

    DRF reads any unit by its first letter ("10/month" as ten a minute) and
    answers every request 500 for a rate it cannot read ("10/MIN"). Anything
    but a rate raises ImproperlyConfigured naming `name`. The one judge of a
    rate: env_throttle_rate reads the environment's with it, and a system
    check the rates set in Python (llm_providers/checks.py).
    """
    count, slash, unit = (
        (part.strip() for part in rate.partition("/")) if isinstance(rate, str) else ("", "", "")
    )
    number = _whole(count) if count.isascii() and count.isdigit() else None
    if not slash or number is None or number > RATE_COUNT_MAX or unit.lower() not in _RATE_UNITS:
        raise ImproperlyConfigured(
            f"{name} must be a rate written <count>/<sec|min|hour|day>, the count from 0 to "
            f"{RATE_COUNT_MAX} (e.g. 1200/min), not {rate!r} {_SEE}."
        )
    return f"{number}/{unit.lower()}"


def env_throttle_rate(name: str, *, default: str) -> str:
    """A DRF throttle rate (throttle_rate_parse), in any case and with blanks around its parts."""
    raw = env_text(name)
    return throttle_rate_parse(name, raw) if raw else default


# PostgreSQL's memory units (case matters to it) and the range of work_mem, in bytes.
_MEMORY_UNITS = {"b": "B", "kb": "kB", "mb": "MB", "gb": "GB", "tb": "TB"}
_BYTES_PER_UNIT = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_MEMORY = re.compile(r"([0-9]+)\s*([a-zA-Z]*)")
_WORK_MEM_BYTES = (64 * 1024, 2_147_483_647 * 1024)


def env_work_mem(name: str, *, default: str) -> str:
    """A PostgreSQL work_mem size such as 256MB, as PostgreSQL spells it ("256mb" too)."""
    raw = env_text(name)
    if not raw:
        return default
    match = _MEMORY.fullmatch(raw)
    unit = _MEMORY_UNITS.get(match[2].lower() or "kb") if match else None
    number = _whole(match[1]) if unit else None
    if number is None or not (
        _WORK_MEM_BYTES[0] <= number * _BYTES_PER_UNIT[unit] <= _WORK_MEM_BYTES[1]
    ):
        raise ImproperlyConfigured(
            f"{name} must be a size written <number><B|kB|MB|GB|TB> (kB if no unit) from 64kB "
            f"to 2147483647kB, e.g. 256MB, not {raw!r} {_SEE}."
        )
    return f"{number}{unit}"
