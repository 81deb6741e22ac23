"""DailyUsage recomputed from CallLog: one grouped query, an upsert that sets, stale rows removed.

A recompute of local days D1..D2 in a time zone groups the CallLog rows of
exactly those days, upserts every group (values are *set*, and a row whose
values did not change is not written at all), and deletes the DailyUsage rows
of those days that no longer have logs. Running it twice gives the same
table; a log that arrives late is counted by the next run that covers its day.

Recomputes are serialised (a PostgreSQL advisory lock, or a process lock on
SQLite), so two runs at once simply run one after the other. Days whose
call logs may already have been purged by retention are never recomputed,
so DailyUsage keeps them.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from llm_providers.exceptions import ApplicationError
from llm_providers.models import Tenant

from .models import AggregationState, CallLog, DailyUsage
from .periods import local_date, utc_window_for_days, zone
from .selectors import DAILY_GROUP_SOURCES, call_log_daily_groups, tenant_timezones

# Any constant identifies the lock; this one spells "usage".
_ADVISORY_LOCK_KEY = 0x7573616765
_sqlite_lock = threading.Lock()
_STATE_NAME = "daily_usage"


class UsageRangeError(ApplicationError):
    code = "usage_range_invalid"
    http_status = 400


@dataclass
class RecomputeResult:
    """What a recompute did: day ranges covered, rows written or removed."""

    ranges: int = 0
    written: int = 0
    removed: int = 0
    # Set when part of the asked range was left alone because retention purged its logs.
    kept_before: date | None = None

    def add(self, other: RecomputeResult) -> None:
        self.ranges += other.ranges
        self.written += other.written
        self.removed += other.removed
        if other.kept_before and (not self.kept_before or other.kept_before > self.kept_before):
            self.kept_before = other.kept_before


# --- locking -------------------------------------------------------------------


@contextmanager
def _exclusive() -> Iterator[None]:
    """One transaction, and no other recompute at the same time."""
    if connection.vendor == "sqlite":
        with _sqlite_lock, transaction.atomic():
            yield
    elif connection.vendor == "postgresql":
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
            yield
    else:
        raise ApplicationError(
            f"Usage aggregation supports PostgreSQL and SQLite, not {connection.vendor}."
        )


# --- the statement -------------------------------------------------------------


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _sql_parts(tenant_ids: Iterable | None, timezone_name: str):
    table = _q(DailyUsage._meta.db_table)
    columns = [*DailyUsage.KEY_FIELDS, *DailyUsage.VALUE_FIELDS]
    insert_columns = ", ".join(_q(c) for c in [*columns, "updated_at"])
    select_columns = ", ".join(f"g.{_q(DAILY_GROUP_SOURCES[c])}" for c in columns)
    values = DailyUsage.VALUE_FIELDS
    assignments = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in [*values, "updated_at"])
    current = ", ".join(f"{table}.{_q(c)}" for c in values)
    proposed = ", ".join(f"excluded.{_q(c)}" for c in values)
    distinct = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    changed = f"({current}) {distinct} ({proposed})"
    keys_no_config = [c for c in DailyUsage.KEY_FIELDS if c != "provider_config_id"]
    conflict = ", ".join(_q(c) for c in DailyUsage.KEY_FIELDS)
    conflict_no_config = ", ".join(_q(c) for c in keys_no_config)
    config = _q("provider_config_id")

    def upsert(source: str, with_config: bool) -> str:
        null_test = "IS NOT NULL" if with_config else "IS NULL"
        target = conflict if with_config else conflict_no_config
        return (
            f"INSERT INTO {table} ({insert_columns}) "
            f"SELECT {select_columns}, %s FROM {source} g WHERE g.{config} {null_test} "
            f"ON CONFLICT ({target}) WHERE {config} {null_test} "
            f"DO UPDATE SET {assignments} WHERE {changed}"
        )

    same_group = " AND ".join(
        (
            f"COALESCE(g.{config}, %s) = COALESCE({table}.{config}, %s)"
            if c == "provider_config_id"
            else f"g.{_q(DAILY_GROUP_SOURCES[c])} = {table}.{_q(c)}"
        )
        for c in DailyUsage.KEY_FIELDS
    )
    tenants = (
        Tenant.objects.filter(timezone=timezone_name)
        if tenant_ids is None
        else Tenant.objects.filter(pk__in=list(tenant_ids))
    )
    tenant_sql, tenant_params = tenants.order_by().values("pk").query.sql_with_params()

    def delete_stale(source: str) -> str:
        return (
            f"DELETE FROM {table} WHERE {table}.{_q('day')} >= %s AND {table}.{_q('day')} <= %s "
            f"AND {table}.{_q('tenant_id')} IN ({tenant_sql}) "
            f"AND NOT EXISTS (SELECT 1 FROM {source} g WHERE {same_group})"
        )

    return upsert, delete_stale, tenant_params


def _recompute_days(
    *,
    timezone_name: str,
    first_day: date,
    last_day: date,
    tenant_ids: Iterable | None,
    now: datetime,
) -> RecomputeResult:
    """Recompute local days first_day..last_day of one time zone's tenants (or `tenant_ids`).

    Must run inside `_exclusive()`.
    """
    start, end = utc_window_for_days(first_day, last_day, timezone_name)
    grouped = call_log_daily_groups(
        timezone_name=timezone_name, start=start, end=end, tenant_ids=tenant_ids
    )
    grouped_sql, grouped_params = grouped.query.sql_with_params()
    upsert, delete_stale, tenant_params = _sql_parts(tenant_ids, timezone_name)
    ops = connection.ops
    stamp = ops.adapt_datetimefield_value(now)
    days = [ops.adapt_datefield_value(first_day), ops.adapt_datefield_value(last_day)]

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            no_config = uuid.UUID(int=0)
            # One statement: the groups are computed once (MATERIALIZED) and feed
            # both upserts (with and without a provider config) and the delete.
            cursor.execute(
                f"WITH g AS MATERIALIZED ({grouped_sql}), "
                f"w AS ({upsert('g', True)} RETURNING 1), "
                f"wn AS ({upsert('g', False)} RETURNING 1), "
                f"d AS ({delete_stale('g')} RETURNING 1) "
                "SELECT (SELECT count(*) FROM w) + (SELECT count(*) FROM wn), "
                "(SELECT count(*) FROM d)",
                [
                    *grouped_params,
                    stamp,
                    stamp,
                    *days,
                    *tenant_params,
                    no_config,
                    no_config,
                ],
            )
            written, removed = cursor.fetchone()
        else:
            groups = "temp.usage_daily_groups"
            cursor.execute(f"DROP TABLE IF EXISTS {groups}")
            cursor.execute(f"CREATE TEMP TABLE usage_daily_groups AS {grouped_sql}", grouped_params)
            cursor.execute(upsert(groups, True), [stamp])
            written = max(cursor.rowcount, 0)
            cursor.execute(upsert(groups, False), [stamp])
            written += max(cursor.rowcount, 0)
            cursor.execute(delete_stale(groups), [*days, *tenant_params, "", ""])
            removed = max(cursor.rowcount, 0)
            cursor.execute(f"DROP TABLE {groups}")
    return RecomputeResult(ranges=1, written=written, removed=removed)


def earliest_recomputable_day(*, timezone_name: str, now: datetime) -> date | None:
    """The first local day whose call logs retention cannot have touched (None: no retention)."""
    days = settings.USAGE_CALL_LOG_RETENTION_DAYS
    if not days:
        return None
    return local_date(now - timedelta(days=days), zone(timezone_name)) + timedelta(days=1)


def _recompute_clipped(
    *,
    timezone_name: str,
    first_day: date,
    last_day: date,
    tenant_ids: Iterable | None,
    now: datetime,
) -> RecomputeResult:
    earliest = earliest_recomputable_day(timezone_name=timezone_name, now=now)
    kept_before = None
    if earliest and first_day < earliest:
        first_day, kept_before = earliest, earliest
    if first_day > last_day:
        return RecomputeResult(kept_before=kept_before)
    result = _recompute_days(
        timezone_name=timezone_name,
        first_day=first_day,
        last_day=last_day,
        tenant_ids=tenant_ids,
        now=now,
    )
    result.kept_before = kept_before
    return result


# --- services ------------------------------------------------------------------


def daily_usage_recompute(
    *,
    first_day: date,
    last_day: date,
    tenant: Tenant | None = None,
    now: datetime | None = None,
) -> RecomputeResult:
    """Recompute DailyUsage for local days first_day..last_day (inclusive).

    For one tenant, or for every tenant (each in its own time zone). Days older
    than the call-log retention are left as they are.
    """
    if first_day > last_day:
        raise UsageRangeError(
            f"The first day ({first_day}) is after the last day ({last_day}); swap them."
        )
    now = now or timezone.now()
    result = RecomputeResult()
    with _exclusive():
        if tenant is not None:
            plan = [(tenant.timezone, [tenant.pk])]
        else:
            plan = [(name, None) for name in tenant_timezones()]
        for timezone_name, tenant_ids in plan:
            result.add(
                _recompute_clipped(
                    timezone_name=timezone_name,
                    first_day=first_day,
                    last_day=last_day,
                    tenant_ids=tenant_ids,
                    now=now,
                )
            )
    return result


def daily_usage_recompute_recent(*, now: datetime | None = None) -> RecomputeResult:
    """The periodic aggregation: recompute the recent days, and the days of late logs.

    Recent days are those touched by the last USAGE_AGGREGATION_LOOKBACK_MINUTES
    in every tenant's time zone. Late logs are rows added since the previous run
    (a higher id than it saw) whose time is older than that window; their days
    are recomputed for their tenants only.
    """
    now = now or timezone.now()
    recent_start = now - timedelta(minutes=settings.USAGE_AGGREGATION_LOOKBACK_MINUTES)
    result = RecomputeResult()
    with _exclusive():
        state, _ = AggregationState.objects.get_or_create(name=_STATE_NAME)
        newest_id = CallLog.objects.aggregate(newest=Max("pk"))["newest"] or 0
        late = (
            CallLog.objects.filter(
                pk__gt=state.last_call_log_id, pk__lte=newest_id, created_at__lt=recent_start
            )
            .order_by()
            .values("tenant_id", "tenant__timezone")
            .annotate(first=Min("created_at"), last=Max("created_at"))
        )
        late_by_zone: dict[str, list[dict]] = defaultdict(list)
        for row in late:
            late_by_zone[row["tenant__timezone"]].append(row)

        for timezone_name in tenant_timezones():
            tz = zone(timezone_name)
            recent_first = local_date(recent_start, tz)
            result.add(
                _recompute_clipped(
                    timezone_name=timezone_name,
                    first_day=recent_first,
                    last_day=local_date(now, tz),
                    tenant_ids=None,
                    now=now,
                )
            )
            rows = late_by_zone.get(timezone_name)
            if rows:
                result.add(
                    _recompute_clipped(
                        timezone_name=timezone_name,
                        first_day=local_date(min(r["first"] for r in rows), tz),
                        last_day=min(
                            local_date(max(r["last"] for r in rows), tz),
                            recent_first - timedelta(days=1),
                        ),
                        tenant_ids=[r["tenant_id"] for r in rows],
                        now=now,
                    )
                )
        state.last_call_log_id = newest_id
        state.last_run_at = now
        state.save(update_fields=["last_call_log_id", "last_run_at"])
    return result
