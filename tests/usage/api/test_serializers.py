"""Query parameters of usage reports: the window of tenant-local days and the group limit."""

from __future__ import annotations

from datetime import date

import pytest

from usage.api.serializers import UsageGroupLimitSerializer, UsageWindowSerializer

TODAY = date(2026, 3, 15)


def _window(query: dict, serializer=UsageWindowSerializer) -> dict:
    parsed = serializer(data=query, context={"today": TODAY})
    parsed.is_valid(raise_exception=True)
    return dict(parsed.validated_data)


def test_window_is_last_30_days_when_nothing_asked():
    assert _window({}) == {"first_day": date(2026, 2, 14), "last_day": TODAY}


def test_window_of_one_day_is_today():
    assert _window({"days": "1"}) == {"first_day": TODAY, "last_day": TODAY}


def test_window_of_365_days_ends_today():
    assert _window({"days": "365"}) == {"first_day": date(2025, 3, 16), "last_day": TODAY}


def test_window_range_is_inclusive():
    assert _window({"start": "2026-03-01", "end": "2026-03-01"}) == {
        "first_day": date(2026, 3, 1),
        "last_day": date(2026, 3, 1),
    }


def test_window_range_may_end_at_the_last_representable_day():
    assert _window({"start": "9999-12-01", "end": "9999-12-31"})["last_day"] == date.max


@pytest.mark.parametrize(("limit", "expected"), [(None, 100), ("1", 1), ("1000", 1000)])
def test_group_limit_defaults_to_100(limit, expected):
    query = {} if limit is None else {"limit": limit}

    assert _window(query, UsageGroupLimitSerializer)["limit"] == expected
