"""The Fake adapter: deterministic answers, configured latency and failures."""

import time

import pytest

from llm_providers.adapters.errors import ProviderTimeout, UpstreamUnavailable
from llm_providers.adapters.fake import FakeAdapter
from llm_providers.adapters.types import AdapterSettings, ChatRequest

HELLO = [{"role": "user", "content": "hello there friend"}]


def _adapter(**options) -> FakeAdapter:
    return FakeAdapter(AdapterSettings(provider_type="fake", options=options))


def test_complete_echoes_the_last_user_message_with_usage():
    result = _adapter().complete(ChatRequest(model="fake-small", messages=HELLO))

    assert result.content == "Echo: hello there friend"
    assert result.model == "fake-small"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (13, 8)


def test_stream_yields_words_then_a_final_chunk_with_usage():
    chunks = list(_adapter().stream(ChatRequest(model="fake-small", messages=HELLO)))

    assert [c.text for c in chunks[:-1]] == ["Echo: ", "hello ", "there ", "friend"]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.output_tokens == 8


def test_stream_of_a_tool_call_yields_its_text_before_the_final_chunk():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    chunks = list(_adapter().stream(ChatRequest(model="fake-small", messages=HELLO, tools=tools)))

    assert [(c.text, c.unseen_text) for c in chunks[:-1]] == [("", 'lookup{"input": "fake"}')]
    assert chunks[-1].tool_calls[0].name == "lookup"
    # "lookup" 2 tokens, '{"input": "fake"}' 6.
    assert chunks[-1].usage.output_tokens == 8


def test_latency_within_the_timeout_answers_after_it():
    started = time.perf_counter()
    result = _adapter(latency_ms=150).complete(
        ChatRequest(model="fake-small", messages=HELLO, timeout=2)
    )

    assert result.content == "Echo: hello there friend"
    assert time.perf_counter() - started >= 0.15


def test_latency_longer_than_the_call_timeout_times_out_at_the_timeout():
    started = time.perf_counter()
    with pytest.raises(ProviderTimeout, match=r"^Fake provider did not answer within 0\.2 s\.$"):
        _adapter(latency_ms=5000).complete(
            ChatRequest(model="fake-small", messages=HELLO, timeout=0.2)
        )

    assert 0.2 <= time.perf_counter() - started < 2


def test_stream_stalled_between_chunks_longer_than_the_timeout_times_out_after_the_first():
    chunks = _adapter(chunk_latency_ms=5000).stream(
        ChatRequest(model="fake-small", messages=HELLO, timeout=0.2)
    )

    assert next(chunks).text == "Echo: "
    started = time.perf_counter()
    with pytest.raises(ProviderTimeout):
        next(chunks)
    assert 0.2 <= time.perf_counter() - started < 2


def test_latency_longer_than_the_configured_timeout_times_out_without_a_call_timeout():
    with pytest.raises(ProviderTimeout, match="within 0.1 s"):
        _adapter(latency_ms=5000, timeout=0.1).complete(
            ChatRequest(model="fake-small", messages=HELLO)
        )


def test_fail_first_fails_only_the_first_calls():
    adapter = _adapter(fail_first=1)
    request = ChatRequest(model="fake-small", messages=HELLO)

    with pytest.raises(UpstreamUnavailable):
        adapter.complete(request)
    assert adapter.complete(request).content == "Echo: hello there friend"
