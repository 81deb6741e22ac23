"""Config versions: shared through the cache, remembered briefly in the process."""

import time
import uuid

from django.core.cache import cache

from llm_providers.config_cache import LocalCache, config_version, config_version_bump


def test_config_version_is_stable_until_bumped():
    tenant_id = uuid.uuid4()

    first = config_version(tenant_id)

    assert config_version(tenant_id) == first
    config_version_bump(tenant_id)
    assert config_version(tenant_id) != first


def test_config_version_global_bump_changes_every_tenant():
    a, b = uuid.uuid4(), uuid.uuid4()
    before = (config_version(a), config_version(b))

    config_version_bump(None)

    assert config_version(a) != before[0]
    assert config_version(b) != before[1]


def test_config_version_sees_other_process_change_after_local_window(settings):
    # given a version this process has read
    settings.CONFIG_VERSION_LOCAL_SECONDS = 0.2
    tenant_id = uuid.uuid4()
    first = config_version(tenant_id)

    # when another process replaces it in the shared cache
    cache.set(f"cfgver:{tenant_id}", "changed-elsewhere", None)

    # then this process keeps its version for the window, then reads the new one
    assert config_version(tenant_id) == first
    time.sleep(0.25)
    assert config_version(tenant_id).startswith("changed-elsewhere:")


def test_local_cache_evicts_least_recently_used():
    local = LocalCache(maxsize=2)
    local.get_or_compute("a", lambda: 1)
    local.get_or_compute("b", lambda: 2)
    local.get_or_compute("a", lambda: 0)  # a is now the most recent

    local.get_or_compute("c", lambda: 3)

    assert local.get_or_compute("a", lambda: "recomputed") == 1
    assert local.get_or_compute("b", lambda: "recomputed") == "recomputed"
