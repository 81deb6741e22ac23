"""Adapters (with their SDK clients) built once per provider config and reused.

An adapter is built for each version of a config (its `updated_at`). A call
that read the config before a change keeps getting the adapter of the version
it read, without displacing the new one; an adapter of a version that is no
longer the config's latest in use is closed once unused for longer than any
call can last.
Plaintext credentials go from the config straight into the adapter settings
and stay in this process's memory.
"""

from __future__ import annotations

import threading
import time

from .adapters.base import Adapter
from .adapters.registry import adapter_build
from .adapters.types import AdapterSettings
from .models import ProviderConfig

# config pk → {version: [last used (monotonic), adapter]}.
_adapters: dict[object, dict[object, list]] = {}
_lock = threading.Lock()
# 15 minutes: longer than the longest call timeout (10 minutes) allowed.
RETIRED_ADAPTER_CLOSE_SECONDS = 900


def adapter_settings_for_config(config: ProviderConfig) -> AdapterSettings:
    """Decrypt the config's credentials into adapter settings.

    Raises SecretUnreadableError when a secret does not decrypt, and
    ValidationError when the URL it would call is not allowed (checked again
    here, not only on save, because DNS answers and PROVIDER_ALLOW_PRIVATE_URLS
    change) or an option is not one the adapter can use, before any connection
    is made.
    """
    config.endpoint_validate()
    config.options_validate()
    base_url = config.base_url or config.spec.default_base_url
    credentials = config.credentials()
    return AdapterSettings(
        provider_type=config.provider_type,
        base_url=base_url,
        api_key=credentials.get("api_key", ""),
        aws_access_key_id=credentials.get("aws_access_key_id", ""),
        aws_secret_access_key=credentials.get("aws_secret_access_key", ""),
        aws_region=config.aws_region,
        options=dict(config.options or {}),
    )


def adapter_for_config(config: ProviderConfig) -> Adapter:
    """The adapter for this version of the config, building it on first use."""
    version = config.updated_at
    found = _adapters.get(config.pk, {}).get(version)
    if found is not None:
        found[0] = time.monotonic()
        return found[1]
    # Outside the lock: the base URL check may wait on DNS, and other configs'
    # adapters must not wait with it.
    adapter_settings = adapter_settings_for_config(config)
    with _lock:
        versions = _adapters.setdefault(config.pk, {})
        found = versions.get(version)
        if found is not None:
            found[0] = time.monotonic()
            return found[1]
        adapter = adapter_build(adapter_settings)
        now = time.monotonic()
        versions[version] = [now, adapter]
        expired = _unused_versions_take(now)
    for old in expired:
        old.close()
    return adapter


def _unused_versions_take(now: float) -> list[Adapter]:
    """Remove and return the adapters of versions unused for longer than any
    call lasts, except each config's most recently used one. Under _lock."""
    expired = []
    for versions in _adapters.values():
        latest = max(versions.values(), key=lambda entry: entry[0])
        for version, entry in list(versions.items()):
            if entry is not latest and now - entry[0] > RETIRED_ADAPTER_CLOSE_SECONDS:
                del versions[version]
                expired.append(entry[1])
    return expired


def adapters_clear() -> None:
    """Close and forget every adapter (tests, and after key rotation)."""
    with _lock:
        adapters = [entry[1] for versions in _adapters.values() for entry in versions.values()]
        _adapters.clear()
    for adapter in adapters:
        adapter.close()
