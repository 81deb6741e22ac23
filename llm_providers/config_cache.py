"""Per-tenant configuration versions and a bounded in-process cache keyed by them.

Everything derived from a tenant's configuration (routes, adapters, price
overrides, budget definitions) is cached in the process under the tenant's
current *config version*. A change to a provider config, override, price or
budget replaces the version (in the shared Django cache, so every process sees
it), which makes all entries cached under the old version unreachable. A call
therefore pays one cache round trip to learn the versions, and nothing else
for configuration.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from django.core.cache import cache

T = TypeVar("T")

_GLOBAL = "global"
# Versions never expire by time; only a change replaces them.
_NO_TIMEOUT = None


def _version_key(scope: str) -> str:
    return f"cfgver:{scope}"


def config_version(tenant_id) -> str:
    """The combined (tenant, global) configuration version, creating either if absent."""
    tenant_key, global_key = _version_key(str(tenant_id)), _version_key(_GLOBAL)
    found = cache.get_many([tenant_key, global_key])
    tenant_version, global_version = found.get(tenant_key), found.get(global_key)
    if tenant_version is None:
        cache.add(tenant_key, uuid.uuid4().hex, _NO_TIMEOUT)
        tenant_version = cache.get(tenant_key)
    if global_version is None:
        cache.add(global_key, uuid.uuid4().hex, _NO_TIMEOUT)
        global_version = cache.get(global_key)
    return f"{tenant_version}:{global_version}"


def config_version_bump(tenant_id=None) -> None:
    """Invalidate everything cached for one tenant, or for all tenants when None."""
    scope = _GLOBAL if tenant_id is None else str(tenant_id)
    cache.set(_version_key(scope), uuid.uuid4().hex, _NO_TIMEOUT)


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
