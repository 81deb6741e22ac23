"""`usage_backfill`: the range it recomputes, what it reports, the dates it refuses."""

import datetime as dt
import itertools
from io import StringIO
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.factories import (
    CallLogFactory,
    DailyUsageFactory,
    ProviderConfigFactory,
    TenantFactory,
)
from usage.models import DailyUsage

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
DAY = NOW.date()


@pytest.mark.django_db
@pytest.mark.parametrize("only_tenant", [True, False])
def test_backfill_command_runs_until_the_tenants_local_today(only_tenant):
    # 20:00 UTC on 15 June is 05:00 on 16 June in Tokyo
    now = dt.datetime(2026, 6, 15, 20, 0, tzinfo=dt.UTC)
    TenantFactory(slug="london", timezone="Europe/London")
    tenant = TenantFactory(slug="acme", timezone="Asia/Tokyo")
    CallLogFactory(tenant=tenant, created_at=now - dt.timedelta(hours=2))
    options = ["--tenant", "acme"] if only_tenant else []

    with mock.patch("django.utils.timezone.now", return_value=now):
        call_command(
            "usage_backfill", "--from", "2026-06-15", *options, "--no-progress", stdout=StringIO()
        )

    assert list(DailyUsage.objects.values_list("day", "request_count")) == [
        (dt.date(2026, 6, 16), 1)
    ]


@pytest.mark.django_db
def test_backfill_command_recomputes_range_and_reports():
    tenant = TenantFactory(slug="acme")
    today = timezone.now().date()
    first, last = today - dt.timedelta(days=6), today - dt.timedelta(days=3)
    noon = dt.time(12, tzinfo=dt.UTC)
    CallLogFactory(tenant=tenant, created_at=dt.datetime.combine(first, noon))
    CallLogFactory(tenant=tenant, created_at=dt.datetime.combine(last, noon))
    out, err = StringIO(), StringIO()

    call_command(
        "usage_backfill",
        "--from",
        first.isoformat(),
        "--to",
        last.isoformat(),
        "--tenant",
        "acme",
        stdout=out,
        stderr=err,
    )

    assert DailyUsage.objects.filter(tenant=tenant).count() == 2
    assert out.getvalue().strip() == (
        f"Recomputed 4 days from {first} to {last} for tenant acme: 2 rows written, 0 removed."
    )
    assert "4/4" in err.getvalue()


@pytest.mark.django_db
def test_backfill_command_says_which_days_retention_kept(settings):
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 10
    tenant = TenantFactory()
    today = timezone.now().date()
    kept = DailyUsageFactory(tenant=tenant, day=today - dt.timedelta(days=15), request_count=3)
    out = StringIO()

    call_command(
        "usage_backfill",
        "--from",
        (today - dt.timedelta(days=20)).isoformat(),
        "--no-progress",
        stdout=out,
    )

    assert (
        out.getvalue()
        .strip()
        .endswith(
            f"Days before {today - dt.timedelta(days=9)} were kept as they are: their call logs "
            "are past the retention period."
        )
    )
    kept.refresh_from_db()
    assert kept.request_count == 3


@pytest.mark.django_db
def test_backfill_command_refuses_reversed_range():
    with pytest.raises(CommandError) as caught:
        call_command("usage_backfill", "--from", "2026-06-12", "--to", "2026-06-01")

    assert str(caught.value) == "--from (2026-06-12) is after --to (2026-06-01); swap them."


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["20260601", "2026-W22", "2026-02-30"])
def test_backfill_command_refuses_dates_not_written_yyyy_mm_dd(value):
    with pytest.raises(CommandError) as caught:
        call_command("usage_backfill", "--from", value)

    assert str(caught.value) == f"“{value}” is not a date; write it as YYYY-MM-DD."


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["--from", "--to"])
def test_backfill_command_refuses_an_empty_date(option):
    DailyUsageFactory(day=dt.date(2026, 6, 10), request_count=7)
    dates = {"--from": "2026-06-01", "--to": "2026-06-12"} | {option: ""}

    with pytest.raises(CommandError) as caught:
        call_command("usage_backfill", *itertools.chain(*dates.items()), "--no-progress")

    assert str(caught.value) == f"{option} is empty; write a day as YYYY-MM-DD."
    assert list(DailyUsage.objects.values_list("request_count", flat=True)) == [7]


@pytest.mark.django_db
def test_backfill_command_stops_at_today_when_to_is_far_ahead():
    # given: a --to at the last date there is
    tenant = TenantFactory(slug="acme")
    CallLogFactory(tenant=tenant, created_at=NOW - dt.timedelta(hours=1))
    out = StringIO()

    # when
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        call_command(
            "usage_backfill",
            "--from",
            "2026-06-15",
            "--to",
            "9999-12-31",
            "--chunk-days",
            "100000",
            "--no-progress",
            stdout=out,
        )

    # then
    assert out.getvalue().strip() == (
        "Recomputed 1 day from 2026-06-15 to 2026-06-15 for all tenants: 1 row written, 0 removed."
    )
    assert list(DailyUsage.objects.values_list("day", "request_count")) == [(DAY, 1)]


@pytest.mark.django_db
@pytest.mark.parametrize("tenant_slug", [None, "acme"])
def test_backfill_command_from_far_past_starts_at_the_first_logged_day(tenant_slug):
    # given: usage only since yesterday, and a --from at the first date there is
    tenant = TenantFactory(slug="acme", timezone="Pacific/Kiritimati")
    CallLogFactory(tenant=tenant, created_at=NOW - dt.timedelta(days=1))
    out = StringIO()
    options = ["--tenant", tenant_slug] if tenant_slug else []

    # when
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        call_command(
            "usage_backfill", "--from", "0001-01-01", *options, "--no-progress", stdout=out
        )

    # then: the days before the first log are skipped, the logged day is counted
    scope = "tenant acme" if tenant_slug else "all tenants"
    assert out.getvalue().splitlines() == [
        "Nothing is logged before 2026-06-15: the recompute starts there.",
        f"Recomputed 2 days from 2026-06-15 to 2026-06-16 for {scope}: 1 row written, 0 removed.",
    ]
    assert list(DailyUsage.objects.values_list("day", "request_count")) == [
        (dt.date(2026, 6, 15), 1)
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("zone_name", "logged_at", "first_day"),
    [
        ("UTC", NOW - dt.timedelta(hours=1), DAY),
        # 02:00 UTC is still the evening before in New York
        ("America/New_York", NOW.replace(hour=2), DAY - dt.timedelta(days=1)),
    ],
    ids=["utc", "west-of-utc"],
)
def test_backfill_command_starts_at_the_first_local_day_with_a_log(zone_name, logged_at, first_day):
    # given: every call log is from one moment, in a tenant of this zone
    tenant = TenantFactory(slug="acme", timezone=zone_name)
    CallLogFactory(tenant=tenant, created_at=logged_at)
    local_day = logged_at.astimezone(ZoneInfo(zone_name)).date()
    out = StringIO()

    # when: backfilled from long before
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        call_command("usage_backfill", "--from", "2026-01-01", "--no-progress", stdout=out)

    # then: the recompute starts on the tenant's local day of that log, and says so
    today = NOW.astimezone(ZoneInfo(zone_name)).date()
    days = (today - first_day).days + 1
    assert local_day == first_day
    assert out.getvalue().splitlines() == [
        f"Nothing is logged before {first_day}: the recompute starts there.",
        f"Recomputed {days} day{'s' if days > 1 else ''} from {first_day} to {today} "
        "for all tenants: 1 row written, 0 removed.",
    ]
    assert list(DailyUsage.objects.values_list("day", "request_count")) == [(local_day, 1)]


@pytest.mark.django_db
def test_backfill_command_range_before_any_usage_recomputes_nothing():
    TenantFactory()
    CallLogFactory(created_at=NOW - dt.timedelta(days=1))
    out = StringIO()

    with mock.patch("django.utils.timezone.now", return_value=NOW):
        call_command("usage_backfill", "--from", "2020-01-01", "--to", "2020-01-31", stdout=out)

    assert out.getvalue().strip() == (
        "Nothing is logged from 2020-01-01 to 2020-01-31: nothing to recompute."
    )
    assert not DailyUsage.objects.exists()


@pytest.mark.django_db
def test_backfill_command_refuses_from_after_today():
    TenantFactory()

    with (
        mock.patch("django.utils.timezone.now", return_value=NOW),
        pytest.raises(CommandError) as caught,
    ):
        call_command("usage_backfill", "--from", "2026-07-01")

    assert (
        str(caught.value)
        == "--from (2026-07-01) is after today (2026-06-15); nothing is logged yet."
    )


def _calls_on_five_days(calls_on_day):
    """A UTC tenant with `calls_on_day(offset)` calls at 09:00 on each of the five days to DAY."""
    tenant = TenantFactory(slug="acme", timezone="UTC")
    config = ProviderConfigFactory(tenant=tenant)
    first = DAY - dt.timedelta(days=4)
    for offset in range(5):
        for _ in range(calls_on_day(offset)):
            CallLogFactory(
                tenant=tenant,
                provider_config=config,
                created_at=dt.datetime.combine(first, dt.time(9, tzinfo=dt.UTC))
                + dt.timedelta(days=offset),
            )
    return first


def _backfill_two_workers_of_two_days(first, out):
    """Backfill from `first` with --workers 2 --chunk-days 2; the recomputes it asked for."""
    from usage.management.commands import usage_backfill

    with (
        mock.patch("django.utils.timezone.now", return_value=NOW),
        mock.patch.object(
            usage_backfill,
            "daily_usage_recompute",
            wraps=usage_backfill.daily_usage_recompute,
        ) as recompute,
    ):
        call_command(
            "usage_backfill",
            "--from",
            first.isoformat(),
            "--workers",
            "2",
            "--chunk-days",
            "2",
            "--no-progress",
            stdout=out,
        )
    return recompute.call_args_list


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_backfill_command_gives_each_worker_a_chunk_of_days():
    # given calls on each of five days
    first = _calls_on_five_days(lambda offset: offset + 1)
    out = StringIO()

    # when they are backfilled by two workers of two days each
    calls = _backfill_two_workers_of_two_days(first, out)

    # then four days went to two workers at once, the last day to one
    assert [
        (call.kwargs["first_day"], call.kwargs["last_day"], call.kwargs["workers"])
        for call in calls
    ] == [(first, first + dt.timedelta(days=3), 2), (DAY, DAY, 1)]
    # and every day holds its own calls
    assert list(DailyUsage.objects.order_by("day").values_list("day", "request_count")) == [
        (first + dt.timedelta(days=offset), offset + 1) for offset in range(5)
    ]
    assert out.getvalue().strip() == (
        f"Recomputed 5 days from {first} to {DAY} for all tenants: 5 rows written, 0 removed."
    )


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["0", "-2"])
def test_backfill_command_refuses_fewer_than_one_worker(value):
    TenantFactory()

    with pytest.raises(CommandError) as caught:
        call_command("usage_backfill", "--from", "2026-06-01", "--workers", value)

    assert str(caught.value) == "--workers must be 1 or more."


@pytest.mark.django_db
def test_backfill_command_keeps_chunks_apart_where_days_cannot_be_shared():
    # given calls on each of five days, and a recompute that can use only this
    # connection: inside a transaction (this test's), or on SQLite
    first = _calls_on_five_days(lambda offset: 1)

    # when two workers of two days each are asked for
    calls = _backfill_two_workers_of_two_days(first, StringIO())

    # then each transaction still recomputes two days at most, one after the other
    assert [(call.kwargs["first_day"], call.kwargs["last_day"]) for call in calls] == [
        (first, first + dt.timedelta(days=1)),
        (first + dt.timedelta(days=2), first + dt.timedelta(days=3)),
        (DAY, DAY),
    ]
    assert list(DailyUsage.objects.order_by("day").values_list("day", "request_count")) == [
        (first + dt.timedelta(days=offset), 1) for offset in range(5)
    ]
