"""The completion pipeline against the Fake adapter: routing, retries, fallbacks,
rate limits, the response cache, streaming and the call log of every attempt."""

import datetime as dt
import gc
import time
import types
from decimal import Decimal

import pytest
from django.test import override_settings

from llm_providers.adapters.errors import ProviderBadRequest, UpstreamUnavailable
from llm_providers.chat_input import InvalidRequest
from llm_providers.completion import complete, embed, stream
from llm_providers.encryption import UnreadableSecret
from llm_providers.models import ProviderConfig
from llm_providers.rate_limiting import RateLimited, rate_limit_admit
from llm_providers.services import provider_config_update
from overrides.routing import NoRouteError
from tests.factories import (
    ModelPriceFactory,
    ProviderConfigFactory,
    RoutingFallbackFactory,
    RoutingOverrideFactory,
    TenantFactory,
)
from usage.models import CallLog

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "hi"}]
# The Fake provider counts "hi" as 8 input tokens and answers "Echo: hi" (3 tokens);
# at $1 / $2 per million input / output tokens that is 8 + 6 = 14 micro-dollars.
HELLO_COST = Decimal("0.000014")


@pytest.fixture
def tenant():
    tenant = TenantFactory(slug="acme-corp")
    ModelPriceFactory(model="fake-small", input_per_mtok="1", output_per_mtok="2")
    return tenant


@pytest.fixture
def primary(tenant):
    return ProviderConfigFactory(tenant=tenant, name="primary", is_default=True, priority=1)


@pytest.fixture
def backup(tenant):
    return ProviderConfigFactory(tenant=tenant, name="backup", priority=2)


def _logs(**filters):
    return list(CallLog.objects.filter(**filters).order_by("attempt"))


def _fail(config, **options):
    config.options = options
    config.save()


def test_complete_returns_content_usage_and_exact_cost(tenant, primary):
    result = complete(tenant=tenant, messages=HELLO, customer_id="c1", service_name="chat")

    assert result.content == "Echo: hi"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (8, 3)
    assert result.cost_usd == HELLO_COST
    assert result.price_source == "override"
    assert (result.provider, result.model, result.route_rule) == (
        "primary",
        "fake-small",
        "default",
    )
    assert result.cached is False


def test_complete_writes_one_call_log_row(tenant, primary):
    result = complete(tenant=tenant, messages=HELLO, customer_id="c1", service_name="chat")

    [log] = _logs(request_id=result.request_id)
    assert log.tenant == tenant
    assert log.attempt == 1
    assert log.status == CallLog.Status.OK
    assert log.provider_config == primary
    assert (log.provider_type, log.model_requested, log.model_answered) == (
        "fake",
        "fake-small",
        "fake-small",
    )
    assert (log.customer_id, log.service_name, log.route_rule) == ("c1", "chat", "default")
    assert (log.input_tokens, log.output_tokens) == (8, 3)
    assert log.cost_usd == HELLO_COST
    assert log.price_source == "override"
    assert len(log.input_hash) == 64
    assert log.prompt_preview == ""


def test_complete_logs_a_prompt_preview_holding_a_nul_character(tenant, primary):
    # given previews on, and a prompt with a NUL character (valid JSON: "\u0000")
    tenant.store_prompt_previews = True
    tenant.save()

    # when
    result = complete(tenant=tenant, messages=[{"role": "user", "content": "a\x00b"}])

    # then the paid call has its row; the preview shows where the NUL was
    [log] = _logs(request_id=result.request_id)
    assert (log.status, log.cost_usd) == ("ok", result.cost_usd)
    # 8 input and 3 output tokens, as for "hi": 8 + 6 micro-dollars.
    assert log.cost_usd == HELLO_COST
    assert log.prompt_preview == "a\ufffdb"


def test_complete_records_unknown_price_as_null_cost(tenant, primary):
    primary.default_model = "fake-large"
    primary.save()

    result = complete(tenant=tenant, messages=HELLO)

    [log] = _logs(request_id=result.request_id)
    assert result.cost_usd is None
    assert (log.cost_usd, log.price_source) == (None, "unknown")


def test_complete_uses_override_and_records_its_rule(tenant, primary):
    override = RoutingOverrideFactory(tenant=tenant, customer_id="vip", model="fake-small")

    result = complete(tenant=tenant, messages=HELLO, customer_id="vip")

    [log] = _logs(request_id=result.request_id)
    assert log.provider_config == override.provider_config
    assert log.route_rule == "customer"


def test_complete_retries_retryable_failure_on_same_target(tenant, primary, backup):
    _fail(primary, fail_first=1)

    result = complete(tenant=tenant, messages=HELLO)

    logs = _logs(request_id=result.request_id)
    assert [(log.attempt, log.status, log.provider_config_id) for log in logs] == [
        (1, "error", primary.pk),
        (2, "ok", primary.pk),
    ]
    assert logs[0].error_code == "upstream_unavailable"
    assert result.attempts == 2


def test_complete_falls_back_after_retries_are_spent(tenant, primary, backup):
    _fail(primary, failure="unavailable")

    result = complete(tenant=tenant, messages=HELLO)

    assert result.provider == "backup"
    logs = _logs(request_id=result.request_id)
    assert [(log.status, log.provider_config_id) for log in logs] == [
        ("error", primary.pk),
        ("error", primary.pk),
        ("ok", backup.pk),
    ]
    assert logs[2].cost_usd == HELLO_COST


def test_complete_falls_back_when_key_is_rejected(tenant, primary, backup):
    _fail(primary, failure="authentication")

    result = complete(tenant=tenant, messages=HELLO)

    # An account problem is not retried on the same target.
    logs = _logs(request_id=result.request_id)
    assert [(log.status, log.error_code) for log in logs] == [
        ("error", "provider_authentication"),
        ("ok", ""),
    ]


def test_complete_raises_bad_request_without_fallback(tenant, primary, backup):
    _fail(primary, failure="bad_request")

    with pytest.raises(ProviderBadRequest):
        complete(tenant=tenant, messages=HELLO)

    assert [(log.status, log.provider_config_id) for log in _logs()] == [("error", primary.pk)]


def test_complete_raises_last_error_when_every_target_fails(tenant, primary, backup):
    _fail(primary, failure="unavailable")
    _fail(backup, failure="unavailable")

    with pytest.raises(UpstreamUnavailable) as raised:
        complete(tenant=tenant, messages=HELLO)

    logs = _logs()
    assert len(logs) == 4
    assert {str(log.request_id) for log in logs} == {raised.value.extra["request_id"]}
    assert [log.attempt for log in logs] == [1, 2, 3, 4]


def test_stream_error_names_the_request_id_of_its_call_logs(tenant, primary):
    _fail(primary, failure="unavailable")
    chunks = stream(tenant=tenant, messages=HELLO)

    with pytest.raises(UpstreamUnavailable) as raised:
        list(chunks)

    assert raised.value.extra["request_id"] == str(chunks.request_id)
    assert {log.request_id for log in _logs()} == {chunks.request_id}


def test_embed_error_names_the_request_id_of_its_call_logs(tenant, primary):
    _fail(primary, failure="unavailable")

    with pytest.raises(UpstreamUnavailable) as raised:
        embed(tenant=tenant, inputs=["alpha"], model="fake-embed")

    assert {str(log.request_id) for log in _logs()} == {raised.value.extra["request_id"]}


def test_complete_logs_rate_limited_target_as_blocked_and_falls_back(tenant, primary, backup):
    primary.rpm_limit = 1
    primary.save()
    complete(tenant=tenant, messages=HELLO)

    result = complete(tenant=tenant, messages=HELLO)

    assert result.provider == "backup"
    logs = _logs(request_id=result.request_id)
    assert [(log.status, log.error_code, log.provider_config_id) for log in logs] == [
        ("blocked", "rate_limited", primary.pk),
        ("ok", "", backup.pk),
    ]


def test_complete_counts_every_retry_against_rate_limit(tenant, primary, backup):
    # given 2 requests a minute, and a first call that needs a retry
    primary.rpm_limit = 2
    _fail(primary, fail_first=1)
    complete(tenant=tenant, messages=HELLO)

    # when the next call comes
    result = complete(tenant=tenant, messages=HELLO)

    # then the retry was counted: the limit is reached, the backup serves
    assert result.provider == "backup"
    first = CallLog.objects.filter(request_id=result.request_id).order_by("attempt").first()
    assert (first.status, first.error_code) == ("blocked", "rate_limited")


def test_complete_raises_rate_limited_when_no_fallback_is_left(tenant, primary, rate_limit_clock):
    primary.rpm_limit = 1
    primary.save()
    # 30 s into a minute: the one request frees up once this minute is over and
    # its count has decayed to nothing, 30 + 60 s later.
    rate_limit_clock(60 * 29_000_000 + 30)
    complete(tenant=tenant, messages=HELLO)

    with pytest.raises(RateLimited) as raised:
        complete(tenant=tenant, messages=HELLO)

    assert raised.value.extra["retry_after_seconds"] == 90
    assert raised.value.message.endswith("is reached; retry in 90 s.")


@pytest.fixture
def rate_limit_clock(monkeypatch):
    """Set the time the rate limiter sees (seconds since the epoch)."""
    from llm_providers import rate_limiting

    real_window = rate_limiting._window
    now = {"value": 0.0}
    monkeypatch.setattr(rate_limiting, "_window", lambda _: real_window(now["value"]))

    def set_to(value):
        now["value"] = value

    return set_to


def test_rate_limited_everywhere_says_when_the_soonest_target_admits(
    tenant, primary, backup, rate_limit_clock
):
    # given one request a minute on both configs: the primary used late in the
    # previous minute, the backup 30 s into this one
    primary.rpm_limit = backup.rpm_limit = 1
    primary.save()
    backup.save()
    minute = 60 * 29_000_000
    rate_limit_clock(minute - 10)
    assert complete(tenant=tenant, messages=HELLO).provider == "primary"
    rate_limit_clock(minute + 30)
    assert complete(tenant=tenant, messages=HELLO).provider == "backup"

    # when both refuse
    with pytest.raises(RateLimited) as completed:
        complete(tenant=tenant, messages=HELLO)
    streamed = stream(tenant=tenant, messages=HELLO)
    with pytest.raises(RateLimited) as from_stream:
        list(streamed)

    # then the caller learns when the primary admits again (its previous
    # minute has decayed enough in 30 s), not the backup's 90 s
    assert completed.value.extra["retry_after_seconds"] == 30
    assert from_stream.value.extra["retry_after_seconds"] == 30


def test_rate_limited_everywhere_does_not_promise_a_config_the_request_can_never_fit(
    tenant, primary, backup, rate_limit_clock
):
    # given a primary whose token limit is below this request's own count, and
    # a backup allowing one request a minute, used 30 s into this minute
    primary.tpm_limit = 100
    primary.save()
    backup.rpm_limit = 1
    backup.save()
    minute = 60 * 29_000_000
    rate_limit_clock(minute + 30)
    assert complete(tenant=tenant, messages=HELLO).provider == "backup"

    # when both refuse the next call
    with pytest.raises(RateLimited) as raised:
        complete(tenant=tenant, messages=HELLO)

    # then the caller is told when the backup admits again (90 s), not to come
    # back in a minute to a primary that will refuse the request again
    error = raised.value
    assert error.extra["retry_after_seconds"] == 90
    assert (error.extra["limit_kind"], error.extra["limit"]) == ("rpm", 1)
    assert (
        error.message
        == "The provider config's limit of 1 request per minute is reached; retry in 90 s."
    )


def test_complete_serves_identical_request_from_cache_at_zero_cost(tenant, primary):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    first = complete(tenant=tenant, messages=HELLO)

    second = complete(tenant=tenant, messages=HELLO)

    assert second.cached is True
    assert second.content == first.content
    assert second.cost_usd == Decimal(0)
    [log] = _logs(request_id=second.request_id)
    assert (log.status, log.cost_usd, log.input_tokens, log.output_tokens) == ("cached", 0, 0, 0)


def test_cache_hits_report_the_latency_their_call_log_rows_record(tenant, primary):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    complete(tenant=tenant, messages=HELLO)

    # when identical requests are served from the cache, completed and streamed
    hits = [complete(tenant=tenant, messages=HELLO) for _ in range(20)]
    for _ in range(20):
        chunks = stream(tenant=tenant, messages=HELLO)
        list(chunks)
        hits.append(chunks.result)

    # then each caller is told the latency its row records
    logged = dict(CallLog.objects.filter(status="cached").values_list("request_id", "latency_ms"))
    assert [hit.latency_ms for hit in hits] == [logged[hit.request_id] for hit in hits]


def test_complete_does_not_serve_answers_of_a_configs_former_endpoint(tenant, primary):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    complete(tenant=tenant, messages=HELLO)

    provider_config_update(provider_config=primary, data={"options": {"reply": "new endpoint"}})
    again = complete(tenant=tenant, messages=HELLO)

    assert (again.cached, again.content) == (False, "new endpoint")


def test_complete_does_not_serve_an_answer_older_than_a_lowered_ttl(tenant, primary):
    # given an answer cached for an hour
    tenant.response_cache_ttl_seconds = 3600
    tenant.save()
    complete(tenant=tenant, messages=HELLO)
    # when the tenant lowers its TTL to a second, and more than that has passed
    tenant.response_cache_ttl_seconds = 1
    tenant.save()
    time.sleep(1.5)
    again = complete(tenant=tenant, messages=HELLO)

    # then the provider answers again
    assert again.cached is False
    assert [log.status for log in _logs(request_id=again.request_id)] == ["ok"]


def test_complete_does_not_cache_when_ttl_is_zero(tenant, primary):
    complete(tenant=tenant, messages=HELLO)

    second = complete(tenant=tenant, messages=HELLO)

    assert second.cached is False
    assert _logs(request_id=second.request_id)[0].status == "ok"


def test_complete_falls_back_when_key_is_unreadable(tenant, primary, backup):
    # given a key written under a salt that is no longer configured
    with override_settings(SALT_KEY=["retired-salt"]):
        primary.set_api_key("sk-real-key-0123456789abcdef")
        primary.save()
    primary.refresh_from_db()
    assert isinstance(primary.api_key, UnreadableSecret)

    # when
    result = complete(tenant=tenant, messages=HELLO)

    # then the primary is logged as unusable and the backup serves the call
    assert result.provider == "backup"
    first = _logs(request_id=result.request_id)[0]
    assert first.error_code == "secret_unreadable"
    assert "“primary”" in first.error_message
    assert "gAAAA" not in first.error_message


def test_complete_falls_back_when_stored_config_cannot_build_a_client(tenant, primary, backup):
    # given a config stored before validation knew better: Azure without api_version
    ProviderConfig.objects.filter(pk=primary.pk).update(
        provider_type="azure_openai", base_url="https://example.openai.azure.com", options={}
    )
    primary.refresh_from_db()
    primary.save()  # a new version, so the route sees the stored state

    result = complete(tenant=tenant, messages=HELLO)

    assert result.provider == "backup"
    first = _logs(request_id=result.request_id)[0]
    assert first.error_code == "provider_config_unusable"
    assert "“primary” cannot be used" in first.error_message


def test_complete_never_calls_ollama_default_endpoint_when_private_urls_off(
    settings, tenant, primary, backup
):
    # given a primary stored as an Ollama config without a base URL (its
    # default endpoint is this server's loopback)
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    ProviderConfig.objects.filter(pk=primary.pk).update(provider_type="ollama", options={})
    primary.refresh_from_db()
    primary.save()  # a new version, so the route sees the stored state

    result = complete(tenant=tenant, messages=HELLO)

    assert result.provider == "backup"
    first = _logs(request_id=result.request_id)[0]
    assert first.error_code == "provider_config_unusable"
    assert first.error_message == (
        "Provider config “primary” cannot be used: Ollama needs a base URL on a public "
        "address: its default endpoint (http://localhost:11434/v1) is not public. Enter one, "
        "or turn on PROVIDER_ALLOW_PRIVATE_URLS to allow private addresses."
    )


def test_complete_falls_back_when_stored_header_options_are_not_texts(
    allow_private_urls, tenant, primary, backup, openai_upstream
):
    # given an OpenAI config stored before its options were type-checked
    ProviderConfig.objects.filter(pk=primary.pk).update(
        provider_type="openai_compatible",
        base_url=openai_upstream.base_url,
        options={"organization": {"x": [1, 2]}, "project": 12345},
    )
    primary.refresh_from_db()
    primary.save()  # a new version, so the route sees the stored state

    result = complete(tenant=tenant, messages=HELLO)

    # then it is logged as unusable, nothing is sent upstream, and the backup answers
    assert result.provider == "backup"
    first = _logs(request_id=result.request_id)[0]
    assert first.error_code == "provider_config_unusable"
    assert first.error_message == (
        "Provider config “primary” cannot be used: Option “organization” must be a text of at "
        "most 200 characters without spaces or control characters.; Option “project” must be "
        "a text of at most 200 characters without spaces or control characters."
    )
    assert openai_upstream.requests == []


def test_complete_applies_explicit_model_to_primary_target(tenant, primary):
    result = complete(tenant=tenant, messages=HELLO, model="fake-large")

    assert result.model == "fake-large"


def test_complete_tries_a_fallback_once_when_the_explicit_model_makes_it_the_primary(
    tenant, primary, backup
):
    # given an override whose fallback is the primary config with another model
    _fail(primary, failure="unavailable")
    override = RoutingOverrideFactory(
        tenant=tenant, customer_id="vip", provider_config=primary, model="fake-small"
    )
    RoutingFallbackFactory(override=override, provider_config=primary, model="fake-large")
    RoutingFallbackFactory(override=override, provider_config=backup, model="fake-small")

    # when the caller asks for the fallback's model
    result = complete(tenant=tenant, messages=HELLO, customer_id="vip", model="fake-large")

    # then primary/fake-large is tried (with its retry) once, not again as a fallback
    assert result.provider == "backup"
    tried = [
        (log.provider_config.name, log.model_requested, log.status)
        for log in _logs(request_id=result.request_id)
    ]
    assert tried == [
        ("primary", "fake-large", "error"),
        ("primary", "fake-large", "error"),
        ("backup", "fake-small", "ok"),
    ]


def test_complete_refuses_model_not_allowed_on_primary(tenant, primary):
    primary.allowed_models = ["fake-small"]
    primary.save()

    with pytest.raises(InvalidRequest) as raised:
        complete(tenant=tenant, messages=HELLO, model="gpt-4o")

    assert raised.value.field == "model"
    assert "not allowed on provider config “primary”" in raised.value.message
    assert not CallLog.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"messages": HELLO, "temperature": 3}, "temperature"),
        ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": HELLO, "tools": [{"type": "web"}]}, "tools[0]"),
        ({"messages": HELLO, "tools": ["lookup"]}, "tools[0]"),
        ({"messages": HELLO, "max_tokens": 10**9}, "max_tokens"),
        ({"messages": HELLO, "customer_id": "c" * 201}, "customer_id"),
        ({"messages": HELLO, "service_name": 7}, "service_name"),
        ({"messages": HELLO, "customer_id": "ac\nme"}, "customer_id"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": None, "tool_calls": ["call_1"]},
                ]
            },
            "messages[1].tool_calls[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_complete_refuses_bad_input_before_routing(tenant, primary, kwargs, field):
    with pytest.raises(InvalidRequest) as raised:
        complete(tenant=tenant, **kwargs)

    assert raised.value.field == field
    assert raised.value.http_status == 400
    assert not CallLog.objects.exists()


def test_complete_raises_no_route_without_default(tenant):
    with pytest.raises(NoRouteError):
        complete(tenant=tenant, messages=HELLO, customer_id="acme")

    assert not CallLog.objects.exists()


def test_complete_keeps_prompt_preview_only_when_tenant_enables_it(tenant, primary):
    tenant.store_prompt_previews = True
    tenant.save()

    result = complete(tenant=tenant, messages=HELLO)

    assert _logs(request_id=result.request_id)[0].prompt_preview == "hi"


def test_complete_returns_tool_calls(tenant, primary):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]

    result = complete(tenant=tenant, messages=HELLO, tools=tools)

    assert result.finish_reason == "tool_calls"
    assert [call.name for call in result.tool_calls] == ["lookup"]


def test_stream_yields_text_and_records_call_at_the_end(tenant, primary):
    tenant.store_prompt_previews = True
    tenant.save()
    chunks = stream(tenant=tenant, messages=[{"role": "user", "content": "one two three"}])

    text = "".join(chunks)

    assert text == "Echo: one two three"
    assert chunks.result.content == text
    [log] = _logs(request_id=chunks.request_id)
    assert (log.status, log.streamed, log.usage_estimated) == ("ok", True, False)
    assert 0 <= log.time_to_first_token_ms <= log.latency_ms
    assert log.output_tokens == chunks.result.usage.output_tokens == 7
    # 12 input and 7 output tokens: 12 + 14 micro-dollars.
    assert log.input_tokens == chunks.result.usage.input_tokens == 12
    assert log.cost_usd == chunks.result.cost_usd == Decimal("0.000026")


def test_stream_closed_early_records_estimated_usage(tenant, primary):
    chunks = stream(tenant=tenant, messages=[{"role": "user", "content": "one two three four"}])
    first = next(chunks)

    chunks.close()

    [log] = _logs(request_id=chunks.request_id)
    assert first == "Echo: "
    assert (log.status, log.error_code, log.usage_estimated) == ("ok", "client_closed", True)
    # "Echo: " is 6 characters: 2 estimated output tokens.
    assert log.output_tokens == 2
    # 13 input tokens at $1 and 2 output tokens at $2 per million.
    assert log.input_tokens == 13
    assert log.cost_usd == Decimal("0.000017")


def test_streams_closed_early_report_the_latency_their_call_log_rows_record(tenant, primary):
    results = []
    for _ in range(20):
        chunks = stream(tenant=tenant, messages=[{"role": "user", "content": "one two three"}])
        next(chunks)
        chunks.close()
        results.append(chunks.result)

    logged = dict(CallLog.objects.values_list("request_id", "latency_ms"))
    assert [result.latency_ms for result in results] == [
        logged[result.request_id] for result in results
    ]


def test_stream_dropped_by_a_failing_caller_is_recorded_at_once(tenant, primary):
    # given a caller whose own code fails while it reads a stream
    held = [stream(tenant=tenant, messages=[{"role": "user", "content": "one two three four"}])]
    request_id = held[0].request_id

    def read_and_fail():
        for _text in held[0]:
            raise ValueError("a bug in the caller")

    # when the stream is dropped with the cyclic garbage collector not running
    gc.disable()
    try:
        with pytest.raises(ValueError, match="a bug in the caller"):
            read_and_fail()
        held.clear()
        logs = _logs(request_id=request_id)
    finally:
        gc.enable()

    # then the upstream call was stopped and what was received is on record
    assert [(log.status, log.error_code, log.output_tokens) for log in logs] == [
        ("ok", "client_closed", 2)
    ]


def test_stream_falls_back_when_first_target_fails_before_any_chunk(tenant, primary, backup):
    _fail(primary, failure="timeout")

    chunks = stream(tenant=tenant, messages=HELLO)
    text = "".join(chunks)

    assert text == "Echo: hi"
    assert chunks.result.provider == "backup"
    statuses = [(log.status, log.error_code) for log in _logs(request_id=chunks.request_id)]
    assert statuses == [
        ("error", "provider_timeout"),
        ("error", "provider_timeout"),
        ("ok", ""),
    ]


def test_stream_serves_cache_hit_as_one_chunk(tenant, primary):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    complete(tenant=tenant, messages=HELLO)

    chunks = stream(tenant=tenant, messages=HELLO)

    assert list(chunks) == ["Echo: hi"]
    assert chunks.result.cached is True


def test_embed_returns_vectors_and_logs_the_call(tenant, primary):
    ModelPriceFactory(model="fake-embed", input_per_mtok="0.5", output_per_mtok="0")

    result = embed(tenant=tenant, inputs=["alpha", "beta"], model="fake-embed")

    assert len(result.vectors) == 2
    assert len(result.vectors[0]) == 8
    # "alpha" and "beta" are 2 tokens each at $0.50 per million.
    assert result.cost_usd == Decimal("0.000002")
    [log] = _logs(request_id=result.request_id)
    assert (log.operation, log.status, log.input_tokens) == ("embed", "ok", 4)


def test_embed_requires_a_model(tenant, primary):
    with pytest.raises(InvalidRequest) as raised:
        embed(tenant=tenant, inputs=["x"], model="")

    assert raised.value.field == "model"


def test_complete_goes_on_when_cache_is_unreachable(tenant, primary, cache_down, caplog):
    # given rate limits and the response cache on, and the cache down
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    primary.rpm_limit = 1
    primary.save()

    # when
    first = complete(tenant=tenant, messages=HELLO)
    second = complete(tenant=tenant, messages=HELLO)

    # then both calls are served by the provider and logged; the outage is reported
    assert (first.cached, second.cached) == (False, False)
    assert first.cost_usd == second.cost_usd == HELLO_COST
    assert CallLog.objects.filter(status="ok").count() == 2
    assert "response cache lookup failed" in caplog.text
    assert "not enforced: cache unavailable" in caplog.text


def test_stream_goes_on_when_cache_is_unreachable(tenant, primary, cache_down):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()

    chunks = stream(tenant=tenant, messages=HELLO)

    assert "".join(chunks) == "Echo: hi"
    assert chunks.result.cost_usd == HELLO_COST


def test_stream_sends_the_messages_it_was_given_when_the_caller_changes_them_later(tenant, primary):
    # given a stream of a conversation, and the cache on
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    history = [{"role": "user", "content": "hi"}]
    chunks = stream(tenant=tenant, messages=history)

    # when the caller goes on with the conversation before reading the stream
    history.append({"role": "assistant", "content": "Echo: hi"})
    history.append({"role": "user", "content": "and more"})

    # then the stream answers what was asked, and that answer is what the cache keeps
    assert "".join(chunks) == "Echo: hi"
    assert complete(tenant=tenant, messages=HELLO).content == "Echo: hi"


def test_stream_cache_hit_has_its_result_when_the_caller_stops_after_the_text(tenant, primary):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    complete(tenant=tenant, messages=HELLO)
    chunks = stream(tenant=tenant, messages=HELLO)

    assert next(chunks) == "Echo: hi"
    chunks.close()

    assert chunks.result is not None
    assert (chunks.result.content, chunks.result.cached) == ("Echo: hi", True)
    assert chunks.result.cost_usd == Decimal(0)


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_call_is_priced_at_the_prices_of_the_day_it_started(tenant, primary, streamed, monkeypatch):
    # given a new price from today (00:00 UTC) and a call that started a second before
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    ModelPriceFactory(
        model="fake-small", input_per_mtok="100", output_per_mtok="200", effective_from=today.date()
    )
    started_at = today - dt.timedelta(seconds=1)
    monkeypatch.setattr(
        "llm_providers.completion.timezone", types.SimpleNamespace(now=lambda: started_at)
    )

    # when it ends (now, today)
    if streamed:
        chunks = stream(tenant=tenant, messages=HELLO)
        list(chunks)
        cost = chunks.result.cost_usd
    else:
        cost = complete(tenant=tenant, messages=HELLO).cost_usd

    # then it is logged on yesterday, at yesterday's price ($1 / $2), not today's
    [log] = _logs()
    assert log.created_at == started_at
    assert cost == log.cost_usd == HELLO_COST


def test_every_target_failing_tells_how_each_one_failed(tenant, primary, backup):
    # given a primary that times out and a backup whose one request a minute is used
    _fail(primary, failure="timeout")
    backup.rpm_limit = 1
    backup.save()
    rate_limit_admit(provider_config_id=backup.pk, rpm_limit=1, tpm_limit=None, tokens=1)

    # when a call finds no target to serve it, complete and streamed alike
    with pytest.raises(RateLimited) as completed:
        complete(tenant=tenant, messages=HELLO)
    with pytest.raises(RateLimited) as streamed:
        list(stream(tenant=tenant, messages=HELLO))

    # then the error names each target tried, in route order, and how it failed
    for raised in (completed, streamed):
        failures = raised.value.extra["failures"]
        assert [(f["provider"], f["provider_config"], f["model"], f["code"]) for f in failures] == [
            ("primary", str(primary.pk), "fake-small", "provider_timeout"),
            ("backup", str(backup.pk), "fake-small", "rate_limited"),
        ]
        assert failures[1]["message"] == raised.value.message
        assert failures[0]["message"]
