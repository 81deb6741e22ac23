"""`POST /completions` with `"stream": true` at its edges: refusals before the
stream answer JSON errors with their status, fallbacks across wire formats
and tool calls streamed in pieces end in one `done` event, cache hits replay
as a stream at no cost."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from llm_providers.rate_limiting import rate_limit_admit
from llm_providers.services import provider_config_create
from tests.factories import BudgetFactory, ModelPriceFactory
from usage.models import CallLog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private_urls")]

COMPLETIONS = "/api/v1/completions/"
HELLO = [{"role": "user", "content": "hello"}]
# $1,000 input / $2,000 output per million tokens: $0.001 a token in, $0.002 out.
PRICES = {"input_per_mtok": "1000", "output_per_mtok": "2000"}


@pytest.fixture
def openai(tenant, openai_upstream):
    ModelPriceFactory(provider_type="openai", model="gpt-4o", **PRICES)
    return provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key="sk-proj-Hq7Lm2Np9Rs4Tv6Wx8Yz1Ab3Cd5Ef7Gh",
        base_url=openai_upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
        priority=1,
    )


@pytest.fixture
def anthropic(tenant, anthropic_upstream):
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


def _events(response) -> list[tuple[str, dict]]:
    assert response["Content-Type"] == "text/event-stream"
    text = b"".join(response.streaming_content).decode("ascii")
    events = []
    for block in text.removesuffix("\n\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_stream_refused_by_a_blocking_budget_answers_429_json(
    service_api, tenant, openai, openai_upstream
):
    BudgetFactory(tenant=tenant, action="block", limit_usd=Decimal("0.01"), period="daily")

    # The worst case, 9 prompt tokens and 50 out, is $0.109: over the $0.01 left.
    response = service_api.post(
        COMPLETIONS,
        {"messages": HELLO, "stream": True, "max_tokens": 50},
        HTTP_ACCEPT="text/event-stream",
    )

    assert (response.status_code, response["Content-Type"]) == (429, "application/json")
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert (error["extra"]["spend_usd"], error["extra"]["limit_usd"]) == (
        "0.000000000000",
        "0.0100",
    )
    assert response["Retry-After"] == str(error["extra"]["retry_after_seconds"])
    assert response["X-Request-Id"] == error["extra"]["request_id"]
    [log] = CallLog.objects.filter(request_id=error["extra"]["request_id"])
    assert (log.status, log.error_code, log.streamed, log.cost_usd) == (
        "blocked",
        "budget_exceeded",
        True,
        None,
    )
    assert openai_upstream.requests == []


def test_stream_at_the_configs_rpm_limit_answers_429_json(
    service_api, tenant, openai, openai_upstream
):
    openai.rpm_limit = 1
    openai.save()
    rate_limit_admit(provider_config_id=openai.pk, rpm_limit=1, tpm_limit=None, tokens=1)

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "stream": True})

    assert (response.status_code, response["Content-Type"]) == (429, "application/json")
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert response["Retry-After"] == str(error["extra"]["retry_after_seconds"])
    # The one request counted in this minute's bucket decays out of the sliding
    # window over the next minute: at most two minutes away.
    assert 1 <= error["extra"]["retry_after_seconds"] <= 120
    [log] = CallLog.objects.filter(request_id=error["extra"]["request_id"])
    assert (log.status, log.error_code, log.streamed) == ("blocked", "rate_limited", True)
    assert openai_upstream.requests == []


def test_stream_falls_back_to_anthropic_before_its_first_chunk(
    service_api, openai, anthropic, openai_upstream, anthropic_upstream
):
    openai_upstream.enqueue_error(503, times=2)
    anthropic_upstream.enqueue_message_stream(
        ["Hel", "lo"], input_tokens=12, output_tokens=7, output_token_steps=[3, 7]
    )

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "stream": True})

    assert response.status_code == 200
    events = _events(response)
    assert events[:2] == [("chunk", {"text": "Hel"}), ("chunk", {"text": "lo"})]
    name, done = events[2]
    assert (name, len(events)) == ("done", 3)
    assert (done["provider"], done["attempts"], done["cost_usd"]) == (
        "anthropic",
        3,
        "0.026000000000",
    )
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (12, 7)
    logs = CallLog.objects.filter(request_id=done["request_id"]).order_by("attempt")
    assert [(log.provider_type, log.status, log.error_code) for log in logs] == [
        ("openai", "error", "upstream_unavailable"),
        ("openai", "error", "upstream_unavailable"),
        ("anthropic", "ok", ""),
    ]


def test_stream_of_anthropic_tool_uses_returns_them_whole_in_the_done_event(
    service_api, tenant, anthropic, anthropic_upstream
):
    anthropic.is_default = True
    anthropic.save()
    anthropic_upstream.enqueue_message_stream(
        ["Let me check."],
        tool_uses=[{"id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        input_tokens=20,
        output_tokens=30,
    )
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "stream": True, "tools": [tool]})

    events = _events(response)
    assert [name for name, _ in events] == ["chunk", "done"]
    done = events[1][1]
    assert done["tool_calls"] == [
        {
            "id": "toolu_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
            "extra_content": None,
        }
    ]
    assert (done["finish_reason"], done["cost_usd"]) == ("tool_calls", "0.080000000000")


def test_stream_cache_hit_replays_the_text_at_no_cost(service_api, tenant, openai, openai_upstream):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    openai_upstream.enqueue_chat_stream(["Hel", "lo"], prompt_tokens=10, completion_tokens=2)
    body = {"messages": HELLO, "stream": True}

    first = _events(service_api.post(COMPLETIONS, body))
    again = _events(service_api.post(COMPLETIONS, body))

    assert first[-1][1]["cost_usd"] == "0.014000000000"
    assert again[0] == ("chunk", {"text": "Hello"})
    done = again[-1][1]
    assert (done["cached"], done["cost_usd"], done["price_source"]) == (
        True,
        "0.000000000000",
        "none",
    )
    log = CallLog.objects.get(request_id=done["request_id"])
    assert (log.status, log.streamed, log.cost_usd, log.output_tokens) == (
        "cached",
        True,
        Decimal("0"),
        0,
    )
    assert len(openai_upstream.requests) == 1
