"""Per-config rpm/tpm limits on the shared cache (Redis when configured)."""

import threading
import uuid

import pytest
from django.core.cache import cache

from llm_providers.rate_limiting import (
    WINDOW_SECONDS,
    RateLimited,
    _retry_after,
    _Window,
    rate_limit_admit,
    rate_limit_send,
    rate_limit_settle,
)


def test_rate_limit_admit_refuses_request_over_rpm():
    config_id = uuid.uuid4()
    for _ in range(3):
        rate_limit_admit(provider_config_id=config_id, rpm_limit=3, tpm_limit=None, tokens=10)

    with pytest.raises(RateLimited) as raised:
        rate_limit_admit(provider_config_id=config_id, rpm_limit=3, tpm_limit=None, tokens=10)

    assert raised.value.extra["limit_kind"] == "rpm"
    assert raised.value.extra["limit"] == 3
    assert 1 <= raised.value.extra["retry_after_seconds"] <= 2 * WINDOW_SECONDS
    assert "3 requests per minute" in raised.value.message


def test_rate_limit_admit_refuses_request_over_tpm_without_counting_it():
    config_id = uuid.uuid4()
    rate_limit_admit(provider_config_id=config_id, rpm_limit=None, tpm_limit=1000, tokens=800)

    with pytest.raises(RateLimited) as raised:
        rate_limit_admit(provider_config_id=config_id, rpm_limit=None, tpm_limit=1000, tokens=300)

    assert raised.value.extra["limit_kind"] == "tpm"
    # The refused 300 were not counted: 200 more still fit.
    rate_limit_admit(provider_config_id=config_id, rpm_limit=None, tpm_limit=1000, tokens=200)


def test_rate_limit_admit_counts_configs_separately():
    first, second = uuid.uuid4(), uuid.uuid4()
    rate_limit_admit(provider_config_id=first, rpm_limit=1, tpm_limit=None, tokens=1)

    rate_limit_admit(provider_config_id=second, rpm_limit=1, tpm_limit=None, tokens=1)

    with pytest.raises(RateLimited):
        rate_limit_admit(provider_config_id=first, rpm_limit=1, tpm_limit=None, tokens=1)


def test_rate_limit_admit_does_nothing_without_limits():
    config_id = uuid.uuid4()
    for _ in range(100):
        rate_limit_admit(provider_config_id=config_id, rpm_limit=None, tpm_limit=None, tokens=9)


def test_retry_after_waits_for_previous_bucket_to_decay():
    # 30 s into the bucket: the previous bucket (10 requests) still weighs half.
    window = _Window(bucket=100, previous_weight=0.5, seconds_left=30)

    # limit 10: 10 × w + 2 current + 1 fits once w ≤ 0.7 → already; at 8 current
    # it needs w ≤ 0.1, i.e. 0.4 of a window = 24 s later.
    assert _retry_after(10, previous=10, current=8, amount=1, window=window) == pytest.approx(24)


def test_retry_after_waits_for_next_bucket_when_current_is_full():
    window = _Window(bucket=100, previous_weight=0.5, seconds_left=30)

    # The current bucket alone holds the limit: wait for it to become the
    # previous bucket and decay to 9/10.
    assert _retry_after(10, previous=0, current=10, amount=1, window=window) == pytest.approx(36)


@pytest.mark.redis
def test_rate_limit_admit_keeps_counts_in_redis():
    from django_redis import get_redis_connection

    config_id = uuid.uuid4()
    rate_limit_admit(provider_config_id=config_id, rpm_limit=5, tpm_limit=100, tokens=42)

    keys = get_redis_connection("default").keys(cache.make_key(f"rl:{config_id}:*"))
    values = sorted(int(get_redis_connection("default").get(k)) for k in keys)
    assert values == [1, 42]


def test_rate_limit_admit_admits_exactly_the_limit_under_concurrency(limiter_at):
    from concurrent.futures import ThreadPoolExecutor

    config_id = uuid.uuid4()
    # Mid-minute on a fixed clock: a minute turning during the run would let the
    # decayed previous bucket admit one more.
    limiter_at(60 * 29_000_000 + 30)

    def attempt(_):
        try:
            rate_limit_admit(provider_config_id=config_id, rpm_limit=25, tpm_limit=None, tokens=1)
            return True
        except RateLimited:
            return False

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(attempt, range(200)))

    assert outcomes.count(True) == 25


def test_rate_limit_admit_says_when_a_request_alone_is_over_tpm():
    config_id = uuid.uuid4()

    with pytest.raises(RateLimited) as raised:
        rate_limit_admit(provider_config_id=config_id, rpm_limit=None, tpm_limit=4000, tokens=4200)

    # Retrying would never help: the message does not promise it will.
    assert "retry in" not in raised.value.message
    assert "4200 tokens" in raised.value.message
    assert "lower max_tokens" in raised.value.message
    assert raised.value.extra["limit_kind"] == "tpm"


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "local"])
def limiter_at(request, settings, monkeypatch):
    """Set the time the rate limiter sees, on Redis (one Lua script) or on a
    process-local cache (the locked path)."""
    from llm_providers import rate_limiting

    if request.param == "local":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    real_window = rate_limiting._window
    now = {"value": 0.0}
    monkeypatch.setattr(rate_limiting, "_window", lambda _: real_window(now["value"]))

    def set_to(value):
        now["value"] = value

    return set_to


def test_refusal_over_both_limits_waits_for_the_later_one(limiter_at):
    # given 2 requests and 1,000 tokens a minute: 2 small requests late in the
    # previous minute, then 900 tokens 30 s into this one
    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": 2, "tpm_limit": 1000}
    minute = 60 * 29_000_000
    limiter_at(minute - 10)
    rate_limit_admit(**limits, tokens=10)
    rate_limit_admit(**limits, tokens=10)
    limiter_at(minute + 30)
    rate_limit_admit(**limits, tokens=900)

    # when a request of 500 tokens comes, over both limits
    with pytest.raises(RateLimited) as raised:
        rate_limit_admit(**limits, tokens=500)

    # then the caller is told when both admit it: the requests free up in 30 s,
    # the tokens only once 500 fit (900 × w ≤ 500, 26.7 s into the next minute)
    error = raised.value
    assert error.extra["retry_after_seconds"] == 57
    assert (error.extra["limit_kind"], error.extra["limit"]) == ("tpm", 1000)
    assert error.message == (
        "The provider config's limit of 1000 tokens per minute is reached; retry in 57 s."
    )
    limiter_at(minute + 30 + 57)
    rate_limit_admit(**limits, tokens=500)


def test_settled_tokens_replace_the_worst_case_counted_at_admission(limiter_at):
    # given 1,000 tokens a minute and a request admitted at 800 that used 100
    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": None, "tpm_limit": 1000}
    limiter_at(60 * 29_000_000 + 30)
    counted = rate_limit_admit(**limits, tokens=800)

    rate_limit_settle(counted, 100)

    # then 900 more fit, and not one token beyond
    rate_limit_admit(**limits, tokens=900)
    with pytest.raises(RateLimited):
        rate_limit_admit(**limits, tokens=1)


def test_settling_more_tokens_than_counted_adds_them(limiter_at):
    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": None, "tpm_limit": 1000}
    limiter_at(60 * 29_000_000 + 30)
    counted = rate_limit_admit(**limits, tokens=100)

    rate_limit_settle(counted, 700)

    with pytest.raises(RateLimited):
        rate_limit_admit(**limits, tokens=301)
    rate_limit_admit(**limits, tokens=300)


def test_tokens_settled_in_the_next_minute_go_to_the_bucket_they_were_counted_in(limiter_at):
    # given a request counted at 900 late in a minute, settled at 100 in the next
    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": None, "tpm_limit": 1000}
    minute = 60 * 29_000_000
    limiter_at(minute - 1)
    counted = rate_limit_admit(**limits, tokens=900)
    limiter_at(minute + 1)

    rate_limit_settle(counted, 100)

    # then the previous minute weighs 100 × 59/60: 900 fit, 902 do not
    with pytest.raises(RateLimited):
        rate_limit_admit(**limits, tokens=902)
    rate_limit_admit(**limits, tokens=900)


@pytest.mark.redis
def test_settling_a_bucket_that_expired_leaves_no_count_behind():
    from django_redis import get_redis_connection

    config_id = uuid.uuid4()
    counted = rate_limit_admit(
        provider_config_id=config_id, rpm_limit=None, tpm_limit=1000, tokens=800
    )
    redis = get_redis_connection("default")
    redis.delete(cache.make_key(counted.key))

    rate_limit_settle(counted, 100)

    assert redis.keys(cache.make_key(f"rl:{config_id}:*")) == []


def test_a_request_without_a_tpm_limit_has_no_tokens_to_settle():
    counted = rate_limit_admit(
        provider_config_id=uuid.uuid4(), rpm_limit=5, tpm_limit=None, tokens=8
    )

    assert counted is None
    rate_limit_settle(counted, 3)


@pytest.fixture
def own_redis_cache(own_redis, settings):
    """The cache on a Redis of the test's own."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": own_redis.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    import redis

    return redis.Redis.from_url(own_redis.url)


def _rpm_count(client, config_id) -> int:
    [key] = client.keys(cache.make_key(f"rl:{config_id}:rpm:*"))
    return int(client.get(key))


@pytest.mark.redis
def test_admissions_run_on_a_connection_of_the_threads_own_not_the_cache_pool(
    own_redis_cache,
):
    from django_redis import get_redis_connection

    # given a cache whose pool has made no connection yet
    pool = get_redis_connection("default").connection_pool
    config_id = uuid.uuid4()

    # when this thread and another admit requests
    for _ in range(3):
        rate_limit_admit(provider_config_id=config_id, rpm_limit=100, tpm_limit=None, tokens=1)
    worker = threading.Thread(
        target=rate_limit_admit,
        kwargs={"provider_config_id": config_id, "rpm_limit": 100, "tpm_limit": None, "tokens": 1},
    )
    worker.start()
    worker.join()

    # then all were counted, and none took a connection from the cache's pool
    assert _rpm_count(own_redis_cache, config_id) == 4
    assert pool._created_connections == 0


@pytest.mark.redis
def test_admission_goes_on_after_redis_dropped_its_connections_and_scripts(own_redis_cache):
    # given a config admitted once, its script loaded and a connection open
    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": 3, "tpm_limit": None, "tokens": 1}
    rate_limit_admit(**limits)

    # when Redis closes every client connection and forgets its scripts (a restart)
    own_redis_cache.script_flush()
    own_redis_cache.client_kill_filter(_type="normal", skipme=True)

    # then the next admissions reconnect, load the script again and count
    rate_limit_admit(**limits)
    rate_limit_admit(**limits)
    assert _rpm_count(own_redis_cache, config_id) == 3
    with pytest.raises(RateLimited):
        rate_limit_admit(**limits)


def test_an_admission_sent_is_answered_when_read():
    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": 2, "tpm_limit": 1000}
    rate_limit_admit(**limits, tokens=300)

    admitted = rate_limit_send(**limits, tokens=300)
    counted = admitted.result()
    refused = rate_limit_send(**limits, tokens=300)

    assert (counted.tokens, admitted.result()) == (300, counted)
    with pytest.raises(RateLimited) as raised:
        refused.result()
    assert raised.value.extra["limit_kind"] == "rpm"


def test_undoing_an_admitted_request_gives_back_its_request_and_tokens():
    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": 2, "tpm_limit": 1000}
    rate_limit_admit(**limits, tokens=100)
    admission = rate_limit_send(**limits, tokens=900)

    admission.undo()

    # then one request and 900 tokens fit again (the second request would not, nor 901)
    with pytest.raises(RateLimited) as raised:
        rate_limit_admit(**limits, tokens=901)
    assert raised.value.extra["limit_kind"] == "tpm"
    rate_limit_admit(**limits, tokens=900)
    with pytest.raises(RateLimited) as raised:
        rate_limit_admit(**limits, tokens=1)
    assert raised.value.extra["limit_kind"] == "rpm"


def test_undoing_a_refused_request_takes_nothing_from_the_admitted_ones():
    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": 1, "tpm_limit": None, "tokens": 1}
    rate_limit_admit(**limits)
    refused = rate_limit_send(**limits)

    refused.undo()

    with pytest.raises(RateLimited):
        rate_limit_admit(**limits)


@pytest.mark.redis
def test_undo_leaves_the_buckets_at_what_the_other_requests_counted():
    from django_redis import get_redis_connection

    config_id = uuid.uuid4()
    limits = {"provider_config_id": config_id, "rpm_limit": 5, "tpm_limit": 1000}
    rate_limit_admit(**limits, tokens=42)
    rate_limit_send(**limits, tokens=500).undo()

    keys = get_redis_connection("default").keys(cache.make_key(f"rl:{config_id}:*"))
    values = sorted(int(get_redis_connection("default").get(k)) for k in keys)
    assert values == [1, 42]


@pytest.mark.redis
def test_an_admission_left_unread_does_not_answer_the_next_one(own_redis_cache):
    # given a config at its limit, and an admission of another config sent
    # (it would be admitted) whose answer is never read
    full, other = uuid.uuid4(), uuid.uuid4()
    limits = {"rpm_limit": 1, "tpm_limit": None, "tokens": 1}
    rate_limit_admit(provider_config_id=full, **limits)
    rate_limit_send(provider_config_id=other, **limits)

    # when the full config's next admission is sent and read on the same thread,
    # then it gets its own answer, not the one left unread
    with pytest.raises(RateLimited):
        rate_limit_admit(provider_config_id=full, **limits)
    assert _rpm_count(own_redis_cache, full) == 1


@pytest.mark.redis
def test_an_admission_read_after_the_next_one_was_sent_does_not_take_its_answer(own_redis_cache):
    # given a config at its limit, an admission of another config sent and
    # left unread, then the full config's next admission sent
    full, other = uuid.uuid4(), uuid.uuid4()
    limits = {"rpm_limit": 1, "tpm_limit": None, "tokens": 1}
    rate_limit_admit(provider_config_id=full, **limits)
    left = rate_limit_send(provider_config_id=other, **limits)
    refused = rate_limit_send(provider_config_id=full, **limits)

    # when the one left unread is read first, then its reply went with its
    # connection (not enforced), and the next one still gets its own answer
    assert left.result() is None
    with pytest.raises(RateLimited):
        refused.result()
    assert _rpm_count(own_redis_cache, full) == 1


@pytest.mark.redis
def test_an_admission_is_not_read_on_another_threads_behalf(own_redis_cache):
    # given an admission sent on this thread, at a config's limit
    full = uuid.uuid4()
    limits = {"provider_config_id": full, "rpm_limit": 1, "tpm_limit": None, "tokens": 1}
    rate_limit_admit(**limits)
    refused = rate_limit_send(**limits)

    # when another thread reads it, then it reads nothing off this thread's
    # connection (not enforced there), and this thread's next admission gets
    # its own answer
    read_elsewhere = []
    reader = threading.Thread(target=lambda: read_elsewhere.append(refused.result()))
    reader.start()
    reader.join()
    assert read_elsewhere == [None]
    with pytest.raises(RateLimited):
        rate_limit_admit(**limits)
    assert _rpm_count(own_redis_cache, full) == 1
