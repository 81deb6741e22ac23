"""DailyUsage recomputed from CallLog: one grouped query, values set (never added), stale rows gone.

A recompute of local days D1..D2 groups the CallLog rows of exactly those
days (each tenant in its own time zone), compares the groups with the stored
rows, and writes only the differences: new groups inserted, changed groups
updated by setting every value, vanished groups deleted. Running it twice
gives the same table and writes nothing the second time; a log that arrives
late is counted by the next run that covers its day.

Recomputes are serialised (a PostgreSQL advisory lock, or a process lock on
SQLite), so two runs at once simply run one after the other. Days whose
call logs retention may already have purged are never recomputed, so
DailyUsage keeps them.

On PostgreSQL a recompute of several days may split its days over
USAGE_AGGREGATION_WORKERS connections, each a transaction of its own, all
under the lock of the one that split them (`_recompute`).
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from llm_providers.exceptions import ApplicationError
from llm_providers.models import Tenant

from .locking import exclusive_transaction
from .models import AggregationState, CallLog, DailyUsage, DailyUsageRecount
from .periods import local_date, zone
from .selectors import DAILY_GROUP_SOURCES, DayWindow, call_log_daily_groups, tenant_timezones

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
    with exclusive_transaction(_ADVISORY_LOCK_KEY, _sqlite_lock):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                aggregation_session_configure(cursor)
        yield


def aggregation_session_configure(cursor) -> None:
    """PostgreSQL settings for the rest of the transaction: group by hashing, in memory.

    The planner underestimates the number of groups by orders of magnitude
    and picks a sort on seven keys, which measured twice as slow as a hash
    aggregate (docs/PERFORMANCE.md). No statement of the aggregation needs a sort.
    JIT compilation is off: the statements run once each, and compiling the
    comparison of groups with stored rows took longer than running it.
    """
    cursor.execute(
        "SELECT set_config('work_mem', %s, true), set_config('enable_sort', 'off', true), "
        "set_config('enable_incremental_sort', 'off', true), set_config('jit', 'off', true)",
        [settings.USAGE_AGGREGATION_WORK_MEM],
    )


# --- the statements ------------------------------------------------------------

_GROUPS = "usage_daily_groups"
_DELTA = "usage_daily_delta"


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _temporary(name: str) -> str:
    return f"pg_temp.{name}" if connection.vendor == "postgresql" else f"temp.{name}"


def _groups_source(cursor, windows: list[DayWindow]) -> tuple[str, list]:
    """SQL (and parameters) of the windows' grouped call logs, to select from.

    PostgreSQL groups every zone in one statement, inlined; SQLite groups one
    zone at a time into a temporary table.
    """
    if connection.vendor == "postgresql":
        sql, params = call_log_daily_groups(windows=windows).query.sql_with_params()
        return f"({sql})", list(params)
    by_zone: dict[str, list[DayWindow]] = defaultdict(list)
    for window in windows:
        by_zone[window.timezone_name].append(window)
    groups = _temporary(_GROUPS)
    cursor.execute(f"DROP TABLE IF EXISTS {groups}")
    for index, batch in enumerate(by_zone.values()):
        sql, params = call_log_daily_groups(windows=batch).query.sql_with_params()
        if index == 0:
            cursor.execute(f"CREATE TEMPORARY TABLE {_GROUPS} AS {sql}", params)
        else:
            cursor.execute(f"INSERT INTO {groups} {sql}", params)
    return groups, []


def _recompute_windows(*, windows: list[DayWindow], now: datetime) -> RecomputeResult:
    """Make DailyUsage of the windows equal to their CallLog. Must run inside `_exclusive()`.

    One statement groups the call logs, joins the groups with the existing rows
    (FULL JOIN on the group key) and keeps only the differences: new groups,
    groups whose values changed, rows whose group vanished. The differences are
    then applied (insert, update by setting every value, delete), so an
    unchanged day costs the grouping and the join, and writes nothing. On
    PostgreSQL the statement is a CREATE TABLE AS.
    When nothing is stored for the windows yet, the groups are inserted directly.
    """
    if not windows:
        return RecomputeResult()
    ops = connection.ops
    table = _q(DailyUsage._meta.db_table)
    keys, values = DailyUsage.KEY_FIELDS, DailyUsage.VALUE_FIELDS
    src = DAILY_GROUP_SOURCES
    postgres = connection.vendor == "postgresql"
    no_config = uuid.UUID(int=0) if postgres else ""

    scope_parts, scope_params = [], []
    for window in windows:
        tenants = Tenant.objects.filter(timezone=window.timezone_name)
        if window.tenant_ids is not None:
            tenants = tenants.filter(pk__in=list(window.tenant_ids))
        tenant_sql, tenant_params = tenants.order_by().values("pk").query.sql_with_params()
        scope_parts.append(
            f"(u.{_q('day')} >= %s AND u.{_q('day')} <= %s "
            f"AND u.{_q('tenant_id')} IN ({tenant_sql}))"
        )
        scope_params += [
            ops.adapt_datefield_value(window.first_day),
            ops.adapt_datefield_value(window.last_day),
            *tenant_params,
        ]
    same_group = " AND ".join(
        f"COALESCE(g.{_q(src[k])}, %s) = COALESCE(u.{_q(k)}, %s)"
        if k == "provider_config_id"
        else f"g.{_q(src[k])} = u.{_q(k)}"
        for k in keys
    )
    distinct = "IS DISTINCT FROM" if postgres else "IS NOT"
    stored = ", ".join(f"u.{_q(v)}" for v in values)
    computed = ", ".join(f"g.{_q(src[v])}" for v in values)
    delta = _temporary(_DELTA)
    stamp = ops.adapt_datetimefield_value(now)

    with connection.cursor() as cursor:
        source, source_params = _groups_source(cursor, windows)
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {table} u WHERE {' OR '.join(scope_parts)})",
            scope_params,
        )
        if not cursor.fetchone()[0]:
            # Nothing stored for these days yet (a first backfill): every group
            # is new, so they go in directly, without a difference to compute.
            columns = ", ".join(_q(c) for c in [*keys, *values, "updated_at"])
            selected = ", ".join(f"g.{_q(src[c])}" for c in [*keys, *values])
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {selected}, %s FROM {source} g",
                [stamp, *source_params],
            )
            written = max(cursor.rowcount, 0)
            if not postgres:
                cursor.execute(f"DROP TABLE {_temporary(_GROUPS)}")
            return RecomputeResult(ranges=len(windows), written=written, removed=0)
        cursor.execute(f"DROP TABLE IF EXISTS {delta}")
        cursor.execute(
            f"CREATE TEMPORARY TABLE {_DELTA} AS "
            f"SELECT g.*, u.{_q('id')} AS existing_id FROM {source} g "
            f"FULL JOIN (SELECT * FROM {table} u WHERE {' OR '.join(scope_parts)}) u "
            f"ON {same_group} "
            f"WHERE u.{_q('id')} IS NULL OR g.{_q('tenant_id')} IS NULL "
            f"OR ({stored}) {distinct} ({computed})",
            [*source_params, *scope_params, no_config, no_config],
        )
        cursor.execute(
            f"DELETE FROM {table} WHERE {_q('id')} IN "
            f"(SELECT existing_id FROM {delta} WHERE {_q('tenant_id')} IS NULL)"
        )
        removed = max(cursor.rowcount, 0)
        assignments = ", ".join(f"{_q(v)} = d.{_q(src[v])}" for v in values)
        cursor.execute(
            f"UPDATE {table} SET {assignments}, {_q('updated_at')} = %s FROM {delta} d "
            f"WHERE d.existing_id = {table}.{_q('id')} AND d.{_q('tenant_id')} IS NOT NULL",
            [stamp],
        )
        written = max(cursor.rowcount, 0)
        columns = ", ".join(_q(c) for c in [*keys, *values, "updated_at"])
        selected = ", ".join(f"d.{_q(src[c])}" for c in [*keys, *values])
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {selected}, %s FROM {delta} d "
            "WHERE d.existing_id IS NULL",
            [stamp],
        )
        written += max(cursor.rowcount, 0)
        cursor.execute(f"DROP TABLE {delta}")
        if not postgres:
            cursor.execute(f"DROP TABLE {_temporary(_GROUPS)}")
    return RecomputeResult(ranges=len(windows), written=written, removed=removed)


def earliest_recomputable_day(
    *, timezone_name: str, now: datetime, purged_before: datetime | None = None
) -> date | None:
    """The first local day whose call logs retention cannot have touched (None: any day).

    Both the retention setting and what the purge has already deleted
    (`purged_before`) count: a retention raised or turned off later does not
    bring purged logs back, and recounting their days would empty them.
    """
    tz = zone(timezone_name)
    days = settings.USAGE_CALL_LOG_RETENTION_DAYS
    cutoffs = [now - timedelta(days=days)] if days else []
    if purged_before is not None:
        cutoffs.append(purged_before)
    if not cutoffs:
        return None
    return local_date(max(cutoffs), tz) + timedelta(days=1)


def call_logs_purge_horizon_raise(*, before: datetime) -> None:
    """Record that call logs older than `before` are about to be deleted.

    Taken under the aggregation's lock, so that a recompute either ends before
    the purge deletes anything or already knows to leave those days alone.
    """
    with _exclusive():
        state, _ = AggregationState.objects.get_or_create(name=_STATE_NAME)
        if state.call_logs_purged_before is None or before > state.call_logs_purged_before:
            state.call_logs_purged_before = before
            state.save(update_fields=["call_logs_purged_before"])


def _clip(
    window: DayWindow, now: datetime, purged_before: datetime | None, result: RecomputeResult
) -> DayWindow | None:
    """The window without the days retention may have purged (None: nothing left)."""
    earliest = earliest_recomputable_day(
        timezone_name=window.timezone_name, now=now, purged_before=purged_before
    )
    first_day = window.first_day
    if earliest and first_day < earliest:
        first_day = earliest
        if not result.kept_before or earliest > result.kept_before:
            result.kept_before = earliest
    if first_day > window.last_day:
        return None
    return replace(window, first_day=first_day)


def call_logs_purged_before() -> datetime | None:
    """How far the retention purge has deleted call logs (None: it has deleted nothing)."""
    return (
        AggregationState.objects.filter(name=_STATE_NAME)
        .values_list("call_logs_purged_before", flat=True)
        .first()
    )


def _day_parts(window: DayWindow, parts: int) -> list[DayWindow]:
    """The window's days cut into at most `parts` consecutive runs of (nearly) equal length."""
    days = (window.last_day - window.first_day).days + 1
    parts = max(1, min(parts, days))
    runs, first_day = [], window.first_day
    for index in range(parts):
        length = days // parts + (1 if index < days % parts else 0)
        last_day = first_day + timedelta(days=length - 1)
        runs.append(replace(window, first_day=first_day, last_day=last_day))
        first_day = last_day + timedelta(days=1)
    return runs


def _partitions(windows: list[DayWindow], workers: int) -> list[list[DayWindow]]:
    """The windows' days shared among `workers` recomputes: each takes one run of every window.

    Any split is correct (a day of a tenant's zone is recomputed by exactly
    one of them, and days do not depend on each other); consecutive days keep
    each recompute's scan of CallLog to its own stretch of time.
    """
    partitions: list[list[DayWindow]] = [[] for _ in range(workers)]
    for window in windows:
        for index, part in enumerate(_day_parts(window, workers)):
            partitions[index].append(part)
    return [part for part in partitions if part]


def _recompute_partition(windows: list[DayWindow], now: datetime) -> RecomputeResult:
    """One share of a split recompute, in a transaction (and a connection) of its own."""
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                aggregation_session_configure(cursor)
            return _recompute_windows(windows=windows, now=now)
    finally:
        connection.close()


def _recompute(*, windows: list[DayWindow], now: datetime, workers: int = 1) -> RecomputeResult:
    """Recompute the windows; must run inside `_exclusive()`.

    With more than one worker on PostgreSQL, and when `_exclusive()` opened
    the outermost transaction, the days are split (`_partitions`) and each
    share is recomputed at the same time on a connection of its own, in its
    own transaction, while this connection holds the lock until all have
    ended (however long that takes: `idle_in_transaction_session_timeout`
    is off for its transaction). A share that fails leaves the others' days
    committed (each is a complete recompute of its own days, and a rerun
    recomputes the rest); its error is raised. Inside a caller's transaction
    (an atomic block, or autocommit turned off) the other connections could
    not see what it wrote, so the recompute stays in this one.
    """
    result = RecomputeResult()
    purged_before = call_logs_purged_before()
    clipped = [w for w in (_clip(w, now, purged_before, result) for w in windows) if w is not None]
    split = (
        workers > 1
        and connection.vendor == "postgresql"
        # `_exclusive()` opened the transaction (and commits it): the only
        # block open, begun in autocommit rather than in a transaction the
        # caller opened with autocommit off.
        and len(connection.atomic_blocks) == 1
        and connection.commit_on_exit
    )
    partitions = _partitions(clipped, workers) if split else [clipped]
    # None at all when retention left no day (or there is no tenant).
    if len(partitions) <= 1:
        result.add(_recompute_windows(windows=clipped, now=now))
        return result
    with connection.cursor() as cursor:
        # This connection runs no statement while its shares do: a server that
        # ends sessions idle in a transaction would end it, and free the lock
        # while they still write.
        cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', true)")
    with ThreadPoolExecutor(max_workers=len(partitions)) as pool:
        shares = [pool.submit(_recompute_partition, part, now) for part in partitions]
        outcomes = [share.exception() or share.result() for share in shares]
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        result.add(outcome)
    return result


# --- services ------------------------------------------------------------------


def daily_usage_recompute_wait() -> None:
    """Wait for a running recompute, and keep new ones off until this transaction ends.

    A tenant's delete takes this first: a recompute that read the tenant's call
    logs before the delete would otherwise write its DailyUsage rows after it,
    rows the delete never saw and that no foreign key refuses. SQLite lets one
    transaction write at a time.
    """
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])


def daily_usage_recompute_connections(workers: int) -> int:
    """How many connections a recompute started here shares its days among (1: this one).

    Only on PostgreSQL, and outside a caller's transaction (`_recompute`).
    """
    if connection.vendor != "postgresql" or not connection.get_autocommit():
        return 1
    return workers


def daily_usage_recompute(
    *,
    first_day: date,
    last_day: date,
    tenant: Tenant | None = None,
    now: datetime | None = None,
    workers: int | None = None,
) -> RecomputeResult:
    """Recompute DailyUsage for local days first_day..last_day (inclusive).

    For one tenant, or for every tenant (each in its own time zone). Days older
    than the call-log retention are left as they are. On PostgreSQL the days
    are shared among `workers` connections (default USAGE_AGGREGATION_WORKERS;
    see `_recompute`).
    """
    if first_day > last_day:
        raise UsageRangeError(
            f"The first day ({first_day}) is after the last day ({last_day}); swap them."
        )
    now = now or timezone.now()
    with _exclusive():
        if tenant is not None:
            windows = [DayWindow(tenant.timezone, first_day, last_day, (tenant.pk,))]
        else:
            windows = [DayWindow(name, first_day, last_day) for name in tenant_timezones()]
        if workers is None:
            workers = settings.USAGE_AGGREGATION_WORKERS
        return _recompute(windows=windows, now=now, workers=workers)


# Days per transaction when a tenant's whole history is recomputed: the
# periodic aggregation waits for at most one chunk.
_HISTORY_CHUNK_DAYS = 31


def daily_usage_recount_request(*, tenant: Tenant, now: datetime | None = None) -> None:
    """Record that the tenant's days must be recounted in its (new) time zone.

    Call it in the transaction that changes the zone: the request is then
    stored exactly when the change is, and `daily_usage_recount_pending`
    carries it out even if the recount queued on commit never runs.
    """
    DailyUsageRecount.objects.update_or_create(
        tenant=tenant,
        defaults={
            "token": uuid.uuid4(),
            "requested_at": now or timezone.now(),
            "recounted_from": None,
        },
    )


def daily_usage_recompute_tenant_history(
    *, tenant: Tenant, now: datetime | None = None
) -> RecomputeResult:
    """Recompute every day of the tenant's usage in its current time zone.

    Stored rows count the days of the zone the tenant had when they were
    computed. After a change of time zone the periodic run recomputes only
    the recent days in the new zone, and their hours would overlap (or miss)
    the hours of the older rows next to them: every day that still has call
    logs is recomputed, newest first, so the days of one zone follow each
    other again. Days past the call-log retention keep the old zone's days.

    A pending recount request (`daily_usage_recount_request`) records how far
    the recount got, so one that stopped part way resumes where it stopped,
    and is removed at the end unless the zone changed again meanwhile.
    """
    now = now or timezone.now()
    request = DailyUsageRecount.objects.filter(tenant=tenant).first()
    # The zone as stored with the request (a caller's tenant may predate it).
    tenant.refresh_from_db(fields=["timezone"])
    tz = zone(tenant.timezone)
    stored = DailyUsage.objects.filter(tenant=tenant).aggregate(first=Min("day"), last=Max("day"))
    logged = CallLog.objects.filter(tenant=tenant).aggregate(first=Min("created_at"))["first"]
    firsts = [day for day in (stored["first"], logged and local_date(logged, tz)) if day]
    result = RecomputeResult()
    if firsts:
        first_day = min(firsts)
        end = max(day for day in (stored["last"], local_date(now, tz)) if day)
        if request is not None and request.recounted_from is not None:
            end = min(end, request.recounted_from - timedelta(days=1))
        while end >= first_day:
            start = max(first_day, end - timedelta(days=_HISTORY_CHUNK_DAYS - 1))
            result.add(daily_usage_recompute(first_day=start, last_day=end, tenant=tenant, now=now))
            if request is not None:
                DailyUsageRecount.objects.filter(tenant=tenant, token=request.token).update(
                    recounted_from=start
                )
            end = start - timedelta(days=1)
    if request is not None:
        DailyUsageRecount.objects.filter(tenant=tenant, token=request.token).delete()
    return result


def daily_usage_recount_pending(*, now: datetime | None = None) -> RecomputeResult:
    """Finish every recount of a tenant's days that a change of time zone requested.

    The recount queued when the zone changed normally leaves nothing to do;
    this one catches a recount that was never queued or stopped part way.
    """
    result = RecomputeResult()
    for request in DailyUsageRecount.objects.select_related("tenant").order_by("requested_at"):
        result.add(daily_usage_recompute_tenant_history(tenant=request.tenant, now=now))
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

        windows = []
        for timezone_name in tenant_timezones():
            tz = zone(timezone_name)
            recent_first = local_date(recent_start, tz)
            windows.append(DayWindow(timezone_name, recent_first, local_date(now, tz)))
            rows = late_by_zone.get(timezone_name)
            if rows:
                late_last = min(
                    local_date(max(r["last"] for r in rows), tz), recent_first - timedelta(days=1)
                )
                late_first = local_date(min(r["first"] for r in rows), tz)
                if late_first <= late_last:
                    windows.append(
                        DayWindow(
                            timezone_name,
                            late_first,
                            late_last,
                            tuple(r["tenant_id"] for r in rows),
                        )
                    )
        result = _recompute(windows=windows, now=now)
        state.last_call_log_id = newest_id
        state.last_run_at = now
        state.save(update_fields=["last_call_log_id", "last_run_at"])
    return result


def daily_usage_roll_up_unscheduled() -> bool:
    """Without a beat, roll up now what the beat would have; False when a beat runs.

    With no broker (the embedded defaults, USAGE_ROLL_UP_ON_READ) nothing runs
    on a schedule, so readers of DailyUsage call this first: the call logs this
    process still holds are written, then the periodic aggregation and any
    unfinished time-zone recount run. Otherwise it does nothing: the beat keeps
    DailyUsage at most one aggregation interval behind.
    """
    if not settings.USAGE_ROLL_UP_ON_READ:
        return False
    from .bookkeeping import bookkeeping_flush

    bookkeeping_flush()
    daily_usage_recompute_recent()
    daily_usage_recount_pending()
    return True
