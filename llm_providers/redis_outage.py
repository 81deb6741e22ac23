"""Fail fast on a Redis that has just failed, instead of paying a timeout per use.

A call uses Redis several times (config versions, response cache lookup and
store, rate limit, budget reservation and settlement, API throttle), and each
use already survives a failure in its own way. A Redis that accepts
connections but does not answer would still cost each use a full socket
timeout. So once a command to a Redis server fails with a connection error or
a timeout, this process does not send it anything for
CACHE_OUTAGE_RETRY_SECONDS (default 5 s): every use in that time raises
`RedisUnavailable`, a redis-py ConnectionError, at once, and takes its usual
failure path. After that time one command is sent again (by one thread; the
others still fail at once until it is answered): an answer, even an error
reply, closes the window; another failure opens it again.

The window is per server (host and port, or socket path), shared by every
client of this process: the django-redis cache (through `ConnectionFactory`,
set as DJANGO_REDIS_CONNECTION_FACTORY), the budget counters' own client
(`fail_fast_client`), and the connections `redis_scripts` makes from their
pools' connection classes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django_redis.pool import ConnectionFactory as DjangoRedisConnectionFactory
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)


class RedisUnavailable(RedisConnectionError):
    """Not sent: this Redis failed moments ago and is not tried again yet."""


@dataclass(slots=True)
class _Outage:
    # Nothing is sent before this (monotonic seconds).
    retry_at: float
    # The thread trying again after retry_at, and until when it may.
    prober: int | None = None
    probe_until: float = 0.0


_lock = threading.Lock()
# server → outage; a server not here is in use.
_outages: dict[str, _Outage] = {}


def _window() -> float:
    return max(float(settings.CACHE_OUTAGE_RETRY_SECONDS), 0.0)


def _admit(server: str) -> None:
    """Raise RedisUnavailable unless a command may be sent to `server` now."""
    if server not in _outages:
        return
    with _lock:
        outage = _outages.get(server)
        if outage is None:
            return
        now = time.monotonic()
        me = threading.get_ident()
        if now >= outage.retry_at and (outage.prober in (None, me) or now >= outage.probe_until):
            if outage.prober != me:
                # The thread that tries again; another takes over if it never reports.
                outage.prober, outage.probe_until = me, now + _window()
            return
        left = max(outage.retry_at - now, 0.0)
    raise RedisUnavailable(
        f"Redis at {server} failed moments ago; not tried again for another {left:.1f} s"
    )


def _failed(server: str, exc: Exception) -> None:
    window = _window()
    if not window:
        return
    with _lock:
        known = server in _outages
        _outages[server] = _Outage(retry_at=time.monotonic() + window)
    if not known:
        logger.warning(
            "Redis at %s failed (%s); this process does not use it for %s s",
            server,
            type(exc).__name__,
            window,
        )


def _answered(server: str) -> None:
    if server not in _outages:
        return
    with _lock:
        gone = _outages.pop(server, None)
    if gone is not None:
        logger.warning("Redis at %s answers again", server)


def redis_outages_forget() -> None:
    """Forget every failure seen in this process (tests)."""
    with _lock:
        _outages.clear()


class _FailFastConnection:
    """Mixed into a redis-py connection class (plain, TLS or Unix socket)."""

    def _outage_server(self) -> str:
        path = getattr(self, "path", None)
        return path if path else f"{self.host}:{self.port}"

    def _watched(self, operation, *args) -> None:
        try:
            operation(*args)
        except RedisUnavailable:
            raise
        except (RedisConnectionError, RedisTimeoutError) as exc:
            _failed(self._outage_server(), exc)
            raise

    def connect(self):
        if self._sock is None:
            _admit(self._outage_server())
        self._watched(super().connect)

    def send_packed_command(self, command, check_health=True):
        _admit(self._outage_server())
        self._watched(super().send_packed_command, command, check_health)

    def read_response(self, *args, **kwargs):
        server = self._outage_server()
        try:
            response = super().read_response(*args, **kwargs)
        except RedisUnavailable:
            raise
        except (RedisConnectionError, RedisTimeoutError) as exc:
            _failed(server, exc)
            raise
        except Exception:
            # An error reply: the server answered.
            _answered(server)
            raise
        _answered(server)
        return response


_fail_fast_classes: dict[type, type] = {}


def _fail_fast_class(connection_class: type) -> type:
    if issubclass(connection_class, _FailFastConnection):
        return connection_class
    with _lock:
        found = _fail_fast_classes.get(connection_class)
        if found is None:
            found = _fail_fast_classes[connection_class] = type(
                f"FailFast{connection_class.__name__}",
                (_FailFastConnection, connection_class),
                {},
            )
    return found


def fail_fast_pool(pool):
    """Make the connections `pool` creates from now on fail fast after a failure."""
    pool.connection_class = _fail_fast_class(pool.connection_class)
    return pool


def fail_fast_client(client):
    """A redis-py client whose connections fail fast after a failure."""
    fail_fast_pool(client.connection_pool)
    return client


class ConnectionFactory(DjangoRedisConnectionFactory):
    """django-redis connection pools whose connections fail fast after a failure."""

    def get_connection_pool(self, params):
        return fail_fast_pool(super().get_connection_pool(params))
