"""`complete()`, `stream()` and `embed()` over answers the provider charged
for that are no answer: ones it ended as failed while reporting their usage
(an OpenAI-compatible `finish_reason: "error"`, Bedrock's
`malformed_model_output` / `malformed_tool_use`), and malformed ones (an
embeddings batch's refused vectors included) whose usage is usable. The
attempt is an `error` row priced at what the provider reported, its cost
settled with the budget and its tokens counted in the tpm window, then
retried or fallen back."""

import dataclasses
from decimal import Decimal

import pytest

from llm_providers.adapters.errors import UpstreamUnavailable
from llm_providers.completion import complete, embed, stream
from llm_providers.services import provider_config_create
from tests.factories import BudgetFactory, ModelPriceFactory, TenantFactory
from tests.upstreams.eventstream import event_encode
from tests.upstreams.server import json_reply
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


# --- malformed answers that report their usage --------------------------------------
# An answer the wire format does not allow (a tool call whose name is null, a
# text block whose text is null, a chunk that is no object) is retried like
# any outage, but its usage, when usable, is what the provider charged for it.

ANTHROPIC_MODEL = "claude-sonnet-4-6"


def _anthropic(tenant, upstream):
    ModelPriceFactory(provider_type="anthropic", model=ANTHROPIC_MODEL, **PRICES)
    return provider_config_create(
        tenant=tenant,
        name="anthropic",
        provider_type="anthropic",
        api_key="sk-ant-api03-Pa1dM4lf0rm3dQw4Er6Ty1Ui3",
        base_url=upstream.base_url,
        default_model=ANTHROPIC_MODEL,
        is_default=True,
        priority=1,
    )


def _priced_rows(request_id):
    return [
        (
            log.attempt,
            log.status,
            log.error_code,
            log.input_tokens,
            log.output_tokens,
            log.usage_estimated,
            log.cost_usd,
            log.price_source,
        )
        for log in CallLog.objects.filter(request_id=request_id).order_by("attempt")
    ]


def _inserted(script, chunk: bytes, *, from_end: int):
    """`script` (a streamed reply, or a function building one) with `chunk`
    sent before its last `from_end` chunks."""

    def build(request):
        reply = script(request) if callable(script) else script
        chunks = list(reply.chunks)
        at = len(chunks) - from_end
        return dataclasses.replace(reply, chunks=[*chunks[:at], chunk, *chunks[at:]])

    return build


def _openai_answer(message: dict, usage: dict | None) -> dict:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": usage,
    }


# A tool call whose name is null: no call the caller could make.
NAMELESS_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": None, "arguments": "{}"}}
    ],
}
USAGE_1000_500 = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
# 1,000 × $0.001 + 500 × $0.002; the retry's 10 × $0.001 + 5 × $0.002.
MALFORMED_COST = Decimal("2.000")
RETRY_COST = Decimal("0.020")


def test_openai_malformed_answer_is_paid_at_its_usage_then_retried(tenant, openai_upstream):
    # given a $10 cap, gpt-4o at $1,000 / $2,000 per million, a first answer
    # of 1,000 / 500 tokens whose tool call has no name, then a proper answer
    _block(tenant, "10")
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue(json_reply(_openai_answer(NAMELESS_CALL, USAGE_1000_500), route="chat"))
    openai_upstream.enqueue_chat("Hi", prompt_tokens=10, completion_tokens=5)

    # when
    result = complete(tenant=tenant, messages=HELLO, max_tokens=1000)

    # then the malformed attempt's row is priced at the usage the provider reported
    assert (result.content, result.attempts, result.cost_usd) == ("Hi", 2, RETRY_COST)
    assert _priced_rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 1000, 500, False, MALFORMED_COST, "override"),
        (2, "ok", "", 10, 5, False, RETRY_COST, "override"),
    ]
    failed = CallLog.objects.get(request_id=result.request_id, attempt=1)
    assert (failed.error_message, failed.model_answered) == (
        "The openai answer is malformed: a tool call has no name.",
        "gpt-4o-2024-08-06",
    )
    # and the budget is settled with both attempts: what the provider charged
    assert _spend(tenant) == Decimal("2.020")


def test_anthropic_malformed_answer_is_paid_at_its_usage_then_retried(tenant, anthropic_upstream):
    # given a first message of 1,000 / 500 tokens whose text block's text is null
    _block(tenant, "10")
    _anthropic(tenant, anthropic_upstream)
    answer = {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6-20260217",
        "content": [{"type": "text", "text": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1000, "output_tokens": 500},
    }
    anthropic_upstream.enqueue(json_reply(answer, route="messages"))
    anthropic_upstream.enqueue_message("Hi", input_tokens=10, output_tokens=5)

    # when
    result = complete(tenant=tenant, messages=HELLO, max_tokens=1000)

    # then
    assert (result.content, result.attempts, result.cost_usd) == ("Hi", 2, RETRY_COST)
    assert _priced_rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 1000, 500, False, MALFORMED_COST, "override"),
        (2, "ok", "", 10, 5, False, RETRY_COST, "override"),
    ]
    assert CallLog.objects.get(request_id=result.request_id, attempt=1).error_message == (
        "The anthropic answer is malformed: a text block's text is null, not text."
    )
    assert _spend(tenant) == Decimal("2.020")


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        (
            {
                "message": {
                    "role": "assistant",
                    "content": [{"toolUse": {"toolUseId": "t1", "name": None, "input": {}}}],
                }
            },
            "a toolUse block has no name",
        ),
        ("Hi", "it could not be read (AttributeError)"),
    ],
    ids=["tool-use-name-null", "output-text-botocore-cannot-read"],
)
def test_bedrock_malformed_answer_is_paid_at_its_usage_then_retried(
    tenant, bedrock_upstream, output, problem
):
    # given a first answer of 1,000 / 500 tokens that the adapter, or botocore
    # after the before-parse hook read its usage, cannot read
    _block(tenant, "10")
    _bedrock(tenant, bedrock_upstream)
    answer = {
        "output": output,
        "stopReason": "tool_use",
        "usage": {"inputTokens": 1000, "outputTokens": 500, "totalTokens": 1500},
        "metrics": {"latencyMs": 120},
    }
    bedrock_upstream.enqueue(json_reply(answer, route="converse"))
    bedrock_upstream.enqueue_converse("Hi", input_tokens=10, output_tokens=5)

    # when
    result = complete(tenant=tenant, messages=HELLO, max_tokens=1000)

    # then
    assert (result.content, result.attempts, result.cost_usd) == ("Hi", 2, RETRY_COST)
    assert _priced_rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 1000, 500, False, MALFORMED_COST, "override"),
        (2, "ok", "", 10, 5, False, RETRY_COST, "override"),
    ]
    failed = CallLog.objects.get(request_id=result.request_id, attempt=1)
    assert failed.error_message == f"The bedrock answer is malformed: {problem}."
    assert failed.model_answered == BEDROCK_MODEL
    assert _spend(tenant) == Decimal("2.020")


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "1000", "completion_tokens": 500},
        {"prompt_tokens": 1000, "completion_tokens": None},
        None,
    ],
    ids=["text-figure", "no-output-figure", "none"],
)
def test_malformed_answer_without_usable_usage_is_logged_without_cost(
    tenant, openai_upstream, usage
):
    # given a malformed first answer whose usage is not usable
    _block(tenant, "10")
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue(json_reply(_openai_answer(NAMELESS_CALL, usage), route="chat"))
    openai_upstream.enqueue_chat("Hi", prompt_tokens=10, completion_tokens=5)

    # when
    result = complete(tenant=tenant, messages=HELLO, max_tokens=1000)

    # then its row has no tokens and no cost (nothing to bill by: neither the
    # answer nor its usage can be read), and the budget holds only the retry
    assert _priced_rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 0, 0, False, None, ""),
        (2, "ok", "", 10, 5, False, RETRY_COST, "override"),
    ]
    assert _spend(tenant) == RETRY_COST


def test_openai_stream_malformed_after_its_usage_chunk_is_paid_at_that_usage(
    tenant, openai_upstream
):
    # given a stream that sends "Hi", finishes, reports 1,000 / 500 tokens,
    # then sends a chunk that is a number
    _block(tenant, "10")
    _openai(tenant, openai_upstream)
    reply = openai_upstream.chat_stream_reply(
        ["Hi"], model="gpt-4o-2024-08-06", prompt_tokens=1000, completion_tokens=500
    )
    openai_upstream.enqueue(_inserted(reply, b"data: 42\n\n", from_end=1))

    # when
    received = []
    answer = stream(tenant=tenant, messages=HELLO, max_tokens=1000)
    with pytest.raises(UpstreamUnavailable) as raised:
        for text in answer:
            received.append(text)

    # then the caller keeps its text; the attempt is priced at the reported
    # usage, not at an estimate of "Hi"; no retry (the caller has text)
    assert received == ["Hi"]
    assert raised.value.message == (
        "The openai answer is malformed: a chunk of it is a number, not an object."
    )
    assert _priced_rows(answer.request_id) == [
        (1, "error", "upstream_unavailable", 1000, 500, False, MALFORMED_COST, "override"),
    ]
    assert (answer.result.cost_usd, answer.result.usage_estimated) == (MALFORMED_COST, False)
    assert len(openai_upstream.requests) == 1
    assert _spend(tenant) == MALFORMED_COST


def test_anthropic_stream_malformed_after_its_message_delta_is_paid_then_retried(
    tenant, anthropic_upstream
):
    # given a tool call stream (no text for the caller) whose message_delta
    # reports 1,000 / 500 tokens, followed by an event that is a list; then
    # a proper stream
    _block(tenant, "10")
    _anthropic(tenant, anthropic_upstream)
    tool_use = {"id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    reply = anthropic_upstream.message_stream_reply(
        [], input_tokens=1000, output_tokens=500, tool_uses=[tool_use]
    )
    malformed = b"event: content_block_delta\ndata: [1]\n\n"
    anthropic_upstream.enqueue(_inserted(reply, malformed, from_end=1))
    anthropic_upstream.enqueue_message_stream(["Hi"], input_tokens=10, output_tokens=5)

    # when
    answer = stream(tenant=tenant, messages=HELLO, max_tokens=1000)

    # then the retry answered; the first attempt is priced at its reported
    # usage, not message_start's nor an estimate of the tool call's pieces
    assert list(answer) == ["Hi"]
    assert answer.result.cost_usd == RETRY_COST
    assert _priced_rows(answer.request_id) == [
        (1, "error", "upstream_unavailable", 1000, 500, False, MALFORMED_COST, "override"),
        (2, "ok", "", 10, 5, False, RETRY_COST, "override"),
    ]
    assert _spend(tenant) == Decimal("2.020")


def test_bedrock_stream_malformed_after_its_metadata_is_paid_at_that_usage(
    tenant, bedrock_upstream
):
    # given a stream that sends "Hi", stops, reports 1,000 / 500 tokens in
    # its metadata, then a text delta whose text is a number
    _block(tenant, "10")
    _bedrock(tenant, bedrock_upstream)
    reply = bedrock_upstream.converse_stream_reply(["Hi"], input_tokens=1000, output_tokens=500)
    malformed = event_encode("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": 5}})
    bedrock_upstream.enqueue(_inserted(reply, malformed, from_end=0))

    # when
    received = []
    answer = stream(tenant=tenant, messages=HELLO, max_tokens=1000)
    with pytest.raises(UpstreamUnavailable) as raised:
        for text in answer:
            received.append(text)

    # then
    assert received == ["Hi"]
    assert (
        raised.value.message
        == "The bedrock answer is malformed: a text delta is a number, not text."
    )
    assert _priced_rows(answer.request_id) == [
        (1, "error", "upstream_unavailable", 1000, 500, False, MALFORMED_COST, "override"),
    ]
    assert (answer.result.cost_usd, answer.result.usage_estimated) == (MALFORMED_COST, False)
    assert _spend(tenant) == MALFORMED_COST


# --- malformed embeddings answers that report their usage ---------------------------
# Vectors that are not one per input, empty, not finite or of other
# dimensions are refused, and the batch retried; the provider charged the
# tokens the answer reported all the same.

EMBEDDER = "embedder"


def _embedder(tenant, upstream, provider_type, **extra):
    """The tenant's default config of `provider_type`, embedding with
    `EMBEDDER` at $1,000 per million input tokens."""
    ModelPriceFactory(provider_type=provider_type, model=EMBEDDER, **PRICES)
    fields = {"base_url": upstream.base_url, "api_key": "sk-proj-3mb3dd1ngsM4lf0rm3dQw4Er6Ty"}
    if provider_type == "azure_openai":
        fields = {
            "base_url": upstream.url,
            "api_key": "azure-key-0123456789abcdef0123",
            "options": {"api_version": "2024-10-21", "deployments": {EMBEDDER: "emb"}},
        }
    elif provider_type == "ollama":
        del fields["api_key"]
    return provider_config_create(
        tenant=tenant,
        name=provider_type,
        provider_type=provider_type,
        default_model=EMBEDDER,
        is_default=True,
        priority=1,
        **fields,
        **extra,
    )


@pytest.mark.parametrize("provider_type", ["openai", "azure_openai", "mistral", "ollama"])
def test_embed_malformed_answer_is_paid_at_its_usage_then_retried(
    tenant, openai_upstream, provider_type
):
    # given a $10 cap, and a first answer of 1,000 tokens with two vectors
    # for the three inputs, then a proper answer of 10 tokens
    _block(tenant, "10")
    _embedder(tenant, openai_upstream, provider_type)
    openai_upstream.enqueue_embeddings([[0.5], [0.25]], model=EMBEDDER, prompt_tokens=1000)
    openai_upstream.enqueue_embeddings([[0.5], [0.25], [1.0]], model=EMBEDDER, prompt_tokens=10)

    # when
    result = embed(tenant=tenant, inputs=["a", "b", "c"], model=EMBEDDER)

    # then the refused answer's row is priced at the 1,000 tokens it reported
    # ($1.000), the retry's at its 10 ($0.010); the result counts only the
    # batch whose vectors it returns
    assert result.vectors == [[0.5], [0.25], [1.0]]
    assert (result.usage.input_tokens, result.usage_estimated) == (10, False)
    assert (result.attempts, result.cost_usd) == (2, Decimal("0.010"))
    assert _priced_rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 1000, 0, False, Decimal("1.000"), "override"),
        (2, "ok", "", 10, 0, False, Decimal("0.010"), "override"),
    ]
    failed = CallLog.objects.get(request_id=result.request_id, attempt=1)
    assert (failed.operation, failed.model_answered, failed.error_message) == (
        "embed",
        EMBEDDER,
        f"The {provider_type} answer is malformed: "
        "its embeddings do not match the 3 inputs (indexes [0, 1]).",
    )
    # and the budget is settled with both attempts: what the provider charged
    assert _spend(tenant) == Decimal("1.010")


def test_embed_batch_refused_after_earlier_ones_is_paid_and_only_it_is_sent_again(
    tenant, openai_upstream
):
    # given Gemini (100 inputs per request) and 150 inputs: the first batch
    # is answered (200 tokens), the second's vectors hold NaN (100 tokens
    # reported), and the retry answers the second batch (100 tokens)
    _block(tenant, "10")
    _embedder(tenant, openai_upstream, "gemini")
    texts = [f"text {n}" for n in range(150)]
    openai_upstream.enqueue_embeddings(
        [[float(n)] for n in range(100)], model=EMBEDDER, prompt_tokens=200
    )
    openai_upstream.enqueue_embeddings(
        [[0.5]] * 49 + [[float("nan")]], model=EMBEDDER, prompt_tokens=100
    )
    openai_upstream.enqueue_embeddings(
        [[float(n)] for n in range(100, 150)], model=EMBEDDER, prompt_tokens=100
    )

    # when
    result = embed(tenant=tenant, inputs=texts, model=EMBEDDER)

    # then the retry sends the refused batch again, and only it
    assert [request.json["input"] for request in openai_upstream.requests] == [
        texts[:100],
        texts[100:],
        texts[100:],
    ]
    # the first attempt's row holds both of its batches, as the provider
    # billed them: 300 tokens, $0.300; the retry's its 100, $0.100
    assert _priced_rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 300, 0, False, Decimal("0.300"), "override"),
        (2, "ok", "", 100, 0, False, Decimal("0.100"), "override"),
    ]
    # the result counts the batches whose vectors it returns: 200 + 100
    # tokens, $0.300, not the refused batch
    assert result.vectors == [[float(n)] for n in range(150)]
    assert (result.usage.input_tokens, result.usage_estimated) == (300, False)
    assert (result.attempts, result.cost_usd, result.price_source) == (
        2,
        Decimal("0.300"),
        "override",
    )
    # the budget holds every token billed: 400, $0.400
    assert _spend(tenant) == Decimal("0.400")


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -1000, "total_tokens": -1000},
        {"prompt_tokens": "1000", "total_tokens": "1000"},
        {"prompt_tokens": 0, "total_tokens": 0},
        None,
    ],
    ids=["negative", "text-figure", "zeros", "none"],
)
def test_embed_malformed_answer_without_usable_usage_is_logged_without_cost(
    tenant, openai_upstream, usage
):
    # given a first answer with an empty vector whose usage is not usable
    _block(tenant, "10")
    _embedder(tenant, openai_upstream, "openai")
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": []}],
        "model": EMBEDDER,
        "usage": usage,
    }
    openai_upstream.enqueue(json_reply(answer, route="embeddings"))
    openai_upstream.enqueue_embeddings([[0.5]], model=EMBEDDER, prompt_tokens=10)

    # when
    result = embed(tenant=tenant, inputs=["a"], model=EMBEDDER)

    # then its row has no tokens and no cost, and the budget holds only the retry
    assert _priced_rows(result.request_id) == [
        (1, "error", "upstream_unavailable", 0, 0, False, None, ""),
        (2, "ok", "", 10, 0, False, Decimal("0.010"), "override"),
    ]
    assert result.cost_usd == Decimal("0.010")
    assert _spend(tenant) == Decimal("0.010")


@pytest.mark.redis
def test_tpm_limit_counts_the_tokens_a_malformed_embeddings_answer_reported(
    tenant, openai_upstream
):
    # given a tpm limit, and a refused answer (vectors of two dimension
    # counts) of 40 tokens before a proper one of 30
    config = _embedder(tenant, openai_upstream, "openai", tpm_limit=5000)
    openai_upstream.enqueue_embeddings([[0.5, 0.5], [0.5]], model=EMBEDDER, prompt_tokens=40)
    openai_upstream.enqueue_embeddings([[0.5], [0.5]], model=EMBEDDER, prompt_tokens=30)

    # when
    result = embed(tenant=tenant, inputs=["first text", "second text"], model=EMBEDDER)

    # then the window counts what both attempts used, not the refused one's
    # worst case (the inputs' estimate)
    assert result.attempts == 2
    assert _tpm_counted(config) == 40 + 30
