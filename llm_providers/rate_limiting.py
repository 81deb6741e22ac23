"""Requests-per-minute and tokens-per-minute limits per provider config.

A sliding-window counter: the count of the current one-minute bucket plus the
previous bucket's count weighted by how much of it still lies inside the
last sixty seconds. It needs two numbers per limit, whatever the traffic,
and is exact at bucket boundaries and close in between.

With Redis (django-redis) the check and the increments are one Lua script:
atomic across processes, one round trip, sent on a connection the thread
keeps for it (`redis_scripts`). `rate_limit_send` sends it and returns an
`Admission` whose answer is read later, so the completion service overlaps
it with the budget reservation's round trip; `Admission.undo` gives back
what an admitted request counted when it is not sent after all (its budget
refused it). With another cache backend they run
under a process lock, correct within one process. When the cache cannot be
reached the limit is not enforced (with a warning): the provider enforces its
own limits, and refusing every call for a cache outage would be worse.

A request's tokens are counted at admission as its worst case (input
estimate plus max_tokens); once the provider has said what the call used,
`rate_limit_settle` replaces that count with the real one in the bucket it
went into, so the tpm window reflects the tokens actually used.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from django.core.cache import caches

from .exceptions import ApplicationError
from .redis_scripts import ThreadConnection

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# Buckets outlive two windows so the previous one is still readable.
_BUCKET_TTL_SECONDS = 2 * WINDOW_SECONDS + 5


class RateLimited(ApplicationError):
    """A provider config's own rpm/tpm limit is reached (no provider was called)."""

    code = "rate_limited"
    http_status = 429

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        extra: dict | None = None,
        waiting_helps: bool = True,
    ):
        if waiting_helps:
            extra = {"retry_after_seconds": math.ceil(retry_after), **(extra or {})}
        else:
            # The request alone is over the limit: no wait admits it, so the
            # caller is not told to retry (400, no Retry-After) but what to change.
            self.http_status = 400
        super().__init__(message, extra=extra)
        self.retry_after = retry_after
        self.waiting_helps = waiting_helps


@dataclass(frozen=True, slots=True)
class _Window:
    bucket: int
    previous_weight: float
    seconds_left: float


def _window(now: float) -> _Window:
    bucket = int(now // WINDOW_SECONDS)
    elapsed = now - bucket * WINDOW_SECONDS
    return _Window(bucket, 1 - elapsed / WINDOW_SECONDS, WINDOW_SECONDS - elapsed)


def _retry_after(limit: int, previous: int, current: int, amount: int, window: _Window) -> float:
    """Seconds until `amount` more fits, assuming no other traffic meanwhile."""
    if current + amount > limit:
        # Not even the current bucket alone has room: wait for the next bucket,
        # where this bucket's count becomes the (decaying) previous one.
        if amount > limit:
            return float(WINDOW_SECONDS)
        needed_weight = (limit - amount) / current if current else 1.0
        return window.seconds_left + WINDOW_SECONDS * (1 - needed_weight)
    if not previous:
        return 1.0
    needed_weight = (limit - current - amount) / previous
    return max(WINDOW_SECONDS * (window.previous_weight - needed_weight), 1.0)


_LUA_ADMIT = """
local w = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local rpm_limit = tonumber(ARGV[4])
local tpm_limit = tonumber(ARGV[5])
local rp = tonumber(redis.call('GET', KEYS[1]) or '0')
local rc = tonumber(redis.call('GET', KEYS[2]) or '0')
local tp = tonumber(redis.call('GET', KEYS[3]) or '0')
local tc = tonumber(redis.call('GET', KEYS[4]) or '0')
local rpm_over = rpm_limit > 0 and rp * w + rc + 1 > rpm_limit
local tpm_over = tpm_limit > 0 and tp * w + tc + tokens > tpm_limit
if rpm_over or tpm_over then
  return {rpm_over and 1 or 0, tpm_over and 1 or 0, rp, rc, tp, tc}
end
if rpm_limit > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ttl)
end
if tpm_limit > 0 then
  redis.call('INCRBY', KEYS[4], tokens)
  redis.call('EXPIRE', KEYS[4], ttl)
end
return {0, 0, 0, 0, 0, 0}
"""

# Add a signed correction to each bucket that still exists (an expired one
# no longer counts), never taking it below zero; INCRBY keeps its expiry.
_LUA_SETTLE = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local value = redis.call('INCRBY', key, tonumber(ARGV[i]))
    if value < 0 then
      redis.call('INCRBY', key, -value)
    end
  end
end
return 1
"""

_local_lock = threading.Lock()
# The registered script per Redis client (a settings change brings a new client).
_scripts: dict[tuple[int, str], object] = {}
# The scripts run on a connection of each thread's own, not through the pool.
_own = ThreadConnection()


def _script(client, source: str):
    script = _scripts.get((id(client), source))
    if script is None:
        script = _scripts[(id(client), source)] = client.register_script(source)
    return script


def _redis_run(backend, keys: list[str], args: list, source: str = _LUA_ADMIT):
    # The client get_redis_connection("default") gives, from the cache at hand.
    client = backend.client.get_client(write=True)
    return _own.run(client, _script(client, source), keys, args)


def _uses_redis(backend) -> bool:
    from django_redis.cache import RedisCache

    return isinstance(backend, RedisCache)


def _keys(config_id, window: _Window) -> list[str]:
    names = (
        f"rl:{config_id}:rpm:{window.bucket - 1}",
        f"rl:{config_id}:rpm:{window.bucket}",
        f"rl:{config_id}:tpm:{window.bucket - 1}",
        f"rl:{config_id}:tpm:{window.bucket}",
    )
    return list(names)


# Both admissions answer (rpm over, tpm over, rpm previous, rpm current,
# tpm previous, tpm current); the counts are those seen when refused. The
# Redis one is sent at once and read later: it returns what reads the answer.
def _admit_redis(backend, keys, window, tokens, rpm_limit, tpm_limit):
    client = backend.client.get_client(write=True)
    sent = _own.send(
        client,
        _script(client, _LUA_ADMIT),
        [backend.make_key(k) for k in keys],
        [repr(window.previous_weight), tokens, _BUCKET_TTL_SECONDS, rpm_limit, tpm_limit],
    )
    return lambda: tuple(int(value) for value in sent.reply())


def _admit_local(backend, keys, window, tokens, rpm_limit, tpm_limit):
    with _local_lock:
        found = backend.get_many(keys)
        rp, rc, tp, tc = (int(found.get(k) or 0) for k in keys)
        rpm_over = bool(rpm_limit) and rp * window.previous_weight + rc + 1 > rpm_limit
        tpm_over = bool(tpm_limit) and tp * window.previous_weight + tc + tokens > tpm_limit
        if rpm_over or tpm_over:
            outcome = (int(rpm_over), int(tpm_over), rp, rc, tp, tc)
        else:
            updates = {}
            if rpm_limit:
                updates[keys[1]] = rc + 1
            if tpm_limit:
                updates[keys[3]] = tc + tokens
            backend.set_many(updates, _BUCKET_TTL_SECONDS)
            outcome = (0, 0, 0, 0, 0, 0)
    return lambda: outcome


def _corrected(provider_config_id, corrections: dict[str, int], what: str) -> None:
    """Add each signed correction to its bucket while the bucket still counts;
    a cache failure leaves the counts as they are (with a warning)."""
    try:
        backend = caches["default"]
        if _uses_redis(backend):
            _redis_run(
                backend,
                [backend.make_key(key) for key in corrections],
                list(corrections.values()),
                _LUA_SETTLE,
            )
        else:
            with _local_lock:
                for key, delta in corrections.items():
                    value = backend.get(key)
                    if value is not None:
                        backend.set(key, max(int(value) + delta, 0), _BUCKET_TTL_SECONDS)
    except Exception as exc:  # noqa: BLE001 - any cache failure: the counts stay
        logger.warning(
            "%s of provider config %s not corrected in its rate limit: cache unavailable (%s)",
            what,
            provider_config_id,
            type(exc).__name__,
        )


@dataclass(frozen=True, slots=True)
class TokensCounted:
    """Where an admitted request's tokens were counted, to settle them later."""

    provider_config_id: object
    key: str
    tokens: int


class Admission:
    """A request's admission by a provider config's rate limit, sent and not yet read.

    `rate_limit_send` sends it; `result` reads whether it was admitted, so
    another round trip (the budget reservation) can run in between; `undo`
    gives back what it counted when the request is not sent after all.
    """

    def __init__(self, provider_config_id, rpm_limit, tpm_limit, tokens, window, keys, read):
        self.provider_config_id = provider_config_id
        self.rpm_limit, self.tpm_limit, self.tokens = rpm_limit, tpm_limit, tokens
        self.window, self.keys = window, keys
        self._read = read
        self._answer: tuple | None = None
        self._undone = False

    def _outcome(self) -> tuple | None:
        """The admission's answer, read once; None when the limit is not enforced."""
        if self._read is not None:
            read, self._read = self._read, None
            try:
                self._answer = read()
            except Exception as exc:  # noqa: BLE001 - any cache failure: not enforced
                _not_enforced(self.provider_config_id, exc)
        return self._answer

    def result(self) -> TokensCounted | None:
        """Where the tokens were counted when a tpm limit counted them; raises
        RateLimited when the request was refused (and counted nothing)."""
        outcome = self._outcome()
        if outcome is None:
            return None
        if outcome[0] or outcome[1]:
            raise _refusal(self, *outcome)
        if not self.tpm_limit:
            return None
        return TokensCounted(self.provider_config_id, self.keys[3], self.tokens)

    def undo(self) -> None:
        """Give back what the request counted, if it was admitted."""
        outcome = self._outcome()
        if outcome is None or outcome[0] or outcome[1] or self._undone:
            return
        self._undone = True
        corrections = {}
        if self.rpm_limit:
            corrections[self.keys[1]] = -1
        if self.tpm_limit:
            corrections[self.keys[3]] = -self.tokens
        _corrected(self.provider_config_id, corrections, "an unsent request")


def _not_enforced(provider_config_id, exc: Exception) -> None:
    logger.warning(
        "rate limit of provider config %s not enforced: cache unavailable (%s)",
        provider_config_id,
        type(exc).__name__,
    )


def _refusal(admission: Admission, rpm_over, tpm_over, rp, rc, tp, tc) -> RateLimited:
    window, tokens = admission.window, admission.tokens
    rpm_limit, tpm_limit = admission.rpm_limit, admission.tpm_limit
    refusals = []
    if rpm_over:
        retry_after = _retry_after(rpm_limit, rp, rc, 1, window)
        unit = "request" if rpm_limit == 1 else "requests"
        refusals.append((rpm_limit, 1, f"{unit} per minute", "rpm", retry_after))
    if tpm_over:
        retry_after = _retry_after(tpm_limit, tp, tc, tokens, window)
        unit = "token" if tpm_limit == 1 else "tokens"
        refusals.append((tpm_limit, tokens, f"{unit} per minute", "tpm", retry_after))
    # Over both limits, the request fits once both admit it: name the later one
    # (or the one it can never fit).
    limit, amount, what, kind, retry_after = max(
        refusals, key=lambda refusal: (refusal[1] > refusal[0], refusal[4])
    )
    if amount > limit:
        # Waiting does not help: the request alone is over the limit.
        message = (
            f"This request counts {amount} tokens (input estimate plus max_tokens), more than "
            f"the provider config's limit of {limit} {what}: lower max_tokens or raise the limit."
        )
    else:
        message = (
            f"The provider config's limit of {limit} {what} is reached; retry in "
            f"{math.ceil(retry_after)} s."
        )
    return RateLimited(
        message,
        retry_after=retry_after,
        extra={"limit": limit, "limit_kind": kind},
        waiting_helps=amount <= limit,
    )


def rate_limit_send(
    *, provider_config_id, rpm_limit: int | None, tpm_limit: int | None, tokens: int
) -> Admission | None:
    """Count one request of `tokens` tokens unless a limit refuses it; the
    answer is read by the returned admission's `result`. None without limits."""
    if not rpm_limit and not tpm_limit:
        return None
    window = _window(time.time())
    keys = _keys(provider_config_id, window)
    # The cache of this thread, looked up once: each lookup through the
    # `cache` proxy costs about as much as the key it makes.
    backend = caches["default"]
    admit = _admit_redis if _uses_redis(backend) else _admit_local
    rpm_limit, tpm_limit = rpm_limit or 0, tpm_limit or 0
    try:
        read = admit(backend, keys, window, tokens, rpm_limit, tpm_limit)
    except Exception as exc:  # noqa: BLE001 - any cache failure: not enforced
        _not_enforced(provider_config_id, exc)
        read = None
    return Admission(provider_config_id, rpm_limit, tpm_limit, tokens, window, keys, read)


def rate_limit_admit(
    *, provider_config_id, rpm_limit: int | None, tpm_limit: int | None, tokens: int
) -> TokensCounted | None:
    """Count one request of `tokens` tokens, or raise RateLimited without counting it.

    Returns where the tokens were counted when a tpm limit counted them.
    """
    admission = rate_limit_send(
        provider_config_id=provider_config_id,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        tokens=tokens,
    )
    return admission.result() if admission is not None else None


def rate_limit_settle(counted: TokensCounted | None, tokens: int) -> None:
    """Replace the tokens counted at admission by the `tokens` the call used.

    A bucket that has expired meanwhile no longer counts and is left alone;
    a cache failure leaves the admission's count (with a warning).
    """
    if counted is None or tokens == counted.tokens:
        return
    _corrected(counted.provider_config_id, {counted.key: tokens - counted.tokens}, "tokens")
