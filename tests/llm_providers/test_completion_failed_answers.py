"""`complete()` over answers the provider ended as failed while reporting
their usage (an OpenAI-compatible `finish_reason: "error"`, Bedrock's
`malformed_model_output` / `malformed_tool_use`): the attempt is an `error`
row priced at what the provider reported, its cost settled with the budget
and its tokens counted in the tpm window, then retried or fallen back."""

from decimal import Decimal

import pytest

from llm_providers.adapters.errors import UpstreamUnavailable
from llm_providers.completion import complete, stream
from llm_providers.services import provider_config_create
from tests.factories import BudgetFactory, ModelPriceFactory, TenantFactory
from usage.budget import BudgetExceeded
from usage.models import Budget, CallLog

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "hello"}]
# Every model here at $1,000 input / $2,000 output per million tokens: a
# token in is $0.001, a token out $0.002.
PRICES = {"input_per_mtok": "1000", "output_per_mtok": "2000"}
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture
def tenant(allow_private_urls):
    return TenantFactory()


def _openai(tenant, upstream, **fields):
    ModelPriceFactory(provider_type="openai", model="gpt-4o", **PRICES)
    return provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key="sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6",
        base_url=upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
        priority=1,
        **fields,
    )


def _bedrock(tenant, upstream, **fields):
    ModelPriceFactory(provider_type="bedrock", model=BEDROCK_MODEL, **PRICES)
    return provider_config_create(
        tenant=tenant,
        name="bedrock",
        provider_type="bedrock",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        aws_region="us-east-1",
        base_url=upstream.url,
        default_model=BEDROCK_MODEL,
        is_default=True,
        priority=0,
        **fields,
    )


def _block(tenant, limit="1"):
    return BudgetFactory(
        tenant=tenant, name="hard cap", action=Budget.Action.BLOCK, limit_usd=Decimal(limit)
    )


def _spend(tenant):
    """What the blocking budget counts as spent now (settled and reserved), read
    from the refusal of a call whose worst case fits no budget."""
    with pytest.raises(BudgetExceeded) as raised:
        complete(tenant=tenant, messages=HELLO, max_tokens=1_000_000)
    return Decimal(raised.value.extra["spend_usd"])


def _rows(request_id):
    return [
        (
            log.attempt,
            log.status,
            log.error_code,
            log.input_tokens,
            log.output_tokens,
            log.usage_estimated,
            log.cost_usd,
        )
        for log in CallLog.objects.filter(request_id=request_id).order_by("attempt")
    ]


def test_openai_answer_finished_with_an_error_is_paid_at_its_usage_then_retried(
    tenant, openai_upstream
):
    # given a $1 cap, and a provider that ends its first answer as failed,
    # reporting 30 prompt and 40 completion tokens, then answers
    _block(tenant)
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat(
        "Once upon a", finish_reason="error", prompt_tokens=30, completion_tokens=40
    )
    openai_upstream.enqueue_chat("Hi", prompt_tokens=30, completion_tokens=1)

    # when
    result = complete(tenant=tenant, messages=HELLO, max_tokens=50)

    # then the failed attempt's row carries what the provider reported:
    # 30 × $0.001 + 40 × $0.002; the answer's 30 × $0.001 + 1 × $0.002
    assert (result.content, result.attempts) == ("Hi", 2)
    assert result.cost_usd == Decimal("0.032")
    assert _rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 30, 40, False, Decimal("0.110")),
        (2, "ok", "", 30, 1, False, Decimal("0.032")),
    ]
    assert CallLog.objects.get(request_id=result.request_id, attempt=1).model_answered == (
        "gpt-4o-mini-2024-07-18"
    )
    # and the budget is settled with both, not released
    assert _spend(tenant) == Decimal("0.142")


@pytest.mark.parametrize("stop_reason", ["malformed_model_output", "malformed_tool_use"])
def test_bedrock_answer_stopped_as_malformed_is_paid_at_its_usage_then_retried(
    tenant, bedrock_upstream, stop_reason
):
    _block(tenant)
    _bedrock(tenant, bedrock_upstream)
    bedrock_upstream.enqueue_converse(
        "Let me", stop_reason=stop_reason, input_tokens=30, output_tokens=40
    )
    bedrock_upstream.enqueue_converse("Hi", input_tokens=30, output_tokens=1)

    result = complete(tenant=tenant, messages=HELLO, max_tokens=50)

    assert (result.content, result.cost_usd) == ("Hi", Decimal("0.032"))
    assert _rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 30, 40, False, Decimal("0.110")),
        (2, "ok", "", 30, 1, False, Decimal("0.032")),
    ]
    assert _spend(tenant) == Decimal("0.142")


def test_failed_answers_on_every_attempt_are_all_settled_when_the_call_fails(
    tenant, openai_upstream
):
    # given a provider that ends both attempts' answers as failed
    _block(tenant)
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat(
        "Once", finish_reason="error", prompt_tokens=30, completion_tokens=40
    )
    openai_upstream.enqueue_chat(
        "Once upon", finish_reason="error", prompt_tokens=30, completion_tokens=50
    )

    # when the call gives up
    with pytest.raises(UpstreamUnavailable) as raised:
        complete(tenant=tenant, messages=HELLO, max_tokens=50)

    # then each row is priced at its reported usage, and the budget holds both
    request_id = raised.value.extra["request_id"]
    assert _rows(request_id) == [
        (1, "error", "upstream_unavailable", 30, 40, False, Decimal("0.110")),
        (2, "error", "upstream_unavailable", 30, 50, False, Decimal("0.130")),
    ]
    assert _spend(tenant) == Decimal("0.240")


def _tpm_counted(config) -> int:
    """The tokens counted in the config's tpm buckets (current and previous minute)."""
    from django.core.cache import cache
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    keys = redis.keys(cache.make_key(f"rl:{config.pk}:tpm:*"))
    return sum(int(redis.get(key)) for key in keys)


@pytest.mark.redis
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_tpm_limit_counts_the_tokens_a_failed_answer_reported(tenant, openai_upstream, streamed):
    # given 5,000 tokens a minute, calls that may produce 4,000 tokens, and a
    # first answer ended as failed (before any text) with its usage reported
    config = _openai(tenant, openai_upstream, tpm_limit=5000)
    if streamed:
        openai_upstream.enqueue_chat_stream(
            [], finish_reason="error", prompt_tokens=30, completion_tokens=40
        )
        openai_upstream.enqueue_chat_stream(["Hi"], prompt_tokens=30, completion_tokens=1)
    else:
        openai_upstream.enqueue_chat(
            "Once", finish_reason="error", prompt_tokens=30, completion_tokens=40
        )
        openai_upstream.enqueue_chat("Hi", prompt_tokens=30, completion_tokens=1)

    # when
    if streamed:
        assert "".join(stream(tenant=tenant, messages=HELLO, max_tokens=4000)) == "Hi"
    else:
        assert complete(tenant=tenant, messages=HELLO, max_tokens=4000).content == "Hi"

    # then the window counts what both attempts used, not the failed one's worst case
    assert _tpm_counted(config) == (30 + 40) + (30 + 1)
