"""Prices and costs: genai-prices, ModelPrice overrides, self-hosted, unknown models."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from llm_providers.adapters.types import Usage
from llm_providers.config_cache import config_version
from llm_providers.pricing import (
    PriceSource,
    cost_for_usage,
    cost_worst_case,
    price_lookup,
)
from tests.factories import ModelPriceFactory, TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant():
    return TenantFactory()


def _price(tenant, provider_type, model, **kwargs):
    return price_lookup(
        tenant_id=tenant.pk,
        provider_type=provider_type,
        model=model,
        version=config_version(tenant.pk),
        **kwargs,
    )


def test_cost_for_usage_prices_openai_cached_input_at_cache_rate(tenant):
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million tokens.
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200)

    cost = cost_for_usage(usage=usage, price=_price(tenant, "openai", "gpt-4o"))

    # 800 × 2.50 + 200 × 1.25 + 500 × 10 = 7,250 per million
    assert cost == Decimal("0.00725")


def test_cost_for_usage_prices_cached_input_reported_outside_prompt_tokens(tenant):
    # A compatible server that leaves cached tokens out of prompt_tokens reports
    # more cached than input tokens: the call still gets a cost, never an error.
    usage = Usage(input_tokens=100, output_tokens=500, cache_read_tokens=300)

    genai = cost_for_usage(usage=usage, price=_price(tenant, "openai", "gpt-4o"))

    # every input token counted is cached: 300 × 1.25 + 500 × 10 = 5,375 per million
    assert genai == Decimal("0.005375")


def test_cost_for_usage_prices_reasoning_as_output(tenant):
    # o3-mini: $1.10 input, $4.40 output; reasoning tokens are inside output.
    usage = Usage(input_tokens=100, output_tokens=1000, reasoning_tokens=800)

    cost = cost_for_usage(usage=usage, price=_price(tenant, "openai", "o3-mini"))

    assert cost == Decimal("0.00451")


def test_cost_for_usage_prices_anthropic_cache_reads_and_writes(tenant):
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 cache write, $15 output.
    usage = Usage(
        input_tokens=1000, output_tokens=500, cache_read_tokens=200, cache_write_tokens=100
    )

    cost = cost_for_usage(usage=usage, price=_price(tenant, "anthropic", "claude-sonnet-4-5"))

    # 700 × 3 + 200 × 0.30 + 100 × 3.75 + 500 × 15 = 10,035 per million
    assert cost == Decimal("0.010035")


def test_cost_for_usage_prices_bedrock_model_ids(tenant):
    usage = Usage(input_tokens=1000, output_tokens=1000)

    price = _price(tenant, "bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0")

    assert price.source == PriceSource.GENAI_PRICES
    assert cost_for_usage(usage=usage, price=price) == Decimal("0.0048")


def test_price_lookup_prices_gemini_model_names_as_google_lists_them(tenant):
    # Google's OpenAI-compatible models list names every model "models/<id>".
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)

    price = _price(tenant, "gemini", "models/gemini-2.5-flash")

    assert price.source == PriceSource.GENAI_PRICES
    # $0.30 input, $2.50 output per million.
    assert cost_for_usage(usage=usage, price=price) == Decimal("2.8")


def test_price_lookup_returns_unknown_for_unpriced_model(tenant):
    price = _price(tenant, "openai", "no-such-model-anywhere")

    assert price.source == PriceSource.UNKNOWN
    assert cost_for_usage(usage=Usage(input_tokens=10, output_tokens=10), price=price) is None


def test_price_lookup_prices_self_hosted_ollama_at_zero(tenant):
    price = _price(tenant, "ollama", "llama3.2")

    assert price.source == PriceSource.SELF_HOSTED
    assert cost_for_usage(usage=Usage(input_tokens=10, output_tokens=10), price=price) == 0


def test_price_lookup_prefers_model_price_override_to_genai(tenant):
    ModelPriceFactory(
        tenant=None, provider_type="openai", model="gpt-4o", input_per_mtok="1", output_per_mtok="2"
    )
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200)

    price = _price(tenant, "openai", "gpt-4o")

    assert price.source == PriceSource.OVERRIDE
    # No cache price given: cached input costs the input price.
    assert cost_for_usage(usage=usage, price=price) == Decimal("0.002")


def test_price_lookup_prefers_tenant_price_to_global(tenant):
    ModelPriceFactory(tenant=None, model="fake-small", input_per_mtok="1", output_per_mtok="1")
    ModelPriceFactory(tenant=tenant, model="fake-small", input_per_mtok="5", output_per_mtok="7")
    other = TenantFactory()

    mine = _price(tenant, "fake", "fake-small")
    theirs = _price(other, "fake", "fake-small")

    assert (mine.input_per_mtok, mine.output_per_mtok) == (Decimal("5"), Decimal("7"))
    assert (theirs.input_per_mtok, theirs.output_per_mtok) == (Decimal("1"), Decimal("1"))


def test_price_lookup_prefers_override_of_requested_name_to_genai_price_of_answer(tenant):
    ModelPriceFactory(
        tenant=tenant, provider_type="openai", model="gpt-4o",
        input_per_mtok="1", output_per_mtok="2",
    )  # fmt: skip

    price = _price(tenant, "openai", "gpt-4o-2024-08-06", requested_model="gpt-4o")

    assert (price.source, price.input_per_mtok) == (PriceSource.OVERRIDE, Decimal("1"))


def test_price_lookup_prefers_override_of_answered_name_to_requested_name(tenant):
    ModelPriceFactory(tenant=tenant, model="fake-small", input_per_mtok="1")
    ModelPriceFactory(tenant=tenant, model="fake-small-0601", input_per_mtok="4")

    price = _price(tenant, "fake", "fake-small-0601", requested_model="fake-small")

    assert price.input_per_mtok == Decimal("4")


def test_price_lookup_prefers_tenant_price_of_requested_name_to_global_price_of_answer(tenant):
    # given a tenant's negotiated rate for the name it routes to, and a global
    # price for the dated name the provider answers with
    ModelPriceFactory(
        tenant=None, provider_type="openai", model="gpt-4o-2024-08-06",
        input_per_mtok="9", output_per_mtok="9",
    )  # fmt: skip
    ModelPriceFactory(
        tenant=tenant, provider_type="openai", model="gpt-4o",
        input_per_mtok="1", output_per_mtok="2",
    )  # fmt: skip

    # when the answer is priced
    price = _price(tenant, "openai", "gpt-4o-2024-08-06", requested_model="gpt-4o")

    # then the tenant's own rate applies, as it did for the budget reservation
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert cost_for_usage(usage=usage, price=price) == Decimal("0.002")
    assert _price(tenant, "openai", "gpt-4o").input_per_mtok == price.input_per_mtok


def test_price_lookup_falls_back_to_genai_price_of_requested_name(tenant):
    # The provider answers with a name genai-prices does not know.
    price = _price(tenant, "openai", "gpt-4o-house-build", requested_model="gpt-4o")

    assert price.source == PriceSource.GENAI_PRICES
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert cost_for_usage(usage=usage, price=price) == Decimal("0.0075")


def test_price_lookup_uses_price_in_effect_on_the_day(tenant):
    today = timezone.now().date()
    ModelPriceFactory(model="fake-small", input_per_mtok="1", effective_from=today - timedelta(30))
    ModelPriceFactory(model="fake-small", input_per_mtok="3", effective_from=today - timedelta(5))
    ModelPriceFactory(model="fake-small", input_per_mtok="9", effective_from=today + timedelta(5))

    assert _price(tenant, "fake", "fake-small").input_per_mtok == Decimal("3")
    assert _price(tenant, "fake", "fake-small", on=today - timedelta(10)).input_per_mtok == 1
    assert _price(tenant, "fake", "fake-small", on=date(2000, 1, 1)).source == PriceSource.UNKNOWN


def test_price_lookup_sees_new_model_price_after_cached_lookup(tenant):
    assert _price(tenant, "fake", "fake-small").source == PriceSource.UNKNOWN

    ModelPriceFactory(model="fake-small")

    assert _price(tenant, "fake", "fake-small").source == PriceSource.OVERRIDE


def test_cost_worst_case_prices_max_tokens_as_output(tenant):
    price = _price(tenant, "openai", "gpt-4o")

    cost = cost_worst_case(price=price, input_tokens=1000, max_output_tokens=500)

    assert cost == Decimal("0.0075")


# Model names as each provider's API answers them, priced for 1M input and 1M
# output tokens: the cost is the sum of genai-prices' input and output price.
@pytest.mark.parametrize(
    ("provider_type", "model", "expected"),
    [
        # gpt-4o-mini: $0.15 + $0.60
        ("openai", "gpt-4o-mini-2024-07-18", "0.75"),
        # Azure answers with the model, not the deployment: gpt-4o $2.50 + $10
        ("azure_openai", "gpt-4o-2024-08-06", "12.5"),
        # Azure's own spelling of gpt-3.5-turbo: $0.50 + $1.50
        ("azure_openai", "gpt-35-turbo", "2"),
        # claude-3-5-sonnet: $3 + $15
        ("anthropic", "claude-3-5-sonnet-20241022", "18"),
        # Bedrock cross-region profiles: regional ones cost 10 % more than
        # global ones for Claude Sonnet 4.5 ($3.30 + $16.50 against $3 + $15).
        ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "19.8"),
        ("bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", "18"),
        ("bedrock", "eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "18"),
        ("bedrock", "apac.anthropic.claude-sonnet-4-20250514-v1:0", "18"),
        # Nova Pro through a profile: $0.80 + $3.20
        ("bedrock", "us.amazon.nova-pro-v1:0", "4"),
        # gemini-2.0-flash: $0.10 + $0.40
        ("gemini", "gemini-2.0-flash-001", "0.5"),
        # mistral-small-latest: $0.15 + $0.60
        ("mistral", "mistral-small-latest", "0.75"),
        # $0.88 + $0.88
        ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "1.76"),
        # $0.59 + $0.79
        ("groq", "llama-3.3-70b-versatile", "1.38"),
    ],
)
def test_price_lookup_prices_model_names_each_provider_answers_with(
    tenant, provider_type, model, expected
):
    price = _price(tenant, provider_type, model)

    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert price.source == PriceSource.GENAI_PRICES
    assert cost_for_usage(usage=usage, price=price) == Decimal(expected)


@pytest.mark.parametrize(
    ("provider_type", "model", "base_url"),
    [
        # An Azure deployment name is not a model.
        ("azure_openai", "prod-chat-deployment", "https://myres.openai.azure.com/"),
        # A self-hosted compatible server is not OpenAI, whatever its model is called.
        ("openai_compatible", "gpt-4o", "http://127.0.0.1:8000/v1"),
        ("bedrock", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x1", ""),
        ("fake", "fake-small", ""),
    ],
)
def test_price_lookup_leaves_unpriced_models_unknown_never_free(
    tenant, provider_type, model, base_url
):
    price = _price(tenant, provider_type, model, base_url=base_url)

    assert price.source == PriceSource.UNKNOWN
    assert cost_for_usage(usage=Usage(input_tokens=10, output_tokens=10), price=price) is None


def test_cost_for_usage_applies_gemini_long_context_rate_only_above_200k_prompt_tokens(tenant):
    # gemini-2.5-pro: $1.25 input, $10 output up to 200,000 prompt tokens;
    # $2.50 and $15 for every token of a longer prompt.
    price = _price(tenant, "gemini", "gemini-2.5-pro")

    at_limit = cost_for_usage(usage=Usage(input_tokens=200_000, output_tokens=1000), price=price)
    above = cost_for_usage(usage=Usage(input_tokens=200_001, output_tokens=1000), price=price)

    # 200,000 × 1.25 + 1,000 × 10 = 260,000 per million
    assert at_limit == Decimal("0.26")
    # 200,001 × 2.50 + 1,000 × 15 = 515,002.5 per million
    assert above == Decimal("0.5150025")


def test_cost_for_usage_rounds_to_the_pico_dollar_as_call_logs_keep_it(tenant):
    # OpenRouter's google/gemini-2.5-flash in genai-prices: $0.30 input and
    # $0.0833333333333333 per million cache writes (a rate finer than a
    # micro-dollar per million). 993 uncached + 7 written:
    # 993 × 0.30 + 7 × 0.0833333333333333 = 298.4833333333333331 per million,
    # USD 0.0002984833333333333331, kept as the 12 decimals a CallLog stores.
    price = _price(
        tenant,
        "openai_compatible",
        "google/gemini-2.5-flash",
        base_url="https://openrouter.ai/api/v1",
    )
    usage = Usage(input_tokens=1000, cache_write_tokens=7)

    cost = cost_for_usage(usage=usage, price=price)

    assert price.source == PriceSource.GENAI_PRICES
    assert cost == Decimal("0.000298483333")
    assert cost.as_tuple().exponent == -12
