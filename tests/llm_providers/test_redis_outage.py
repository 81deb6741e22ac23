"""A Redis that hangs costs a process one socket timeout, not one per use per call.

Real sockets throughout: `silent_server` accepts connections and never
answers, and `own_redis` is a redis-server of this test alone, stopped
(SIGSTOP) to hang it and continued (SIGCONT) to bring it back.
"""

import shutil
import signal
import socket
import subprocess
import threading
import time
from decimal import Decimal

import pytest
import redis
from django.core.cache import cache

from llm_providers.completion import complete
from llm_providers.rate_limiting import RateLimited
from tests.api.fixtures import service_key_client
from tests.factories import (
    BudgetFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    ServiceKeyFactory,
    TenantFactory,
)
from usage.budget import BudgetUnavailable
from usage.models import Budget, CallLog

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "hi"}]
# One socket timeout, as in production (config.settings.base).
TIMEOUT = 1


def _redis_cache(location):
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": location,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": TIMEOUT, "SOCKET_TIMEOUT": TIMEOUT},
        }
    }


@pytest.fixture
def tenant():
    tenant = TenantFactory(response_cache_ttl_seconds=60)
    ModelPriceFactory(model="fake-small", input_per_mtok="1", output_per_mtok="2")
    return tenant


@pytest.fixture
def primary(tenant):
    return ProviderConfigFactory(tenant=tenant, name="primary", is_default=True, rpm_limit=1)


@pytest.fixture
def hung_redis(settings, silent_server):
    """Cache and budget counters on a Redis that accepts connections and never answers."""
    settings.CACHES = _redis_cache(f"redis://{silent_server}/0")
    settings.USAGE_BUDGET_BACKEND = "redis"
    settings.USAGE_BUDGET_REDIS_URL = f"redis://{silent_server}/0"


@pytest.fixture
def own_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield server, url
    finally:
        client.close()
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(timeout=10)


def _timed(fn, *args, **kwargs):
    started = time.monotonic()
    try:
        return fn(*args, **kwargs), time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - returned for the test to check
        return exc, time.monotonic() - started


def test_calls_after_the_first_do_not_wait_on_a_hung_redis(tenant, primary, hung_redis):
    # given response cache, rate limit and budget counters on a Redis that hangs

    # when three calls are made one after the other
    (first, first_took), (second, second_took), (third, third_took) = (
        _timed(complete, tenant=tenant, messages=HELLO) for _ in range(3)
    )

    # then each is answered by the provider as without a cache; the first
    # waited for one socket timeout (not one per Redis use), the others for none
    assert [r.content for r in (first, second, third)] == ["Echo: hi"] * 3
    assert [r.cached for r in (first, second, third)] == [False] * 3
    assert CallLog.objects.filter(tenant=tenant, status="ok").count() == 3
    assert 0.9 * TIMEOUT <= first_took < 2 * TIMEOUT
    assert second_took < 0.5 * TIMEOUT
    assert third_took < 0.5 * TIMEOUT


def test_api_requests_after_the_first_do_not_wait_on_a_hung_redis(tenant, primary, hung_redis):
    # given the API throttle as well on the hung Redis
    client = service_key_client(ServiceKeyFactory(tenant=tenant))

    def post():
        return client.post("/api/v1/completions/", {"messages": HELLO}, format="json")

    (first, first_took), (second, second_took) = (_timed(post) for _ in range(2))

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["content"] == "Echo: hi"
    assert first_took < 2 * TIMEOUT
    assert second_took < 0.5 * TIMEOUT


def test_blocking_budget_still_refuses_while_calls_skip_a_hung_redis(tenant, primary, hung_redis):
    BudgetFactory(tenant=tenant, period=Budget.Period.DAILY, limit_usd=Decimal("1"), action="block")

    (first, first_took), (second, second_took) = (
        _timed(complete, tenant=tenant, messages=HELLO) for _ in range(2)
    )

    # both refused as when Redis refuses connections, the second at once
    assert isinstance(first, BudgetUnavailable)
    assert isinstance(second, BudgetUnavailable)
    assert (second.code, second.http_status) == ("budget_unavailable", 503)
    assert second_took < 0.5 * TIMEOUT
    assert not CallLog.objects.filter(tenant=tenant, status="ok").exists()


def test_redis_is_used_again_once_it_answers_and_the_window_is_over(
    tenant, primary, own_redis, settings
):
    server, url = own_redis
    settings.CACHES = _redis_cache(url)
    settings.CACHE_OUTAGE_RETRY_SECONDS = 1
    cache.clear()

    # given a Redis that hangs: calls go on without it, the second at once
    server.send_signal(signal.SIGSTOP)
    (_, first_took), (during, during_took) = (
        _timed(complete, tenant=tenant, messages=HELLO) for _ in range(2)
    )
    assert first_took >= 0.9 * TIMEOUT
    assert during_took < 0.5 * TIMEOUT
    assert during.cached is False

    # when it answers again and the window is over
    server.send_signal(signal.SIGCONT)
    time.sleep(1.2)

    # then the rate limit counts again (rpm_limit 1) and the response cache serves
    answered = complete(tenant=tenant, messages=HELLO)
    assert answered.cached is False
    assert complete(tenant=tenant, messages=HELLO).cached is True
    with pytest.raises(RateLimited):
        complete(tenant=tenant, messages=[{"role": "user", "content": "again"}])


def test_after_the_window_one_thread_tries_a_hung_redis_and_the_others_do_not_wait(
    hung_redis, settings
):
    settings.CACHE_OUTAGE_RETRY_SECONDS = 0.5
    failed, took = _timed(cache.get, "k")
    assert isinstance(failed, Exception)
    assert took >= 0.9 * TIMEOUT
    time.sleep(0.6)

    # when several threads use the cache at once after the window
    barrier = threading.Barrier(6)
    durations = []

    def use():
        barrier.wait()
        outcome, took = _timed(cache.get, "k")
        durations.append((isinstance(outcome, Exception), took))

    threads = [threading.Thread(target=use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then all fail; one paid the timeout trying again, the rest failed at once
    assert [failed for failed, _ in durations] == [True] * 6
    slow = [took for _, took in durations if took >= 0.5 * TIMEOUT]
    assert len(slow) == 1
