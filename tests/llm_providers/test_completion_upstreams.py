"""`complete()` and `stream()` end to end: stored provider configs, the official SDKs,
and loopback servers speaking each wire format. Costs are checked to the micro-dollar."""

import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from llm_providers import completion
from llm_providers.adapters import base as adapters_base
from llm_providers.adapters.errors import (
    NotSupported,
    ProviderAuthenticationError,
    ProviderTimeout,
    UpstreamUnavailable,
)
from llm_providers.chat_input import InvalidRequest
from llm_providers.clients import adapter_for_config
from llm_providers.completion import complete, embed, stream
from llm_providers.services import provider_config_create
from tests.factories import ModelPriceFactory, ProviderConfigFactory, TenantFactory
from tests.llm_providers.adapters.test_openai_chat import MISTRAL_THINKING_STREAM
from tests.upstreams.server import Reply
from usage.models import CallLog

pytestmark = pytest.mark.django_db

OPENAI_KEY = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
ANTHROPIC_KEY = "sk-ant-api03-Z9y8X7w6V5u4T3s2R1q0P9o8"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def tenant(allow_private_urls):
    return TenantFactory()


def _config(tenant, **fields):
    fields.setdefault("is_default", True)
    return provider_config_create(tenant=tenant, **fields)


def _openai(tenant, upstream, **fields):
    return _config(
        tenant,
        name=fields.pop("name", "openai"),
        provider_type="openai",
        api_key=OPENAI_KEY,
        base_url=upstream.base_url,
        default_model="gpt-4o",
        **fields,
    )


def _gemini(tenant, upstream, model):
    """Gemini (100 inputs per embeddings request) at $1,000 per million input tokens."""
    ModelPriceFactory(
        provider_type="gemini", model=model, input_per_mtok="1000", output_per_mtok="0"
    )
    return _config(
        tenant,
        name="gemini",
        provider_type="gemini",
        api_key="AIzaSyTestKey1234567890",
        base_url=upstream.base_url,
        default_model=model,
    )


def _only_log(result):
    [log] = CallLog.objects.filter(request_id=result.request_id)
    return log


# --- cost goldens ---------------------------------------------------------------
# OpenAI gpt-4o: $2.50 input, $1.25 cached input, $10 output per million.
# 1,200 prompt tokens of which 1,000 cached; 300 completion tokens of which 200
# reasoning: 200 × 2.50 + 1,000 × 1.25 + 300 × 10 = 4,750 per million.
OPENAI_GOLDEN = Decimal("0.00475")


def test_complete_prices_openai_cached_and_reasoning_tokens(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat(
        "Hi", model="gpt-4o-2024-08-06", prompt_tokens=1200, cached_tokens=1000,
        completion_tokens=300, reasoning_tokens=200,
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO)

    assert result.content == "Hi"
    assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (1200, 1000)
    assert (result.usage.output_tokens, result.usage.reasoning_tokens) == (300, 200)
    assert result.cost_usd == OPENAI_GOLDEN
    log = _only_log(result)
    assert (log.model_requested, log.model_answered) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert (log.cost_usd, log.price_source) == (OPENAI_GOLDEN, "genai_prices")


def test_stream_prices_openai_usage_from_the_final_chunk(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(
        ["H", "i"], model="gpt-4o-2024-08-06", prompt_tokens=1200, cached_tokens=1000,
        completion_tokens=300, reasoning_tokens=200,
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO)

    assert list(chunks) == ["H", "i"]
    assert chunks.result.cost_usd == OPENAI_GOLDEN
    assert openai_upstream.requests[0].json["stream_options"] == {"include_usage": True}
    log = _only_log(chunks.result)
    assert (log.streamed, log.usage_estimated, log.cost_usd) == (True, False, OPENAI_GOLDEN)


def test_complete_prices_azure_deployment_by_model(tenant, openai_upstream):
    _config(
        tenant,
        name="azure",
        provider_type="azure_openai",
        api_key="azure-key-0123456789abcdef0123",
        base_url=openai_upstream.url,
        options={"api_version": "2024-10-21", "deployments": {"gpt-4o": "prod-4o"}},
        default_model="gpt-4o",
    )
    openai_upstream.enqueue_chat(
        "Hi", model="gpt-4o-2024-08-06", prompt_tokens=1200, cached_tokens=1000,
        completion_tokens=300, reasoning_tokens=200,
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO)

    request = openai_upstream.requests[0]
    assert request.path == "/openai/deployments/prod-4o/chat/completions"
    assert request.query["api-version"] == "2024-10-21"
    assert result.cost_usd == OPENAI_GOLDEN


# OpenAI gpt-4.1 served at the priority tier, which the project's settings at
# OpenAI can make its default: $3.50 input, $0.875 cached input, $14 output
# per million (default tier: $2, $0.50, $8). 1,200 prompt tokens of which
# 1,000 cached, 300 completion tokens:
# 200 × 3.50 + 1,000 × 0.875 + 300 × 14 = 5,775 per million.
OPENAI_PRIORITY_GOLDEN = Decimal("0.005775")


def test_complete_prices_openai_at_the_service_tier_that_served_the_call(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat(
        "Hi", model="gpt-4.1-2025-04-14", prompt_tokens=1200, cached_tokens=1000,
        completion_tokens=300, service_tier="priority",
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO, model="gpt-4.1")

    assert result.cost_usd == OPENAI_PRIORITY_GOLDEN
    assert _only_log(result).cost_usd == OPENAI_PRIORITY_GOLDEN


def test_stream_prices_openai_at_the_service_tier_its_chunks_name(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(
        ["H", "i"], model="gpt-4.1-2025-04-14", prompt_tokens=1200, cached_tokens=1000,
        completion_tokens=300, service_tier="priority",
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO, model="gpt-4.1")

    assert "".join(chunks) == "Hi"
    assert chunks.result.cost_usd == OPENAI_PRIORITY_GOLDEN
    assert _only_log(chunks.result).cost_usd == OPENAI_PRIORITY_GOLDEN


def test_complete_prices_openai_default_service_tier_at_the_standard_rates(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat(
        "Hi", model="gpt-4.1-2025-04-14", prompt_tokens=1200, cached_tokens=1000,
        completion_tokens=300, service_tier="default",
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO, model="gpt-4.1")

    # 200 × 2 + 1,000 × 0.50 + 300 × 8 = 3,300 per million.
    assert result.cost_usd == _only_log(result).cost_usd == Decimal("0.0033")


# Anthropic claude-opus-4-7: $5 input, $0.50 cache read, $6.25 cache write,
# $25 output. 200 uncached + 1,000 read + 500 written, 300 out:
# 1,000 + 500 + 3,125 + 7,500 = 12,125 per million.
ANTHROPIC_MODEL = "claude-opus-4-7"
ANTHROPIC_GOLDEN = Decimal("0.012125")


def _anthropic(tenant, upstream, **fields):
    return _config(
        tenant,
        name="anthropic",
        provider_type="anthropic",
        api_key=ANTHROPIC_KEY,
        base_url=upstream.url,
        default_model=ANTHROPIC_MODEL,
        **fields,
    )


def test_complete_prices_anthropic_cache_reads_and_writes(tenant, anthropic_upstream):
    _anthropic(tenant, anthropic_upstream)
    anthropic_upstream.enqueue_message(
        "Hi", model=ANTHROPIC_MODEL, input_tokens=200, cache_read_tokens=1000,
        cache_write_tokens=500, output_tokens=300,
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO)

    # Anthropic's input_tokens excludes the cache: normalised input adds it back.
    assert result.usage.input_tokens == 1700
    assert (result.usage.cache_read_tokens, result.usage.cache_write_tokens) == (1000, 500)
    assert result.cost_usd == ANTHROPIC_GOLDEN
    assert _only_log(result).cost_usd == ANTHROPIC_GOLDEN


# Anthropic claude-sonnet-4-5 above 200,000 input tokens (cache reads and writes
# count towards them): $6 input, $0.60 cache read, $22.50 output per million
# (below: $3, $0.30, $15). 150,000 uncached + 60,000 read = 210,000 in, 1,000 out:
# 150,000 × 6 + 60,000 × 0.60 + 1,000 × 22.50 = 958,500 per million.
def test_complete_prices_anthropic_long_context_counting_cache_reads_in_the_prompt(
    tenant, anthropic_upstream
):
    _anthropic(tenant, anthropic_upstream)
    anthropic_upstream.enqueue_message(
        "Hi", model="claude-sonnet-4-5-20250929", input_tokens=150_000,
        cache_read_tokens=60_000, output_tokens=1000,
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO)

    assert result.usage.input_tokens == 210_000
    assert result.cost_usd == Decimal("0.9585")
    assert _only_log(result).cost_usd == Decimal("0.9585")


# Gemini gemini-2.5-pro above 200,000 prompt tokens (cached ones count, as
# prompt_tokens includes them): $2.50 input, $0.25 cached, $15 output per million
# (below: $1.25, $0.125, $10). 250,000 prompt of which 50,000 cached, 1,000 out:
# 200,000 × 2.50 + 50,000 × 0.25 + 1,000 × 15 = 527,500 per million.
def test_complete_prices_gemini_long_context_above_200k_prompt_tokens(tenant, openai_upstream):
    _config(
        tenant,
        name="gemini",
        provider_type="gemini",
        api_key="AIzaSyTestKey1234567890",
        base_url=openai_upstream.base_url,
        default_model="gemini-2.5-pro",
    )
    openai_upstream.enqueue_chat(
        "Hi", model="models/gemini-2.5-pro", prompt_tokens=250_000, cached_tokens=50_000,
        completion_tokens=1000,
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO)

    log = _only_log(result)
    assert (log.cost_usd, log.price_source) == (Decimal("0.5275"), "genai_prices")
    assert result.cost_usd == Decimal("0.5275")


def test_stream_prices_anthropic_from_the_last_cumulative_delta(tenant, anthropic_upstream):
    _anthropic(tenant, anthropic_upstream)
    anthropic_upstream.enqueue_message_stream(
        ["H", "i"], model=ANTHROPIC_MODEL, input_tokens=200, cache_read_tokens=1000,
        cache_write_tokens=500, output_tokens=300, output_token_steps=[100, 300],
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO)

    assert "".join(chunks) == "Hi"
    # message_delta usage is cumulative: 300, not 100 + 300.
    assert chunks.result.usage.output_tokens == 300
    assert chunks.result.cost_usd == ANTHROPIC_GOLDEN
    assert _only_log(chunks.result).cost_usd == ANTHROPIC_GOLDEN


# The 500 tokens written of the golden above, 200 of them to the 1-hour cache
# ($10 per million for claude-opus-4-7, against $6.25 for 5 minutes):
# 1,000 + 500 + 300 × 6.25 + 200 × 10 + 7,500 = 12,875 per million.
ANTHROPIC_1H_GOLDEN = Decimal("0.012875")


def test_complete_prices_anthropic_one_hour_cache_writes_at_their_rate(tenant, anthropic_upstream):
    _anthropic(tenant, anthropic_upstream)
    anthropic_upstream.enqueue_message(
        "Hi", model=ANTHROPIC_MODEL, input_tokens=200, cache_read_tokens=1000,
        cache_write_tokens=500, cache_write_1h_tokens=200, output_tokens=300,
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO)

    assert result.cost_usd == ANTHROPIC_1H_GOLDEN
    assert _only_log(result).cost_usd == ANTHROPIC_1H_GOLDEN
    assert result.usage.cache_write_tokens == 500
    assert result.usage.cache_write_1h_tokens == 200


def test_stream_prices_anthropic_one_hour_cache_writes_reported_at_the_start(
    tenant, anthropic_upstream
):
    _anthropic(tenant, anthropic_upstream)
    anthropic_upstream.enqueue_message_stream(
        ["H", "i"], model=ANTHROPIC_MODEL, input_tokens=200, cache_read_tokens=1000,
        cache_write_tokens=500, cache_write_1h_tokens=200, output_tokens=300,
        output_token_steps=[100, 300],
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO)

    assert "".join(chunks) == "Hi"
    assert chunks.result.cost_usd == ANTHROPIC_1H_GOLDEN
    assert _only_log(chunks.result).cost_usd == ANTHROPIC_1H_GOLDEN
    assert chunks.result.usage.cache_write_1h_tokens == 200


def test_stream_broken_after_text_records_the_prompt_usage_anthropic_reported(
    tenant, anthropic_upstream
):
    _anthropic(tenant, anthropic_upstream)
    # message_start (its usage: the prompt's tokens), ping, block start,
    # "alpha ", "beta ", then the connection drops.
    anthropic_upstream.enqueue_message_stream(
        ["alpha ", "beta ", "gamma"], model=ANTHROPIC_MODEL, input_tokens=200,
        cache_read_tokens=1000, cache_write_tokens=500, break_after=5,
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO)
    with pytest.raises(UpstreamUnavailable):
        list(chunks)

    log = _only_log(chunks.result)
    assert (log.status, log.usage_estimated) == ("error", True)
    # The prompt as reported; the output estimated from "alpha beta " (11
    # characters, 4 tokens): 1,000 + 500 + 3,125 + 4 x 25 = 4,725 per million.
    assert (log.input_tokens, log.cache_read_tokens, log.cache_write_tokens) == (1700, 1000, 500)
    assert log.output_tokens == 4
    assert log.cost_usd == Decimal("0.004725")
    assert chunks.result.cost_usd == Decimal("0.004725")


def test_stream_closed_by_caller_records_the_prompt_usage_anthropic_reported(
    tenant, anthropic_upstream
):
    _anthropic(tenant, anthropic_upstream)
    anthropic_upstream.enqueue_message_stream(
        ["alpha ", "beta ", "gamma"], model=ANTHROPIC_MODEL, input_tokens=200,
        cache_read_tokens=1000, cache_write_tokens=500, chunk_delay=0.05,
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO)
    assert next(iter(chunks)) == "alpha "
    chunks.close()

    log = CallLog.objects.get()
    assert (log.status, log.error_code, log.usage_estimated) == ("ok", "client_closed", True)
    # "alpha " is 2 estimated tokens: 1,000 + 500 + 3,125 + 2 x 25 = 4,675 per million.
    assert (log.input_tokens, log.cache_read_tokens, log.output_tokens) == (1700, 1000, 2)
    assert log.cost_usd == Decimal("0.004675")


# Bedrock anthropic.claude-3-5-haiku: $0.80 input, $0.08 cache read, $1 cache
# write, $4 output: 160 + 80 + 500 + 1,200 = 1,940 per million.
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
BEDROCK_GOLDEN = Decimal("0.00194")


def _bedrock(tenant, upstream):
    return _config(
        tenant,
        name="bedrock",
        provider_type="bedrock",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        aws_region="us-east-1",
        base_url=upstream.url,
        default_model=BEDROCK_MODEL,
    )


def test_complete_prices_bedrock_cache_tokens(tenant, bedrock_upstream):
    _bedrock(tenant, bedrock_upstream)
    bedrock_upstream.enqueue_converse(
        "Hi", input_tokens=200, cache_read_tokens=1000, cache_write_tokens=500, output_tokens=300
    )

    result = complete(tenant=tenant, messages=HELLO)

    assert result.usage.input_tokens == 1700
    assert result.cost_usd == BEDROCK_GOLDEN
    assert _only_log(result).cost_usd == BEDROCK_GOLDEN


def test_stream_prices_bedrock_usage_from_metadata_event(tenant, bedrock_upstream):
    _bedrock(tenant, bedrock_upstream)
    bedrock_upstream.enqueue_converse_stream(
        ["H", "i"], input_tokens=200, cache_read_tokens=1000, cache_write_tokens=500,
        output_tokens=300,
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO)

    assert "".join(chunks) == "Hi"
    assert chunks.result.cost_usd == BEDROCK_GOLDEN


# Bedrock us.anthropic.claude-sonnet-4-5 (a regional profile): $3.30 input,
# $0.33 cache read, $4.125 cache write for 5 minutes, $6.60 for an hour,
# $16.50 output. 200 uncached + 1,000 read + 300 written for 5 minutes + 200
# for an hour, 300 out: 660 + 330 + 1,237.5 + 1,320 + 4,950 = 8,497.5 per million.
BEDROCK_1H_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
BEDROCK_1H_GOLDEN = Decimal("0.0084975")


def test_complete_prices_bedrock_one_hour_cache_writes_at_their_rate(tenant, bedrock_upstream):
    _bedrock(tenant, bedrock_upstream)
    bedrock_upstream.enqueue_converse(
        "Hi", input_tokens=200, cache_read_tokens=1000, cache_write_tokens=500,
        cache_write_1h_tokens=200, output_tokens=300,
    )  # fmt: skip

    result = complete(tenant=tenant, messages=HELLO, model=BEDROCK_1H_MODEL)

    assert result.cost_usd == BEDROCK_1H_GOLDEN
    assert _only_log(result).cost_usd == BEDROCK_1H_GOLDEN
    assert (result.usage.cache_write_tokens, result.usage.cache_write_1h_tokens) == (500, 200)


def test_stream_prices_bedrock_one_hour_cache_writes_from_metadata_event(tenant, bedrock_upstream):
    _bedrock(tenant, bedrock_upstream)
    bedrock_upstream.enqueue_converse_stream(
        ["H", "i"], input_tokens=200, cache_read_tokens=1000, cache_write_tokens=500,
        cache_write_1h_tokens=200, output_tokens=300,
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO, model=BEDROCK_1H_MODEL)

    assert "".join(chunks) == "Hi"
    assert chunks.result.cost_usd == BEDROCK_1H_GOLDEN
    assert _only_log(chunks.result).cost_usd == BEDROCK_1H_GOLDEN


def test_complete_records_unpriced_model_as_unknown(tenant, openai_upstream):
    _config(
        tenant,
        name="self-hosted",
        provider_type="openai_compatible",
        base_url=openai_upstream.base_url,
        default_model="house-model-7b",
    )
    openai_upstream.enqueue_chat("Hi", model="house-model-7b")

    result = complete(tenant=tenant, messages=HELLO)

    log = _only_log(result)
    assert (result.cost_usd, log.cost_usd, log.price_source) == (None, None, "unknown")


# Mistral mistral-large-4 in genai-prices: $0.68 input, $2.09 output per million
# until 2026-10-19, $1.36 / $4.18 from 2026-10-20, $0.70 / $2.10 from 2026-10-29.
# 1,000 in and 1,000 out on 2026-10-19: 680 + 2,090 = 2,770 per million.
def test_complete_prices_at_genai_prices_of_the_day_the_call_started(
    tenant, openai_upstream, monkeypatch
):
    started = datetime(2026, 10, 19, 23, 59, 59, tzinfo=UTC)
    monkeypatch.setattr(completion, "timezone", SimpleNamespace(now=lambda: started))
    _config(
        tenant,
        name="mistral",
        provider_type="mistral",
        api_key="mistral-key-0123456789abcdef",
        base_url=openai_upstream.base_url,
        default_model="mistral-large-4",
    )
    openai_upstream.enqueue_chat(
        "Hi", model="mistral-large-4", prompt_tokens=1000, completion_tokens=1000
    )

    result = complete(tenant=tenant, messages=HELLO)

    log = _only_log(result)
    assert log.created_at == started
    assert (log.cost_usd, log.price_source) == (Decimal("0.00277"), "genai_prices")
    assert result.cost_usd == Decimal("0.00277")


def test_complete_prices_dated_answer_at_the_tenants_price_for_the_requested_name(
    tenant, openai_upstream
):
    # A negotiated rate for gpt-4o applies although OpenAI answers with a
    # dated name that genai-prices knows on its own.
    ModelPriceFactory(
        tenant=tenant, provider_type="openai", model="gpt-4o",
        input_per_mtok="1", output_per_mtok="2",
    )  # fmt: skip
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat(
        "Hi", model="gpt-4o-2024-08-06", prompt_tokens=1_000_000, completion_tokens=500_000
    )

    result = complete(tenant=tenant, messages=HELLO)

    log = _only_log(result)
    assert (log.model_answered, log.price_source) == ("gpt-4o-2024-08-06", "override")
    assert result.cost_usd == log.cost_usd == Decimal("2")


# --- retries, fallbacks, timeouts -------------------------------------------------


def test_complete_waits_for_retry_after_then_retries(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_error(429, headers={"retry-after-ms": "300"}, type="rate_limit")
    openai_upstream.enqueue_chat("Hi")

    started = time.perf_counter()
    result = complete(tenant=tenant, messages=HELLO)
    elapsed = time.perf_counter() - started

    assert result.content == "Hi"
    assert elapsed >= 0.3
    statuses = list(CallLog.objects.order_by("attempt").values_list("status", "error_code"))
    assert statuses == [("error", "provider_rate_limited"), ("ok", "")]


def test_complete_skips_to_fallback_when_retry_after_is_too_long(tenant, openai_upstream):
    _openai(tenant, openai_upstream, name="primary", priority=1)
    provider_config_create(
        tenant=tenant, name="fake-backup", provider_type="fake", default_model="fake-small"
    )
    openai_upstream.enqueue_error(429, headers={"Retry-After": "120"})

    started = time.perf_counter()
    result = complete(tenant=tenant, messages=HELLO)

    assert time.perf_counter() - started < 5
    assert result.provider == "fake-backup"
    assert len(openai_upstream.requests) == 1


def test_complete_falls_back_at_once_when_request_is_over_the_accounts_token_rate(
    tenant, openai_upstream
):
    _openai(tenant, openai_upstream, name="primary", priority=1)
    provider_config_create(
        tenant=tenant, name="fake-backup", provider_type="fake", default_model="fake-small"
    )
    openai_upstream.enqueue_error(
        413,
        message="Request too large for model on tokens per minute (TPM): Limit 6000.",
        type="tokens",
        code="rate_limit_exceeded",
    )

    result = complete(tenant=tenant, messages=HELLO)

    assert result.provider == "fake-backup"
    assert len(openai_upstream.requests) == 1
    statuses = list(CallLog.objects.order_by("attempt").values_list("status", "error_code"))
    assert statuses == [("error", "provider_rate_limited"), ("ok", "")]


def test_complete_times_out_and_falls_back(tenant, openai_upstream):
    _openai(tenant, openai_upstream, name="slow", priority=1)
    provider_config_create(
        tenant=tenant, name="fake-backup", provider_type="fake", default_model="fake-small"
    )
    openai_upstream.enqueue_chat(delay=3, times=2)

    result = complete(tenant=tenant, messages=HELLO, timeout=0.3)

    assert result.provider == "fake-backup"
    codes = list(CallLog.objects.order_by("attempt").values_list("error_code", flat=True))
    assert codes == ["provider_timeout", "provider_timeout", ""]


def test_stream_broken_by_upstream_records_estimated_usage_and_raises(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(["alpha ", "beta ", "gamma"], break_after=3)

    chunks = stream(tenant=tenant, messages=HELLO)
    received = []
    with pytest.raises(UpstreamUnavailable):
        for text in chunks:
            received.append(text)

    assert received == ["alpha ", "beta "]
    log = CallLog.objects.get()
    assert (log.status, log.streamed, log.usage_estimated) == ("error", True, True)
    assert log.error_code == "upstream_unavailable"
    # "alpha beta " is 11 characters: 4 estimated output tokens; the prompt is
    # estimated at 9. gpt-4o-mini at $0.15 input and $0.60 output per million:
    # 9 × 0.15 + 4 × 0.60 = 3.75 per million.
    assert (log.input_tokens, log.output_tokens) == (9, 4)
    assert (log.model_answered, log.price_source) == ("gpt-4o-mini-2024-07-18", "genai_prices")
    assert log.cost_usd == Decimal("0.00000375")


def test_stream_without_reported_usage_estimates_and_prices_the_tool_calls(tenant, openai_upstream):
    # Mistral is not asked for stream usage; this server then reports none.
    ModelPriceFactory(
        tenant=tenant, provider_type="mistral", model="mistral-small",
        input_per_mtok="0", output_per_mtok="1000000",
    )  # fmt: skip
    _config(
        tenant,
        name="mistral",
        provider_type="mistral",
        api_key="mistral-key-0123456789abcdef",
        base_url=openai_upstream.base_url,
        default_model="mistral-small",
    )
    arguments = '{"city": "Paris", "unit": "celsius"}'
    openai_upstream.enqueue_chat_stream(
        [], model="mistral-small",
        tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": arguments}],
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO)
    assert list(chunks) == []

    log = _only_log(chunks.result)
    assert chunks.result.tool_calls[0].arguments == arguments
    # "get_weather" is 11 characters (4 tokens), the 36 characters of arguments 12:
    # $1 per output token.
    assert (log.usage_estimated, log.output_tokens, log.cost_usd) == (True, 16, Decimal("16"))
    assert chunks.result.cost_usd == Decimal("16")


def _mistral_at_a_dollar_per_output_token(tenant, upstream):
    ModelPriceFactory(
        tenant=tenant, provider_type="mistral", model="mistral-small",
        input_per_mtok="0", output_per_mtok="1000000",
    )  # fmt: skip
    _config(
        tenant,
        name="mistral",
        provider_type="mistral",
        api_key="mistral-key-0123456789abcdef",
        base_url=upstream.base_url,
        default_model="mistral-small",
    )


WEATHER_CALL = {
    "id": "call_1",
    "name": "get_weather",
    "arguments": '{"city": "Paris", "unit": "celsius"}',
}


def test_stream_of_tool_calls_cut_off_before_any_text_is_priced_then_retried(
    tenant, openai_upstream
):
    _mistral_at_a_dollar_per_output_token(tenant, openai_upstream)
    # The role chunk, the call's id and name, the first half of its arguments; then the drop.
    openai_upstream.enqueue_chat_stream(
        [], model="mistral-small", tool_calls=[WEATHER_CALL], break_after=3
    )
    openai_upstream.enqueue_chat_stream([], model="mistral-small", tool_calls=[WEATHER_CALL])

    chunks = stream(tenant=tenant, messages=HELLO)
    assert list(chunks) == []

    assert chunks.result.tool_calls[0].arguments == WEATHER_CALL["arguments"]
    cut, answered = CallLog.objects.order_by("attempt")
    # The caller had nothing yet, so the call was retried; what the provider
    # generated before the drop is paid all the same: "get_weather" and
    # '{"city": "Paris", ' are 29 characters, 10 tokens at $1.
    assert (cut.status, cut.error_code) == ("error", "upstream_unavailable")
    assert (cut.usage_estimated, cut.output_tokens, cut.cost_usd) == (True, 10, Decimal("10"))
    assert (answered.status, answered.output_tokens, answered.cost_usd) == ("ok", 16, Decimal(16))
    # A tool call is output: its first piece is the first token.
    assert 0 <= answered.time_to_first_token_ms <= answered.latency_ms
    assert chunks.result.cost_usd == Decimal("16")


def test_stream_broken_in_a_tool_call_after_text_counts_the_pieces_received(
    tenant, openai_upstream
):
    _mistral_at_a_dollar_per_output_token(tenant, openai_upstream)
    # Role chunk, "Checking. ", the call's name, the first half of its arguments.
    openai_upstream.enqueue_chat_stream(
        ["Checking. "], model="mistral-small", tool_calls=[WEATHER_CALL], break_after=4
    )

    chunks = stream(tenant=tenant, messages=HELLO)
    with pytest.raises(UpstreamUnavailable):
        list(chunks)

    log = _only_log(chunks.result)
    # "Checking. " 10 characters (4 tokens), the tool pieces 29 (10 tokens).
    assert (log.status, log.usage_estimated, log.output_tokens) == ("error", True, 14)
    assert log.cost_usd == chunks.result.cost_usd == Decimal("14")


def test_stream_broken_in_an_anthropic_tool_call_keeps_the_prompt_usage_reported(
    tenant, anthropic_upstream
):
    _anthropic(tenant, anthropic_upstream)
    # message_start, ping, text block start, "Checking. ", text block stop,
    # tool_use block start, the first half of its input; then the drop.
    anthropic_upstream.enqueue_message_stream(
        ["Checking. "], model=ANTHROPIC_MODEL, input_tokens=200, cache_read_tokens=1000,
        cache_write_tokens=500,
        tool_uses=[{"id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        break_after=7,
    )  # fmt: skip

    chunks = stream(tenant=tenant, messages=HELLO)
    with pytest.raises(UpstreamUnavailable):
        list(chunks)

    log = _only_log(chunks.result)
    # "Checking. " 4 tokens, "get_weather" 4 and '{"city":' 3: 11 output tokens.
    # 1,000 + 500 + 3,125 + 11 x 25 = 4,900 per million.
    assert (log.input_tokens, log.cache_read_tokens, log.cache_write_tokens) == (1700, 1000, 500)
    assert (log.output_tokens, log.cost_usd) == (11, Decimal("0.0049"))


def test_stream_of_a_mistral_reasoning_model_records_only_its_answer(tenant, openai_upstream):
    _config(
        tenant,
        name="mistral",
        provider_type="mistral",
        api_key="mistral-key-0123456789abcdef",
        base_url=openai_upstream.base_url,
        default_model="magistral-medium-latest",
    )
    openai_upstream.enqueue(
        Reply(headers={"Content-Type": "text/event-stream"}, chunks=MISTRAL_THINKING_STREAM)
    )

    chunks = stream(tenant=tenant, messages=HELLO)

    assert "".join(chunks) == "42."
    log = _only_log(chunks.result)
    assert (log.status, log.output_tokens, log.usage_estimated) == ("ok", 30, False)


def test_stream_records_time_to_first_token_before_the_whole_answer(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    # Each event waits 0.2 s: the text's first word comes well before its last.
    openai_upstream.enqueue_chat_stream(["one ", "two ", "three"], chunk_delay=0.2)

    chunks = stream(tenant=tenant, messages=HELLO)

    assert "".join(chunks) == "one two three"
    log = _only_log(chunks.result)
    # Lower bounds only: waits can grow on a loaded machine, never shrink.
    assert log.latency_ms - log.time_to_first_token_ms >= 400


def test_stream_stopped_by_caller_records_what_was_received(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(["one ", "two ", "three"], chunk_delay=0.05)

    chunks = stream(tenant=tenant, messages=HELLO)
    first = next(iter(chunks))
    chunks.close()

    log = CallLog.objects.get()
    assert first == "one "
    assert (log.status, log.error_code, log.usage_estimated) == ("ok", "client_closed", True)
    assert log.output_tokens == 2


def test_stream_cut_off_records_and_prices_the_model_that_answered(tenant, openai_upstream):
    # A price set only for the dated name the provider streams back.
    ModelPriceFactory(
        tenant=tenant, provider_type="openai", model="gpt-4o-2024-08-06",
        input_per_mtok="1000000", output_per_mtok="1000000",
    )  # fmt: skip
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(
        ["one ", "two ", "three"], model="gpt-4o-2024-08-06", chunk_delay=0.05
    )

    chunks = stream(tenant=tenant, messages=HELLO)
    next(iter(chunks))
    chunks.close()

    log = CallLog.objects.get()
    assert (log.model_requested, log.model_answered) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert log.price_source == "override"
    # $1 per token: the estimated input plus 2 estimated output tokens.
    assert log.cost_usd == log.input_tokens + 2
    assert chunks.result.model == "gpt-4o-2024-08-06"


# --- secrets ----------------------------------------------------------------------


def _fragments(secret, size=4):
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def test_rejected_key_leaves_no_fragment_in_error_log_row_or_logs(tenant, openai_upstream, caplog):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_invalid_key(OPENAI_KEY)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ProviderAuthenticationError) as raised:
        complete(tenant=tenant, messages=HELLO)

    log = CallLog.objects.get()
    exposed = " ".join(
        [str(raised.value), repr(raised.value), raised.value.message, log.error_message,
         caplog.text, str(raised.value.extra)]
    )  # fmt: skip
    # The SDK's message quoted "sk-proj-****…3n4O5p6"-style pieces of the key.
    assert log.error_code == "provider_authentication"
    assert "Incorrect API key" in log.error_message
    leaked = {
        piece for piece in _fragments(OPENAI_KEY.removeprefix("sk-proj-")) if piece in exposed
    }
    assert leaked == set()


@pytest.fixture
def interrupt_once_called(openai_upstream):
    """Raise KeyboardInterrupt in the test's thread, as Ctrl-C does, once the
    upstream has received a request and the thread waits on the socket for the
    answer (so the call is under way, whatever the machine's load)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    def waiting_on_socket():
        frame = sys._current_frames().get(main)
        return frame is not None and frame.f_code.co_name in {"read", "recv", "readinto"}

    def send():
        deadline = time.monotonic() + 5
        while not openai_upstream.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        # Past a second the upstream's 2 s delay is still far; send all the same.
        deadline = time.monotonic() + 1
        while not waiting_on_socket() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(main, signal.SIGALRM)

    main = threading.get_ident()
    previous = signal.signal(signal.SIGALRM, interrupt)
    sender = threading.Thread(target=send)
    yield sender.start
    sender.join()
    signal.signal(signal.SIGALRM, previous)


def test_stream_interrupted_while_reading_records_and_prices_what_was_received(
    tenant, openai_upstream, interrupt_once_called
):
    # given a stream whose first piece has arrived
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(["one ", "two ", "three"], model="gpt-4o", chunk_delay=2)
    chunks = stream(tenant=tenant, messages=HELLO)
    assert next(iter(chunks)) == "one "

    # when the process is interrupted while waiting for the next piece
    interrupt_once_called()
    with pytest.raises(KeyboardInterrupt):
        next(chunks)

    # then the attempt the provider was paid for is logged, usage estimated:
    # 9 input tokens ("hello") and 2 output tokens ("one ") at gpt-4o prices
    log = CallLog.objects.get()
    assert (log.status, log.error_code, log.usage_estimated) == ("error", "interrupted", True)
    assert (log.input_tokens, log.output_tokens) == (9, 2)
    assert log.cost_usd == Decimal("0.0000425")
    assert chunks.result.cost_usd == Decimal("0.0000425")


def test_complete_interrupted_while_waiting_logs_the_attempt(
    tenant, openai_upstream, interrupt_once_called
):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat(delay=2)

    interrupt_once_called()
    with pytest.raises(KeyboardInterrupt):
        complete(tenant=tenant, messages=HELLO)

    log = CallLog.objects.get()
    assert (log.status, log.error_code) == ("error", "interrupted")
    assert log.error_message == "The call was interrupted (KeyboardInterrupt)."


def test_embed_on_a_protocol_without_embeddings_takes_none_of_the_configs_rate(
    tenant, anthropic_upstream
):
    # given an Anthropic config that admits one request a minute
    _anthropic(tenant, anthropic_upstream, rpm_limit=1)

    # when embeddings are asked of it, twice
    for _ in range(2):
        with pytest.raises(NotSupported) as raised:
            embed(tenant=tenant, inputs=["alpha"], model=ANTHROPIC_MODEL)
        assert raised.value.message == "anthropic does not offer embeddings here."

    # then nothing was sent, and the minute's request is still there for a completion
    anthropic_upstream.enqueue_message("Hi", model=ANTHROPIC_MODEL)
    assert complete(tenant=tenant, messages=HELLO).content == "Hi"
    assert list(CallLog.objects.order_by("created_at").values_list("status", "error_code")) == [
        ("error", "not_supported"),
        ("error", "not_supported"),
        ("ok", ""),
    ]


# --- tokens-per-minute limits ------------------------------------------------------


def _tpm_counted(config) -> int:
    """The tokens counted in the config's tpm buckets (current and previous minute)."""
    from django.core.cache import cache
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    keys = redis.keys(cache.make_key(f"rl:{config.pk}:tpm:*"))
    return sum(int(redis.get(key)) for key in keys)


@pytest.mark.redis
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_tpm_limit_counts_the_tokens_a_call_used_not_its_worst_case(
    tenant, openai_upstream, streamed
):
    # given 5,000 tokens a minute, and calls that may produce 4,000 tokens
    # but use 10 prompt and 5 completion tokens
    config = _openai(tenant, openai_upstream, tpm_limit=5000)
    for _ in range(3):
        if streamed:
            openai_upstream.enqueue_chat_stream(["Hel", "lo"])
        else:
            openai_upstream.enqueue_chat("Hello")

    # when three such calls are made in a row
    for _ in range(3):
        if streamed:
            chunks = stream(tenant=tenant, messages=HELLO, max_tokens=4000)
            assert "".join(chunks) == "Hello"
        else:
            assert complete(tenant=tenant, messages=HELLO, max_tokens=4000).content == "Hello"

    # then each counted the 15 tokens it used, once it had answered
    assert _tpm_counted(config) == 45
    assert not CallLog.objects.filter(status="blocked").exists()


@pytest.mark.redis
def test_tpm_limit_keeps_counting_the_worst_case_of_an_attempt_that_failed(
    tenant, openai_upstream, settings
):
    settings.LLM_RETRY_ATTEMPTS = 1
    config = _openai(tenant, openai_upstream, tpm_limit=5000)
    openai_upstream.enqueue_error(503, message="overloaded")

    with pytest.raises(UpstreamUnavailable):
        complete(tenant=tenant, messages=HELLO, max_tokens=4000)

    # What the provider spent on it is unknown: the admission's estimate stays.
    assert _tpm_counted(config) == 4000 + completion.estimate_message_tokens(HELLO)


@pytest.mark.redis
@pytest.mark.parametrize("ending", ["closed", "broken"])
def test_stream_ended_early_counts_in_the_tpm_window_the_tokens_it_logged(
    tenant, openai_upstream, ending
):
    # given 5,000 tokens a minute, and a stream that may produce 4,000 tokens
    # but ends after its first two pieces: closed by the caller, or cut off
    config = _openai(tenant, openai_upstream, tpm_limit=5000)
    openai_upstream.enqueue_chat_stream(
        ["alpha ", "beta ", "gamma"], model="gpt-4o", break_after=3 if ending == "broken" else None
    )
    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=4000)

    # when it ends early
    received = [next(chunks), next(chunks)]
    if ending == "closed":
        chunks.close()
    else:
        with pytest.raises(UpstreamUnavailable):
            next(chunks)

    # then the window counts the tokens the log row estimated, not the worst case,
    # and the result says what the row says
    log = CallLog.objects.get()
    result = chunks.result
    assert received == ["alpha ", "beta "]
    assert (log.input_tokens, log.output_tokens) == (9, 4)
    assert _tpm_counted(config) == log.input_tokens + log.output_tokens
    expected_status = (
        ("ok", "client_closed") if ending == "closed" else ("error", "upstream_unavailable")
    )
    assert (log.status, log.error_code) == expected_status
    assert (log.usage_estimated, log.attempt, log.streamed) == (True, 1, True)
    # gpt-4o at $2.50 input and $10 output per million: 9 × 2.5 + 4 × 10 = 62.5 per million
    assert log.cost_usd == result.cost_usd == Decimal("0.0000625")
    assert (result.usage_estimated, result.attempts, result.cached) == (True, 1, False)
    assert result.finish_reason == ("aborted" if ending == "closed" else "error")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (9, 4)
    assert result.content == "alpha beta "


@pytest.mark.redis
def test_stream_retried_after_an_upstream_break_before_any_text_answers_from_the_retry(
    tenant, openai_upstream
):
    # given a provider whose first stream breaks before any text, then answers
    config = _openai(tenant, openai_upstream, tpm_limit=50000)
    openai_upstream.enqueue_chat_stream(["never "], model="gpt-4o", break_after=0)
    openai_upstream.enqueue_chat_stream(["Hel", "lo"], model="gpt-4o")

    # when a stream is read to its end
    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=4000)
    assert "".join(chunks) == "Hello"

    # then the broken attempt is an error row with no cost, the retry the answer
    rows = list(
        CallLog.objects.order_by("attempt").values_list(
            "attempt", "status", "error_code", "usage_estimated", "cost_usd"
        )
    )
    assert rows[0][:4] == (1, "error", "upstream_unavailable", False)
    assert rows[0][4] is None
    assert rows[1][:4] == (2, "ok", "", False)
    assert chunks.result.attempts == 2
    assert chunks.result.cost_usd == rows[1][4]
    assert chunks.result.usage_estimated is False
    # The broken attempt's worst case stays counted; the answer counts what it used.
    answered = CallLog.objects.get(attempt=2)
    worst = 4000 + completion.estimate_message_tokens(HELLO)
    assert _tpm_counted(config) == worst + answered.input_tokens + answered.output_tokens


# --- the error a caller is given ---------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_retry_refused_by_the_configs_rate_limit_keeps_the_providers_error(
    tenant, openai_upstream, streamed
):
    # given a config admitting one request a minute, whose provider is overloaded
    _openai(tenant, openai_upstream, rpm_limit=1)
    openai_upstream.enqueue_error(503, message="The engine is currently overloaded.")

    # when the call's retry is refused by the config's own limit
    with pytest.raises(UpstreamUnavailable) as raised:
        if streamed:
            list(stream(tenant=tenant, messages=HELLO))
        else:
            complete(tenant=tenant, messages=HELLO)

    # then the caller learns what the provider said, and that the retry was refused
    error = raised.value
    assert "The engine is currently overloaded." in error.message
    assert error.code == "upstream_unavailable"
    [failure] = error.extra["failures"]
    assert (failure["provider"], failure["code"]) == ("openai", "upstream_unavailable")
    assert failure["message"] == error.message
    assert failure["retry_refused"]["code"] == "rate_limited"
    assert "limit of 1 request per minute is reached" in failure["retry_refused"]["message"]
    assert len(openai_upstream.requests) == 1
    rows = list(CallLog.objects.order_by("attempt").values_list("status", "error_code"))
    assert rows == [("error", "upstream_unavailable"), ("blocked", "rate_limited")]


# --- the whole call's deadline -------------------------------------------------------


def _timed(call):
    """Run `call`; return what it raised and the seconds it took."""
    started = time.perf_counter()
    with pytest.raises(ProviderTimeout) as raised:
        call()
    return raised.value, time.perf_counter() - started


def _rows():
    return list(CallLog.objects.order_by("attempt").values_list("status", "error_code"))


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_ends_a_call_whose_provider_does_not_answer(tenant, openai_upstream):
    # given a provider that answers after 5 s, and an attempt timeout of 60 s
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat("late", delay=5, times=3)

    # when the call's deadline is 1 s
    error, elapsed = _timed(lambda: complete(tenant=tenant, messages=HELLO, deadline=1))

    # then the caller has a timeout that says so, within the deadline's reach
    assert elapsed < 3
    assert error.code == "provider_timeout"
    assert error.http_status == 504
    assert error.message.startswith("The call's deadline of 1 s was reached after 1 attempt")
    assert "“openai” (gpt-4o): provider_timeout" in error.message
    assert error.extra["deadline_seconds"] == 1
    assert [f["code"] for f in error.extra["failures"]] == ["provider_timeout"]
    assert _rows() == [("error", "provider_timeout")]
    assert len(openai_upstream.requests) == 1


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_caps_the_last_attempt_and_leaves_no_time_for_the_fallback(
    tenant, openai_upstream
):
    # given a slow primary with 1.2 s attempts, and a fallback
    _openai(tenant, openai_upstream, name="slow", priority=1)
    provider_config_create(
        tenant=tenant, name="fake-backup", provider_type="fake", default_model="fake-small"
    )
    openai_upstream.enqueue_chat("late", delay=5, times=3)

    # when the call's deadline (2 s) ends during the retry
    error, elapsed = _timed(
        lambda: complete(tenant=tenant, messages=HELLO, timeout=1.2, deadline=2)
    )

    # then the retry had the time left, not 1.2 s, and the fallback none
    assert elapsed < 4
    assert error.message.startswith("The call's deadline of 2 s was reached after 2 attempts")
    assert error.message.endswith("1 fallback target not tried.")
    assert _rows() == [("error", "provider_timeout"), ("error", "provider_timeout")]
    second = CallLog.objects.get(attempt=2)
    assert second.latency_ms < 1200


def _assert_deadline_capped_the_last_attempt(error, elapsed):
    """A lone target's retry, capped at the 0.8 s the 2 s deadline left after
    a first 1.2 s attempt, timed out: the deadline ended the call.

    The 0.8 s leave room for a loaded machine's delays before the retry,
    which must not eat the time a retry needs (the adapters' minimum)."""
    assert elapsed < 4
    assert error.code == "provider_timeout"
    assert error.message == (
        "The call's deadline of 2 s was reached after 2 attempts "
        "(“openai” (gpt-4o): provider_timeout)."
    )
    assert error.extra["deadline_seconds"] == 2
    [failure] = error.extra["failures"]
    assert failure["provider"] == "openai"
    assert failure["model"] == "gpt-4o"
    assert failure["code"] == "provider_timeout"
    assert failure["message"] == CallLog.objects.get(attempt=2).error_message
    assert _rows() == [("error", "provider_timeout"), ("error", "provider_timeout")]
    assert CallLog.objects.get(attempt=2).latency_ms < 1200


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_that_capped_a_lone_targets_last_attempt_ends_the_call(tenant, openai_upstream):
    # given one target, slow, with 1.2 s attempts (two per target)
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat("late", delay=5, times=3)

    # when the call's deadline (2 s) caps the retry, which times out
    error, elapsed = _timed(
        lambda: complete(tenant=tenant, messages=HELLO, timeout=1.2, deadline=2)
    )

    # then the caller is told the deadline ended the call, not the bare timeout
    _assert_deadline_capped_the_last_attempt(error, elapsed)
    assert error.extra["request_id"]


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_that_capped_a_lone_targets_last_attempt_ends_a_stream(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(["late"], delay=5, times=3)

    chunks = stream(tenant=tenant, messages=HELLO, timeout=1.2, deadline=2)
    error, elapsed = _timed(lambda: list(chunks))

    _assert_deadline_capped_the_last_attempt(error, elapsed)
    assert error.extra["request_id"] == str(chunks.request_id)


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_that_capped_the_last_attempt_ends_an_embedding_call(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_embeddings([[0.1, 0.2]], delay=5, times=3)

    error, elapsed = _timed(
        lambda: embed(
            tenant=tenant,
            inputs=["alpha"],
            model="text-embedding-3-small",
            timeout=1.2,
            deadline=2,
        )
    )

    assert elapsed < 4
    assert error.message == (
        "The call's deadline of 2 s was reached after 2 attempts "
        "(“openai” (text-embedding-3-small): provider_timeout)."
    )
    assert error.extra["deadline_seconds"] == 2
    assert [(f["provider"], f["code"]) for f in error.extra["failures"]] == [
        ("openai", "provider_timeout")
    ]
    assert _rows() == [("error", "provider_timeout"), ("error", "provider_timeout")]
    assert CallLog.objects.get(attempt=2).latency_ms < 1200


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_that_capped_the_only_attempt_ends_the_call(tenant, openai_upstream, settings):
    # given no retries: the one attempt is the last, capped at the deadline's 1 s
    settings.LLM_RETRY_ATTEMPTS = 1
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat("late", delay=5, times=3)

    error, elapsed = _timed(lambda: complete(tenant=tenant, messages=HELLO, deadline=1))

    assert elapsed < 3
    assert error.message == (
        "The call's deadline of 1 s was reached after 1 attempt "
        "(“openai” (gpt-4o): provider_timeout)."
    )
    assert error.extra["deadline_seconds"] == 1
    assert [f["code"] for f in error.extra["failures"]] == ["provider_timeout"]
    assert _rows() == [("error", "provider_timeout")]


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_leaves_time_for_a_fallback_after_quick_failures(tenant, openai_upstream):
    _openai(tenant, openai_upstream, name="slow", priority=1)
    provider_config_create(
        tenant=tenant, name="fake-backup", provider_type="fake", default_model="fake-small"
    )
    openai_upstream.enqueue_chat("late", delay=5, times=2)

    result = complete(tenant=tenant, messages=HELLO, timeout=0.3, deadline=5)

    assert result.provider == "fake-backup"
    assert _rows() == [("error", "provider_timeout"), ("error", "provider_timeout"), ("ok", "")]


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_takes_no_retry_after_wait_that_would_outlast_it(tenant, openai_upstream):
    # given a provider asking to wait 3 s (within LLM_RETRY_AFTER_MAX_SECONDS)
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_error(429, headers={"Retry-After": "3"}, type="rate_limit")
    openai_upstream.enqueue_chat("Hi")

    # when the call has 1 s
    error, elapsed = _timed(lambda: complete(tenant=tenant, messages=HELLO, deadline=1))

    # then it does not wait: it ends at once, naming the provider's refusal
    assert elapsed < 0.9
    assert error.message.startswith("The call's deadline of 1 s was reached after 1 attempt")
    assert "provider_rate_limited" in error.message
    assert [f["code"] for f in error.extra["failures"]] == ["provider_rate_limited"]
    assert _rows() == [("error", "provider_rate_limited")]
    assert len(openai_upstream.requests) == 1


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_defaults_to_the_setting(tenant, openai_upstream, settings):
    settings.LLM_CALL_DEADLINE_SECONDS = 1.0
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat("late", delay=5, times=3)

    error, elapsed = _timed(lambda: complete(tenant=tenant, messages=HELLO))

    assert elapsed < 3
    assert error.message.startswith("The call's deadline of 1 s was reached")


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_bounds_a_stream_until_its_first_chunk(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(["late"], delay=5, times=3)

    chunks = stream(tenant=tenant, messages=HELLO, deadline=1)
    error, elapsed = _timed(lambda: list(chunks))

    assert elapsed < 3
    assert error.message.startswith("The call's deadline of 1 s was reached after 1 attempt")
    assert error.extra["request_id"] == str(chunks.request_id)
    assert list(CallLog.objects.values_list("status", "error_code", "streamed")) == [
        ("error", "provider_timeout", True)
    ]


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_does_not_cut_a_stream_that_has_started(tenant, openai_upstream):
    # given a stream whose four chunks come 0.5 s apart: 1.5 s or more in all
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(["a", "b", "c", "d"], chunk_delay=0.5)

    # when the call's deadline is 1 s
    started = time.perf_counter()
    received = list(stream(tenant=tenant, messages=HELLO, deadline=1))

    # then the whole answer arrives after the deadline
    assert time.perf_counter() - started > 1
    assert "".join(received) == "abcd"
    assert _rows() == [("ok", "")]


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_ends_an_embedding_call(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_embeddings([[0.1, 0.2]], delay=5, times=3)

    error, elapsed = _timed(
        lambda: embed(tenant=tenant, inputs=["alpha"], model="text-embedding-3-small", deadline=1)
    )

    assert elapsed < 3
    assert error.message.startswith("The call's deadline of 1 s was reached after 1 attempt")
    assert _rows() == [("error", "provider_timeout")]


@pytest.mark.usefixtures("openai_sdk_warm")
def test_deadline_bounds_every_batch_of_an_embedding_call(tenant, openai_upstream):
    # given Gemini (100 inputs per request) at $1,000 per million input tokens,
    # answering each batch after 2 s
    model = "gemini-embedding-001"
    _gemini(tenant, openai_upstream, model)
    openai_upstream.enqueue_embeddings([[0.5]] * 100, model=model, prompt_tokens=200, delay=2)
    openai_upstream.enqueue_embeddings([[0.5]] * 100, model=model, prompt_tokens=200, delay=2)
    openai_upstream.enqueue_embeddings([[0.5]] * 50, model=model, prompt_tokens=100, delay=2)

    # when 250 inputs (three batches) have a deadline of 3 s
    error, elapsed = _timed(
        lambda: embed(
            tenant=tenant, inputs=[f"text {n}" for n in range(250)], model=model, deadline=3
        )
    )

    # then the second batch had the 1 s left (room for a loaded machine's
    # delays), not 3 s, and the third was not sent
    assert 2.9 < elapsed < 4.5
    assert error.message.startswith(
        "The call's deadline of 3 s was reached after 1 attempt "
        "(“gemini” (gemini-embedding-001): provider_timeout)"
    )
    assert [len(request.json["input"]) for request in openai_upstream.requests] == [100, 100]
    # The first batch, answered and charged, is logged and priced on the attempt's row.
    rows = CallLog.objects.values_list("status", "error_code", "input_tokens", "cost_usd")
    assert list(rows) == [("error", "provider_timeout", 200, Decimal("0.2"))]


@pytest.mark.usefixtures("openai_sdk_warm")
def test_embedding_batch_the_deadline_leaves_no_time_for_ends_the_call(
    tenant, openai_upstream, monkeypatch
):
    # given Gemini answering its first batch after 1.2 s, and no batch sent
    # with less than 1 s left (0.1 s in service: widened, so that the test
    # does not hang on a batch ending within 0.1 s of the deadline)
    monkeypatch.setattr(adapters_base, "DEADLINE_MIN_REQUEST_SECONDS", 1.0)
    model = "gemini-embedding-001"
    _gemini(tenant, openai_upstream, model)
    openai_upstream.enqueue_embeddings([[0.5]] * 100, model=model, prompt_tokens=200, delay=1.2)
    openai_upstream.enqueue_embeddings([[0.5]] * 50, model=model, prompt_tokens=100, times=2)

    # when 150 inputs (two batches) have a deadline of 2 s
    error, elapsed = _timed(
        lambda: embed(
            tenant=tenant, inputs=[f"text {n}" for n in range(150)], model=model, deadline=2
        )
    )

    # then the second batch is not sent, nor retried in the 0.8 s left: the
    # call ends with the deadline's timeout at once
    assert elapsed < 1.8
    assert error.message.startswith(
        "The call's deadline of 2 s was reached after 1 attempt "
        "(“gemini” (gemini-embedding-001): provider_timeout)"
    )
    assert error.extra["failures"][0]["message"] == (
        "The call's deadline left no time for the next batch: 50 inputs not sent."
    )
    assert len(openai_upstream.requests) == 1
    # The first batch, answered and charged, is logged and priced on the attempt's row.
    rows = CallLog.objects.values_list("status", "error_code", "input_tokens", "cost_usd")
    assert list(rows) == [("error", "provider_timeout", 200, Decimal("0.2"))]


def test_deadline_below_the_bedrock_timeout_reuses_one_runtime_client(
    tenant, bedrock_upstream, monkeypatch
):
    # given a Bedrock config (60 s timeout), whose calls each have a 10 s deadline:
    # every attempt's timeout is capped at the time left, a little under 10 s
    config = _bedrock(tenant, bedrock_upstream)
    adapter = adapter_for_config(config)
    built = []
    build = adapter._client_build

    def counted_build(service, read_timeout):
        built.append(read_timeout)
        return build(service, read_timeout)

    monkeypatch.setattr(adapter, "_client_build", counted_build)
    bedrock_upstream.enqueue_converse("Hi", times=12)

    # when twelve calls are made
    for _ in range(12):
        assert complete(tenant=tenant, messages=HELLO, deadline=10).content == "Hi"

    # then one client with a shorter read timeout serves them all, not one client each
    assert len(built) == 1
    assert 9 <= built[0] < 10


@pytest.mark.parametrize("deadline", [0, 0.5, -1, 601, "soon", True, float("nan")])
def test_deadline_out_of_range_is_refused(tenant, deadline):
    with pytest.raises(InvalidRequest) as raised:
        complete(tenant=tenant, messages=HELLO, deadline=deadline)

    assert raised.value.extra["field"] == "deadline"
    assert raised.value.message == "deadline must be a number of seconds from 1 to 600."


@pytest.mark.parametrize(("deadline", "refused"), [(240, False), (240.001, True), (600, True)])
def test_deadline_a_budget_reservation_would_not_outlast_is_refused(
    tenant, settings, deadline, refused
):
    # Reservations of 300 s: a call and the minute to settle it fit in 300 s with 240 s.
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 300
    ProviderConfigFactory(tenant=tenant, is_default=True)

    if not refused:
        assert complete(tenant=tenant, messages=HELLO, deadline=deadline).content
        return
    with pytest.raises(InvalidRequest) as raised:
        list(stream(tenant=tenant, messages=HELLO, deadline=deadline))
    assert raised.value.extra["field"] == "deadline"
    assert raised.value.message == (
        "deadline must be a number of seconds from 1 to 240 (budget reservations on this server "
        "last 300 s, 60 s of which are kept for settling the call)."
    )


def test_stream_stopped_before_a_failed_answer_records_the_failure(tenant, openai_upstream):
    # given a stream stopped before its request was answered, and a provider
    # that refuses the request
    ModelPriceFactory(provider_type="openai", model="gpt-4o", input_per_mtok="2")
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_error(500, message="The server had an error.")

    chunks = stream(tenant=tenant, messages=HELLO)
    chunks.stop()

    # when it is read
    with pytest.raises(UpstreamUnavailable) as raised:
        next(iter(chunks))

    # then the attempt is the provider's failure, unpaid and not retried: no
    # answer reached the provider's client, so there is nothing it bills
    [log] = CallLog.objects.all()
    assert (log.status, log.error_code) == ("error", "upstream_unavailable")
    assert (log.input_tokens, log.output_tokens, log.cost_usd) == (0, 0, None)
    assert raised.value.extra["request_id"] == str(log.request_id)
    assert len(openai_upstream.requests) == 1
    assert chunks.result is None
