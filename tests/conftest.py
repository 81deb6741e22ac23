"""Suite-wide fixtures: backend markers, clean caches, factories' companions."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

pytest_plugins = ["tests.upstreams.plugin"]


def _uses_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def _uses_redis() -> bool:
    return bool(settings.REDIS_URL)


def _skip_or_fail(reason: str) -> None:
    # CI sets LLM_TESTS_REQUIRE_BACKENDS so that nothing is silently skipped there.
    if os.environ.get("LLM_TESTS_REQUIRE_BACKENDS"):
        pytest.fail(f"{reason}, and LLM_TESTS_REQUIRE_BACKENDS is set")
    pytest.skip(reason)


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres") and not _uses_postgres():
        _skip_or_fail("needs PostgreSQL: set DATABASE_URL=postgres://... (CI does)")
    if item.get_closest_marker("redis") and not _uses_redis():
        _skip_or_fail("needs Redis: set REDIS_URL=redis://... (CI does)")


@pytest.fixture(autouse=True)
def _clean_caches():
    """Each test starts with empty shared and in-process caches."""
    from django.core.cache import cache

    from llm_providers.clients import adapters_clear
    from llm_providers.config_cache import config_local_cache

    cache.clear()
    config_local_cache.clear()
    adapters_clear()
    yield
    config_local_cache.clear()
    adapters_clear()


@pytest.fixture
def allow_private_urls(settings):
    """Let provider configs point at loopback upstream servers."""
    settings.PROVIDER_ALLOW_PRIVATE_URLS = True
    return settings
