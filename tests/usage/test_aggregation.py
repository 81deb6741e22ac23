"""DailyUsage recompute: idempotent, exact, late logs, time zones, NULL configs, retention."""

import datetime as dt
import itertools
import threading
import time
from collections import Counter
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from llm_providers.models import Tenant
from tests.factories import (
    CallLogFactory,
    ProviderConfigFactory,
    TenantFactory,
)
from tests.usage.priced_groups import EARLIER, EXPECTED, priced_groups_log
from usage.aggregation import (
    UsageRangeError,
    daily_usage_recompute,
    daily_usage_recompute_recent,
    daily_usage_recompute_tenant_history,
    daily_usage_recount_pending,
)
from usage.models import CallLog, DailyUsage, DailyUsageRecount
from usage.retention import call_logs_purge

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
DAY = NOW.date()


def _rows():
    return list(
        DailyUsage.objects.order_by(
            "tenant_id", "day", "model", "customer_id", "service_name", "provider_config_id"
        ).values(
            "tenant_id",
            "day",
            "provider_config_id",
            "model",
            "service_name",
            "customer_id",
            *DailyUsage.VALUE_FIELDS,
        )
    )


def _recompute(first=DAY, last=DAY, **kwargs):
    return daily_usage_recompute(first_day=first, last_day=last, now=NOW, **kwargs)


@pytest.mark.django_db
def test_recompute_gives_identical_rows_when_run_twice():
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    for customer in ("acme", "globex", "acme"):
        CallLogFactory(tenant=tenant, provider_config=config, customer_id=customer, created_at=NOW)
    first = _recompute()
    rows = _rows()
    ids = sorted(DailyUsage.objects.values_list("pk", flat=True))

    second = _recompute()

    assert (first.written, second.written, second.removed) == (2, 0, 0)
    assert _rows() == rows
    assert sorted(DailyUsage.objects.values_list("pk", flat=True)) == ids


@pytest.mark.django_db
def test_recompute_picks_up_a_late_log_by_setting_not_adding():
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    CallLogFactory(tenant=tenant, provider_config=config, created_at=NOW, input_tokens=10)
    _recompute()

    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        created_at=NOW - dt.timedelta(hours=6),
        input_tokens=5,
    )
    result = _recompute()

    row = DailyUsage.objects.get()
    assert result.written == 1
    assert (row.request_count, row.input_tokens) == (2, 15)
    assert row.cost_usd == Decimal("0.0004")


@pytest.mark.django_db
def test_recompute_sums_match_call_logs_to_the_micro_dollar():
    # given a mix of statuses, prices, tokens and latencies on one day
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    costs = ["0.000123456789", "0.031415926535", "1.000000000001", None, "0.000000999999"]
    for index, cost in enumerate(costs * 4):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            created_at=NOW - dt.timedelta(minutes=index),
            status=[CallLog.Status.OK, CallLog.Status.ERROR, CallLog.Status.CACHED][index % 3],
            cost_usd=None if cost is None else Decimal(cost),
            price_source=CallLog.PriceSource.UNKNOWN if cost is None else "override",
            input_tokens=1000 + index,
            output_tokens=7 * index,
            cache_read_tokens=index % 5,
            cache_write_tokens=index % 2,
            reasoning_tokens=3 * index,
            latency_ms=100 + index,
            usage_estimated=index % 7 == 0,
        )

    _recompute()

    # then every figure equals the sum over CallLog
    row = DailyUsage.objects.get()
    expected_cost = sum(Decimal(c) for c in costs if c) * 4
    # Exact to the stored 12 places: no per-row or per-sum rounding is allowed.
    assert row.cost_usd == expected_cost == Decimal("4.126161533296")
    logs = CallLog.objects.filter(tenant=tenant)
    sums = logs.aggregate(
        i=Sum("input_tokens"),
        o=Sum("output_tokens"),
        cr=Sum("cache_read_tokens"),
        cw=Sum("cache_write_tokens"),
        r=Sum("reasoning_tokens"),
        lat=Sum("latency_ms"),
    )
    assert (row.input_tokens, row.output_tokens, row.reasoning_tokens) == (
        sums["i"],
        sums["o"],
        sums["r"],
    )
    assert (row.cache_read_tokens, row.cache_write_tokens) == (sums["cr"], sums["cw"])
    assert row.latency_ms_sum == sums["lat"]
    assert (row.request_count, row.error_count, row.cached_count) == (20, 7, 6)
    assert (row.unpriced_count, row.priced_count, row.estimated_count) == (4, 16, 3)


@pytest.mark.django_db
def test_recompute_counts_priced_requests_apart_from_unpriced_ones():
    # given four models' calls: all priced at $0, $0 beside unpriced, priced
    # beside unpriced, and unpriced only (a day earlier)
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    priced_groups_log(tenant, config, NOW)

    # when their days are recomputed (twice: the second run finds nothing to change)
    first = _recompute(first=DAY - dt.timedelta(days=1))
    second = _recompute(first=DAY - dt.timedelta(days=1))

    # then each group counts its priced and unpriced requests apart, and sums
    # the costs of the priced ones exactly
    rows = {
        row.model: (
            row.request_count, row.error_count, row.blocked_count, row.cached_count,
            row.priced_count, row.unpriced_count, row.cost_usd, row.cost_known,
        )
        for row in DailyUsage.objects.filter(tenant=tenant)
    }  # fmt: skip
    assert rows == EXPECTED
    assert DailyUsage.objects.get(model=EARLIER).day == DAY - dt.timedelta(days=1)
    assert (first.written, second.written, second.removed) == (4, 0, 0)


@pytest.mark.django_db
def test_recompute_counts_days_in_tenant_timezone():
    # 03:00 UTC on 15 June is still 14 June in Los Angeles
    tenant = TenantFactory(timezone="America/Los_Angeles")
    CallLogFactory(tenant=tenant, created_at=dt.datetime(2026, 6, 15, 3, 0, tzinfo=dt.UTC))
    CallLogFactory(tenant=tenant, created_at=dt.datetime(2026, 6, 15, 7, 0, tzinfo=dt.UTC))

    _recompute(first=dt.date(2026, 6, 13), last=dt.date(2026, 6, 16))

    assert list(DailyUsage.objects.order_by("day").values_list("day", "request_count")) == [
        (dt.date(2026, 6, 14), 1),
        (dt.date(2026, 6, 15), 1),
    ]


@pytest.mark.django_db
def test_recompute_of_one_local_day_ignores_logs_of_neighbouring_days():
    tenant = TenantFactory(timezone="Asia/Kolkata")  # UTC+05:30
    CallLogFactory(tenant=tenant, created_at=dt.datetime(2026, 6, 14, 18, 29, tzinfo=dt.UTC))
    CallLogFactory(tenant=tenant, created_at=dt.datetime(2026, 6, 14, 18, 30, tzinfo=dt.UTC))
    CallLogFactory(tenant=tenant, created_at=dt.datetime(2026, 6, 15, 18, 30, tzinfo=dt.UTC))

    _recompute(first=DAY, last=DAY)

    assert list(DailyUsage.objects.values_list("day", "request_count")) == [(DAY, 1)]


@pytest.mark.django_db
def test_recompute_splits_month_rollover_days_in_tenant_timezone():
    tenant = TenantFactory(timezone="Pacific/Auckland")  # UTC+12 in June
    CallLogFactory(tenant=tenant, created_at=dt.datetime(2026, 6, 30, 11, 59, tzinfo=dt.UTC))
    CallLogFactory(tenant=tenant, created_at=dt.datetime(2026, 6, 30, 12, 0, tzinfo=dt.UTC))
    now = dt.datetime(2026, 7, 2, tzinfo=dt.UTC)

    daily_usage_recompute(first_day=dt.date(2026, 6, 29), last_day=dt.date(2026, 7, 2), now=now)

    assert list(DailyUsage.objects.order_by("day").values_list("day", "request_count")) == [
        (dt.date(2026, 6, 30), 1),
        (dt.date(2026, 7, 1), 1),
    ]


@pytest.mark.django_db
def test_recompute_keeps_one_row_for_calls_without_provider_config():
    tenant = TenantFactory()
    for _ in range(3):
        CallLogFactory(tenant=tenant, provider_config=None, created_at=NOW)
    _recompute()

    CallLogFactory(tenant=tenant, provider_config=None, created_at=NOW)
    _recompute()

    assert list(DailyUsage.objects.values_list("provider_config_id", "request_count")) == [
        (None, 4)
    ]


@pytest.mark.django_db
def test_recompute_moves_usage_to_null_group_when_provider_config_is_deleted():
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    CallLogFactory(tenant=tenant, provider_config=config, created_at=NOW)
    CallLogFactory(tenant=tenant, provider_config=None, created_at=NOW)
    _recompute()

    config.delete()
    result = _recompute()

    assert result.removed == 1
    assert list(DailyUsage.objects.values_list("provider_config_id", "request_count")) == [
        (None, 2)
    ]


@pytest.mark.django_db
def test_recompute_of_one_tenant_leaves_other_tenants_alone():
    mine, theirs = TenantFactory(), TenantFactory()
    CallLogFactory(tenant=mine, created_at=NOW)
    CallLogFactory(tenant=theirs, created_at=NOW)
    _recompute()
    CallLog.objects.filter(tenant=theirs).delete()

    _recompute(tenant=mine)

    assert DailyUsage.objects.filter(tenant=theirs).count() == 1


@pytest.mark.django_db
def test_recompute_keeps_days_whose_logs_are_past_retention(settings):
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 30
    tenant = TenantFactory()
    old_day = DAY - dt.timedelta(days=40)
    CallLogFactory(tenant=tenant, created_at=NOW - dt.timedelta(days=40))
    daily_usage_recompute(first_day=old_day, last_day=old_day, now=NOW - dt.timedelta(days=39))
    CallLog.objects.all().delete()  # what the retention purge does

    result = _recompute(first=old_day, last=DAY)

    assert result.kept_before == DAY - dt.timedelta(days=29)
    assert list(DailyUsage.objects.values_list("day", "request_count")) == [(old_day, 1)]


@pytest.mark.django_db
@pytest.mark.parametrize("new_retention_days", [90, 0])
def test_recompute_keeps_purged_days_after_the_retention_is_raised(settings, new_retention_days):
    # given a day of usage whose call logs a 30-day retention has purged
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 30
    tenant = TenantFactory()
    old_day = DAY - dt.timedelta(days=40)
    CallLogFactory(tenant=tenant, created_at=NOW - dt.timedelta(days=40), cost_usd=Decimal("2"))
    daily_usage_recompute(first_day=old_day, last_day=old_day, now=NOW - dt.timedelta(days=39))
    purged = call_logs_purge(now=NOW)

    # when the retention is raised (or turned off) and the days are recomputed
    settings.USAGE_CALL_LOG_RETENTION_DAYS = new_retention_days
    result = _recompute(first=old_day, last=DAY)

    # then the purged day keeps its totals: there is nothing left to recount it from
    assert purged.call_logs == 1
    assert result.kept_before == DAY - dt.timedelta(days=29)
    assert list(DailyUsage.objects.values_list("day", "request_count", "cost_usd")) == [
        (old_day, 1, Decimal("2"))
    ]


@pytest.mark.django_db
def test_recompute_refuses_range_when_first_day_is_after_last_day():
    with pytest.raises(UsageRangeError) as caught:
        _recompute(first=DAY, last=DAY - dt.timedelta(days=1))

    assert caught.value.message == (
        "The first day (2026-06-15) is after the last day (2026-06-14); swap them."
    )


@pytest.mark.django_db
def test_recent_recompute_picks_up_a_log_that_arrived_days_late(settings):
    settings.USAGE_AGGREGATION_LOOKBACK_MINUTES = 60
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, created_at=NOW - dt.timedelta(minutes=10))
    daily_usage_recompute_recent(now=NOW)

    # a log written now, dated three days ago (outside the lookback window)
    CallLogFactory(tenant=tenant, created_at=NOW - dt.timedelta(days=3))
    daily_usage_recompute_recent(now=NOW + dt.timedelta(minutes=5))

    assert list(DailyUsage.objects.order_by("day").values_list("day", "request_count")) == [
        (DAY - dt.timedelta(days=3), 1),
        (DAY, 1),
    ]


def _hourly_logs(tenant, until, hours):
    config = ProviderConfigFactory(tenant=tenant)
    for hour in range(hours):
        CallLogFactory(
            tenant=tenant, provider_config=config, created_at=until - dt.timedelta(hours=hour)
        )


def _per_local_day(tenant):
    tz = ZoneInfo(tenant.timezone)
    return dict(Counter(log.created_at.astimezone(tz).date() for log in CallLog.objects.all()))


def _stored_per_day():
    return dict(DailyUsage.objects.values_list("day").annotate(n=Sum("request_count")))


@pytest.mark.django_db
def test_tenant_history_recompute_moves_every_day_to_the_new_time_zone():
    tenant = TenantFactory(timezone="UTC")
    _hourly_logs(tenant, NOW, 60)
    daily_usage_recompute_recent(now=NOW)
    tenant.timezone = "Asia/Tokyo"  # UTC+9: 15:00 UTC is already the next day
    tenant.save()

    daily_usage_recompute_recent(now=NOW + dt.timedelta(minutes=5))
    daily_usage_recompute_tenant_history(tenant=tenant, now=NOW + dt.timedelta(minutes=5))

    assert _stored_per_day() == _per_local_day(tenant)
    assert DailyUsage.objects.aggregate(n=Sum("request_count"))["n"] == 60


@pytest.mark.django_db
def test_new_tenant_time_zone_has_its_usage_recomputed_once_committed(
    settings, django_capture_on_commit_callbacks
):
    settings.USAGE_AGGREGATION_LOOKBACK_MINUTES = 60
    now = timezone.now()
    tenant = TenantFactory(timezone="America/New_York")
    _hourly_logs(tenant, now, 60)
    daily_usage_recompute_recent(now=now)

    with django_capture_on_commit_callbacks(execute=True):
        tenant.timezone = "Asia/Tokyo"
        tenant.save()
    daily_usage_recompute_recent()

    assert _stored_per_day() == _per_local_day(tenant)
    assert DailyUsage.objects.aggregate(n=Sum("request_count"))["n"] == 60


@pytest.mark.django_db
def test_recount_of_a_new_time_zone_leaves_nothing_pending_once_it_ran(
    django_capture_on_commit_callbacks,
):
    tenant = TenantFactory(timezone="Europe/London")
    _hourly_logs(tenant, NOW, 30)
    daily_usage_recompute_recent(now=NOW)
    with django_capture_on_commit_callbacks(execute=False):
        tenant.timezone = "Australia/Lord_Howe"
        tenant.save()

    daily_usage_recompute_tenant_history(tenant=tenant, now=NOW)

    assert not DailyUsageRecount.objects.exists()
    assert daily_usage_recount_pending(now=NOW).ranges == 0
    assert _stored_per_day() == _per_local_day(tenant)


@pytest.mark.django_db
def test_recount_of_a_new_time_zone_resumes_where_it_stopped(django_capture_on_commit_callbacks):
    # given 40 days of calls at 20:00 UTC, counted in UTC days
    tenant = TenantFactory(timezone="UTC")
    for back in range(40):
        CallLogFactory(tenant=tenant, created_at=NOW + dt.timedelta(hours=8, days=-back))
    daily_usage_recompute(first_day=DAY - dt.timedelta(days=40), last_day=DAY, now=NOW)
    # and a move to Tokyo (20:00 UTC is 05:00 the next day) whose recount
    # stopped after recounting the days from 10 days ago on
    with django_capture_on_commit_callbacks(execute=False):
        tenant.timezone = "Asia/Tokyo"
        tenant.save()
    resumed_from = DAY - dt.timedelta(days=10)
    DailyUsageRecount.objects.filter(tenant=tenant).update(recounted_from=resumed_from)

    # when the periodic aggregation finishes it
    result = daily_usage_recount_pending(now=NOW)

    # then only the days before were recounted (30 days: one range), and no request is left
    assert result.ranges == 1
    stored = _stored_per_day()
    assert dt.date(2026, 5, 7) not in stored  # 7 May 20:00 UTC is 8 May in Tokyo: recounted
    assert stored[resumed_from - dt.timedelta(days=1)] == 1
    assert stored[DAY] == 1  # left as the stopped recount had it
    assert not DailyUsageRecount.objects.exists()


@pytest.mark.django_db
def test_other_tenant_changes_leave_usage_alone(django_capture_on_commit_callbacks):
    tenant = TenantFactory(timezone="Europe/Paris")

    def recomputes(callbacks):
        return [c for c in callbacks if "_on_tenant_timezone_change" in c.__qualname__]

    with django_capture_on_commit_callbacks() as callbacks:
        tenant.name = "Renamed"
        tenant.save()
    with django_capture_on_commit_callbacks() as moved:
        tenant.timezone = "Asia/Tokyo"
        tenant.save()

    assert recomputes(callbacks) == []
    # The filter above does recognise the recompute: a change of zone registers one.
    assert len(recomputes(moved)) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_recomputes_leave_the_same_table():
    tenants = [TenantFactory(timezone=tz) for tz in ("UTC", "Europe/Paris", "Asia/Tokyo")]
    for index in range(60):
        CallLogFactory(
            tenant=tenants[index % 3],
            customer_id=f"c{index % 7}",
            created_at=NOW - dt.timedelta(hours=index),
        )
    _recompute(first=DAY - dt.timedelta(days=3), last=DAY)
    expected = _rows()
    DailyUsage.objects.all().delete()
    errors = []
    barrier = threading.Barrier(4)

    def run():
        barrier.wait()
        try:
            _recompute(first=DAY - dt.timedelta(days=3), last=DAY)
        except Exception as exc:  # any error fails the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert _rows() == expected


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_tenant_deleted_during_a_recompute_leaves_no_daily_usage():
    # given a tenant with calls whose days a recompute is writing, not yet committed
    tenant = TenantFactory(timezone="UTC")
    CallLogFactory(tenant=tenant, created_at=NOW - dt.timedelta(hours=1))
    deleted = threading.Event()

    def delete_tenant():
        try:
            type(tenant).objects.get(pk=tenant.pk).delete()
            deleted.set()
        finally:
            connection.close()

    deleter = threading.Thread(target=delete_tenant)
    with transaction.atomic():
        _recompute(first=DAY, last=DAY)

        # when a superuser deletes the tenant meanwhile
        deleter.start()
        deleter.join(1)

        # then the delete waits for the recompute (whose rows it could not see) ...
        assert not deleted.is_set()
    deleter.join(10)

    # ... and takes the rows with it once the recompute has committed them
    assert deleted.is_set()
    assert not DailyUsage.objects.filter(tenant_id=tenant.pk).exists()


def _days_of_logs(days, zones=("UTC", "Europe/Paris", "Asia/Tokyo")):
    """Call logs over `days` days before NOW, for tenants in several zones, with customers."""
    tenants = [TenantFactory(timezone=tz) for tz in zones]
    for index in range(days * 12):
        CallLogFactory(
            tenant=tenants[index % len(tenants)],
            customer_id=f"c{index % 5}",
            input_tokens=100 + index,
            cost_usd=Decimal("0.000001") * (index + 1),
            created_at=NOW - dt.timedelta(hours=2 * index),
        )
    return tenants


def _shares(monkeypatch):
    """Record the windows each connection of a split recompute was given."""
    from usage import aggregation

    shares = []
    original = aggregation._recompute_windows

    def recording(*, windows, now):
        shares.append((_backend_pid(connection), windows))
        return original(windows=windows, now=now)

    monkeypatch.setattr(aggregation, "_recompute_windows", recording)
    return shares


def _backend_pid(conn):
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _local_days(shares):
    """Every (zone, local day) the shares covered, with how many shares covered it."""
    return Counter(
        (window.timezone_name, window.first_day + dt.timedelta(days=offset))
        for _, windows in shares
        for window in windows
        for offset in range((window.last_day - window.first_day).days + 1)
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stored", ["nothing", "stale rows"])
def test_recompute_split_among_connections_gives_the_table_of_one(monkeypatch, stored):
    # given ten days of calls in three zones, recomputed in one connection
    _days_of_logs(10)
    first, last = DAY - dt.timedelta(days=11), DAY
    _recompute(first=first, last=last, workers=1)
    expected = _rows()
    if stored == "nothing":
        DailyUsage.objects.all().delete()
    else:
        # rows to correct, a row whose group vanished, a missing row
        DailyUsage.objects.filter(day=DAY - dt.timedelta(days=2)).update(input_tokens=1)
        stale = DailyUsage.objects.filter(day=DAY - dt.timedelta(days=8)).first()
        DailyUsage.objects.filter(pk=stale.pk).update(customer_id="vanished")
        DailyUsage.objects.filter(day=DAY - dt.timedelta(days=5)).first().delete()
    shares = _shares(monkeypatch)

    # when the same days are recomputed by three connections
    result = _recompute(first=first, last=last, workers=3)

    # then the table is the one a single connection computed ...
    assert _rows() == expected
    assert result.ranges == 9  # three zones, each cut in three
    # ... every local day of every zone went to exactly one of three connections
    assert len({pid for pid, _ in shares}) == 3
    covered = _local_days(shares)
    assert set(covered.values()) == {1}
    assert len(covered) == 3 * 12
    # ... and a rerun finds nothing to change
    again = _recompute(first=first, last=last, workers=3)
    assert (again.written, again.removed) == (0, 0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_recompute_share_that_fails_leaves_the_other_shares_and_raises(monkeypatch):
    # given two connections, the one given the later days failing
    _days_of_logs(6, zones=("UTC",))
    first, last = DAY - dt.timedelta(days=5), DAY
    _recompute(first=first, last=last, workers=1)
    expected = _rows()
    DailyUsage.objects.all().delete()
    from usage import aggregation

    original = aggregation._recompute_windows

    def failing(*, windows, now):
        if windows[0].last_day == last:
            raise RuntimeError("disk full")
        return original(windows=windows, now=now)

    monkeypatch.setattr(aggregation, "_recompute_windows", failing)

    # when the recompute runs
    with pytest.raises(RuntimeError, match="disk full"):
        _recompute(first=first, last=last, workers=2)

    # then the first three days are stored (their share committed), the others not
    assert {row["day"] for row in _rows()} == {first + dt.timedelta(days=n) for n in range(3)}
    assert _rows() == [row for row in expected if row["day"] < first + dt.timedelta(days=3)]
    # and the lock is free again: a rerun completes the table
    monkeypatch.setattr(aggregation, "_recompute_windows", original)
    _recompute(first=first, last=last, workers=2)
    assert _rows() == expected


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_recompute_inside_a_callers_transaction_stays_in_its_connection(monkeypatch):
    # given call logs written by a transaction that is still open
    shares = _shares(monkeypatch)
    with transaction.atomic():
        _days_of_logs(4, zones=("UTC",))

        # when it recomputes their days, two workers allowed
        _recompute(first=DAY - dt.timedelta(days=4), last=DAY, workers=2)

        # then one connection (the caller's, which sees those logs) did all of it
        assert {pid for pid, _ in shares} == {_backend_pid(connection)}
        stored = DailyUsage.objects.aggregate(requests=Sum("request_count"))["requests"]
    assert stored == 48 == CallLog.objects.count()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_recompute_with_autocommit_off_stays_in_its_connection(monkeypatch):
    # given call logs written in a transaction the caller manages itself
    shares = _shares(monkeypatch)
    transaction.set_autocommit(False)
    try:
        _days_of_logs(4, zones=("UTC",))

        # when it recomputes their days, two workers allowed
        _recompute(first=DAY - dt.timedelta(days=4), last=DAY, workers=2)

        # then one connection (the caller's, which sees those logs) did all of it
        assert {pid for pid, _ in shares} == {_backend_pid(connection)}
        stored = DailyUsage.objects.aggregate(requests=Sum("request_count"))["requests"]
        transaction.commit()
    except BaseException:
        transaction.rollback()
        raise
    finally:
        transaction.set_autocommit(True)
    assert stored == 48 == CallLog.objects.count()


@pytest.mark.parametrize(
    ("days", "parts", "lengths"),
    [(10, 3, [4, 3, 3]), (2, 4, [1, 1]), (1, 2, [1]), (6, 1, [6])],
)
def test_day_parts_cut_a_window_into_consecutive_runs(days, parts, lengths):
    from usage.aggregation import _day_parts
    from usage.selectors import DayWindow

    window = DayWindow("UTC", DAY, DAY + dt.timedelta(days=days - 1), (7,))
    runs = _day_parts(window, parts)

    assert [(run.last_day - run.first_day).days + 1 for run in runs] == lengths
    assert runs[0].first_day == window.first_day and runs[-1].last_day == window.last_day
    assert all(
        b.first_day == a.last_day + dt.timedelta(days=1) for a, b in itertools.pairwise(runs)
    )
    assert {run.tenant_ids for run in runs} == {(7,)}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_recount_of_a_history_past_the_retention_splits_only_the_days_left(settings):
    # given 100 days of calls at 20:00 UTC until yesterday, counted in UTC
    # days, then all but the last 30 days of call logs purged by the retention
    tenant = TenantFactory(timezone="UTC")
    for back in range(1, 101):
        CallLogFactory(tenant=tenant, created_at=NOW + dt.timedelta(hours=8, days=-back))
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 0
    _recompute(first=DAY - dt.timedelta(days=100), last=DAY, workers=1)
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 30
    call_logs_purge(now=NOW)
    kept_before = DAY - dt.timedelta(days=29)
    old = {day: n for day, n in _stored_per_day().items() if day < kept_before}
    assert len(old) == 71

    # when the tenant moves to Tokyo (20:00 UTC is 05:00 the next day) and its
    # recount runs on commit, with two connections: the older 31-day chunks
    # lie wholly before the retention, nothing in them to share out
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        tenant.timezone = "Asia/Tokyo"
        tenant.save()

    # then the recount finished: the days with call logs are Tokyo days ...
    assert not DailyUsageRecount.objects.exists()
    stored = _stored_per_day()
    assert {day: n for day, n in stored.items() if day >= kept_before} == {
        day: n for day, n in _per_local_day(tenant).items() if day >= kept_before
    }
    assert stored[DAY] == 1  # 14 June 20:00 UTC is 15 June in Tokyo
    # ... and the days past the retention are kept as they were counted
    assert {day: n for day, n in stored.items() if day < kept_before} == old


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tenants", [0, 1])
def test_split_recompute_of_days_with_nothing_to_recompute_does_nothing(settings, tenants):
    # given no tenant, or one whose asked days are all past the retention
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 30
    for _ in range(tenants):
        TenantFactory()

    # when those days are recomputed with two connections
    result = _recompute(first=DAY - dt.timedelta(days=60), last=DAY - dt.timedelta(days=40))

    # then nothing was recomputed, and it says why
    assert (result.ranges, result.written, result.removed) == (0, 0, 0)
    assert result.kept_before == (DAY - dt.timedelta(days=29) if tenants else None)
    assert not DailyUsage.objects.exists()


def _call_log_sums(logs, zones):
    """DailyUsage computed in Python from call logs: key -> values, each day in `zones[tenant]`."""
    status = CallLog.Status
    sums = {}
    for log in logs:
        day = log.created_at.astimezone(ZoneInfo(zones[log.tenant_id])).date()
        key = (
            log.tenant_id,
            day,
            log.provider_config_id,
            log.provider_type,
            log.model_answered or log.model_requested,
            log.service_name,
            log.customer_id,
        )
        values = sums.setdefault(key, dict.fromkeys(DailyUsage.VALUE_FIELDS, 0))
        values["request_count"] += 1
        values["error_count"] += log.status == status.ERROR
        values["blocked_count"] += log.status == status.BLOCKED
        values["cached_count"] += log.status == status.CACHED
        values["unpriced_count"] += (
            log.cost_usd is None and log.price_source == CallLog.PriceSource.UNKNOWN
        )
        values["priced_count"] += log.cost_usd is not None
        values["estimated_count"] += log.usage_estimated
        for name in ("input", "output", "cache_read", "cache_write", "reasoning"):
            values[f"{name}_tokens"] += getattr(log, f"{name}_tokens")
        values["cost_usd"] += log.cost_usd or Decimal(0)
        values["latency_ms_sum"] += log.latency_ms
    return sums


def _stored_sums():
    return {
        tuple(row[k] for k in DailyUsage.KEY_FIELDS): {v: row[v] for v in DailyUsage.VALUE_FIELDS}
        for row in DailyUsage.objects.values(*DailyUsage.KEY_FIELDS, *DailyUsage.VALUE_FIELDS)
    }


def _backends():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_split_recomputes_beside_every_other_writer_leave_daily_usage_exact(settings):
    # given 31 days of calls of tenants in six zones, all counted, and a
    # retention of 25 days whose purge has not run yet
    settings.USAGE_AGGREGATION_WORKERS = 2
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 0
    zones = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Pacific/Chatham"]
    tenants = [TenantFactory(timezone=tz) for tz in [*zones, "Asia/Kolkata"]]
    # one to delete, one that moves to another zone (calls of the last days only)
    doomed, moving = tenants[1], tenants[5]
    configs = {t.pk: [ProviderConfigFactory(tenant=t) for _ in range(2)] for t in tenants}
    statuses = [CallLog.Status.OK, CallLog.Status.ERROR, CallLog.Status.CACHED]

    def log(tenant, created_at, index):
        # The deleted tenant's calls raise no alert: an alert the checks after
        # each recompute create for it while its delete waits is not this test's.
        clean = tenant == doomed
        unpriced = index % 11 == 0 and not clean
        return CallLogFactory(
            tenant=tenant,
            provider_config=configs[tenant.pk][index % 2] if index % 5 else None,
            customer_id=f"c{index % 3}",
            model_answered="" if index % 7 == 0 else "fake-large",
            status=CallLog.Status.OK if clean else statuses[index % 3],
            input_tokens=index,
            cost_usd=None if unpriced else Decimal("0.000001") * index,
            price_source=CallLog.PriceSource.UNKNOWN if unpriced else "override",
            created_at=created_at,
        )

    for index in range(31 * 4):
        for tenant in tenants[:5]:
            log(tenant, NOW - dt.timedelta(hours=6 * index + 1), index)
    for index in range(20):
        log(moving, NOW - dt.timedelta(hours=5 * index + 1), index)
    first = DAY - dt.timedelta(days=32)
    _recompute(first=first, last=DAY, workers=1)
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 25
    zone_of = {t.pk: t.timezone for t in tenants}
    before_purge = _call_log_sums(CallLog.objects.all(), zone_of)
    backends = _backends()

    # when, all at once: two split recomputes, the periodic run, the dashboard's
    # Recompute, the retention purge, a tenant's delete, another's move to a
    # new zone (its recount queued on commit, run here and now), and new calls
    from usage.tasks import refresh_tenant_usage

    actions = {
        "split in three": lambda: [_recompute(first=first, last=DAY, workers=3) for _ in range(3)],
        "split in two": lambda: [_recompute(first=first, last=DAY, workers=2) for _ in range(3)],
        "periodic": lambda: [daily_usage_recompute_recent(now=NOW) for _ in range(3)],
        "dashboard": lambda: [
            refresh_tenant_usage(str(t.pk), str(DAY - dt.timedelta(days=30)), str(DAY))
            for t in (tenants[0], doomed, moving)
        ],
        "purge": lambda: call_logs_purge(now=NOW),
        "delete": lambda: type(doomed).objects.get(pk=doomed.pk).delete(),
        "move": lambda: _move(moving.pk, "America/Los_Angeles"),
        "calls": lambda: [
            log(tenant, NOW - dt.timedelta(hours=index * 9 % 200), index)
            for index in range(40)
            for tenant in (tenants[0], tenants[3], moving)
        ],
    }
    errors, done = {}, set()
    barrier = threading.Barrier(len(actions))

    def run(name, action):
        try:
            barrier.wait(timeout=30)
            action()
            done.add(name)
        except Exception as exc:  # any error fails the test below
            errors[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in actions.items()]
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        hung = [thread for thread in threads if thread.is_alive()]
        if hung:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        # then nothing hung or failed ...
        assert (hung, errors, done) == ([], {}, set(actions))
        # ... and after one more recompute (and any recount left pending) ...
        _recompute(first=first, last=DAY)
        assert daily_usage_recount_pending(now=NOW).ranges == 0

    # ... DailyUsage holds the call logs' sums, each tenant in its zone now, the
    # days past the retention as they were before the purge, none of the
    # deleted tenant, ...
    from usage.aggregation import call_logs_purged_before, earliest_recomputable_day

    assert not CallLog.objects.filter(created_at__lt=NOW - dt.timedelta(days=25)).exists()
    zone_of = dict(Tenant.objects.values_list("pk", "timezone"))
    assert zone_of[moving.pk] == "America/Los_Angeles" and doomed.pk not in zone_of
    purged_before = call_logs_purged_before()
    earliest = {
        tz: earliest_recomputable_day(timezone_name=tz, now=NOW, purged_before=purged_before)
        for tz in set(zone_of.values())
    }
    expected = {
        key: values
        for key, values in before_purge.items()
        if key[0] in zone_of and key[1] < earliest[zone_of[key[0]]]
    }
    assert len(expected) > 0
    expected.update(_call_log_sums(CallLog.objects.all(), zone_of))
    assert _stored_sums() == expected
    # ... and every connection the recomputes opened is closed again
    deadline = time.monotonic() + 30
    while _backends() != backends and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _backends() == backends


def _move(tenant_pk, timezone_name):
    tenant = Tenant.objects.get(pk=tenant_pk)
    tenant.timezone = timezone_name
    tenant.save()


def _raw_connection():
    """A psycopg connection of its own to the test database, outside Django."""
    import psycopg

    params = connection.settings_dict
    return psycopg.connect(
        dbname=params["NAME"],
        user=params["USER"],
        host=params["HOST"],
        port=params["PORT"] or 5432,
        autocommit=True,
    )


def _lock_is_free(raw):
    from usage.aggregation import _ADVISORY_LOCK_KEY

    # Taken and given back at once (autocommit) when nobody holds it.
    return raw.execute("SELECT pg_try_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY]).fetchone()[0]


def _blocked_by(raw, blocker_pid):
    """The pid of the backend waiting for a lock `blocker_pid` holds (waits up to 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = raw.execute(
            "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            [blocker_pid],
        ).fetchone()
        if row:
            return row[0]
        time.sleep(0.05)
    raise AssertionError("no share came to wait for the locked row")


def _share_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")]


@pytest.fixture
def split_with_a_stuck_share():
    """Six UTC days counted, then made stale, the later share's first row locked by a blocker.

    Yields (expected rows, stale rows, first, last, blocker connection, raw connection).
    """
    _days_of_logs(6, zones=("UTC",))
    first, last = DAY - dt.timedelta(days=5), DAY
    _recompute(first=first, last=last, workers=1)
    expected = _rows()
    # the first share's days (the first three) and the second's all need writes
    DailyUsage.objects.filter(day=first).delete()
    DailyUsage.objects.update(input_tokens=1)
    stale = _rows()
    locked = DailyUsage.objects.filter(day=first + dt.timedelta(days=3)).first()
    raw, blocker = _raw_connection(), _raw_connection()
    blocker.execute("BEGIN")
    blocker.execute(
        f"SELECT 1 FROM {DailyUsage._meta.db_table} WHERE id = %s FOR UPDATE", [locked.pk]
    )
    backends = _backends()
    yield expected, stale, first, last, blocker, raw
    blocker.close()
    raw.close()
    assert _share_threads() == []
    deadline = time.monotonic() + 30
    while _backends() != backends - 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _backends() == backends - 2


def _committed_by_shares(expected, stale, first):
    """The first share's days as expected; the second's all recomputed or all as they were."""
    split = first + dt.timedelta(days=3)
    rows = _rows()
    assert [r for r in rows if r["day"] < split] == [r for r in expected if r["day"] < split]
    later = [r for r in rows if r["day"] >= split]
    if later == [r for r in expected if r["day"] >= split]:
        return "recomputed"
    assert later == [r for r in stale if r["day"] >= split]
    return "as they were"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failure", ["statement timeout", "connection killed"])
def test_split_recompute_whose_share_fails_frees_the_lock_for_a_rerun(
    monkeypatch, split_with_a_stuck_share, failure
):
    from django.db import OperationalError

    from usage import aggregation

    expected, stale, first, last, blocker, raw = split_with_a_stuck_share
    configure = aggregation.aggregation_session_configure

    def with_statement_timeout(cursor):
        configure(cursor)
        if threading.current_thread() is not threading.main_thread():
            cursor.execute("SET LOCAL statement_timeout = '500ms'")

    if failure == "statement timeout":
        monkeypatch.setattr(aggregation, "aggregation_session_configure", with_statement_timeout)
    else:
        blocker_pid = blocker.info.backend_pid

        def kill_the_share():
            raw.execute("SELECT pg_terminate_backend(%s)", [_blocked_by(raw, blocker_pid)])

        threading.Thread(target=kill_the_share, daemon=True).start()

    # when the share of the later days fails while the other commits
    with pytest.raises(OperationalError):
        _recompute(first=first, last=last, workers=2)

    # then the lock is free, the first share's days are right, the later ones untouched
    assert _lock_is_free(raw)
    assert _committed_by_shares(expected, stale, first) == "as they were"
    # and a rerun completes the table
    blocker.execute("ROLLBACK")
    _recompute(first=first, last=last, workers=2)
    assert _rows() == expected


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_split_recompute_stopped_by_a_soft_time_limit_frees_the_lock(split_with_a_stuck_share):
    import signal
    import sys

    from celery.exceptions import SoftTimeLimitExceeded

    expected, stale, first, last, blocker, raw = split_with_a_stuck_share
    main = threading.main_thread()

    def soft_time_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    def coordinator_stopping():
        frame = sys._current_frames().get(main.ident)
        while frame is not None:
            if frame.f_code.co_name == "shutdown":
                return True
            frame = frame.f_back
        return False

    def interrupt():
        # Celery's soft limit: a signal whose handler raises in the task's thread
        _blocked_by(raw, blocker.info.backend_pid)
        signal.pthread_kill(main.ident, signal.SIGUSR1)
        deadline = time.monotonic() + 60
        while not coordinator_stopping() and time.monotonic() < deadline:
            time.sleep(0.05)
        blocker.execute("ROLLBACK")

    previous = signal.signal(signal.SIGUSR1, soft_time_limit)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        # when the task's time is up while a share waits
        with pytest.raises(SoftTimeLimitExceeded):
            _recompute(first=first, last=last, workers=2)
    finally:
        signal.signal(signal.SIGUSR1, previous)

    # then the lock is free once it raised, with no share left running, and
    # each share's days are either recomputed or as they were
    assert _lock_is_free(raw)
    assert _share_threads() == []
    assert _committed_by_shares(expected, stale, first) in {"recomputed", "as they were"}
    # and a rerun completes the table
    _recompute(first=first, last=last, workers=2)
    assert _rows() == expected


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_split_recompute_keeps_its_lock_past_an_idle_in_transaction_timeout(
    split_with_a_stuck_share,
):
    # given a server that ends sessions idle in a transaction for 200 ms
    expected, stale, first, last, blocker, raw = split_with_a_stuck_share
    with connection.cursor() as cursor:
        cursor.execute("SET idle_in_transaction_session_timeout = '200ms'")
    coordinator = _backend_pid(connection)

    def release_later():
        # the share waits; its coordinator meanwhile runs no statement
        _blocked_by(raw, blocker.info.backend_pid)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if not raw.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [coordinator]
            ).fetchone():
                break
            time.sleep(0.05)
        blocker.execute("ROLLBACK")

    releaser = threading.Thread(target=release_later, daemon=True)
    releaser.start()
    try:
        # when a split recompute waits on a share for longer
        result = _recompute(first=first, last=last, workers=2)
    finally:
        releaser.join(timeout=60)
        connection.close()

    # then it held the lock to the end and committed every share
    assert result.ranges == 2
    assert _rows() == expected
