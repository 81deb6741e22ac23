"""Throttling of the API per credential, on the shared Django cache (Redis when configured).

One rate budget per service key (scope `service_key`), per user (`user`)
and, for unauthenticated requests, per client address (`anon`; an IPv6
address counts as its /64 network). Failed
authentication has its own budget per client address (`auth_failure`),
spent before a credential is checked: see `authentication_attempt`. Rates
are `REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`, read on every request so
that a settings change applies at once.

With Redis (django-redis) a credential's history is a sorted set of request
times, and the check and the count are one Lua script: atomic across
processes, so concurrent requests never pass beyond the rate. With another
cache backend DRF's history list is read and written under a process lock,
correct within one process.

When the cache cannot be reached a request is let through unthrottled, with a
warning, as the completion service's own rate limits are: refusing every
request for a cache outage would be worse.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.cache import cache, caches
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from llm_providers.models import ServiceKey

logger = logging.getLogger(__name__)

SCOPE_SERVICE_KEY = "service_key"
SCOPE_USER = "user"
SCOPE_ANON = "anon"
SCOPE_AUTH_FAILURE = "auth_failure"

# Drop the times that left the window; count one more only while the rest are
# below the rate. Answers (1, "0") when counted, else (0, seconds until the
# entry whose leaving lets a request pass leaves); a rate of 0 lets none pass.
_LUA_ALLOW = """
local now = tonumber(ARGV[1])
local duration = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if limit <= 0 then
  return {0, tostring(duration)}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - duration)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(duration))
  return {1, '0'}
end
local passing = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {0, tostring(tonumber(passing[2]) + duration - now)}
"""

_local_lock = threading.Lock()
# The registered script per Redis client (a settings change brings a new client).
_scripts: dict[int, object] = {}


def _uses_redis() -> bool:
    from django_redis.cache import RedisCache

    return isinstance(caches["default"], RedisCache)


def _allow_script():
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_LUA_ALLOW)
    return script


class _SlidingWindowThrottle(SimpleRateThrottle, ABC):
    """A sliding window of requests per scope and identity; 429 with Retry-After beyond it."""

    outage_warning = "API throttle not enforced: cache unavailable (%s)"

    def __init__(self):
        # The scope, hence the rate, is known per request only.
        self.scope = None
        self.rate = None
        self._counted = False

    @abstractmethod
    def _scope_and_ident(self, request) -> tuple[str, str]:
        """The scope whose rate applies to the request, and whom it counts for."""

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_ident(self, request) -> str:
        """The client address, an IPv6 one as its /64 network.

        One IPv6 host is commonly given a whole /64, so counting its addresses
        one by one would give it 2**64 budgets. An IPv4 address seen through
        an IPv6 socket (`::ffff:a.b.c.d`) counts as that IPv4 address.
        """
        return _client_network(super().get_ident(request))

    def allow_request(self, request, view) -> bool:
        self.scope, self._ident = self._scope_and_ident(request)
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            if _uses_redis():
                self._counted = self._allow_request_redis(request, view)
            else:
                with _local_lock:
                    self._counted = super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - any cache failure: not enforced
            logger.warning(self.outage_warning, type(exc).__name__)
            return True
        return self._counted

    def uncount(self) -> None:
        """Take the request this throttle let through out of its history again."""
        if not self._counted:
            return
        self._counted = False
        try:
            if _uses_redis():
                from django_redis import get_redis_connection

                get_redis_connection("default").zrem(cache.make_key(self.key), self._member)
            else:
                with _local_lock:
                    history = self.cache.get(self.key, [])
                    if self.now in history:
                        history.remove(self.now)
                        self.cache.set(self.key, history, self.duration)
        except Exception as exc:  # noqa: BLE001 - any cache failure: the entry lapses
            logger.warning(self.outage_warning, type(exc).__name__)

    def _allow_request_redis(self, request, view) -> bool:
        self.key = self.get_cache_key(request, view)
        self.now = self.timer()
        # A member unique to this request: two requests in the same instant both count.
        self._member = f"{self.now!r}:{secrets.token_hex(8)}"
        allowed, wait = _allow_script()(
            keys=[cache.make_key(self.key)],
            args=[repr(self.now), self.duration, self.num_requests, self._member],
        )
        self._redis_wait = max(0.0, float(wait))
        return bool(int(allowed))

    def wait(self) -> float:
        """Seconds until a request passes again; never None, so every 429 has Retry-After.

        DRF gives up (None) when the history already holds more requests than
        the rate allows, which happens once the rate is lowered (it is read on
        every request) or when processes race. A request passes again once the
        history is below the rate, i.e. when its `num_requests`-th newest entry
        leaves the window.

        Never more than the window: a concurrent request that read the time
        after this one and was admitted before it holds an entry newer than
        this request's time, but that entry leaves the window at most its
        duration after this check, which came after its admission.
        """
        return min(float(self.duration), self._wait_unbounded())

    def _wait_unbounded(self) -> float:
        redis_wait = getattr(self, "_redis_wait", None)
        if redis_wait is not None:
            return redis_wait
        if self.num_requests <= 0:
            return float(self.duration)
        waited = super().wait()
        if waited is not None:
            return waited
        return max(0.0, self.duration - (self.now - self.history[self.num_requests - 1]))

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self._ident}


def _client_network(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class CredentialRateThrottle(_SlidingWindowThrottle):
    """Requests per service key, per user, or (unauthenticated) per client address."""

    def _scope_and_ident(self, request) -> tuple[str, str]:
        if isinstance(request.auth, ServiceKey):
            # The prefix identifies a key without any part of its secret or hash.
            return SCOPE_SERVICE_KEY, request.auth.prefix
        user = request.user
        if user is not None and user.is_authenticated and user.pk is not None:
            return SCOPE_USER, str(user.pk)
        return SCOPE_ANON, self.get_ident(request)


class AuthFailureThrottle(_SlidingWindowThrottle):
    """Failed authentications per client address (the anonymous throttle's address)."""

    outage_warning = "Authentication failure throttle not enforced: cache unavailable (%s)"

    def _scope_and_ident(self, request) -> tuple[str, str]:
        return SCOPE_AUTH_FAILURE, self.get_ident(request)


@contextmanager
def authentication_attempt(
    request,
    *,
    failure: type[BaseException] | tuple[type[BaseException], ...],
    refusal: Callable[[float], BaseException],
    not_a_guess: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Check a presented credential in the block, counting it as failed unless it succeeds.

    The attempt is counted in the client address's `auth_failure` window
    before the credential is checked, in the same atomic step as the check
    against the rate: once the window is full, `refusal(seconds to wait)` is
    raised and the credential is not looked at, so a right one guessed then
    gains nothing, and concurrent attempts never pass beyond the rate. The
    block ending in `failure` leaves the attempt counted; ending otherwise (the
    credential was good, or checking it broke for another reason) takes it
    out again, and so does ending in `not_a_guess`: a refusal of a credential
    that is right but no longer accepted (revoked, expired), which only its
    holder can present. Nothing of the credential is in the count: it is kept
    under the address.
    """
    throttle = AuthFailureThrottle()
    if not throttle.allow_request(request, None):
        raise refusal(throttle.wait())
    try:
        yield
    except not_a_guess:
        throttle.uncount()
        raise
    except failure:
        raise
    except BaseException:
        throttle.uncount()
        raise
    throttle.uncount()
