"""Adapters (with their SDK clients) built once per provider config and reused.

An adapter is rebuilt when its config changes (a newer `updated_at`). The
previous one may still serve calls that started before the change, so it is
closed only once it has been retired longer than any call can last.
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

_adapters: dict[object, tuple[object, Adapter]] = {}
# (retired at, adapter): replaced adapters waiting to be closed.
_retired: list[tuple[float, Adapter]] = []
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
    found = _adapters.get(config.pk)
    if found is not None and found[0] == version:
        return found[1]
    # Outside the lock: the base URL check may wait on DNS, and other configs'
    # adapters must not wait with it.
    adapter_settings = adapter_settings_for_config(config)
    with _lock:
        found = _adapters.get(config.pk)
        if found is not None and found[0] == version:
            return found[1]
        adapter = adapter_build(adapter_settings)
        _adapters[config.pk] = (version, adapter)
        now = time.monotonic()
        if found is not None:
            _retired.append((now, found[1]))
        expired = [
            a for retired_at, a in _retired if now - retired_at > RETIRED_ADAPTER_CLOSE_SECONDS
        ]
        _retired[:] = [(t, a) for t, a in _retired if now - t <= RETIRED_ADAPTER_CLOSE_SECONDS]
    for old in expired:
        old.close()
    return adapter


def adapters_clear() -> None:
    """Close and forget every adapter (tests, and after key rotation)."""
    with _lock:
        adapters = [adapter for _, adapter in _adapters.values()]
        adapters += [adapter for _, adapter in _retired]
        _adapters.clear()
        _retired.clear()
    for adapter in adapters:
        adapter.close()
