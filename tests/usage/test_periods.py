"""Tenant-local periods: day and month boundaries in the tenant's time zone."""

import datetime as dt

from usage.periods import DAILY, MONTHLY, period_containing, utc_window_for_days


def test_daily_period_follows_tenant_timezone_when_utc_date_differs():
    # given 03:00 UTC on 1 March, which is still 28 February in New York
    moment = dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC)

    # when
    period = period_containing(DAILY, moment, "America/New_York")

    # then
    assert period.key == "2026-02-28"
    assert period.start == dt.datetime(2026, 2, 28, 5, 0, tzinfo=dt.UTC)
    assert period.end == dt.datetime(2026, 3, 1, 5, 0, tzinfo=dt.UTC)


def test_monthly_period_rolls_over_at_local_midnight_when_month_ends():
    before = dt.datetime(2026, 1, 31, 14, 59, 59, tzinfo=dt.UTC)  # 23:59:59 in Tokyo
    after = dt.datetime(2026, 1, 31, 15, 0, 0, tzinfo=dt.UTC)  # 00:00 on 1 February

    january = period_containing(MONTHLY, before, "Asia/Tokyo")
    february = period_containing(MONTHLY, after, "Asia/Tokyo")

    assert (january.key, january.first_day, january.last_day) == (
        "2026-01",
        dt.date(2026, 1, 1),
        dt.date(2026, 1, 31),
    )
    assert (february.key, february.first_day, february.last_day) == (
        "2026-02",
        dt.date(2026, 2, 1),
        dt.date(2026, 2, 28),
    )
    assert january.end == february.start == after


def test_monthly_period_rolls_over_the_year_when_december_ends():
    period = period_containing(MONTHLY, dt.datetime(2026, 12, 31, 12, tzinfo=dt.UTC), "UTC")

    assert period.key == "2026-12"
    assert period.end == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_daily_period_lasts_23_hours_when_clocks_spring_forward():
    period = period_containing(DAILY, dt.datetime(2026, 3, 29, 12, tzinfo=dt.UTC), "Europe/Paris")

    assert period.end - period.start == dt.timedelta(hours=23)


def test_utc_window_covers_local_days_inclusive():
    start, end = utc_window_for_days(dt.date(2026, 5, 1), dt.date(2026, 5, 2), "Europe/Paris")

    assert start == dt.datetime(2026, 4, 30, 22, tzinfo=dt.UTC)
    assert end == dt.datetime(2026, 5, 2, 22, tzinfo=dt.UTC)
