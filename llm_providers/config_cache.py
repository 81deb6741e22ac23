"""Per-tenant configuration versions and a bounded in-process cache keyed by them.

Everything derived from a tenant's configuration (routes, adapters, price
overrides, budget definitions) is cached in the process under the tenant's
current *config version*. A change to a provider config, override, price or
budget replaces the version (in the shared Django cache, so every process sees
it), which makes all entries cached under the old version unreachable.

The versions themselves are remembered in the process for up to
CONFIG_VERSION_LOCAL_SECONDS (default 1 s): a change made in this process
applies at once, one made in another process within that time. A call
therefore pays at most one cache round trip a second per tenant for its
configuration. A change made while the shared cache cannot be reached is
written there by its process at the next contact, before that process reads
any version again.

A change made inside a transaction is announced when the transaction commits.
Until then only the thread making it, which alone sees the uncommitted rows,
reads its tenant's configuration under a version of its own; if the
transaction rolls back, nothing cached from the uncommitted rows is reachable.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

T = TypeVar("T")

logger = logging.getLogger(__name__)

_GLOBAL = "global"
# A version lives an hour in the shared cache, then a new one replaces it: a
# change whose announcement failed (cache unreachable) is seen within the hour.
_VERSION_TTL_SECONDS = 3600


def _version_key(scope: str) -> str:
    return f"cfgver:{scope}"


# scope → (monotonic deadline, version) of versions read from the shared cache.
_known_versions: dict[str, tuple[float, str]] = {}
# Held while an entry of _known_versions is replaced: a version read from the
# shared cache before a change made here must not replace the change's.
_known_lock = threading.Lock()
# scope → version of changes made here while the shared cache was unreachable:
# written at the next contact, before any version is read from it. Otherwise
# the versions still there would bring back what was cached before the change.
_unannounced: dict[str, str] = {}


def _announce_pending() -> None:
    for scope, version in list(_unannounced.items()):
        cache.set(_version_key(scope), version, _VERSION_TTL_SECONDS)
        if _unannounced.get(scope) == version:
            del _unannounced[scope]


def _versions_read(tenant_scope: str) -> tuple[str, str]:
    tenant_key, global_key = _version_key(tenant_scope), _version_key(_GLOBAL)
    found = cache.get_many([tenant_key, global_key])
    tenant_version, global_version = found.get(tenant_key), found.get(global_key)
    if tenant_version is None:
        cache.add(tenant_key, uuid.uuid4().hex, _VERSION_TTL_SECONDS)
        tenant_version = cache.get(tenant_key)
    if global_version is None:
        cache.add(global_key, uuid.uuid4().hex, _VERSION_TTL_SECONDS)
        global_version = cache.get(global_key)
    return tenant_version, global_version


# Per thread: scope → [(version, announce callback, connection)] of changes made
# in a transaction that has not ended yet (see config_version_bump_on_commit).
_uncommitted = threading.local()


def _uncommitted_version(scope: str) -> str | None:
    """This thread's own version of `scope` while its open transaction holds a
    change of it; None otherwise (committed, rolled back, or no change)."""
    pending = getattr(_uncommitted, "changes", None)
    if not pending:
        return None
    for key, changes in list(pending.items()):
        # A change is uncommitted while its announcement waits on its connection:
        # Django drops it on rollback and runs it on commit.
        live = [
            change
            for change in changes
            if change[2].in_atomic_block
            and any(hook[1] is change[1] for hook in change[2].run_on_commit)
        ]
        if live:
            pending[key] = live
        else:
            del pending[key]
    changes = pending.get(scope)
    return changes[-1][0] if changes else None


def config_version(tenant_id) -> str:
    """The combined (tenant, global) configuration version, creating either if absent."""
    version = _config_version_shared(str(tenant_id))
    # An "uncached-" version already reads everything afresh.
    if getattr(_uncommitted, "changes", None) and ":" in version:
        tenant_version, global_version = version.split(":", 1)
        tenant_version = _uncommitted_version(str(tenant_id)) or tenant_version
        global_version = _uncommitted_version(_GLOBAL) or global_version
        version = f"{tenant_version}:{global_version}"
    return version


def _config_version_shared(scope: str) -> str:
    now = time.monotonic()
    tenant_known, global_known = _known_versions.get(scope), _known_versions.get(_GLOBAL)
    if (
        tenant_known is not None
        and global_known is not None
        and tenant_known[0] > now
        and global_known[0] > now
    ):
        return f"{tenant_known[1]}:{global_known[1]}"
    try:
        if _unannounced:
            _announce_pending()
        tenant_version, global_version = _versions_read(scope)
    except Exception as exc:  # noqa: BLE001 - any cache failure
        return _version_without_cache(scope, tenant_known, global_known, exc)
    deadline = now + settings.CONFIG_VERSION_LOCAL_SECONDS
    tenant_version = _known_version_keep(scope, tenant_known, (deadline, tenant_version))
    global_version = _known_version_keep(_GLOBAL, global_known, (deadline, global_version))
    return f"{tenant_version}:{global_version}"


def _known_version_keep(scope: str, before: tuple | None, read: tuple[float, str]) -> str:
    """Remember the version read, unless the entry changed since the read began: a
    change made here meanwhile (config_version_bump) is newer than what was read."""
    with _known_lock:
        current = _known_versions.get(scope)
        if current is not before and current is not None:
            return current[1]
        _known_versions[scope] = read
        return read[1]


def _version_without_cache(scope, tenant_known, global_known, exc) -> str:
    """The shared cache is unreachable: keep the versions last read if there
    are any; otherwise a fresh one, so the call reads its configuration from
    the database instead of failing."""
    logger.warning("config versions unreadable (%s); using the last known", type(exc).__name__)
    if tenant_known is not None and global_known is not None:
        return f"{tenant_known[1]}:{global_known[1]}"
    return f"uncached-{uuid.uuid4().hex}"


def config_version_bump(tenant_id=None) -> None:
    """Invalidate everything cached for one tenant, or for all tenants when None."""
    scope = _GLOBAL if tenant_id is None else str(tenant_id)
    version = uuid.uuid4().hex
    # This process sees its own change at once.
    with _known_lock:
        _known_versions[scope] = (
            time.monotonic() + settings.CONFIG_VERSION_LOCAL_SECONDS,
            version,
        )
    try:
        cache.set(_version_key(scope), version, _VERSION_TTL_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the change itself is saved
        _unannounced[scope] = version
        logger.error(
            "configuration change of %s saved but not announced to other processes (%s); "
            "announced when the cache answers again, else seen within an hour",
            scope,
            type(exc).__name__,
        )
    else:
        _unannounced.pop(scope, None)


def config_version_bump_on_commit(tenant_id=None) -> None:
    """Invalidate as config_version_bump() does, once the current transaction
    commits (at once outside a transaction).

    Until then the thread making the change reads under a version of its own,
    so what it caches from the uncommitted rows is never served to others, nor
    after a rollback.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        config_version_bump(tenant_id)
        return

    def announce() -> None:
        config_version_bump(tenant_id)

    transaction.on_commit(announce)
    scope = _GLOBAL if tenant_id is None else str(tenant_id)
    if not hasattr(_uncommitted, "changes"):
        _uncommitted.changes = {}
    changes = _uncommitted.changes.setdefault(scope, [])
    changes.append((f"uncommitted-{uuid.uuid4().hex}", announce, connection))


def config_versions_forget() -> None:
    """Drop the versions remembered in this process (tests, after a cache flush)."""
    _known_versions.clear()
    _unannounced.clear()
    _uncommitted.__dict__.clear()


class LocalCache:
    """A small thread-safe LRU map for values that are valid under one config version."""

    def __init__(self, maxsize: int):
        self._maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# 20,000 entries: routes and prices for a few hundred busy tenants, a few MB.
config_local_cache = LocalCache(maxsize=20_000)
