"""Probes of the components the service needs: database, cache and Celery broker.

Each probe answers `ok`, `error` (with the exception's class name only: no
addresses, no credentials) or `not configured`, and how long it took.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db import connection

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_NOT_CONFIGURED = "not configured"

# 2 s: a broker that takes longer to connect or answer is down for our purposes.
BROKER_TIMEOUT_SECONDS = 2.0
_CACHE_PROBE_KEY = "health:probe"


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    status: str
    latency_ms: int | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class HealthReport:
    components: dict[str, ComponentHealth] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.status != STATUS_ERROR for c in self.components.values())

    @property
    def status(self) -> str:
        return STATUS_OK if self.ok else STATUS_ERROR


def _timed(probe) -> ComponentHealth:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # any failure means "down"
        return ComponentHealth(
            status=STATUS_ERROR,
            latency_ms=round((time.perf_counter() - started) * 1000),
            error=type(exc).__name__,
        )
    return ComponentHealth(
        status=STATUS_OK, latency_ms=round((time.perf_counter() - started) * 1000)
    )


def _database_probe() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _cache_probe() -> None:
    nonce = uuid.uuid4().hex
    # A key per probe: probes running at once (several load balancers, several
    # instances sharing the cache) would otherwise read each other's value.
    key = f"{_CACHE_PROBE_KEY}:{nonce}"
    cache.set(key, nonce, timeout=30)
    try:
        if cache.get(key) != nonce:
            raise RuntimeError("the cache did not return what was just stored")
    finally:
        cache.delete(key)


def _broker_probe(url: str) -> None:
    from kombu import Connection

    # Socket timeouts too: a broker that accepts connections and never answers
    # (hung, paused) would otherwise hold the probe, and its worker, for ever.
    timeouts = {
        "socket_timeout": BROKER_TIMEOUT_SECONDS,
        "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
    }
    with Connection(
        url, connect_timeout=BROKER_TIMEOUT_SECONDS, transport_options=timeouts
    ) as broker:
        broker.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS
        )


def health_database() -> ComponentHealth:
    return _timed(_database_probe)


def health_cache() -> ComponentHealth:
    return _timed(_cache_probe)


def health_broker() -> ComponentHealth:
    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if not url or url.startswith("memory://"):
        # No broker: the in-process transport the settings fall back to, with
        # tasks run eagerly. Nothing is there to probe.
        return ComponentHealth(status=STATUS_NOT_CONFIGURED)
    return _timed(lambda: _broker_probe(url))


def health_check() -> HealthReport:
    """Probe every component; the report is ok when no configured one failed."""
    return HealthReport(
        components={
            "database": health_database(),
            "cache": health_cache(),
            "broker": health_broker(),
        }
    )
