"""Config versions: shared through the cache, remembered briefly in the process."""

import threading
import time
import uuid

import pytest
from django.core.cache import cache

from llm_providers import config_cache
from llm_providers.config_cache import (
    LocalCache,
    config_version,
    config_version_bump,
    config_versions_forget,
)
from llm_providers.services import provider_config_update
from overrides.routing import route_resolve
from tests.factories import ProviderConfigFactory, TenantFactory


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


@pytest.mark.django_db(transaction=True)
def test_change_made_here_applies_at_once_though_another_thread_read_the_versions_before_it(
    monkeypatch,
):
    # given a tenant routed to "primary", whose versions this process must read again
    tenant = TenantFactory()
    primary = ProviderConfigFactory(tenant=tenant, name="primary", is_default=True)
    other = ProviderConfigFactory(tenant=tenant, name="other")
    assert route_resolve(tenant=tenant).primary.provider_config.pk == primary.pk
    config_versions_forget()
    read, go_on = threading.Event(), threading.Event()
    versions_read = config_cache._versions_read

    def read_then_wait(scope):
        versions = versions_read(scope)
        if threading.current_thread().name == "reader":
            read.set()
            go_on.wait(10)
        return versions

    monkeypatch.setattr(config_cache, "_versions_read", read_then_wait)

    # when another thread has read the versions from the cache, and before it
    # remembers them, this thread switches the default
    reader = threading.Thread(target=config_version, args=(tenant.pk,), name="reader")
    reader.start()
    assert read.wait(10)
    provider_config_update(provider_config=other, data={"is_default": True})
    assert route_resolve(tenant=tenant).primary.provider_config.pk == other.pk
    go_on.set()
    reader.join(10)

    # then calls of this process go on being routed by the change
    assert route_resolve(tenant=tenant).primary.provider_config.pk == other.pk


def test_local_cache_evicts_least_recently_used():
    local = LocalCache(maxsize=2)
    local.get_or_compute("a", lambda: 1)
    local.get_or_compute("b", lambda: 2)
    local.get_or_compute("a", lambda: 0)  # a is now the most recent

    local.get_or_compute("c", lambda: 3)

    assert local.get_or_compute("a", lambda: "recomputed") == 1
    assert local.get_or_compute("b", lambda: "recomputed") == "recomputed"
