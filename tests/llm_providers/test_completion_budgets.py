"""The budget gate inside the completion pipeline: reserve, refuse, settle, release."""

import math
import threading
import time
from decimal import Decimal

import pytest
from django.utils import timezone

from llm_providers.adapters.errors import ProviderBadRequest, ProviderTimeout, UpstreamUnavailable
from llm_providers.completion import complete, embed, stream
from llm_providers.rate_limiting import RateLimited, rate_limit_admit
from llm_providers.services import provider_config_create
from tests.factories import (
    BudgetFactory,
    CallLogFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    TenantFactory,
)
from tests.upstreams.server import json_reply
from usage.bookkeeping import bookkeeping_flush
from usage.budget import BudgetExceeded
from usage.budget_counters import counters_backend
from usage.models import Budget, CallLog
from usage.periods import MONTHLY, period_containing

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "hi"}]
# "hi" is 8 input tokens for the Fake provider; with max_tokens=10 the worst
# case at $1,000 / $2,000 per million is 0.008 + 0.020 = $0.028, and the real
# answer ("Echo: hi", 3 tokens) costs 0.008 + 0.006 = $0.014. (Budget limits
# have four decimals, hence the steep test price.)
WORST = Decimal("0.028")
REAL = Decimal("0.014")


@pytest.fixture
def tenant():
    tenant = TenantFactory()
    ModelPriceFactory(model="fake-small", input_per_mtok="1000", output_per_mtok="2000")
    return tenant


@pytest.fixture
def primary(tenant):
    return ProviderConfigFactory(tenant=tenant, name="primary", is_default=True, priority=1)


def _house_model(tenant, upstream):
    """The tenant's default: a loopback OpenAI-compatible server at $1,000 / $2,000 per million."""
    provider_config_create(
        tenant=tenant,
        name="loopback",
        provider_type="openai_compatible",
        base_url=upstream.base_url,
        default_model="house-model",
        is_default=True,
    )
    ModelPriceFactory(
        provider_type="openai_compatible", model="house-model",
        input_per_mtok="1000", output_per_mtok="2000",
    )  # fmt: skip


def _gemini_embeddings(tenant, upstream):
    """The tenant's default: Gemini (100 inputs per request) at $1,000 per million input tokens."""
    provider_config_create(
        tenant=tenant,
        name="gemini",
        provider_type="gemini",
        api_key="AIzaSyTestKey1234567890",
        base_url=upstream.base_url,
        default_model="gemini-embedding-001",
        is_default=True,
    )
    ModelPriceFactory(
        provider_type="gemini", model="gemini-embedding-001",
        input_per_mtok="1000", output_per_mtok="0",
    )  # fmt: skip


def _block(tenant, limit, **scope):
    return BudgetFactory(
        tenant=tenant, name="hard cap", action=Budget.Action.BLOCK, limit_usd=limit, **scope
    )


def test_complete_refuses_call_over_blocking_budget_before_provider(tenant, primary):
    # given a $0.10 cap: six calls settle $0.084, a seventh worst case does not fit
    _block(tenant, Decimal("0.1"))
    for _ in range(6):
        complete(tenant=tenant, messages=HELLO, max_tokens=10)

    # when
    before = timezone.now()
    with pytest.raises(BudgetExceeded) as raised:
        complete(tenant=tenant, messages=HELLO, max_tokens=10)
    after = timezone.now()

    # then: 0.084 spent; 0.084 + 0.028 > 0.1
    error = raised.value
    assert error.extra["budget_name"] == "hard cap"
    assert Decimal(error.extra["spend_usd"]) == 6 * REAL
    assert Decimal(error.extra["limit_usd"]) == Decimal("0.1")
    # Retry when the month resets: its whole seconds away, as seen during the call.
    reset = period_containing(MONTHLY, before, tenant.timezone).end
    assert error.extra["resets_at"] == reset.isoformat()
    assert (
        max(1, math.ceil((reset - after).total_seconds()))
        <= error.extra["retry_after_seconds"]
        <= math.ceil((reset - before).total_seconds())
    )
    assert "Budget “hard cap”" in error.message and "resets" in error.message
    blocked = CallLog.objects.filter(status="blocked").get()
    assert (blocked.error_code, blocked.input_tokens, blocked.cost_usd) == (
        "budget_exceeded",
        0,
        None,
    )
    assert CallLog.objects.filter(status="ok").count() == 6


def test_complete_falls_back_when_provider_scoped_budget_blocks(tenant, primary):
    backup = ProviderConfigFactory(tenant=tenant, name="backup", priority=2)
    _block(tenant, Decimal("0.1"), provider_config=primary)
    CallLogFactory(tenant=tenant, provider_config=primary, cost_usd=Decimal("0.1"))

    result = complete(tenant=tenant, messages=HELLO, max_tokens=10)

    assert result.provider == "backup"
    statuses = list(
        CallLog.objects.filter(request_id=result.request_id)
        .order_by("attempt")
        .values_list("status", "provider_config_id")
    )
    assert statuses == [("blocked", primary.pk), ("ok", backup.pk)]


def test_complete_is_never_refused_by_alert_only_budget(tenant, primary):
    BudgetFactory(tenant=tenant, action=Budget.Action.ALERT, limit_usd=Decimal("0.1"))
    CallLogFactory(tenant=tenant, provider_config=primary, cost_usd=Decimal("1"))

    result = complete(tenant=tenant, messages=HELLO, max_tokens=10)

    assert result.cost_usd == REAL


def test_complete_releases_reservation_when_call_fails(tenant, primary):
    # Room for exactly one worst-case call.
    _block(tenant, Decimal("0.03"))
    primary.options = {"fail_first": 2}
    primary.save()
    with pytest.raises(UpstreamUnavailable):
        complete(tenant=tenant, messages=HELLO, max_tokens=10)

    # The failed call's reservation is back: the next one fits.
    result = complete(tenant=tenant, messages=HELLO, max_tokens=10)

    assert result.cost_usd == REAL


def test_call_refused_by_a_budget_leaves_the_rate_limit_to_the_calls_sent(tenant, primary):
    # given one request a minute on the config, and a customer over a blocking budget
    primary.rpm_limit = 1
    primary.tpm_limit = 1000
    primary.save()
    _block(tenant, Decimal("0.01"), customer_id="over")

    # when that customer's call is refused by the budget
    with pytest.raises(BudgetExceeded):
        complete(tenant=tenant, messages=HELLO, max_tokens=10, customer_id="over")

    # then it counted nothing: another customer's call is admitted and served,
    # and the limit then refuses the next one
    result = complete(tenant=tenant, messages=HELLO, max_tokens=10, customer_id="other")
    assert result.cost_usd == REAL
    with pytest.raises(RateLimited):
        complete(tenant=tenant, messages=HELLO, max_tokens=10, customer_id="other")


def test_call_refused_by_the_rate_limit_gives_its_reservation_back(tenant, primary):
    # given a budget of $0.05 and a rate limit that admits one request a
    # minute, used up by a call that cost $0.014
    _block(tenant, Decimal("0.05"))
    primary.rpm_limit = 1
    primary.save()
    complete(tenant=tenant, messages=HELLO, max_tokens=10)
    second = ProviderConfigFactory(tenant=tenant, name="second", priority=2)

    # when the next call is refused by the primary's rate limit and falls back
    result = complete(tenant=tenant, messages=HELLO, max_tokens=10)

    # then its reservation on the primary ($0.028) was given back before the
    # fallback reserved its own: the two would not have fit together
    assert result.provider == second.name
    logs = CallLog.objects.filter(request_id=result.request_id).order_by("attempt")
    assert [(log.status, log.error_code) for log in logs] == [
        ("blocked", "rate_limited"),
        ("ok", ""),
    ]


@pytest.fixture
def busy_writer(settings, monkeypatch):
    """A background writer of the test's own (CALL_LOG_ASYNC), busy until
    `busy_writer.set()`: what is submitted to it waits."""
    from django.db import connections

    from usage import bookkeeping

    settings.CALL_LOG_ASYNC = True
    monkeypatch.setattr(bookkeeping, "_writer", None)
    busy = threading.Event()
    bookkeeping.bookkeeping_submit(busy.wait, label="busy", timeout=30)
    yield busy
    busy.set()
    # The writer thread's own connections close, so the test database can be dropped.
    bookkeeping.bookkeeping_submit(connections.close_all, label="close connections")
    assert bookkeeping.bookkeeping_flush(timeout=10)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("refused_by", ["rate_limit", "provider"])
def test_call_falling_back_is_not_refused_by_its_own_released_reservation(
    tenant, primary, busy_writer, refused_by
):
    # given room for one worst-case call ($0.028 of $0.05), and a primary that
    # cannot serve: its rate limit used up, or its provider failing
    _block(tenant, Decimal("0.05"))
    if refused_by == "rate_limit":
        primary.rpm_limit = 1
        primary.save()
        rate_limit_admit(provider_config_id=primary.pk, rpm_limit=1, tpm_limit=0, tokens=1)
    else:
        primary.options = {"fail_first": 5}
        primary.save()
    second = ProviderConfigFactory(tenant=tenant, name="second", priority=2)

    # when a call falls back while the background writer is busy
    result = complete(tenant=tenant, messages=HELLO, max_tokens=10)

    # then the reservation it gave up on the primary did not refuse it on the fallback
    assert (result.provider, result.cost_usd) == (second.name, REAL)
    busy_writer.set()
    assert bookkeeping_flush(timeout=10)
    statuses = list(
        CallLog.objects.filter(request_id=result.request_id)
        .order_by("attempt")
        .values_list("provider_config_id", "status")
    )
    assert statuses[-1] == (second.pk, "ok")
    assert {config for config, _ in statuses[:-1]} == {primary.pk}


@pytest.mark.redis
def test_complete_answers_when_its_inline_settlement_finds_redis_hung(
    tenant, primary, own_redis, settings, monkeypatch, caplog
):
    # given Redis counters, settled inline, on a Redis that hangs as the call settles
    settings.USAGE_BUDGET_BACKEND = "redis"
    settings.USAGE_BUDGET_REDIS_URL = own_redis.url
    settings.CALL_LOG_ASYNC = False
    _block(tenant, Decimal("1"))
    counters = counters_backend("redis")
    settle = counters.settle

    def settle_into_a_hung_redis(**kwargs):
        own_redis.pause()
        settle(**kwargs)

    monkeypatch.setattr(counters, "settle", settle_into_a_hung_redis)

    # when a call is answered
    result = complete(tenant=tenant, messages=HELLO, max_tokens=10)

    # then the caller gets its answer, logged; the settlement's failure is reported
    assert result.content == "Echo: hi"
    assert result.cost_usd == REAL
    assert CallLog.objects.get().status == CallLog.Status.OK
    assert "budget settlement" in caplog.text
    assert "failed: Redis error: TimeoutError" in caplog.text


def test_stream_settles_real_cost(tenant, primary):
    _block(tenant, Decimal("0.05"))
    first = stream(tenant=tenant, messages=HELLO, max_tokens=10)
    assert "".join(first) == "Echo: hi"

    # 0.014 settled + 0.028 worst case fits in 0.05; at 0.028 settled a third does not.
    second = stream(tenant=tenant, messages=HELLO, max_tokens=10)
    assert "".join(second) == "Echo: hi"
    with pytest.raises(BudgetExceeded):
        "".join(stream(tenant=tenant, messages=HELLO, max_tokens=10))


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_never_overspend_blocking_budget(allow_private_urls, openai_upstream):
    # given a budget with room for exactly k worst-case calls and an upstream
    # that holds every answer until all calls have been admitted or refused
    tenant = TenantFactory()
    provider_config_create(
        tenant=tenant,
        name="loopback",
        provider_type="openai_compatible",
        base_url=openai_upstream.base_url,
        default_model="house-model",
        is_default=True,
    )
    ModelPriceFactory(
        provider_type="openai_compatible", model="house-model",
        input_per_mtok="1000", output_per_mtok="1000",
    )  # fmt: skip
    answer = openai_upstream.chat_reply("ok", model="house-model")
    release = threading.Event()

    def held_answer(request):
        release.wait(timeout=60)
        return answer

    openai_upstream.set_default(held_answer)
    # Worst case per call: (8 input + 100 output) × $1,000 per million = $0.108.
    k = 4
    BudgetFactory(
        tenant=tenant, action=Budget.Action.BLOCK, limit_usd=Decimal("0.108") * k + Decimal("0.05")
    )
    outcomes = []
    start_together = threading.Barrier(12)

    def call():
        from django.db import connection

        start_together.wait()
        try:
            complete(tenant=tenant, messages=HELLO, max_tokens=100)
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("blocked")
        finally:
            connection.close()

    # when 12 calls race
    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    # No call settles (and frees room) before every call is at the upstream or refused.
    deadline = time.monotonic() + 60
    try:
        while outcomes.count("blocked") + len(openai_upstream.requests) < 12:
            assert time.monotonic() < deadline, (outcomes, len(openai_upstream.requests))
            time.sleep(0.01)
    finally:
        release.set()
    for thread in threads:
        thread.join()

    # then at most k reached the provider; the rest were refused before it
    assert len(openai_upstream.requests) <= k
    assert outcomes.count("ok") == len(openai_upstream.requests) == k
    assert outcomes.count("blocked") == 12 - outcomes.count("ok")
    assert CallLog.objects.filter(status="blocked").count() == outcomes.count("blocked")


def _spend_when_refused(tenant, **kwargs):
    with pytest.raises(BudgetExceeded) as raised:
        complete(tenant=tenant, messages=HELLO, max_tokens=10, **kwargs)
    return Decimal(raised.value.extra["spend_usd"])


def test_stream_closed_early_settles_estimated_cost(tenant, primary):
    # given room for $0.05
    _block(tenant, Decimal("0.05"))
    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=10)
    next(iter(chunks))

    # when the caller stops after "Echo: " (8 input + 2 estimated output tokens)
    chunks.close()

    # then $0.012 is spent, not the $0.028 reserved, and not nothing
    complete(tenant=tenant, messages=HELLO, max_tokens=10)  # + 0.014
    assert _spend_when_refused(tenant) == Decimal("0.026")


def test_stream_broken_upstream_settles_estimated_cost(tenant, allow_private_urls, openai_upstream):
    _house_model(tenant, openai_upstream)
    _block(tenant, Decimal("0.05"))
    openai_upstream.enqueue_chat_stream(["alpha ", "beta ", "gamma"], break_after=3)
    with pytest.raises(UpstreamUnavailable):
        "".join(stream(tenant=tenant, messages=HELLO, max_tokens=10))

    # "alpha beta " was received: 8 input + 4 estimated output tokens = $0.016
    openai_upstream.enqueue_chat("ok", model="house-model", prompt_tokens=8, completion_tokens=3)
    complete(tenant=tenant, messages=HELLO, max_tokens=10)  # + 0.014
    assert _spend_when_refused(tenant) == Decimal("0.030")


def test_stream_retried_after_a_tool_call_cut_off_settles_both_attempts(
    tenant, allow_private_urls, openai_upstream
):
    _house_model(tenant, openai_upstream)
    _block(tenant, Decimal("0.06"))
    call = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}
    # Cut after the call's name and the first half of its arguments, then answered whole.
    openai_upstream.enqueue_chat_stream([], model="house-model", tool_calls=[call], break_after=3)
    openai_upstream.enqueue_chat_stream(
        [], model="house-model", tool_calls=[call], prompt_tokens=8, completion_tokens=3
    )
    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=10)
    assert list(chunks) == []

    # The cut attempt: 8 input + 9 estimated output tokens ("get_weather" and
    # '{"city": "Paris', 26 characters) = $0.026; the answer $0.014.
    assert list(CallLog.objects.order_by("attempt").values_list("cost_usd", flat=True)) == [
        Decimal("0.026"),
        Decimal("0.014"),
    ]
    assert _spend_when_refused(tenant) == Decimal("0.040")


def test_embed_failing_in_a_later_batch_logs_and_settles_the_batches_paid_for(
    tenant, allow_private_urls, openai_upstream
):
    # given Gemini (100 inputs per request) at $1,000 per million input tokens, and $1 of room
    _gemini_embeddings(tenant, openai_upstream)
    _block(tenant, Decimal("1"))
    openai_upstream.enqueue_embeddings(
        [[0.5]] * 100, model="gemini-embedding-001", prompt_tokens=200
    )
    error = {"code": 400, "message": "Request contains an invalid argument.", "status": "X"}
    openai_upstream.enqueue(json_reply([{"error": error}], status=400))

    # when the second batch is refused after the first was answered
    with pytest.raises(ProviderBadRequest):
        embed(tenant=tenant, inputs=[f"text {n}" for n in range(150)], model="gemini-embedding-001")

    # then the 200 tokens of the first batch are logged and priced ($0.20) ...
    [log] = CallLog.objects.all()
    assert (log.status, log.operation, log.input_tokens, log.usage_estimated) == (
        "error",
        "embed",
        200,
        False,
    )
    assert (log.cost_usd, log.price_source) == (Decimal("0.2"), "override")
    # ... and spent: a call that may cost $0.90 no longer fits
    with pytest.raises(BudgetExceeded) as raised:
        embed(tenant=tenant, inputs=["x" * 2_700], model="gemini-embedding-001")
    assert Decimal(raised.value.extra["spend_usd"]) == Decimal("0.2")


def test_embed_retried_after_a_later_batch_failed_sends_only_the_inputs_not_yet_embedded(
    tenant, allow_private_urls, openai_upstream
):
    # given Gemini (100 inputs per request) at $1,000 per million input tokens, and $1 of room
    _gemini_embeddings(tenant, openai_upstream)
    _block(tenant, Decimal("1"))
    texts = [f"text {n}" for n in range(250)]
    model = "gemini-embedding-001"
    openai_upstream.enqueue_embeddings([[n] for n in range(100)], model=model, prompt_tokens=200)
    overloaded = {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
    openai_upstream.enqueue(
        json_reply([{"error": overloaded}], status=503, headers={"Retry-After": "0"})
    )
    openai_upstream.enqueue_embeddings(
        [[n] for n in range(100, 200)], model=model, prompt_tokens=200
    )
    openai_upstream.enqueue_embeddings(
        [[n] for n in range(200, 250)], model=model, prompt_tokens=100
    )

    # when the second batch is unavailable once, after the first was answered
    result = embed(tenant=tenant, inputs=texts, model=model)

    # then the retry sends only the 150 inputs not yet embedded ...
    assert [request.json["input"] for request in openai_upstream.requests] == [
        texts[:100],
        texts[100:200],
        texts[100:200],
        texts[200:],
    ]
    # ... and the call answers every vector, in input order, with the usage
    # and cost of every batch answered: 500 tokens, $0.50
    assert result.vectors == [[float(n)] for n in range(250)]
    assert (result.usage.input_tokens, result.usage_estimated) == (500, False)
    assert (result.cost_usd, result.price_source, result.attempts) == (
        Decimal("0.5"),
        "override",
        2,
    )
    # Each row has the batches its attempt was answered: $0.20 + $0.30.
    rows = CallLog.objects.order_by("attempt").values_list(
        "attempt", "status", "input_tokens", "cost_usd"
    )
    assert list(rows) == [
        (1, "error", 200, Decimal("0.2")),
        (2, "ok", 300, Decimal("0.3")),
    ]
    # The budget is settled with what the provider charged: a call that may
    # cost $0.90 no longer fits in the $0.50 left
    with pytest.raises(BudgetExceeded) as raised:
        embed(tenant=tenant, inputs=["x" * 2_700], model=model)
    assert Decimal(raised.value.extra["spend_usd"]) == Decimal("0.5")


# --- the call's deadline ------------------------------------------------------------


def _answer_fits(tenant, upstream):
    """The next call, worst case $0.028, is admitted and answered: nothing else is held."""
    upstream.enqueue_chat("ok", model="house-model", prompt_tokens=8, completion_tokens=3)
    assert complete(tenant=tenant, messages=HELLO, max_tokens=10).cost_usd == REAL


@pytest.mark.usefixtures("openai_sdk_warm")
def test_complete_ended_by_its_deadline_releases_its_reservation(
    tenant, allow_private_urls, openai_upstream
):
    # given room for exactly one worst-case call, and a provider that does not answer in time
    _house_model(tenant, openai_upstream)
    _block(tenant, Decimal("0.03"))
    openai_upstream.enqueue_chat("late", model="house-model", delay=3)

    # when the call's deadline ends it during its attempt
    with pytest.raises(ProviderTimeout) as raised:
        complete(tenant=tenant, messages=HELLO, max_tokens=10, deadline=1)
    assert raised.value.message.startswith("The call's deadline of 1 s was reached")

    # then its $0.028 is no longer reserved
    _answer_fits(tenant, openai_upstream)


@pytest.mark.usefixtures("openai_sdk_warm")
def test_complete_whose_deadline_refuses_a_wait_releases_its_reservation(
    tenant, allow_private_urls, openai_upstream
):
    _house_model(tenant, openai_upstream)
    _block(tenant, Decimal("0.03"))
    openai_upstream.enqueue_error(429, headers={"Retry-After": "3"}, type="rate_limit")

    with pytest.raises(ProviderTimeout) as raised:
        complete(tenant=tenant, messages=HELLO, max_tokens=10, deadline=1)
    assert "provider_rate_limited" in raised.value.message

    _answer_fits(tenant, openai_upstream)


@pytest.mark.usefixtures("openai_sdk_warm")
def test_stream_ended_by_its_deadline_releases_its_reservation(
    tenant, allow_private_urls, openai_upstream
):
    _house_model(tenant, openai_upstream)
    _block(tenant, Decimal("0.03"))
    openai_upstream.enqueue_chat_stream(["late"], model="house-model", delay=3)

    with pytest.raises(ProviderTimeout):
        list(stream(tenant=tenant, messages=HELLO, max_tokens=10, deadline=1))

    _answer_fits(tenant, openai_upstream)


@pytest.mark.usefixtures("openai_sdk_warm")
def test_stream_ended_by_its_deadline_after_paid_output_settles_that_output(
    tenant, allow_private_urls, openai_upstream
):
    # given room for $0.05, and a first attempt cut after half a tool call
    _house_model(tenant, openai_upstream)
    _block(tenant, Decimal("0.05"))
    call = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}
    openai_upstream.enqueue_chat_stream([], model="house-model", tool_calls=[call], break_after=3)
    openai_upstream.enqueue_chat_stream(["late"], model="house-model", delay=3)

    # when the retry finds no answer before the deadline
    with pytest.raises(ProviderTimeout):
        list(stream(tenant=tenant, messages=HELLO, max_tokens=10, deadline=1))

    # then the cut attempt's $0.026 is spent, and the reservation's rest released
    assert list(CallLog.objects.order_by("attempt").values_list("cost_usd", flat=True)) == [
        Decimal("0.026"),
        None,
    ]
    openai_upstream.enqueue_chat("ok", model="house-model", prompt_tokens=8, completion_tokens=3)
    with pytest.raises(BudgetExceeded) as refused:
        complete(tenant=tenant, messages=HELLO, max_tokens=10)
    assert Decimal(refused.value.extra["spend_usd"]) == Decimal("0.026")


def _rpm_counted(config) -> int:
    """The requests the rate limit counts for `config` in this minute's bucket."""
    from django.core.cache import cache
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    return sum(int(client.get(key)) for key in client.keys(cache.make_key(f"rl:{config.pk}:rpm:*")))


@pytest.mark.redis
@pytest.mark.parametrize("operation", ["complete", "stream"])
def test_call_whose_reservation_leaves_no_time_for_an_attempt_makes_none(
    tenant, primary, monkeypatch, operation
):
    # given room for exactly one worst-case call, one request a minute, and a
    # reservation slow enough (cold counters, a slow Redis) to use up the
    # call's 1 s deadline
    from llm_providers import completion

    _block(tenant, Decimal("0.03"))
    primary.rpm_limit = 1
    primary.tpm_limit = 1000
    primary.save()
    reserve = completion.budget_reserve

    def slow_reserve(**kwargs):
        reservation = reserve(**kwargs)
        time.sleep(0.95)
        return reservation

    monkeypatch.setattr(completion, "budget_reserve", slow_reserve)

    # when the call goes on after its reservation
    with pytest.raises(ProviderTimeout) as raised:
        if operation == "complete":
            complete(tenant=tenant, messages=HELLO, max_tokens=10, deadline=1)
        else:
            list(stream(tenant=tenant, messages=HELLO, max_tokens=10, deadline=1))

    # then no attempt was started with the time left, and what its first
    # attempt's admission counted was given back with its reservation
    assert raised.value.message == (
        "The call's deadline of 1 s was reached before any attempt; "
        "none of the route's 1 target tried."
    )
    assert not CallLog.objects.exists()
    assert _rpm_counted(primary) == 0
    monkeypatch.undo()
    assert complete(tenant=tenant, messages=HELLO, max_tokens=10).cost_usd == REAL
    assert _rpm_counted(primary) == 1
