"""`stream()` at its edges, over the loopback upstreams and the official SDKs:
failures before and after the first chunk, fallbacks across wire formats,
callers that stop early, the response cache, and the budget each leaves."""

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from llm_providers.adapters.errors import UpstreamUnavailable
from llm_providers.completion import complete, stream
from llm_providers.services import provider_config_create
from tests.factories import BudgetFactory, ModelPriceFactory, TenantFactory
from tests.upstreams.openai import sse
from tests.upstreams.server import Reply
from usage.aggregation import daily_usage_recompute
from usage.budget import BudgetExceeded
from usage.models import Budget, CallLog, DailyUsage

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "hello"}]
# Every model here at $1,000 input / $2,000 output per million tokens (budget
# limits have four decimals): a token in is $0.001, a token out $0.002.
PRICES = {"input_per_mtok": "1000", "output_per_mtok": "2000"}


@pytest.fixture
def tenant(allow_private_urls):
    return TenantFactory()


@pytest.fixture
def openai_first(tenant, openai_upstream):
    ModelPriceFactory(provider_type="openai", model="gpt-4o", **PRICES)
    return provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key="sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6",
        base_url=openai_upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
        priority=1,
    )


@pytest.fixture
def anthropic_second(tenant, anthropic_upstream):
    ModelPriceFactory(provider_type="anthropic", model="claude-opus-4-7", **PRICES)
    return provider_config_create(
        tenant=tenant,
        name="anthropic",
        provider_type="anthropic",
        api_key="sk-ant-api03-Z9y8X7w6V5u4T3s2R1q0P9o8",
        base_url=anthropic_upstream.url,
        default_model="claude-opus-4-7",
        priority=2,
    )


def _block(tenant, limit):
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
        (log.attempt, log.provider_type, log.status, log.error_code, log.cost_usd)
        for log in CallLog.objects.filter(
            request_id=request_id, status__in=["ok", "error"]
        ).order_by("attempt")
    ]


@pytest.mark.parametrize(
    "failure",
    ["server_error", "rate_limited", "reset_before_text", "timeout", "stalled_before_text"],
)
def test_stream_failing_before_any_text_retries_then_falls_back_to_another_protocol(
    tenant, openai_first, anthropic_second, openai_upstream, anthropic_upstream, failure
):
    # given a $1 cap, and a primary that fails both its attempts before any text
    _block(tenant, "1")
    for _ in range(2):
        if failure == "server_error":
            openai_upstream.enqueue_error(500)
        elif failure == "rate_limited":
            openai_upstream.enqueue_error(
                429, type="requests", code="rate_limit_exceeded", headers={"Retry-After": "0"}
            )
        elif failure == "reset_before_text":
            # The role chunk, then the connection drops.
            openai_upstream.enqueue_chat_stream(["never"], break_after=1)
        elif failure == "timeout":
            openai_upstream.enqueue_chat_stream(["late"], delay=1.0)
        else:
            # The role chunk, then a silence longer than the read timeout.
            openai_upstream.enqueue_chat_stream(["late"], chunk_delay=1.0)
    # and a fallback whose usage comes in message_start and cumulative message_deltas
    anthropic_upstream.enqueue_message_stream(
        ["Hel", "lo"], input_tokens=12, output_tokens=7, output_token_steps=[3, 7]
    )

    # when
    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50, timeout=0.5)
    text = "".join(chunks)

    # then the caller reads the fallback's answer
    assert text == "Hello"
    result = chunks.result
    assert (result.provider, result.attempts) == ("anthropic", 3)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 7)
    assert result.usage_estimated is False
    # 12 × $0.001 + 7 × $0.002
    assert result.cost_usd == Decimal("0.026")
    code = {
        "server_error": "upstream_unavailable",
        "rate_limited": "provider_rate_limited",
        "reset_before_text": "upstream_unavailable",
        "timeout": "provider_timeout",
        "stalled_before_text": "provider_timeout",
    }[failure]
    assert _rows(chunks.request_id) == [
        (1, "openai", "error", code, None),
        (2, "openai", "error", code, None),
        (3, "anthropic", "ok", "", Decimal("0.026")),
    ]
    # the primary's reservation was released, the fallback's settled once
    assert _spend(tenant) == Decimal("0.026")


def test_stream_broken_after_text_does_not_fall_back_and_settles_its_estimate(
    tenant, openai_first, anthropic_second, openai_upstream, anthropic_upstream
):
    _block(tenant, "1")
    openai_upstream.enqueue_chat_stream(["alpha ", "beta ", "gamma"], break_after=3)

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    received = []
    with pytest.raises(UpstreamUnavailable) as raised:
        for text in chunks:
            received.append(text)

    assert received == ["alpha ", "beta "]
    assert anthropic_upstream.requests == []
    assert raised.value.extra["request_id"] == str(chunks.request_id)
    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    # "hello" is estimated at 9 prompt tokens, "alpha beta " at 4 output tokens
    assert (log.status, log.error_code, log.usage_estimated) == (
        "error",
        "upstream_unavailable",
        True,
    )
    assert (log.input_tokens, log.output_tokens) == (9, 4)
    assert log.cost_usd == Decimal("0.017")
    assert chunks.result.cost_usd == Decimal("0.017")
    assert chunks.result.finish_reason == "error"
    assert _spend(tenant) == Decimal("0.017")


def test_stream_closed_by_its_caller_stops_the_upstream_and_counts_once(
    tenant, openai_first, openai_upstream
):
    _block(tenant, "1")
    openai_upstream.enqueue_chat_stream(["one ", "two ", "three ", "four"], chunk_delay=0.05)

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    assert next(chunks) == "one "
    chunks.close()
    chunks.close()

    deadline = timezone.now() + timedelta(seconds=5)
    while openai_upstream.replies_in_progress and timezone.now() < deadline:
        pass
    assert openai_upstream.streams_cut == 1
    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    # 9 estimated prompt tokens; "one " (4 characters) 2 estimated output tokens
    assert (log.status, log.error_code, log.usage_estimated) == ("ok", "client_closed", True)
    assert (log.input_tokens, log.output_tokens, log.cost_usd) == (9, 2, Decimal("0.013"))
    today = timezone.now().date()
    daily_usage_recompute(first_day=today - timedelta(days=1), last_day=today + timedelta(days=1))
    rows = DailyUsage.objects.filter(tenant=tenant, provider_config=openai_first)
    assert [
        (row.request_count, row.input_tokens, row.output_tokens, row.cost_usd) for row in rows
    ] == [(1, 9, 2, Decimal("0.013"))]
    assert _spend(tenant) == Decimal("0.013")


def test_stream_cache_hit_is_replayed_without_a_provider_call_or_cost(
    tenant, openai_first, openai_upstream
):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    _block(tenant, "1")
    openai_upstream.enqueue_chat_stream(["Hel", "lo"], prompt_tokens=10, completion_tokens=2)
    first = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    assert "".join(first) == "Hello"

    again = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    assert list(again) == ["Hello"]

    assert len(openai_upstream.requests) == 1
    assert (again.result.cached, again.result.cost_usd) == (True, Decimal("0"))
    assert (again.result.usage.input_tokens, again.result.usage.output_tokens) == (10, 2)
    [log] = CallLog.objects.filter(request_id=again.request_id)
    assert (log.status, log.streamed, log.cost_usd, log.input_tokens) == (
        "cached",
        True,
        Decimal("0"),
        0,
    )
    # only the first call spent: 10 × $0.001 + 2 × $0.002
    assert _spend(tenant) == Decimal("0.014")


def test_stream_assembles_openai_tool_call_deltas(tenant, openai_first, openai_upstream):
    calls = [
        {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": "call_b", "name": "get_time", "arguments": '{"zone": "Europe/Paris"}'},
    ]
    openai_upstream.enqueue_chat_stream(
        ["Checking."], tool_calls=calls, prompt_tokens=20, completion_tokens=30
    )

    chunks = stream(tenant=tenant, messages=HELLO)
    assert "".join(chunks) == "Checking."

    result = chunks.result
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", '{"zone": "Europe/Paris"}'),
    ]
    assert result.finish_reason == "tool_calls"
    assert result.cost_usd == Decimal("0.080")


def test_stream_assembles_anthropic_input_json_deltas(tenant, anthropic_second, anthropic_upstream):
    anthropic_second.is_default = True
    anthropic_second.save()
    anthropic_upstream.enqueue_message_stream(
        [],
        tool_uses=[
            {"id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"id": "toolu_2", "name": "get_time", "input": {"zone": "Europe/Paris"}},
        ],
        input_tokens=20,
        output_tokens=30,
    )

    chunks = stream(tenant=tenant, messages=HELLO)
    assert list(chunks) == []

    result = chunks.result
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("toolu_1", "get_weather", '{"city": "Paris"}'),
        ("toolu_2", "get_time", '{"zone": "Europe/Paris"}'),
    ]
    assert result.finish_reason == "tool_calls"
    assert result.cost_usd == Decimal("0.080")


def test_stream_finished_with_an_error_after_text_records_the_usage_openai_reported(
    tenant, openai_first, openai_upstream
):
    _block(tenant, "1")
    openai_upstream.enqueue_chat_stream(
        ["Once", " upon"], finish_reason="error", prompt_tokens=30, completion_tokens=40
    )

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    with pytest.raises(UpstreamUnavailable):
        list(chunks)

    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    assert (log.status, log.error_code) == ("error", "upstream_unavailable")
    assert (log.input_tokens, log.output_tokens, log.usage_estimated) == (30, 40, False)
    assert log.cost_usd == Decimal("0.110")
    assert _spend(tenant) == Decimal("0.110")


@pytest.fixture
def bedrock_first(tenant, bedrock_upstream):
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    ModelPriceFactory(provider_type="bedrock", model=model, **PRICES)
    return provider_config_create(
        tenant=tenant,
        name="bedrock",
        provider_type="bedrock",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        aws_region="us-east-1",
        base_url=bedrock_upstream.url,
        default_model=model,
        is_default=True,
        priority=0,
    )


def test_bedrock_stream_throttled_in_stream_falls_back_to_openai(
    tenant, openai_first, bedrock_first, bedrock_upstream, openai_upstream
):
    _block(tenant, "1")
    bedrock_upstream.enqueue_converse_stream(
        [], exception=("throttlingException", "Too many tokens"), times=2
    )
    openai_upstream.enqueue_chat_stream(["Hi"], prompt_tokens=10, completion_tokens=1)

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    assert "".join(chunks) == "Hi"

    assert _rows(chunks.request_id) == [
        (1, "bedrock", "error", "provider_rate_limited", None),
        (2, "bedrock", "error", "provider_rate_limited", None),
        (3, "openai", "ok", "", Decimal("0.012")),
    ]
    assert _spend(tenant) == Decimal("0.012")


def test_bedrock_stream_broken_after_text_settles_its_estimate(
    tenant, openai_first, bedrock_first, bedrock_upstream, openai_upstream
):
    _block(tenant, "1")
    # messageStart, "alpha ", "beta ", then the drop
    bedrock_upstream.enqueue_converse_stream(["alpha ", "beta ", "gamma"], break_after=3)

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    with pytest.raises(UpstreamUnavailable):
        list(chunks)

    assert openai_upstream.requests == []
    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    assert (log.status, log.usage_estimated, log.input_tokens, log.output_tokens) == (
        "error", True, 9, 4,
    )  # fmt: skip
    assert log.cost_usd == Decimal("0.017")
    assert _spend(tenant) == Decimal("0.017")


def test_stream_whose_primary_budget_refuses_falls_back(
    tenant, openai_first, anthropic_second, openai_upstream, anthropic_upstream
):
    BudgetFactory(
        tenant=tenant, name="openai cap", action=Budget.Action.BLOCK,
        limit_usd=Decimal("0.01"), provider_config_id=openai_first.pk,
    )  # fmt: skip
    anthropic_upstream.enqueue_message_stream(["Hi"], input_tokens=10, output_tokens=1)

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    assert "".join(chunks) == "Hi"

    logs = CallLog.objects.filter(request_id=chunks.request_id).order_by("attempt")
    assert [(log.provider_type, log.status, log.error_code, log.cost_usd) for log in logs] == [
        ("openai", "blocked", "budget_exceeded", None),
        ("anthropic", "ok", "", Decimal("0.012")),
    ]
    assert openai_upstream.requests == []


def test_stream_whose_primary_is_at_its_rpm_limit_falls_back(
    tenant, openai_first, anthropic_second, openai_upstream, anthropic_upstream
):
    openai_first.rpm_limit = 1
    openai_first.save()
    openai_upstream.enqueue_chat_stream(["One"], prompt_tokens=10, completion_tokens=1)
    anthropic_upstream.enqueue_message_stream(["Two"], input_tokens=10, output_tokens=1)

    first = stream(tenant=tenant, messages=HELLO)
    second = stream(tenant=tenant, messages=HELLO)

    assert ("".join(first), "".join(second)) == ("One", "Two")
    logs = CallLog.objects.filter(request_id=second.request_id).order_by("attempt")
    assert [(log.provider_type, log.status, log.error_code) for log in logs] == [
        ("openai", "blocked", "rate_limited"),
        ("anthropic", "ok", ""),
    ]


def test_bedrock_stream_ended_as_malformed_after_text_records_the_usage_it_reported(
    tenant, openai_first, bedrock_first, bedrock_upstream, openai_upstream
):
    _block(tenant, "1")
    bedrock_upstream.enqueue_converse_stream(
        ["Once", " upon"], stop_reason="malformed_model_output", input_tokens=30, output_tokens=40
    )

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    with pytest.raises(UpstreamUnavailable):
        list(chunks)

    assert openai_upstream.requests == []
    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    assert (log.status, log.error_code) == ("error", "upstream_unavailable")
    assert (log.input_tokens, log.output_tokens, log.usage_estimated) == (30, 40, False)
    assert log.cost_usd == Decimal("0.110")
    assert (chunks.result.cost_usd, chunks.result.usage_estimated) == (Decimal("0.110"), False)
    assert _spend(tenant) == Decimal("0.110")


def test_stream_ended_as_failed_before_any_text_pays_the_usage_reported_then_retries(
    tenant, openai_first, openai_upstream
):
    _block(tenant, "1")
    openai_upstream.enqueue_chat_stream(
        [], finish_reason="error", prompt_tokens=30, completion_tokens=5
    )
    openai_upstream.enqueue_chat_stream(["Hi"], prompt_tokens=30, completion_tokens=1)

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    assert "".join(chunks) == "Hi"

    assert _rows(chunks.request_id) == [
        (1, "openai", "error", "upstream_unavailable", Decimal("0.040")),
        (2, "openai", "ok", "", Decimal("0.032")),
    ]
    assert _spend(tenant) == Decimal("0.072")


def _read_in_a_thread(chunks):
    """Read `chunks` to its end on a thread of its own; returns the thread and
    what it read or raised."""
    outcome = {}

    def read():
        try:
            outcome["text"] = "".join(chunks)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=read)
    thread.start()
    return thread, outcome


@pytest.mark.django_db(transaction=True)
def test_stream_stopped_while_waiting_to_retry_sends_no_further_request(
    tenant, openai_first, anthropic_second, openai_upstream, anthropic_upstream
):
    # given a primary that asks to be retried in 2 s, and a fallback
    _block(tenant, "1")
    openai_upstream.enqueue_error(
        429, type="requests", code="rate_limit_exceeded", headers={"Retry-After": "2"}
    )
    openai_upstream.enqueue_chat_stream(["late"])
    anthropic_upstream.enqueue_message_stream(["late"])
    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    thread, outcome = _read_in_a_thread(chunks)
    while not openai_upstream.requests:
        time.sleep(0.01)

    # when the stream is stopped during that wait
    time.sleep(0.2)
    started = time.monotonic()
    chunks.stop()
    thread.join(timeout=10)

    # then it ends at once with the provider's refusal: no retry, no fallback
    waited = time.monotonic() - started
    assert outcome["error"].code == "provider_rate_limited"
    assert (len(openai_upstream.requests), len(anthropic_upstream.requests)) == (1, 0)
    assert _rows(chunks.request_id) == [(1, "openai", "error", "provider_rate_limited", None)]
    assert chunks.result is None
    assert _spend(tenant) == Decimal("0")
    assert waited < 1.0


def test_openai_stream_that_ignores_include_usage_is_estimated_and_flagged(
    tenant, openai_first, openai_upstream
):
    # given a compatible server that never sends the usage chunk it was asked for
    def chunk(delta, finish=None):
        return sse(
            {
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                "model": "gpt-4o", "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish}
                ],
            }
        )  # fmt: skip

    _block(tenant, "1")
    events = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello there"})]
    events += [chunk({}, "stop"), b"data: [DONE]\n\n"]
    openai_upstream.enqueue(
        Reply(headers={"Content-Type": "text/event-stream"}, chunks=events, route="chat")
    )

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    assert "".join(chunks) == "Hello there"

    # then the prompt (9 tokens) and "Hello there" (11 characters, 4 tokens)
    # are estimated: 9 × $0.001 + 4 × $0.002
    assert openai_upstream.requests[0].json["stream_options"] == {"include_usage": True}
    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    assert (log.status, log.usage_estimated, log.input_tokens, log.output_tokens) == (
        "ok", True, 9, 4,
    )  # fmt: skip
    assert log.cost_usd == chunks.result.cost_usd == Decimal("0.017")
    assert chunks.result.usage_estimated is True
    assert _spend(tenant) == Decimal("0.017")


def test_bedrock_stream_assembles_tool_use_input_deltas(
    tenant, openai_first, bedrock_first, bedrock_upstream
):
    bedrock_upstream.enqueue_converse_stream(
        ["Checking."],
        tool_uses=[{"id": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}],
        input_tokens=20,
        output_tokens=30,
    )

    chunks = stream(tenant=tenant, messages=HELLO)
    assert "".join(chunks) == "Checking."

    result = chunks.result
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("tooluse_1", "get_weather", '{"city": "Paris"}')
    ]
    assert (result.finish_reason, result.usage_estimated) == ("tool_calls", False)
    assert result.cost_usd == Decimal("0.080")


def test_stream_ended_without_a_finish_reason_after_text_records_the_usage_reported(
    tenant, openai_first, openai_upstream
):
    # given a server that sends text and its usage chunk, then [DONE], but
    # never says how the answer finished
    _block(tenant, "1")
    openai_upstream.enqueue_chat_stream(
        ["Once", " upon"], finished=False, prompt_tokens=30, completion_tokens=40
    )

    # when
    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    with pytest.raises(UpstreamUnavailable) as raised:
        list(chunks)

    # then the failed row carries the reported figures, not an estimate:
    # 30 × $0.001 + 40 × $0.002
    assert "ended before the answer finished" in raised.value.message
    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    assert (log.status, log.error_code) == ("error", "upstream_unavailable")
    assert (log.input_tokens, log.output_tokens, log.usage_estimated) == (30, 40, False)
    assert log.cost_usd == chunks.result.cost_usd == Decimal("0.110")
    assert chunks.result.usage_estimated is False
    assert _spend(tenant) == Decimal("0.110")


def test_stream_ended_without_a_finish_reason_before_text_pays_its_usage_then_retries(
    tenant, openai_first, openai_upstream
):
    _block(tenant, "1")
    openai_upstream.enqueue_chat_stream([], finished=False, prompt_tokens=30, completion_tokens=5)
    openai_upstream.enqueue_chat_stream(["Hi"], prompt_tokens=30, completion_tokens=1)

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    assert "".join(chunks) == "Hi"

    assert _rows(chunks.request_id) == [
        (1, "openai", "error", "upstream_unavailable", Decimal("0.040")),
        (2, "openai", "ok", "", Decimal("0.032")),
    ]
    assert _spend(tenant) == Decimal("0.072")


@pytest.fixture
def anthropic_only(tenant, anthropic_upstream):
    ModelPriceFactory(provider_type="anthropic", model="claude-opus-4-7", **PRICES)
    return provider_config_create(
        tenant=tenant,
        name="anthropic",
        provider_type="anthropic",
        api_key="sk-ant-api03-Z9y8X7w6V5u4T3s2R1q0P9o8",
        base_url=anthropic_upstream.url,
        default_model="claude-opus-4-7",
        is_default=True,
    )


def test_openai_stream_dropped_after_its_usage_chunk_is_a_complete_answer(
    tenant, openai_first, openai_upstream
):
    # given a stream whose role chunk, two pieces, finish chunk and usage
    # chunk arrive, and whose connection then drops before `data: [DONE]`
    _block(tenant, "1")
    openai_upstream.enqueue_chat_stream(
        ["Hel", "lo"], prompt_tokens=30, completion_tokens=40, break_after=5
    )

    # when
    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    text = "".join(chunks)

    # then the caller has the whole answer, logged as such at the usage reported:
    # 30 × $0.001 + 40 × $0.002
    assert text == "Hello"
    result = chunks.result
    assert (result.finish_reason, result.usage_estimated, result.attempts) == ("stop", False, 1)
    assert result.cost_usd == Decimal("0.110")
    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    assert (log.status, log.error_code, log.usage_estimated) == ("ok", "", False)
    assert (log.input_tokens, log.output_tokens, log.cost_usd) == (30, 40, Decimal("0.110"))
    assert _spend(tenant) == Decimal("0.110")


def test_anthropic_stream_dropped_after_its_final_message_delta_is_a_complete_answer(
    tenant, anthropic_only, anthropic_upstream
):
    # given message_start, ping, a text block of two pieces and the
    # message_delta with the stop reason and final usage, then a drop before
    # message_stop
    _block(tenant, "1")
    anthropic_upstream.enqueue_message_stream(
        ["Hel", "lo"], input_tokens=30, output_tokens=40, break_after=7
    )

    chunks = stream(tenant=tenant, messages=HELLO, max_tokens=50)
    text = "".join(chunks)

    assert text == "Hello"
    result = chunks.result
    assert (result.finish_reason, result.usage_estimated, result.attempts) == ("stop", False, 1)
    assert result.cost_usd == Decimal("0.110")
    [log] = CallLog.objects.filter(request_id=chunks.request_id)
    assert (log.status, log.error_code, log.usage_estimated) == ("ok", "", False)
    assert (log.input_tokens, log.output_tokens, log.cost_usd) == (30, 40, Decimal("0.110"))
    assert _spend(tenant) == Decimal("0.110")
