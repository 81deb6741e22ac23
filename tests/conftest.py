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
    if item.get_closest_marker("browser"):
        from tests.browser.conftest import CHROMIUM, chromium_available

        if not chromium_available():
            _skip_or_fail(f"needs Chromium at {CHROMIUM}: apt-get install chromium (CI does)")


@pytest.fixture(autouse=True)
def _clean_caches():
    """Each test starts with empty shared and in-process caches."""
    from django.core.cache import cache

    from llm_providers.clients import adapters_clear
    from llm_providers.config_cache import config_local_cache, config_versions_forget
    from llm_providers.redis_outage import redis_outages_forget

    redis_outages_forget()
    cache.clear()
    config_versions_forget()
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


# --- tenants and admin users ----------------------------------------------------


@pytest.fixture
def tenant(db):
    from tests.factories import TenantFactory

    return TenantFactory(name="Acme", slug="acme")


@pytest.fixture
def other_tenant(db):
    from tests.factories import TenantFactory

    return TenantFactory(name="Globex", slug="globex")


@pytest.fixture
def tenant_admin(tenant):
    """A staff user who administers `tenant` only."""
    from tests.factories import TenantMembershipFactory, UserFactory

    user = UserFactory(username="acme-admin")
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    return user


@pytest.fixture
def tenant_viewer(tenant):
    """A staff user who may look at `tenant` but change nothing."""
    from tests.factories import TenantMembershipFactory, UserFactory

    user = UserFactory(username="acme-viewer")
    TenantMembershipFactory(user=user, tenant=tenant, role="viewer")
    return user


@pytest.fixture
def superuser(db):
    from tests.factories import UserFactory

    return UserFactory(username="root", is_superuser=True)


@pytest.fixture
def raw_column():
    """Read a column of one row with SQL, below the model field: what the database holds."""
    from django.db import connection

    def read(instance, field_name: str):
        opts = instance._meta
        field = opts.get_field(field_name)
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {quote(field.column)} FROM {quote(opts.db_table)} "
                f"WHERE {quote(opts.pk.column)} = %s",
                [opts.pk.get_db_prep_value(instance.pk, connection)],
            )
            return cursor.fetchone()[0]

    return read


@pytest.fixture
def error_reports(client):
    """The text of Django's error report (the DEBUG page, mail to ADMINS, error
    trackers) of each request that raised; the client answers 500 instead of raising."""
    import sys

    from django.core.signals import got_request_exception
    from django.views.debug import ExceptionReporter

    reports: list[str] = []

    def report(sender, request, **kwargs):
        reports.append(ExceptionReporter(request, *sys.exc_info()).get_traceback_text())

    client.raise_request_exception = False
    got_request_exception.connect(report)
    yield reports
    got_request_exception.disconnect(report)


@pytest.fixture
def assert_secret_absent():
    """Fail when a secret, or any 8-character piece of it, appears in a page.

    Pieces that lie wholly inside the vendor's public prefix (`sk-proj-`),
    which the mask shows by design, are not secret.
    """
    from llm_providers.encryption import secret_display_parts

    def check(html: str, secret: str) -> None:
        assert secret not in html
        public = len(secret_display_parts(secret)[0])
        pieces = {secret[i : i + 8] for i in range(len(secret) - 7) if i + 8 > public}
        leaked = sorted(piece for piece in pieces if piece in html)
        assert leaked == [], f"pieces of the secret in the page: {leaked}"

    return check


@pytest.fixture
def cache_down(settings):
    """A Redis cache nobody listens on: every cache operation fails at once."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }


@pytest.fixture
def silent_server():
    """A loopback address that accepts connections and never answers (a hung Redis)."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    host, port = listener.getsockname()
    yield f"{host}:{port}"
    listener.close()


class _OwnRedis:
    """A redis-server of one test's own, which it may pause (a hung Redis) and resume."""

    def __init__(self, process, url: str):
        self.process = process
        self.url = url

    def pause(self) -> None:
        import signal

        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def own_redis():
    """A fresh redis-server on a free loopback port, stopped at the end of the test."""
    import shutil
    import socket
    import subprocess
    import time

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        _skip_or_fail("needs redis-server on PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = _OwnRedis(process, f"redis://127.0.0.1:{port}/0")
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield server
    finally:
        server.resume()
        process.terminate()
        process.wait(10)
