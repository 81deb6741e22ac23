"""Tenant-local days and months: the periods that usage, budgets and alerts are counted in."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAILY = "daily"
MONTHLY = "monthly"


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


@dataclass(frozen=True, slots=True)
class Period:
    """One budget period: [start, end) in UTC, i.e. local days first_day..last_day."""

    kind: str
    key: str
    start: datetime
    end: datetime
    first_day: date
    last_day: date
    timezone_name: str

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local `day` begins.

    Where a DST change skips midnight, the pre-transition offset is used, which
    is the same instant the database assigns to the first moment of that day.
    """
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


def _first_of_next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_containing(kind: str, moment: datetime, timezone_name: str) -> Period:
    """The daily or monthly period, in the tenant's time zone, that contains `moment`."""
    tz = zone(timezone_name)
    today = local_date(moment, tz)
    if kind == DAILY:
        first, after = today, today + timedelta(days=1)
        key = today.isoformat()
    elif kind == MONTHLY:
        first = today.replace(day=1)
        after = _first_of_next_month(first)
        key = first.strftime("%Y-%m")
    else:
        raise ValueError(f"Unknown budget period {kind!r}; use 'daily' or 'monthly'.")
    return Period(
        kind=kind,
        key=key,
        start=local_midnight(first, tz),
        end=local_midnight(after, tz),
        first_day=first,
        last_day=after - timedelta(days=1),
        timezone_name=timezone_name,
    )


def utc_window_for_days(first_day: date, last_day: date, timezone_name: str) -> tuple:
    """[start, end) in UTC covering local days first_day..last_day."""
    tz = zone(timezone_name)
    return local_midnight(first_day, tz), local_midnight(last_day + timedelta(days=1), tz)
