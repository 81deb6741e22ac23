"""Live budget counters: Redis (one Lua call per reservation) or database rows under lock.

Per budget period a counter holds the *settled* spend (rebuilt from CallLog
when cold) and the outstanding *reservations*, each with an expiry so a
crashed worker cannot hold budget for ever. Amounts are integer nano-dollars
in Redis and Decimals in the database.

- Redis: per (budget, definition, period) a settled value, a hash and a sorted
  set of reservations and their total. The reserve script drops lapsed
  reservations, checks every blocking budget and reserves on all of them, or on
  none, atomically. A settled value expires after
  USAGE_BUDGET_COUNTER_REBUILD_SECONDS and is rebuilt from CallLog, which
  bounds any drift.
- Database (no Redis): BudgetCounter rows locked with SELECT ... FOR UPDATE in
  budget order (atomic across processes on PostgreSQL) and BudgetHold rows for
  reservations; on SQLite, whose transactions hold the write lock from their
  start (config/settings/base.py), a process lock serialises the gate as well.
  A reservation finding a settled value read from CallLog
  USAGE_BUDGET_COUNTER_REBUILD_SECONDS ago or more reads it again, under the
  lock, leaving out the calls whose reservations are still held.

Both remember the reservations settled lately (_SETTLED_KEEP_SECONDS): a
settlement sent again, because the reply to the first was lost, counts its
cost once.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, Sum
from redis.exceptions import RedisError

from llm_providers.redis_scripts import ThreadConnection

from .aggregation import call_logs_purged_before
from .locking import rows_key_share
from .models import Budget, BudgetCounter, BudgetHold, CallLog, DailyUsage
from .money import nano_to_usd, usd_to_nano_and_pico
from .periods import local_date, local_midnight, zone
from .selectors import budget_scope_filter


class BudgetBackendError(Exception):
    """The counter store failed (e.g. Redis did not answer)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A blocking budget that has no room: the reservation entry and its current spend."""

    entry: object
    spend_usd: Decimal


def settled_from_call_logs(entry, *, leave_out: Q | None = None) -> Decimal:
    """The settled cost of a budget period, from CallLog (the cold-counter rebuild).

    Days whose call logs the retention purge has reached count their DailyUsage
    instead: a monthly budget under a retention shorter than a month would
    otherwise forget the spend of its first days, and let calls through.
    The CallLog rows matching `leave_out` are not counted.
    """
    budget, period = entry.budget, entry.period
    scope = budget_scope_filter(budget)
    start = period.start
    total = Decimal(0)
    purged_before = call_logs_purged_before()
    if purged_before is not None and purged_before > period.start:
        # The whole local day the purge stopped in: its DailyUsage was computed
        # before the purge and is never recomputed after it.
        tz = zone(period.timezone_name)
        kept_last = min(local_date(purged_before, tz), period.last_day)
        total += (
            DailyUsage.objects.filter(
                tenant_id=budget.tenant_id, day__gte=period.first_day, day__lte=kept_last
            )
            .filter(scope)
            .aggregate(total=Sum("cost_usd"))["total"]
            or 0
        )
        start = min(local_midnight(kept_last + timedelta(days=1), tz), period.end)
    rows = CallLog.objects.filter(
        tenant_id=budget.tenant_id, created_at__gte=start, created_at__lt=period.end
    ).filter(scope)
    if leave_out is None:
        return total + (rows.aggregate(total=Sum("cost_usd"))["total"] or 0)
    # One statement, so one snapshot: a row committed meanwhile is in both sums or in neither.
    sums = rows.aggregate(total=Sum("cost_usd"), left_out=Sum("cost_usd", filter=leave_out))
    return total + (sums["total"] or 0) - (sums["left_out"] or 0)


# --- Redis ---------------------------------------------------------------------

# Per (budget, definition, period): a hash with the settled spend "s" in whole
# nano-dollars and "f", the pico-dollars beyond them (0-999: costs finer than
# a nano-dollar add up exactly), the time "d" (ms) until which "s" is trusted,
# the reserved total "t" and one field "r:<id>" per reservation; and a sorted
# set of reservation ids by expiry (ms). A refusal counts a remainder "f" as
# one more nano-dollar, so the spend it compares is never below the real one.
#
# A cold counter is rebuilt in three steps: the reserve script finds it cold
# and marks the rebuild ("b": when it began, "p" and "q": nano- and
# pico-dollars settled since, 0); the caller sums CallLog; the next reserve
# installs "s" and "f" = sum + "p" and "q". A call
# settling in between may or may not be in the sum (its row was written
# before its settle, but perhaps after the sum began), so it is added to "p"
# either way: the rebuilt value can count such a call twice until the next
# rebuild, never miss it. A mark older than _REBUILD_MARK_STALE_MS (a caller
# died while summing) is started again.
#
# Reserve. KEYS: hash, zset per budget. ARGV: now, expiry, reservation id, n,
# amount, rebuild deadline, stale mark age; then per budget: limit ('-1':
# alert-only), rebuilt settled value ('' unless rebuilt) and its pico-dollars,
# key TTL (s).
# Replies {1} reserved, {0, i...} counters i are cold, {2, i, spend} budget i refuses.
# Amounts reach Redis as the strings they arrived as: Lua prints large numbers
# in exponent form, which HINCRBY refuses.
_RESERVE_LUA = """
local now, rid, n = tonumber(ARGV[1]), ARGV[3], tonumber(ARGV[4])
local settled, reserved, cold = {}, {}, {}
for i = 1, n do
  local h, a = KEYS[2 * i - 1], 4 + 4 * i
  local s = redis.call('HMGET', h, 's', 'd', 'b', 'p', 't', 'f', 'q')
  if s[1] and tonumber(s[2]) > now then
    settled[i] = tonumber(s[1]) + (tonumber(s[6] or '0') > 0 and 1 or 0)
    reserved[i] = tonumber(s[5] or '0')
  elseif ARGV[a + 1] ~= '' and s[3] then
    local f = tonumber(ARGV[a + 2]) + tonumber(s[7] or '0')
    redis.call('HSET', h, 's', ARGV[a + 1], 'd', ARGV[6], 'f', f % 1000)
    redis.call('HINCRBY', h, 's', s[4] or '0')
    redis.call('HINCRBY', h, 's', math.floor(f / 1000))
    redis.call('HDEL', h, 'b', 'p', 'q')
    settled[i] = tonumber(redis.call('HGET', h, 's')) + (f % 1000 > 0 and 1 or 0)
    reserved[i] = tonumber(s[5] or '0')
  else
    if not s[3] or tonumber(s[3]) + tonumber(ARGV[7]) < now then
      redis.call('HSET', h, 'b', ARGV[1], 'p', '0', 'q', '0')
      redis.call('EXPIRE', h, ARGV[a + 3])
    end
    cold[#cold + 1] = i
  end
end
if #cold > 0 then
  table.insert(cold, 1, 0)
  return cold
end
for i = 1, n do
  local h, z, a = KEYS[2 * i - 1], KEYS[2 * i], 4 + 4 * i
  local lapsed = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 500)
  for _, id in ipairs(lapsed) do
    local held = redis.call('HGET', h, 'r:' .. id)
    if held then
      redis.call('HDEL', h, 'r:' .. id)
      if held ~= '0' then
        redis.call('HINCRBY', h, 't', '-' .. held)
        reserved[i] = reserved[i] - tonumber(held)
      end
    end
  end
  if #lapsed > 0 then redis.call('ZREM', z, unpack(lapsed)) end
  if ARGV[a] ~= '-1' then
    local spend = settled[i] + reserved[i]
    local limit = tonumber(ARGV[a])
    if spend >= limit or spend + tonumber(ARGV[5]) > limit then
      return {2, i, spend}
    end
  end
end
for i = 1, n do
  local h, z, a = KEYS[2 * i - 1], KEYS[2 * i], 4 + 4 * i
  redis.call('HSET', h, 'r:' .. rid, ARGV[5])
  redis.call('HINCRBY', h, 't', ARGV[5])
  redis.call('ZADD', z, ARGV[2], rid)
  redis.call('EXPIRE', h, ARGV[a + 3])
  redis.call('EXPIRE', z, ARGV[a + 3])
end
return {1}
"""

# Settle. KEYS per budget: hash, zset, and a sorted set of the reservation ids
# settled lately, by when they are forgotten (ms); ARGV: reservation id, n,
# now, cost in whole nano-dollars, forget at (ms), its key TTL (s), the cost's
# pico-dollars beyond them (both '0': no cost). The cost is added to
# a settled value still trusted, or to the costs settled during a rebuild;
# otherwise (cold, no rebuild begun) the next rebuild reads it from CallLog,
# where the call's row already is. A settlement whose reply was lost is sent
# again by the after-call writer: an id settled already adds nothing, whether
# its reservation is still held, has lapsed, or its counter was rebuilt since.
_SETTLE_LUA = """
local rid, n, now, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local pico = tonumber(ARGV[7])
for i = 1, n do
  local h, z, x = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local held = redis.call('HGET', h, 'r:' .. rid)
  if held then
    redis.call('HDEL', h, 'r:' .. rid)
    redis.call('ZREM', z, rid)
    if held ~= '0' then redis.call('HINCRBY', h, 't', '-' .. held) end
  end
  if cost ~= '0' or pico > 0 then
    redis.call('ZREMRANGEBYSCORE', x, '-inf', ARGV[3])
    local first = redis.call('ZADD', x, 'NX', ARGV[5], rid) == 1
    redis.call('EXPIRE', x, ARGV[6])
    local v = redis.call('HMGET', h, 'd', 'b')
    if not first then
      -- settled before: its cost is counted already
    elseif v[1] and tonumber(v[1]) > now then
      redis.call('HINCRBY', h, 's', cost)
      if pico > 0 and redis.call('HINCRBY', h, 'f', pico) >= 1000 then
        redis.call('HINCRBY', h, 'f', -1000)
        redis.call('HINCRBY', h, 's', 1)
      end
    elseif v[2] then
      redis.call('HINCRBY', h, 'p', cost)
      redis.call('HINCRBY', h, 'q', pico)
    end
  end
end
return 1
"""

# Keys outlive their period by an hour (late settles) and their last reservation.
_KEY_GRACE_SECONDS = 3600
# A rebuild not installed after this long was abandoned (its caller died).
_REBUILD_MARK_STALE_MS = 60_000
# How long a settled reservation id is remembered: far longer than the
# after-call writer goes on retrying one settlement (usage.bookkeeping).
_SETTLED_KEEP_SECONDS = 600


def _redis_keys(entry) -> tuple[str, str]:
    return _redis_keys_of(entry.budget, entry.period)


def _redis_keys_of(budget, period) -> tuple[str, str]:
    base = f"llmpl:budget:{budget.id}:{budget.definition}:{period.key}"
    return f"{base}:h", f"{base}:z"


def _redis_settled_key(entry) -> str:
    budget, period = entry.budget, entry.period
    return f"llmpl:budget:{budget.id}:{budget.definition}:{period.key}:x"


class RedisCounters:
    name = "redis"

    def __init__(self):
        self._lock = threading.Lock()
        self._url = None
        self._client = None
        self._reserve = None
        self._settle = None
        # The scripts run on a connection of each thread's own (redis_scripts).
        self._own = ThreadConnection()

    def _scripts(self):
        url = settings.USAGE_BUDGET_REDIS_URL
        if url != self._url:
            if not url:
                raise BudgetBackendError(
                    "USAGE_BUDGET_BACKEND is 'redis' but USAGE_BUDGET_REDIS_URL/REDIS_URL is empty"
                )
            import redis

            from llm_providers.redis_outage import fail_fast_client

            with self._lock:
                # 1 s timeouts, as for the cache: the completion path must not hang on Redis;
                # after a failure, uses fail at once for CACHE_OUTAGE_RETRY_SECONDS.
                client = fail_fast_client(
                    redis.Redis.from_url(
                        url, socket_timeout=1, socket_connect_timeout=1, health_check_interval=30
                    )
                )
                self._reserve = client.register_script(_RESERVE_LUA)
                self._settle = client.register_script(_SETTLE_LUA)
                self._client, self._url = client, url
        return self._reserve, self._settle

    def _call(self, script, keys, args):
        try:
            return self._own.run(self._client, script, keys, args)
        except RedisError as exc:
            raise BudgetBackendError(f"Redis error: {type(exc).__name__}") from exc

    def reserve(self, *, reservation, now: datetime) -> Refusal | None:
        reserve, _ = self._scripts()
        now_ms = int(now.timestamp() * 1000)
        hold_ttl = settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS
        entries = reservation.entries
        keys: list[str] = []
        for entry in entries:
            keys.extend(_redis_keys(entry))
        head = [
            now_ms,
            now_ms + hold_ttl * 1000,
            reservation.reservation_id,
            len(entries),
            reservation.amount_nano,
            now_ms + settings.USAGE_BUDGET_COUNTER_REBUILD_SECONDS * 1000,
            _REBUILD_MARK_STALE_MS,
        ]
        fixed = [
            (
                entry.budget.limit_nano if entry.budget.blocking else -1,
                max(hold_ttl, int((entry.period.end - now).total_seconds())) + _KEY_GRACE_SECONDS,
            )
            for entry in entries
        ]
        bases: dict[int, tuple[int, int]] = {}
        # A counter found cold is rebuilt from CallLog and installed by the next
        # call; three rounds cover counters going stale meanwhile.
        for _ in range(3):
            args = list(head)
            for index, (limit, ttl) in enumerate(fixed, start=1):
                nano, pico = bases.get(index, ("", 0))
                args += [limit, nano, pico, ttl]
            reply = self._call(reserve, keys, args)
            if reply[0] == 1:
                return None
            if reply[0] == 2:
                entry = entries[int(reply[1]) - 1]
                return Refusal(entry=entry, spend_usd=nano_to_usd(int(reply[2])))
            for index in reply[1:]:
                bases[int(index)] = usd_to_nano_and_pico(
                    settled_from_call_logs(entries[int(index) - 1])
                )
        raise BudgetBackendError("budget counters kept going stale while being rebuilt")

    def forget(self, *, definition, period) -> None:
        self._scripts()
        try:
            self._client.delete(*_redis_keys_of(definition, period))
        except RedisError as exc:
            raise BudgetBackendError(f"Redis error: {type(exc).__name__}") from exc

    def settle(self, *, reservation, cost_usd) -> None:
        _, settle = self._scripts()
        nano, pico = usd_to_nano_and_pico(cost_usd)
        keys: list[str] = []
        for entry in reservation.entries:
            keys.extend((*_redis_keys(entry), _redis_settled_key(entry)))
        now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
        self._call(
            settle,
            keys,
            [
                reservation.reservation_id,
                len(reservation.entries),
                now_ms,
                nano,
                now_ms + _SETTLED_KEEP_SECONDS * 1000,
                _SETTLED_KEEP_SECONDS,
                pico,
            ],
        )


# --- database ------------------------------------------------------------------

_sqlite_gate = threading.Lock()


def _serialised():
    # SQLite has no row locks: one process lock makes the gate atomic in the process.
    return _sqlite_gate if connection.vendor == "sqlite" else nullcontext()


def _counter_key(entry) -> dict:
    return {
        "budget_id": entry.budget.id,
        "period_key": entry.period.key,
        "definition": entry.budget.definition,
    }


# A settled reservation leaves a hold of nothing under this prefix (settle).
_SETTLED_MARK = "settled:"


def _calls_in_flight(counter: BudgetCounter) -> Q | None:
    """The CallLog rows of the calls that still hold a reservation on `counter`.

    Their settlements are still to come (a row is written before its
    settlement, usage.bookkeeping) and will add their cost. A reservation id
    starts with its request's id; a request's rows count from when it reserved
    (expiry less the TTL), so an earlier fallback target's rows, settled with
    their own reservation, are not taken for this one's. Holds change only
    under the counter's lock, which the caller holds.
    """
    ttl = timedelta(seconds=settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS)
    reserved_at: dict[uuid.UUID, datetime] = {}
    held = (
        BudgetHold.objects.filter(counter=counter)
        .exclude(reservation_id__startswith=_SETTLED_MARK)
        .values_list("reservation_id", "expires_at")
    )
    for reservation_id, expires_at in held:
        try:
            request_id = uuid.UUID(reservation_id.rsplit(".", 1)[0])
        except ValueError:
            continue
        at = expires_at - ttl
        reserved_at[request_id] = min(at, reserved_at.get(request_id, at))
    if not reserved_at:
        return None
    # The IN list first: most rows of the period fail it at once.
    since = Q()
    for request_id, at in reserved_at.items():
        since |= Q(request_id=request_id, created_at__gte=at)
    return Q(request_id__in=list(reserved_at)) & since


def _budgets_kept(entries) -> list:
    """The entries whose budget still exists, kept from being deleted until
    this transaction ends.

    A budget's delete (its own, its provider config's or its tenant's) locks
    it before collecting its counters and their holds: without this lock, a
    counter or hold written between that collection and the delete's commit
    would fail the delete. With it, the delete waits for this transaction and
    takes its rows along, or this waits and leaves the gone budget out.
    """
    kept = rows_key_share(Budget, [entry.budget.id for entry in entries])
    return [entry for entry in entries if entry.budget.id in kept]


class DatabaseCounters:
    name = "database"

    def _counter_locked(self, entry, now: datetime) -> BudgetCounter:
        key = _counter_key(entry)
        counter = BudgetCounter.objects.select_for_update().filter(**key).first()
        if counter is not None:
            return counter
        settled = settled_from_call_logs(entry)
        try:
            with transaction.atomic():
                BudgetCounter.objects.create(
                    **key, period_end=entry.period.end, settled_usd=settled, settled_read_at=now
                )
        except IntegrityError:
            pass  # another process created it first; use theirs
        return BudgetCounter.objects.select_for_update().get(**key)

    def _rebuild(self, entry, counter: BudgetCounter, now: datetime) -> None:
        """Read the settled value from CallLog again: a process killed between a
        call's log row and its settlement left that cost out of the counter.

        The row lock keeps settlements out meanwhile: one that landed is in
        CallLog, one still to come is left out here and adds its cost then.
        Holds are rows of their own, untouched; so are the marks of settled
        reservations, and a settlement sent again still counts once.
        """
        settled = settled_from_call_logs(entry, leave_out=_calls_in_flight(counter))
        BudgetCounter.objects.filter(pk=counter.pk).update(settled_usd=settled, settled_read_at=now)
        counter.settled_usd, counter.settled_read_at = settled, now

    def reserve(self, *, reservation, now: datetime) -> Refusal | None:
        amount = reservation.amount_usd
        expires_at = now + timedelta(seconds=settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS)
        ordered = sorted(reservation.entries, key=lambda e: e.budget.id)
        refusal = None
        with _serialised(), transaction.atomic():
            # A budget deleted since the gate read it gates nothing; one still
            # there is kept until the counter's rows are in (_budgets_kept).
            ordered = _budgets_kept(ordered)
            counters = [self._counter_locked(entry, now) for entry in ordered]
            BudgetHold.objects.filter(counter__in=counters, expires_at__lte=now).delete()
            read_before = now - timedelta(seconds=settings.USAGE_BUDGET_COUNTER_REBUILD_SECONDS)
            for entry, counter in zip(ordered, counters, strict=True):
                if counter.settled_read_at <= read_before:
                    self._rebuild(entry, counter, now)
            held = dict(
                BudgetHold.objects.filter(counter__in=counters)
                .order_by()
                .values_list("counter_id")
                .annotate(total=Sum("amount_usd"))
            )
            for entry, counter in zip(ordered, counters, strict=True):
                if not entry.budget.blocking:
                    continue
                spend = counter.settled_usd + (held.get(counter.pk) or Decimal(0))
                if spend >= entry.budget.limit_usd or spend + amount > entry.budget.limit_usd:
                    refusal = Refusal(entry=entry, spend_usd=spend)
                    break
            if refusal is None:
                BudgetHold.objects.bulk_create(
                    BudgetHold(
                        counter=counter,
                        reservation_id=reservation.reservation_id,
                        amount_usd=amount,
                        expires_at=expires_at,
                    )
                    for counter in counters
                )
        return refusal

    def forget(self, *, definition, period) -> None:
        BudgetCounter.objects.filter(
            budget_id=definition.id, definition=definition.definition
        ).delete()

    def settle(self, *, reservation, cost_usd) -> None:
        cost = Decimal(cost_usd or 0)
        with _serialised(), transaction.atomic():
            entries = _budgets_kept(reservation.entries)
            if not entries:
                return  # its budgets were deleted, and their counters with them
            match = Q()
            for entry in entries:
                match |= Q(**_counter_key(entry))
            counter_ids = list(
                BudgetCounter.objects.select_for_update()
                .filter(match)
                .order_by("budget_id")
                .values_list("pk", flat=True)
            )
            BudgetHold.objects.filter(
                counter_id__in=counter_ids, reservation_id=reservation.reservation_id
            ).delete()
            if not cost:
                return
            # A settlement retried after its commit's reply was lost finds its
            # mark: a hold of nothing, forgotten like a lapsed reservation.
            mark = f"{_SETTLED_MARK}{reservation.reservation_id}"
            counted = set(
                BudgetHold.objects.filter(
                    counter_id__in=counter_ids, reservation_id=mark
                ).values_list("counter_id", flat=True)
            )
            fresh = [pk for pk in counter_ids if pk not in counted]
            forget_at = datetime.now(tz=UTC) + timedelta(seconds=_SETTLED_KEEP_SECONDS)
            BudgetHold.objects.bulk_create(
                BudgetHold(counter_id=pk, reservation_id=mark, amount_usd=0, expires_at=forget_at)
                for pk in fresh
            )
            BudgetCounter.objects.filter(pk__in=fresh).update(settled_usd=F("settled_usd") + cost)


_backends = {"redis": RedisCounters(), "database": DatabaseCounters()}


def counters_backend(name: str | None = None):
    """The counter store by name, or the configured one (USAGE_BUDGET_BACKEND)."""
    name = name or settings.USAGE_BUDGET_BACKEND
    try:
        return _backends[name]
    except KeyError:
        raise ImproperlyConfigured(
            f"Unknown USAGE_BUDGET_BACKEND {name!r}; use 'redis' or 'database'."
        ) from None
