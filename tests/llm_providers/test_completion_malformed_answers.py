"""`complete()`, `stream()` and `embed()` when a provider answers 200 with a body that is
not what its wire format promises: stored provider configs, the official SDKs and
loopback servers sending the body as given. The attempt is an `error` row with
`upstream_unavailable`, retried and fallen back from; garbage usage is estimated,
flagged and priced to the micro-dollar."""

import json
from decimal import Decimal

import pytest

from llm_providers.adapters.errors import MalformedAnswer
from llm_providers.completion import complete, embed, stream
from llm_providers.services import provider_config_create
from tests.api.fixtures import service_key_client
from tests.factories import ModelPriceFactory, ServiceKeyFactory, TenantFactory
from tests.upstreams.bedrock import EVENT_STREAM_TYPE
from tests.upstreams.eventstream import event_encode
from tests.upstreams.server import json_reply
from usage.models import CallLog

pytestmark = pytest.mark.django_db

OPENAI_KEY = "sk-proj-M4lf0rm3dAnsw3rK3yQ8Rt2Yu6Io1Pa"
ANTHROPIC_KEY = "sk-ant-api03-Mf7Ak2Lp9Qw4Er6Ty1Ui3Op5"
HELLO = [{"role": "user", "content": "hello"}]
# HELLO estimated: 3 per request + 4 per message + 2 for "hello" (5 characters).
HELLO_TOKENS_ESTIMATE = 9
# "Hi there!" estimated: 9 characters, 3 tokens.
ANSWER = "Hi there!"
ANSWER_TOKENS_ESTIMATE = 3
NOT_JSON = "The openai answer is malformed: it is not JSON."
NO_CHOICES = "The openai answer is malformed: it has no choices."


@pytest.fixture
def tenant(allow_private_urls):
    return TenantFactory()


@pytest.fixture
def gpt_4o_price(db):
    """gpt-4o at $1,000 input and $2,000 output per million tokens (a ModelPrice)."""
    return ModelPriceFactory(
        provider_type="openai", model="gpt-4o", input_per_mtok="1000", output_per_mtok="2000"
    )


def _openai(tenant, upstream, **fields):
    return provider_config_create(
        tenant=tenant,
        name=fields.pop("name", "openai"),
        provider_type=fields.pop("provider_type", "openai"),
        api_key=OPENAI_KEY,
        base_url=upstream.base_url,
        default_model=fields.pop("default_model", "gpt-4o"),
        is_default=fields.pop("is_default", True),
        **fields,
    )


def _anthropic(tenant, upstream, **fields):
    return provider_config_create(
        tenant=tenant,
        name="anthropic",
        provider_type="anthropic",
        api_key=ANTHROPIC_KEY,
        base_url=upstream.base_url,
        default_model="claude-sonnet-4-6",
        **fields,
    )


def _chat_answer(**fields) -> dict:
    payload = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47},
    }
    payload.update(fields)
    return payload


def _chunk(content: str | None = None, *, finish: str | None = None, **fields) -> bytes:
    """An SSE chunk of `content` (or finishing with `finish`), else of `fields` alone."""
    choices = []
    if content is not None or finish is not None:
        choices = [{"index": 0, "delta": {"content": content or ""}, "finish_reason": finish}]
    payload = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    return b"data: " + json.dumps({**payload, "choices": choices, **fields}).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def _rows(request_id) -> list[tuple]:
    return list(
        CallLog.objects.filter(request_id=request_id)
        .order_by("attempt")
        .values_list("status", "error_code", "error_message")
    )


# --- complete ---------------------------------------------------------------------------


def test_complete_retries_an_answer_that_is_not_json_and_logs_the_attempt(tenant, openai_upstream):
    # given a provider that answers HTML once (a proxy's error page, status 200)
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_raw("<html><h1>502 Bad Gateway</h1></html>", route="chat")
    openai_upstream.enqueue_chat("Hi")

    # when
    result = complete(tenant=tenant, messages=HELLO)

    # then the retry served the call; the first attempt is an error row
    assert (result.content, result.attempts) == ("Hi", 2)
    assert _rows(result.request_id) == [
        ("error", "upstream_unavailable", NOT_JSON),
        ("ok", "", ""),
    ]
    failed = CallLog.objects.get(request_id=result.request_id, attempt=1)
    assert (failed.cost_usd, failed.input_tokens, failed.output_tokens) == (None, 0, 0)


def test_complete_falls_back_when_every_attempt_answers_malformed(
    tenant, openai_upstream, anthropic_upstream
):
    # given a primary that answers without choices, and an Anthropic fallback
    _openai(tenant, openai_upstream, priority=1)
    _anthropic(tenant, anthropic_upstream, priority=2)
    openai_upstream.enqueue(json_reply({"id": "x", "model": "gpt-4o"}, route="chat"), times=2)
    anthropic_upstream.enqueue_message("Hello from Claude")

    # when
    result = complete(tenant=tenant, messages=HELLO)

    # then the fallback answered after both attempts of the primary failed
    assert (result.provider, result.content) == ("anthropic", "Hello from Claude")
    assert _rows(result.request_id) == [
        ("error", "upstream_unavailable", NO_CHOICES),
        ("error", "upstream_unavailable", NO_CHOICES),
        ("ok", "", ""),
    ]


def test_complete_raises_upstream_unavailable_when_no_target_answers_properly(
    tenant, openai_upstream
):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_raw("[]", route="chat", times=2)

    with pytest.raises(MalformedAnswer) as raised:
        complete(tenant=tenant, messages=HELLO)

    error = raised.value
    message = "The openai answer is malformed: it is a list, not a JSON object."
    assert (error.code, error.http_status, error.message) == ("upstream_unavailable", 502, message)
    assert [failure["message"] for failure in error.extra["failures"]] == [message]
    assert _rows(error.extra["request_id"]) == [("error", "upstream_unavailable", message)] * 2


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "forty", "completion_tokens": 7},
        {"prompt_tokens": 40, "completion_tokens": 7.25},
        {"prompt_tokens": -40, "completion_tokens": 7},
        {"prompt_tokens": 40, "completion_tokens": 10**15},
        {"prompt_tokens": 40, "completion_tokens": True},
        None,
    ],
    ids=["text", "fraction", "negative", "absurd", "boolean", "missing"],
)
def test_complete_prices_an_estimate_when_the_usage_is_garbage(
    tenant, openai_upstream, gpt_4o_price, usage
):
    # given an answer whose usage no count can be read from
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue(json_reply(_chat_answer(usage=usage), route="chat"))

    # when
    result = complete(tenant=tenant, messages=HELLO)

    # then 9 input and 3 output tokens are estimated: 9 × $1,000 + 3 × $2,000 per million
    cost = Decimal("0.015")
    assert (result.content, result.usage_estimated, result.cost_usd) == (ANSWER, True, cost)
    log = CallLog.objects.get(request_id=result.request_id)
    assert (log.status, log.usage_estimated, log.cost_usd, log.price_source) == (
        "ok",
        True,
        cost,
        "override",
    )
    assert (log.input_tokens, log.output_tokens) == (
        HELLO_TOKENS_ESTIMATE,
        ANSWER_TOKENS_ESTIMATE,
    )


def test_complete_estimates_the_output_that_the_answer_reports_null(
    tenant, openai_upstream, gpt_4o_price
):
    # given an answer that reports 1,000 prompt tokens and a null output figure
    _openai(tenant, openai_upstream)
    usage = {"prompt_tokens": 1000, "completion_tokens": None, "total_tokens": 1000}
    openai_upstream.enqueue(json_reply(_chat_answer(usage=usage), route="chat"))

    # when
    result = complete(tenant=tenant, messages=HELLO)

    # then the output is estimated, not billed as 0: 1,000 × $1,000 + 3 × $2,000 per million
    assert result.cost_usd == Decimal("1.006")
    log = CallLog.objects.get(request_id=result.request_id)
    assert (log.input_tokens, log.output_tokens, log.usage_estimated) == (1000, 3, True)
    assert log.cost_usd == Decimal("1.006")


@pytest.mark.parametrize("model", [None, 42, ""], ids=["null", "number", "blank"])
def test_complete_logs_and_prices_the_requested_model_when_the_answer_names_none(
    tenant, openai_upstream, gpt_4o_price, model
):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue(json_reply(_chat_answer(model=model), route="chat"))

    result = complete(tenant=tenant, messages=HELLO)

    # 40 × $1,000 + 7 × $2,000 per million, at the requested model's price
    assert (result.model, result.cost_usd, result.usage_estimated) == (
        "gpt-4o",
        Decimal("0.054"),
        False,
    )
    log = CallLog.objects.get(request_id=result.request_id)
    assert (log.model_requested, log.model_answered, log.price_source) == (
        "gpt-4o",
        "gpt-4o",
        "override",
    )


def test_complete_retries_a_bedrock_answer_that_is_not_json(tenant, bedrock_upstream):
    provider_config_create(
        tenant=tenant,
        name="bedrock",
        provider_type="bedrock",
        aws_access_key_id="AKIAQ3EGXYZ7LMN4PRST",
        aws_secret_access_key="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",
        aws_region="us-east-1",
        base_url=bedrock_upstream.base_url,
        default_model="anthropic.claude-sonnet-4-6-v1:0",
        is_default=True,
    )
    bedrock_upstream.enqueue_raw("<html>Service Unavailable</html>", route="converse")
    bedrock_upstream.enqueue_converse("Hi", input_tokens=12, output_tokens=2)

    result = complete(tenant=tenant, messages=HELLO)

    assert (result.content, result.usage_estimated) == ("Hi", False)
    assert _rows(result.request_id) == [
        ("error", "upstream_unavailable", "The bedrock answer is malformed: it is not JSON."),
        ("ok", "", ""),
    ]


# --- stream -----------------------------------------------------------------------------


def test_stream_retries_a_malformed_chunk_that_came_before_any_text(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_raw(
        chunks=[b"data: {not json\n\n", DONE], content_type="text/event-stream", route="chat"
    )
    openai_upstream.enqueue_chat_stream(["Hi", " there!"])

    chunks = stream(tenant=tenant, messages=HELLO)

    assert list(chunks) == ["Hi", " there!"]
    message = "The openai answer is malformed: a chunk of it is not JSON."
    assert _rows(chunks.request_id) == [("error", "upstream_unavailable", message), ("ok", "", "")]


def test_stream_records_what_was_received_when_a_chunk_after_text_is_malformed(
    tenant, openai_upstream, gpt_4o_price
):
    # given a stream that sends "Hi there!" then a chunk that is a number
    _openai(tenant, openai_upstream)
    chunks = [_chunk("Hi"), _chunk(" there!"), b"data: 42\n\n", DONE]
    openai_upstream.enqueue_raw(chunks=chunks, content_type="text/event-stream", route="chat")

    # when
    received = []
    answer = stream(tenant=tenant, messages=HELLO)
    with pytest.raises(MalformedAnswer) as raised:
        for text in answer:
            received.append(text)

    # then the caller kept its text, and the attempt is an error row priced
    # at its estimate (9 × $1,000 + 3 × $2,000 per million), with no retry
    message = "The openai answer is malformed: a chunk of it is a number, not an object."
    assert received == ["Hi", " there!"]
    assert raised.value.message == message
    log = CallLog.objects.get(request_id=answer.request_id)
    assert (log.status, log.error_code, log.error_message) == (
        "error",
        "upstream_unavailable",
        message,
    )
    assert (log.input_tokens, log.output_tokens, log.usage_estimated) == (9, 3, True)
    assert log.cost_usd == Decimal("0.015")
    assert len(openai_upstream.requests) == 1


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": "9k", "completion_tokens": 3}, [9, 3]],
    ids=["text", "a-list"],
)
def test_stream_prices_an_estimate_when_its_usage_is_garbage(
    tenant, openai_upstream, gpt_4o_price, usage
):
    _openai(tenant, openai_upstream)
    chunks = [_chunk("Hi"), _chunk(" there!"), _chunk(finish="stop"), _chunk(usage=usage), DONE]
    openai_upstream.enqueue_raw(chunks=chunks, content_type="text/event-stream", route="chat")

    answer = stream(tenant=tenant, messages=HELLO)

    assert "".join(answer) == ANSWER
    assert (answer.result.usage_estimated, answer.result.cost_usd) == (True, Decimal("0.015"))
    log = CallLog.objects.get(request_id=answer.request_id)
    assert (log.status, log.input_tokens, log.output_tokens, log.usage_estimated) == (
        "ok",
        9,
        3,
        True,
    )


def test_bedrock_stream_prices_an_estimate_when_its_metadata_is_unreadable(
    tenant, bedrock_upstream
):
    # given Claude on Bedrock at $3 input and $15 output per million (genai-prices),
    # and a stream whose metadata holds text where botocore reads integers
    model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    provider_config_create(
        tenant=tenant,
        name="bedrock",
        provider_type="bedrock",
        aws_access_key_id="AKIAQ3EGXYZ7LMN4PRST",
        aws_secret_access_key="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",
        aws_region="us-east-1",
        base_url=bedrock_upstream.base_url,
        default_model=model,
        is_default=True,
    )
    events = [
        event_encode("messageStart", {"role": "assistant"}),
        event_encode("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": ANSWER}}),
        event_encode("messageStop", {"stopReason": "end_turn"}),
        event_encode("metadata", {"usage": {"inputTokens": "nine", "outputTokens": 3}}),
    ]
    bedrock_upstream.enqueue_raw(
        chunks=events, content_type=EVENT_STREAM_TYPE, route="converse_stream"
    )

    # when
    answer = stream(tenant=tenant, messages=HELLO)

    # then the answer stands, priced at its estimate: 9 × $3 + 3 × $15 per million
    assert "".join(answer) == ANSWER
    assert (answer.result.usage_estimated, answer.result.cost_usd) == (True, Decimal("0.000072"))
    log = CallLog.objects.get(request_id=answer.request_id)
    assert (log.status, log.usage_estimated, log.cost_usd) == ("ok", True, Decimal("0.000072"))


# --- embed ------------------------------------------------------------------------------


def test_embed_raises_upstream_unavailable_when_the_vectors_hold_nan(tenant, openai_upstream):
    _openai(tenant, openai_upstream, default_model="text-embedding-3-small")
    openai_upstream.enqueue_embeddings([[0.5, float("nan")]], times=2)

    with pytest.raises(MalformedAnswer) as raised:
        embed(tenant=tenant, inputs=["hello"], model="text-embedding-3-small")

    message = "The openai answer is malformed: an embedding holds NaN or an infinity."
    assert raised.value.message == message
    assert (
        _rows(raised.value.extra["request_id"]) == [("error", "upstream_unavailable", message)] * 2
    )


def test_embed_retry_must_answer_vectors_of_the_dimensions_answered_before(tenant, openai_upstream):
    # given Gemini (batches of 100) at $1,000 per million input tokens, whose
    # first attempt answers a first batch of 2 dimensions then fails, and whose
    # retry answers the remaining inputs in 3 dimensions
    model = "gemini-embedding-001"
    ModelPriceFactory(
        provider_type="gemini", model=model, input_per_mtok="1000", output_per_mtok="0"
    )
    _openai(
        tenant,
        openai_upstream,
        name="gemini",
        provider_type="gemini",
        default_model=model,
    )
    openai_upstream.enqueue_embeddings([[0.5, 0.5]] * 100, model=model, prompt_tokens=200)
    openai_upstream.enqueue_error(503, message="The model is overloaded.")
    openai_upstream.enqueue_embeddings([[0.5, 0.5, 0.5]] * 20, model=model, prompt_tokens=40)

    # when
    with pytest.raises(MalformedAnswer) as raised:
        embed(tenant=tenant, inputs=[f"text {n}" for n in range(120)], model=model)

    # then the retry sent only the 20 inputs left, and its vectors were refused,
    # though paid at the 40 tokens it reported
    assert [len(request.json["input"]) for request in openai_upstream.requests] == [100, 20, 20]
    message = (
        "The gemini answer is malformed: an embedding has 3 dimensions, not the 2 of the others."
    )
    assert raised.value.message == message
    rows = CallLog.objects.filter(request_id=raised.value.extra["request_id"]).order_by("attempt")
    assert [(row.error_code, row.input_tokens, row.cost_usd) for row in rows] == [
        ("upstream_unavailable", 200, Decimal("0.2")),
        ("upstream_unavailable", 40, Decimal("0.04")),
    ]
    assert rows[1].error_message == message


# --- over HTTP --------------------------------------------------------------------------


def test_completion_api_answers_502_with_the_malformed_answer_error(tenant, openai_upstream):
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue(json_reply(_chat_answer(choices=[]), route="chat"), times=2)
    client = service_key_client(ServiceKeyFactory(tenant=tenant))

    response = client.post("/api/v1/completions/", {"messages": HELLO}, format="json")

    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("upstream_unavailable", NO_CHOICES)
    assert error["extra"]["request_id"] == response["X-Request-Id"]
    assert [(f["provider"], f["code"], f["message"]) for f in error["extra"]["failures"]] == [
        ("openai", "upstream_unavailable", NO_CHOICES)
    ]
    assert CallLog.objects.filter(tenant=tenant, error_code="upstream_unavailable").count() == 2
