"""OpenAIChatAdapter through the openai SDK against the loopback OpenAI server."""

from __future__ import annotations

import base64
import json
import re
import struct
import time

import pytest

from llm_providers.adapters.content import JSON_MODE_INSTRUCTION
from llm_providers.adapters.errors import (
    ContentRefused,
    ContextTooLong,
    MalformedAnswer,
    ProviderAuthenticationError,
    ProviderBadRequest,
    ProviderPermissionError,
    ProviderRateLimited,
    ProviderTimeout,
    UpstreamUnavailable,
)
from llm_providers.adapters.openai_chat import PLACEHOLDER_API_KEY, OpenAIChatAdapter
from llm_providers.adapters.registry import adapter_build
from llm_providers.adapters.types import (
    AdapterSettings,
    ChatRequest,
    EmbedRequest,
    ToolCall,
    Usage,
)
from tests.upstreams.openai import (
    THOUGHT_SIGNATURE_INVALID,
    OpenAIUpstream,
    thought_signature,
)
from tests.upstreams.server import Reply, json_reply, raw_reply

API_KEY = "sk-proj-Q7mZ2xK9vB4nT8wR1yL6pD3sF0gH5jAa"
# A 1×1 PNG.
PNG_DATA_URL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _request(**overrides) -> ChatRequest:
    fields = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello?"},
        ],
    }
    fields.update(overrides)
    return ChatRequest(**fields)


def _adapter(provider_type: str, base_url: str, **settings) -> OpenAIChatAdapter:
    return adapter_build(AdapterSettings(provider_type, base_url=base_url, **settings))


@pytest.fixture
def adapter(openai_upstream):
    adapter = _adapter("openai", openai_upstream.base_url, api_key=API_KEY)
    yield adapter
    adapter.close()


# --- complete ------------------------------------------------------------------------


def test_complete_normalises_usage_when_cached_and_reasoning_tokens_reported(
    adapter, openai_upstream
):
    openai_upstream.enqueue_chat(
        "Hi!", prompt_tokens=1200, cached_tokens=1000, completion_tokens=300, reasoning_tokens=200
    )

    result = adapter.complete(_request())

    assert result.content == "Hi!"
    assert result.usage == Usage(
        input_tokens=1200,
        output_tokens=300,
        cache_read_tokens=1000,
        cache_write_tokens=0,
        reasoning_tokens=200,
    )
    assert result.finish_reason == "stop"


def test_complete_counts_reasoning_in_output_when_server_reports_it_beside_completion(
    openai_upstream,
):
    # Thinking tokens reported outside completion_tokens: total_tokens adds them once more.
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    usage = {
        "prompt_tokens": 20,
        "completion_tokens": 151,
        "total_tokens": 553,
        "completion_tokens_details": {"reasoning_tokens": 382},
    }
    openai_upstream.enqueue(
        json_reply(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "gemini-2.5-flash",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "36"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )
    )

    result = adapter.complete(_request())

    assert result.usage == Usage(input_tokens=20, output_tokens=533, reasoning_tokens=382)


def test_complete_reports_the_model_the_provider_answered_with(adapter, openai_upstream):
    openai_upstream.enqueue_chat(model="gpt-4o-mini-2024-07-18")

    result = adapter.complete(_request(model="gpt-4o-mini"))

    assert result.model == "gpt-4o-mini-2024-07-18"


def test_complete_sends_sampling_parameters_and_json_mode_on_the_wire(adapter, openai_upstream):
    openai_upstream.enqueue_chat('{"ok": true}')

    adapter.complete(
        _request(max_tokens=64, temperature=0.2, top_p=0.9, stop=["END"], json_mode=True)
    )

    sent = openai_upstream.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.json == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": JSON_MODE_INSTRUCTION},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello?"},
        ],
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "response_format": {"type": "json_object"},
    }


@pytest.mark.parametrize("provider_type", ["openai", "azure_openai"])
def test_complete_in_json_mode_tells_the_model_to_answer_json_when_no_message_says_it(
    provider_type, openai_upstream
):
    # OpenAI and Azure refuse (400) JSON mode unless a message mentions JSON;
    # json_mode alone must be enough, as on every other provider.
    if provider_type == "azure_openai":
        adapter = _azure(openai_upstream, deployment="gpt-4o-mini-dep")
    else:
        adapter = _adapter("openai", openai_upstream.base_url, api_key=API_KEY)
    openai_upstream.enqueue_chat('{"colours": ["red", "green", "blue"]}')
    messages = [{"role": "user", "content": "List three colours."}]

    result = adapter.complete(_request(messages=messages, json_mode=True))

    assert result.content == '{"colours": ["red", "green", "blue"]}'
    assert openai_upstream.last_request.json["messages"] == [
        {"role": "system", "content": JSON_MODE_INSTRUCTION},
        {"role": "user", "content": "List three colours."},
    ]
    assert messages == [{"role": "user", "content": "List three colours."}]


def test_complete_in_json_mode_sends_the_messages_as_given_when_one_mentions_json(
    adapter, openai_upstream
):
    openai_upstream.enqueue_chat('{"ok": true}')
    messages = [{"role": "user", "content": [{"type": "text", "text": "Reply in JSON: ok?"}]}]

    adapter.complete(_request(messages=messages, json_mode=True))

    assert openai_upstream.last_request.json["messages"] == messages


def test_complete_sends_max_tokens_when_preset_is_openai_compatible(openai_upstream):
    adapter = _adapter("groq", openai_upstream.base_url, api_key="gsk_test_key_123456")
    openai_upstream.enqueue_chat()

    adapter.complete(_request(max_tokens=64))

    assert openai_upstream.last_request.json["max_tokens"] == 64
    assert "max_completion_tokens" not in openai_upstream.last_request.json


def test_complete_sends_image_parts_as_image_url_when_message_has_an_image(
    adapter, openai_upstream
):
    openai_upstream.enqueue_chat("A dot.")
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_DATA_URL}},
    ]

    adapter.complete(_request(messages=[{"role": "user", "content": content}]))

    assert openai_upstream.last_request.json["messages"] == [{"role": "user", "content": content}]


def test_complete_returns_tool_calls_when_model_calls_a_tool(adapter, openai_upstream):
    openai_upstream.enqueue_chat(
        None,
        tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}],
    )

    result = adapter.complete(_request(tools=[WEATHER_TOOL]))

    assert openai_upstream.last_request.json["tools"] == [WEATHER_TOOL]
    assert result.content == ""
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    ]


@pytest.mark.parametrize(
    ("reported", "expected"),
    [("eos", "stop"), ("function_call", "tool_calls"), ("length", "length"), ("other", "stop")],
)
def test_complete_normalises_the_finish_reason_when_a_compatible_server_words_it_its_way(
    openai_upstream, reported, expected
):
    # Together ends a sequence with `eos`; older servers call tools with `function_call`.
    adapter = _adapter("together", openai_upstream.base_url, api_key="tgp_v1_test_key_123456")
    openai_upstream.enqueue_chat("Hi", finish_reason=reported)

    result = adapter.complete(_request())

    assert result.finish_reason == expected


def test_complete_reports_tool_calls_when_server_says_stop_after_calling_a_tool(openai_upstream):
    # Gemini's OpenAI-compatible endpoint finishes tool-calling answers with `stop`.
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    openai_upstream.enqueue_chat(
        None,
        tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}],
        finish_reason="stop",
    )

    result = adapter.complete(_request(tools=[WEATHER_TOOL]))

    assert result.finish_reason == "tool_calls"


def test_complete_reports_length_when_mistral_stops_at_the_model_context_window(
    openai_upstream,
):
    # Mistral's `model_length`: the answer was cut where the context window ends.
    adapter = _adapter("mistral", openai_upstream.base_url, api_key="mistral-test-key-123456")
    openai_upstream.enqueue_chat("Once upon a", finish_reason="model_length")

    result = adapter.complete(_request())

    assert result.finish_reason == "length"


def test_complete_raises_upstream_unavailable_when_mistral_finishes_with_error(openai_upstream):
    # Mistral's `error`: generation failed part-way; the text is not an answer.
    adapter = _adapter("mistral", openai_upstream.base_url, api_key="mistral-test-key-123456")
    openai_upstream.enqueue_chat("Once upon a", finish_reason="error")

    with pytest.raises(UpstreamUnavailable) as caught:
        adapter.complete(_request())

    assert caught.value.retryable is True
    assert caught.value.message == "mistral stopped the answer with an error."


def test_complete_estimates_usage_when_server_reports_none(adapter, openai_upstream):
    openai_upstream.enqueue(
        json_reply(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "local-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "abcdef"},
                        "finish_reason": "stop",
                    }
                ],
            }
        )
    )

    result = adapter.complete(_request())

    assert result.usage == Usage(input_tokens=adapter.count_tokens(_request()), output_tokens=2)


def test_complete_estimates_the_tool_calls_in_the_output_when_server_reports_no_usage(
    adapter, openai_upstream
):
    arguments = '{"city": "Paris", "unit": "celsius"}'
    openai_upstream.enqueue(
        json_reply(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "local-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": arguments},
                                }
                            ],
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
            }
        )
    )

    result = adapter.complete(_request(tools=[WEATHER_TOOL]))

    # "get_weather" is 11 characters (4 tokens), the 36 characters of arguments 12.
    assert result.usage.output_tokens == 16
    assert result.usage_estimated is True


REFUSAL = "I'm sorry, I can't help with that."


def test_complete_reports_content_filter_with_the_refusal_when_the_model_refuses(
    adapter, openai_upstream
):
    # OpenAI puts a model's refusal in `refusal`, leaves `content` null and
    # finishes with `stop`.
    openai_upstream.enqueue(
        json_reply(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-2024-08-06",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "refusal": REFUSAL},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40},
            }
        )
    )

    result = adapter.complete(_request(json_mode=True))

    assert (result.content, result.finish_reason) == (REFUSAL, "content_filter")


def test_stream_reports_content_filter_with_the_refusal_when_the_model_refuses(
    adapter, openai_upstream
):
    def chunk(delta: dict | None, finish_reason: str | None = None, **extra) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        payload = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-2024-08-06",
            "choices": choices if delta is not None else [],
            **extra,
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    usage = {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}
    openai_upstream.enqueue(
        Reply(
            headers={"Content-Type": "text/event-stream"},
            chunks=[
                chunk({"role": "assistant", "content": None, "refusal": ""}),
                chunk({"refusal": "I'm sorry, "}),
                chunk({"refusal": "I can't help with that."}),
                chunk({}, "stop"),
                chunk(None, usage=usage),
                b"data: [DONE]\n\n",
            ],
        )
    )

    chunks = list(adapter.stream(_request()))

    assert [c.text for c in chunks] == ["I'm sorry, ", "I can't help with that.", ""]
    assert chunks[-1].finish_reason == "content_filter"
    assert chunks[-1].usage == Usage(input_tokens=30, output_tokens=10)


# What OpenAI (and Azure) answer to sampling parameters a reasoning model
# (o-series, GPT-5) does not take.
TEMPERATURE_REFUSED = {
    "message": "Unsupported value: 'temperature' does not support 0.2 with this model. "
    "Only the default (1) value is supported.",
    "type": "invalid_request_error",
    "param": "temperature",
    "code": "unsupported_value",
}
TOP_P_REFUSED = {
    "message": "Unsupported parameter: 'top_p' is not supported with this model.",
    "type": "invalid_request_error",
    "param": "top_p",
    "code": "unsupported_parameter",
}


@pytest.mark.parametrize("provider_type", ["openai", "azure_openai"])
def test_complete_leaves_out_sampling_parameters_a_reasoning_model_refuses(
    provider_type, openai_upstream
):
    # given a model that refuses temperature and top_p other than its defaults
    if provider_type == "azure_openai":
        adapter = _azure(openai_upstream, deployment="o4-mini-dep")
    else:
        adapter = _adapter("openai", openai_upstream.base_url, api_key=API_KEY)
    openai_upstream.enqueue_error(400, **TEMPERATURE_REFUSED)
    openai_upstream.enqueue_error(400, **TOP_P_REFUSED)
    openai_upstream.enqueue_chat("Paris.", model="o4-mini-2025-04-16", times=2)
    request = _request(model="o4-mini", temperature=0.2, top_p=0.9, max_tokens=500)

    # when it is called twice
    first = adapter.complete(request)
    second = adapter.complete(request)

    # then it answers, without the refused parameters, and the second call
    # sends none of them from the start
    assert (first.content, second.content) == ("Paris.", "Paris.")
    sent = [r.json for r in openai_upstream.requests]
    assert [("temperature" in s, "top_p" in s) for s in sent] == [
        (True, True), (False, True), (False, False), (False, False),
    ]  # fmt: skip
    assert all(s["max_completion_tokens"] == 500 for s in sent)


def test_stream_leaves_out_a_temperature_the_model_refuses(adapter, openai_upstream):
    openai_upstream.enqueue_error(400, **TEMPERATURE_REFUSED)
    openai_upstream.enqueue_chat_stream(["Par", "is."])

    chunks = list(adapter.stream(_request(model="gpt-5-mini", temperature=0.2)))

    assert "".join(c.text for c in chunks) == "Paris."
    assert "temperature" not in openai_upstream.last_request.json
    assert openai_upstream.last_request.json["stream"] is True


def test_refused_sampling_parameters_are_left_out_for_that_model_only(adapter, openai_upstream):
    openai_upstream.enqueue_error(400, **TEMPERATURE_REFUSED)
    openai_upstream.enqueue_chat(times=2)

    adapter.complete(_request(model="o3", temperature=0.2))
    adapter.complete(_request(model="gpt-4o-mini", temperature=0.2))

    assert openai_upstream.last_request.json["temperature"] == 0.2


def test_complete_raises_bad_request_when_a_model_refuses_stop_sequences(adapter, openai_upstream):
    # Stop sequences change the answer: they are not dropped quietly.
    openai_upstream.enqueue_error(
        400,
        message="Unsupported parameter: 'stop' is not supported with this model.",
        type="invalid_request_error",
        param="stop",
        code="unsupported_parameter",
    )

    with pytest.raises(ProviderBadRequest) as caught:
        adapter.complete(_request(model="gpt-5", stop=["END"]))

    assert caught.value.message == (
        "openai answered 400: Unsupported parameter: 'stop' is not supported with this model."
    )
    assert len(openai_upstream.requests) == 1


# Mistral's reasoning models (Magistral) answer `content` as a list of chunks,
# their thinking first, in whole answers and stream deltas alike.
MISTRAL_THINKING = {"type": "thinking", "thinking": [{"type": "text", "text": "Six times 7"}]}


def test_complete_returns_only_the_text_when_mistral_answers_content_as_chunks(openai_upstream):
    adapter = _adapter("mistral", openai_upstream.base_url, api_key="mistral-test-key-123456")
    openai_upstream.enqueue(
        json_reply(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "magistral-medium-2509",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": [MISTRAL_THINKING, {"type": "text", "text": "42."}],
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
            }
        )
    )

    result = adapter.complete(_request(model="magistral-medium-latest"))

    assert result.content == "42."
    assert result.usage == Usage(input_tokens=12, output_tokens=30)


def _mistral_chunk(delta: dict, finish_reason: str | None = None, **extra) -> bytes:
    payload = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "magistral-medium-2509",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **extra,
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


MISTRAL_THINKING_STREAM = [
    _mistral_chunk({"role": "assistant", "content": ""}),
    _mistral_chunk({"content": [MISTRAL_THINKING]}),
    _mistral_chunk({"content": [{"type": "text", "text": "4"}]}),
    _mistral_chunk(
        {"content": "2."},
        "stop",
        usage={"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
    ),
    b"data: [DONE]\n\n",
]


def test_stream_yields_only_the_text_when_mistral_streams_content_as_chunks(openai_upstream):
    adapter = _adapter("mistral", openai_upstream.base_url, api_key="mistral-test-key-123456")
    openai_upstream.enqueue(
        Reply(headers={"Content-Type": "text/event-stream"}, chunks=MISTRAL_THINKING_STREAM)
    )

    chunks = list(adapter.stream(_request(model="magistral-medium-latest")))

    assert [c.text for c in chunks] == ["4", "2.", ""]
    assert chunks[-1].usage == Usage(input_tokens=12, output_tokens=30)


def test_mistral_gets_tool_call_ids_of_the_form_it_accepts(openai_upstream):
    # Mistral answers 400 ("Tool call id was call_... but must be a-z, A-Z,
    # 0-9, with a length of 9") to the ids other providers give, which a
    # conversation carries when it started elsewhere or fell back.
    adapter = _adapter("mistral", openai_upstream.base_url, api_key="mistral-test-key-123456")
    openai_upstream.enqueue_chat("Sunny in both.")
    calls = [
        {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        for call_id in ("call_Xy12AbCdEfGh34", "toolu_01A2b3C4d5", "D681PevKs")
    ]
    messages = [
        {"role": "user", "content": "Weather in Paris, Oslo and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_Xy12AbCdEfGh34", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "toolu_01A2b3C4d5", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "D681PevKs", "content": "Sunny"},
    ]

    adapter.complete(_request(model="mistral-large-latest", messages=messages))

    sent = openai_upstream.last_request.json["messages"]
    sent_ids = [call["id"] for call in sent[1]["tool_calls"]]
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", call_id) for call_id in sent_ids)
    assert len(set(sent_ids)) == 3
    assert sent_ids[2] == "D681PevKs"
    assert [message["tool_call_id"] for message in sent[2:]] == sent_ids
    # The caller's messages are left as they were.
    assert messages[1]["tool_calls"][0]["id"] == "call_Xy12AbCdEfGh34"


def _weather_call(call_id: str, city: str, **extra) -> dict:
    arguments = json.dumps({"city": city})
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
        **extra,
    }


def test_gemini_gets_tool_call_steps_with_a_thought_signature(openai_upstream):
    # Gemini 3 answers 400 to a tool call step without the thought signature
    # it gave (extra_content.google.thought_signature); a conversation begun
    # elsewhere, or whose caller kept no signature, has none to send back.
    openai_upstream.requires_thought_signatures = True
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    openai_upstream.enqueue_chat("Sunny in both; warmer in Rome.")
    rome = thought_signature("call_3", "get_weather", json.dumps({"city": "Rome"}))
    signed = {"google": {"thought_signature": rome}}
    messages = [
        {"role": "user", "content": "Weather in Paris and Oslo, then Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [_weather_call("call_1", "Paris"), _weather_call("call_2", "Oslo")],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Sunny"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [_weather_call("call_3", "Rome", extra_content=signed)],
        },
        {"role": "tool", "tool_call_id": "call_3", "content": "Sunnier"},
    ]

    result = adapter.complete(_request(model="gemini-3-flash-preview", messages=messages))

    assert result.content == "Sunny in both; warmer in Rome."
    sent = openai_upstream.last_request.json["messages"]
    assert [call.get("extra_content") for call in sent[1]["tool_calls"]] == [
        {"google": {"thought_signature": "skip_thought_signature_validator"}},
        None,
    ]
    # A signature the caller sent back is sent as it was.
    assert sent[4]["tool_calls"][0]["extra_content"] == signed
    # The caller's messages are left as they were.
    assert "extra_content" not in messages[1]["tool_calls"][0]


def test_other_presets_get_tool_calls_without_a_thought_signature(adapter, openai_upstream):
    openai_upstream.enqueue_chat("Sunny.")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [_weather_call("call_1", "Paris")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]

    adapter.complete(_request(messages=messages))

    sent = openai_upstream.last_request.json["messages"]
    assert sent[1]["tool_calls"] == [_weather_call("call_1", "Paris")]


GEMINI_KEY = "AIzaSyTestKey1234567890"
PARIS = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
OSLO = {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Oslo"}'}


def _signature_of(call: dict) -> dict:
    signature = thought_signature(call["id"], call["name"], call["arguments"])
    return {"google": {"thought_signature": signature}}


def _assistant_step(tool_calls: list[ToolCall]) -> dict:
    """An assistant message as a caller builds it from the tool calls answered."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
                "extra_content": call.extra_content,
            }
            for call in tool_calls
        ],
    }


def test_complete_keeps_the_thought_signature_gemini_gives_with_a_tool_call(openai_upstream):
    openai_upstream.requires_thought_signatures = True
    adapter = _adapter("gemini", openai_upstream.base_url, api_key=GEMINI_KEY)
    openai_upstream.enqueue_chat(None, tool_calls=[PARIS, OSLO], finish_reason="stop")

    result = adapter.complete(_request(model="gemini-3-flash-preview", tools=[WEATHER_TOOL]))

    # Gemini signs the first call of a step; the others carry nothing.
    assert result.tool_calls == [
        ToolCall(**PARIS, extra_content=_signature_of(PARIS)),
        ToolCall(**OSLO),
    ]
    assert result.tool_calls[1].extra_content is None


def test_gemini_gets_back_the_thought_signature_it_gave_instead_of_the_placeholder(
    openai_upstream,
):
    openai_upstream.requires_thought_signatures = True
    adapter = _adapter("gemini", openai_upstream.base_url, api_key=GEMINI_KEY)
    openai_upstream.enqueue_chat(None, tool_calls=[PARIS, OSLO])
    openai_upstream.enqueue_chat("Sunny in both.")
    question = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
    first = adapter.complete(_request(model="gemini-3-pro-preview", messages=question))
    messages = [
        *question,
        _assistant_step(first.tool_calls),
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Sunny"},
    ]

    second = adapter.complete(_request(model="gemini-3-pro-preview", messages=messages))

    assert second.content == "Sunny in both."
    sent = openai_upstream.last_request.json["messages"][1]["tool_calls"]
    assert sent[0]["extra_content"] == _signature_of(PARIS)
    # A call without data is sent without the key, not with null.
    assert "extra_content" not in sent[1]


def test_gemini_gets_a_signature_sent_back_unchanged_and_refuses_a_forged_one(openai_upstream):
    openai_upstream.requires_thought_signatures = True
    adapter = _adapter("gemini", openai_upstream.base_url, api_key=GEMINI_KEY)
    forged = {"google": {"thought_signature": "EhQKEgEMOdbHforged"}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        _assistant_step([ToolCall(**PARIS, extra_content=forged)]),
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]

    with pytest.raises(ProviderBadRequest) as caught:
        adapter.complete(_request(model="gemini-3-pro-preview", messages=messages))

    assert caught.value.message == f"gemini answered 400: {THOUGHT_SIGNATURE_INVALID}"
    assert (
        openai_upstream.last_request.json["messages"][1]["tool_calls"][0]["extra_content"] == forged
    )


def test_other_presets_get_tool_calls_without_the_extra_content_gemini_gave(
    adapter, openai_upstream
):
    # A conversation begun on Gemini and carried on elsewhere (a fallback):
    # OpenAI and Mistral refuse tool call fields they do not know.
    openai_upstream.enqueue_chat("Sunny.")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        _assistant_step([ToolCall(**PARIS, extra_content=_signature_of(PARIS))]),
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]

    adapter.complete(_request(messages=messages))

    sent = openai_upstream.last_request.json["messages"]
    assert sent[1]["tool_calls"] == [_weather_call("call_1", "Paris")]
    # The caller's messages are left as they were.
    assert messages[1]["tool_calls"][0]["extra_content"] == _signature_of(PARIS)


# --- stream --------------------------------------------------------------------------


def test_stream_yields_pieces_then_usage_on_the_final_chunk(adapter, openai_upstream):
    openai_upstream.enqueue_chat_stream(
        ["Hel", "lo"],
        prompt_tokens=2000,
        cached_tokens=1536,
        completion_tokens=410,
        reasoning_tokens=384,
    )

    chunks = list(adapter.stream(_request()))

    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert [c.usage for c in chunks[:-1]] == [None, None]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].model == "gpt-4o-mini-2024-07-18"
    assert chunks[-1].usage == Usage(
        input_tokens=2000, output_tokens=410, cache_read_tokens=1536, reasoning_tokens=384
    )


def test_stream_asks_for_usage_in_stream_options(adapter, openai_upstream):
    openai_upstream.enqueue_chat_stream()

    list(adapter.stream(_request()))

    sent = openai_upstream.last_request.json
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


def test_stream_assembles_tool_calls_on_the_final_chunk(adapter, openai_upstream):
    openai_upstream.enqueue_chat_stream(
        [],
        tool_calls=[
            {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        ],
    )

    chunks = list(adapter.stream(_request(tools=[WEATHER_TOOL])))

    # The pieces as they came (name, then the arguments in two halves), for a
    # stream that ends early to count; the calls whole on the final chunk.
    assert [c.unseen_text for c in chunks[:-1]] == [
        "get_weather", '{"city":', ' "Paris"}', "get_weather", '{"city":', ' "Oslo"}',
    ]  # fmt: skip
    assert [c.text for c in chunks] == [""] * 7
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].tool_calls == [
        ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_2", name="get_weather", arguments='{"city": "Oslo"}'),
    ]


def test_stream_normalises_the_finish_reason_on_the_final_chunk(openai_upstream):
    adapter = _adapter("together", openai_upstream.base_url, api_key="tgp_v1_test_key_123456")
    openai_upstream.enqueue_chat_stream(["Hi"], finish_reason="eos")

    chunks = list(adapter.stream(_request()))

    assert chunks[-1].finish_reason == "stop"


def test_stream_keeps_parallel_tool_calls_apart_when_deltas_carry_no_index(openai_upstream):
    # Gemini's OpenAI-compatible endpoint streams each call whole, without an index,
    # and finishes with `stop`.
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")

    def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
        payload = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def call(call_id: str, city: str) -> dict:
        arguments = json.dumps({"city": city})
        function = {"name": "get_weather", "arguments": arguments}
        return {"role": "assistant", "tool_calls": [{"id": call_id, "function": function}]}

    openai_upstream.enqueue(
        Reply(
            headers={"Content-Type": "text/event-stream"},
            chunks=[
                chunk(call("call_1", "Paris")),
                chunk(call("call_2", "Oslo"), finish_reason="stop"),
                b"data: [DONE]\n\n",
            ],
        )
    )

    chunks = list(adapter.stream(_request(tools=[WEATHER_TOOL])))

    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].tool_calls == [
        ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_2", name="get_weather", arguments='{"city": "Oslo"}'),
    ]


def test_stream_keeps_the_thought_signature_gemini_streams_with_a_tool_call(openai_upstream):
    # Gemini streams each call whole, the first with its step's signature.
    openai_upstream.requires_thought_signatures = True
    adapter = _adapter("gemini", openai_upstream.base_url, api_key=GEMINI_KEY)
    openai_upstream.enqueue_chat_stream([], tool_calls=[PARIS, OSLO], finish_reason="stop")

    chunks = list(adapter.stream(_request(model="gemini-3-flash-preview", tools=[WEATHER_TOOL])))

    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].tool_calls == [
        ToolCall(**PARIS, extra_content=_signature_of(PARIS)),
        ToolCall(**OSLO),
    ]


def test_stream_joins_the_extra_content_of_a_tool_call_sent_over_several_deltas(
    openai_upstream,
):
    adapter = _adapter("gemini", openai_upstream.base_url, api_key=GEMINI_KEY)

    def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
        payload = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gemini-3-flash-preview",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    first = {"id": "call_1", "function": {"name": "get_weather", "arguments": ""}}
    rest = {
        "function": {"arguments": '{"city": "Paris"}'},
        "extra_content": {"google": {"thought_signature": "CiQBjz1rX"}},
    }
    later = {"extra_content": {"google": {"cached": True}, "other": 1}}
    openai_upstream.enqueue(
        Reply(
            headers={"Content-Type": "text/event-stream"},
            chunks=[
                chunk({"role": "assistant", "tool_calls": [first]}),
                chunk({"tool_calls": [rest]}),
                chunk({"tool_calls": [later]}, finish_reason="stop"),
                b"data: [DONE]\n\n",
            ],
        )
    )

    chunks = list(adapter.stream(_request(tools=[WEATHER_TOOL])))

    assert chunks[-1].tool_calls == [
        ToolCall(
            **PARIS,
            extra_content={
                "google": {"thought_signature": "CiQBjz1rX", "cached": True},
                "other": 1,
            },
        )
    ]


def test_stream_keeps_parallel_tool_calls_apart_when_every_delta_says_index_0(openai_upstream):
    # Ollama streams each call whole, each with its own id but all with index 0.
    adapter = _adapter("ollama", openai_upstream.base_url)

    def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
        payload = {
            "id": "chatcmpl-ollama",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "qwen2.5-coder:7b",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def call(call_id: str, city: str) -> dict:
        function = {"name": "get_weather", "arguments": json.dumps({"city": city})}
        return {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": call_id, "index": 0, "type": "function", "function": function}],
        }

    openai_upstream.enqueue(
        Reply(
            headers={"Content-Type": "text/event-stream"},
            chunks=[
                chunk(call("call_a1b2c3", "Paris")),
                chunk(call("call_d4e5f6", "Oslo")),
                chunk({"role": "assistant", "content": ""}, finish_reason="tool_calls"),
                b"data: [DONE]\n\n",
            ],
        )
    )

    chunks = list(adapter.stream(_request(tools=[WEATHER_TOOL])))

    assert chunks[-1].tool_calls == [
        ToolCall(id="call_a1b2c3", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_d4e5f6", name="get_weather", arguments='{"city": "Oslo"}'),
    ]


def test_stream_reads_groq_usage_when_reported_in_x_groq(openai_upstream):
    adapter = _adapter("groq", openai_upstream.base_url, api_key="gsk_test_key_123456")
    chunk = (
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"llama-3.3-70b",'
        b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],'
        b'"x_groq":{"usage":{"prompt_tokens":40,"completion_tokens":2,"total_tokens":42}}}\n\n'
    )
    from tests.upstreams.server import Reply

    openai_upstream.enqueue(
        Reply(headers={"Content-Type": "text/event-stream"}, chunks=[chunk, b"data: [DONE]\n\n"])
    )

    chunks = list(adapter.stream(_request()))

    assert chunks[-1].usage == Usage(input_tokens=40, output_tokens=2)


def test_mistral_stream_reads_usage_of_last_chunk_without_asking_for_it(openai_upstream):
    # Mistral answers 422 to `stream_options` and reports usage in the last chunk.
    adapter = _adapter("mistral", openai_upstream.base_url, api_key="mistral-test-key-123456")
    chunks = [
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"mistral-small",'
        b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n',
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"mistral-small",'
        b'"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}\n\n',
        b"data: [DONE]\n\n",
    ]
    from tests.upstreams.server import Reply

    openai_upstream.enqueue(Reply(headers={"Content-Type": "text/event-stream"}, chunks=chunks))

    received = list(adapter.stream(_request()))

    assert "stream_options" not in openai_upstream.requests[0].json
    assert "".join(c.text for c in received) == "Hi"
    assert received[-1].usage == Usage(input_tokens=12, output_tokens=3)


def test_stream_reads_the_usage_of_a_chunk_whose_choices_are_null(openai_upstream):
    # Some compatible servers and proxies send their usage-only chunk with
    # "choices": null instead of an empty list.
    adapter = _adapter(
        "openai_compatible", openai_upstream.base_url, api_key="compat-test-key-123456"
    )
    chunks = [
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"qwen3-32b",'
        b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n',
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"qwen3-32b",'
        b'"choices":null,'
        b'"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}\n\n',
        b"data: [DONE]\n\n",
    ]
    openai_upstream.enqueue(Reply(headers={"Content-Type": "text/event-stream"}, chunks=chunks))

    received = list(adapter.stream(_request(model="qwen3-32b")))

    assert "".join(c.text for c in received) == "Hi"
    assert received[-1].finish_reason == "stop"
    assert received[-1].usage == Usage(input_tokens=12, output_tokens=3)


def test_stream_raises_upstream_unavailable_after_the_chunks_received_when_connection_breaks(
    adapter, openai_upstream
):
    # role chunk, "Hel", "lo", then the connection drops before "!" and the finish.
    openai_upstream.enqueue_chat_stream(["Hel", "lo", "!"], break_after=3)
    received = []

    with pytest.raises(UpstreamUnavailable) as caught:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    assert received == ["Hel", "lo"]
    assert caught.value.retryable is True
    assert "broke off" in caught.value.message


def test_stream_raises_upstream_unavailable_after_the_chunks_when_mistral_finishes_with_error(
    openai_upstream,
):
    adapter = _adapter("mistral", openai_upstream.base_url, api_key="mistral-test-key-123456")
    openai_upstream.enqueue_chat_stream(["Once", " upon"], finish_reason="error")
    received = []

    with pytest.raises(UpstreamUnavailable) as caught:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    assert received == ["Once", " upon"]
    assert caught.value.message == "mistral stopped the answer with an error."


def test_stream_raises_timeout_when_upstream_stalls_between_chunks(adapter, openai_upstream):
    openai_upstream.enqueue_chat_stream(["Hel", "lo"], chunk_delay=3)
    received = []
    started = time.monotonic()

    with pytest.raises(ProviderTimeout):
        for chunk in adapter.stream(_request(timeout=0.3)):
            received.append(chunk.text)

    assert received == []
    assert time.monotonic() - started < 2


def test_stream_closed_early_leaves_the_adapter_usable(adapter, openai_upstream):
    openai_upstream.enqueue_chat_stream(["Hel", "lo", "!"], chunk_delay=0.05)
    openai_upstream.enqueue_chat("Next.")

    chunks = adapter.stream(_request())
    first = next(chunks)
    chunks.close()

    assert first.text == "Hel"
    assert adapter.complete(_request()).content == "Next."


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_options", "expected", "retryable"),
    [
        (403, {"type": "invalid_request_error", "code": "unsupported_country_region_territory"},
         ProviderPermissionError, False),
        (400, {"message": "Invalid value for 'temperature'.", "type": "invalid_request_error"},
         ProviderBadRequest, False),
        (400, {"message": "This model's maximum context length is 128000 tokens. However, your "
               "messages resulted in 130412 tokens.", "code": "context_length_exceeded"},
         ContextTooLong, False),
        (400, {"message": "Your request was rejected by the safety system.",
               "code": "content_policy_violation"}, ContentRefused, False),
        (500, {}, UpstreamUnavailable, True),
        (503, {"message": "The engine is currently overloaded."}, UpstreamUnavailable, True),
        (529, {"message": "Overloaded"}, UpstreamUnavailable, True),
    ],
)  # fmt: skip
def test_complete_maps_error_status_onto_the_error_tree(
    adapter, openai_upstream, status, error_options, expected, retryable
):
    openai_upstream.enqueue_error(status, **error_options)

    with pytest.raises(expected) as caught:
        adapter.complete(_request())

    assert type(caught.value) is expected
    assert caught.value.status_code == status
    assert caught.value.retryable is retryable
    assert caught.value.message.startswith(f"openai answered {status}")


def test_complete_reads_the_message_of_gemini_error_lists(openai_upstream):
    # Gemini's OpenAI-compatible endpoint wraps its error object in a list.
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    message = (
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    )
    openai_upstream.enqueue(
        json_reply(
            [{"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}],
            status=400,
        )
    )

    with pytest.raises(ContextTooLong) as caught:
        adapter.complete(_request())

    assert caught.value.message == f"gemini answered 400: {message}"


def test_connection_check_reports_authentication_when_gemini_says_the_key_is_invalid(
    openai_upstream,
):
    # Gemini answers a wrong key with 400 INVALID_ARGUMENT; the reason says what it is.
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    error = {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    }
    openai_upstream.enqueue(json_reply([{"error": error}], status=400))

    check = adapter.test_connection()

    assert check.ok is False
    assert check.error == (
        "provider_authentication: gemini answered 400: "
        "API key not valid. Please pass a valid API key."
    )


def _gemini_quota_error(retry_delay: str) -> Reply:
    # Gemini's 429: no Retry-After header, the wait in a RetryInfo detail.
    error = {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing "
        "details. Please retry in 19.424395716s.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaValue": "10",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ],
    }
    return json_reply([{"error": error}], status=429)


@pytest.mark.parametrize(
    ("retry_delay", "expected"), [("19s", 19.0), ("3.700s", 3.7), ("52758s", 52758.0)]
)
def test_complete_raises_rate_limited_with_the_retry_delay_gemini_names_in_its_error(
    openai_upstream, retry_delay, expected
):
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    openai_upstream.enqueue(_gemini_quota_error(retry_delay))

    with pytest.raises(ProviderRateLimited) as caught:
        adapter.complete(_request(model="gemini-2.5-flash"))

    assert caught.value.retry_after == expected
    assert caught.value.status_code == 429


def test_complete_prefers_the_retry_after_header_to_gemini_retry_info(openai_upstream):
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    reply = _gemini_quota_error("19s")
    reply.headers["Retry-After"] = "4"
    openai_upstream.enqueue(reply)

    with pytest.raises(ProviderRateLimited) as caught:
        adapter.complete(_request(model="gemini-2.5-flash"))

    assert caught.value.retry_after == 4.0


def test_complete_raises_permission_error_without_retry_when_quota_is_exhausted(
    adapter, openai_upstream
):
    # OpenAI says "out of credit" with a 429: waiting does not help, another provider may.
    openai_upstream.enqueue_error(
        429,
        message="You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )

    with pytest.raises(ProviderPermissionError) as caught:
        adapter.complete(_request())

    assert caught.value.retryable is False
    assert caught.value.status_code == 429
    assert caught.value.message == (
        "openai answered 429: You exceeded your current quota, please check your plan and "
        "billing details."
    )


def test_complete_raises_context_too_long_when_together_says_inputs_exceed_the_window(
    openai_upstream,
):
    adapter = _adapter("together", openai_upstream.base_url, api_key="tgp_v1_test_key_123456")
    openai_upstream.enqueue_error(
        400,
        message="Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8193. "
        "Given: 8000 `inputs` tokens and 512 `max_new_tokens`",
        type="invalid_request_error",
    )

    with pytest.raises(ContextTooLong):
        adapter.complete(_request())


def test_complete_raises_rate_limited_with_retry_after_seconds(adapter, openai_upstream):
    openai_upstream.enqueue_error(
        429, message="Rate limit reached.", type="requests", headers={"Retry-After": "7"}
    )

    with pytest.raises(ProviderRateLimited) as caught:
        adapter.complete(_request())

    assert caught.value.retry_after == 7.0
    assert caught.value.retryable is True


def test_complete_prefers_retry_after_ms_when_both_headers_sent(adapter, openai_upstream):
    openai_upstream.enqueue_error(
        429, type="tokens", headers={"retry-after-ms": "1500", "retry-after": "2"}
    )

    with pytest.raises(ProviderRateLimited) as caught:
        adapter.complete(_request())

    assert caught.value.retry_after == 1.5


def test_complete_raises_authentication_error_without_any_fragment_of_the_key(
    adapter, openai_upstream
):
    openai_upstream.enqueue_invalid_key(API_KEY)

    with pytest.raises(ProviderAuthenticationError) as caught:
        adapter.complete(_request())

    error = caught.value
    assert error.retryable is False
    assert error.message.startswith("openai answered 401: Incorrect API key provided: ")
    secret_part = API_KEY[len("sk-proj-") :]
    for text in (error.message, str(error), repr(error)):
        leaked = [secret_part[i : i + 4] for i in range(len(secret_part) - 3)]
        assert [piece for piece in leaked if piece in text] == []
        assert "sk-proj-" not in text
    # Nothing of the SDK's exception (which quotes the key) travels along.
    assert error.__cause__ is None
    assert error.__context__ is None


def test_complete_scrubs_a_fragment_of_a_short_key_when_the_server_quotes_it(openai_upstream):
    # given a self-hosted server whose keys are short, and which quotes the
    # start of a rejected key
    short_key = "team7-Vq2kLm8x"
    adapter = _adapter("openai_compatible", openai_upstream.base_url, api_key=short_key)
    openai_upstream.enqueue_error(
        401, message=f"No key starts with {short_key[:11]}.", type="invalid_request_error"
    )

    # when
    with pytest.raises(ProviderAuthenticationError) as caught:
        adapter.complete(_request())

    # then no eight characters of the key are left
    assert caught.value.message == "openai_compatible answered 401: No key starts with [redacted]."


def test_connection_check_error_keeps_no_fragment_of_the_key(adapter, openai_upstream):
    openai_upstream.enqueue_invalid_key(API_KEY)

    check = adapter.test_connection()

    assert check.ok is False
    assert check.error.startswith("provider_authentication: openai answered 401")
    assert API_KEY[-4:] not in check.error
    assert API_KEY[:12] not in check.error


def test_complete_raises_timeout_when_upstream_is_slower_than_the_request_timeout(
    adapter, openai_upstream
):
    openai_upstream.enqueue_timeout(delay=5)
    started = time.monotonic()

    with pytest.raises(ProviderTimeout) as caught:
        adapter.complete(_request(timeout=0.3))

    assert time.monotonic() - started < 2
    assert caught.value.retryable is True


def test_complete_uses_the_options_timeout_when_the_request_names_none(openai_upstream):
    adapter = _adapter(
        "openai", openai_upstream.base_url, api_key=API_KEY, options={"timeout": 0.3}
    )
    openai_upstream.enqueue_timeout(delay=5)
    started = time.monotonic()

    with pytest.raises(ProviderTimeout):
        adapter.complete(_request())

    assert time.monotonic() - started < 2


def test_complete_sends_the_per_call_read_timeout_and_keeps_connect_timeout_apart(
    openai_upstream,
):
    adapter = _adapter(
        "openai",
        openai_upstream.base_url,
        api_key=API_KEY,
        options={"timeout": 30, "connect_timeout": 2},
    )
    openai_upstream.enqueue_chat(times=2)

    adapter.complete(_request())
    adapter.complete(_request(timeout=7))

    assert [r.headers["x-stainless-read-timeout"] for r in openai_upstream.requests] == [
        "30.0",
        "7.0",
    ]
    assert adapter._client.timeout.connect == 2
    assert adapter._client.max_retries == 0


def test_complete_raises_upstream_unavailable_when_connection_is_refused(refused_url):
    adapter = _adapter("openai", f"{refused_url}/v1", api_key=API_KEY)

    with pytest.raises(UpstreamUnavailable) as caught:
        adapter.complete(_request())

    assert caught.value.retryable is True
    assert caught.value.message == "openai could not be reached (ConnectError)."


def test_complete_is_not_retried_by_the_sdk_when_upstream_fails(adapter, openai_upstream):
    openai_upstream.enqueue_error(503)
    openai_upstream.enqueue_chat("second")

    with pytest.raises(UpstreamUnavailable):
        adapter.complete(_request())

    assert len(openai_upstream.requests) == 1
    assert openai_upstream.pending == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_complete_refuses_to_follow_a_redirect_when_upstream_answers_one(status, openai_upstream):
    # given: an endpoint that sends the call on to another server (which the
    # SSRF check of the base URL never saw)
    with OpenAIUpstream() as elsewhere:
        elsewhere.enqueue_chat("followed")
        openai_upstream.enqueue(
            Reply(status=status, headers={"Location": f"{elsewhere.base_url}/chat/completions"})
        )
        adapter = _adapter("openai", openai_upstream.base_url, api_key=API_KEY)

        # when
        with pytest.raises(ProviderBadRequest) as caught:
            adapter.complete(_request())

        # then
        assert elsewhere.requests == []
    assert caught.value.retryable is False
    assert caught.value.status_code == status
    assert caught.value.message == (
        f"openai answered {status}, a redirect, which is not followed; "
        "set the base URL to the address the provider documents."
    )


def test_azure_refuses_to_follow_a_redirect(openai_upstream):
    with OpenAIUpstream() as elsewhere:
        elsewhere.enqueue_chat("followed")
        openai_upstream.enqueue(Reply(status=307, headers={"Location": elsewhere.url}))
        adapter = _adapter(
            "azure_openai",
            openai_upstream.url,
            api_key=API_KEY,
            options={"api_version": "2024-10-21", "deployment": "chat"},
        )

        with pytest.raises(ProviderBadRequest):
            adapter.complete(_request())

        assert elsewhere.requests == []


# --- malformed answers -----------------------------------------------------------------
# A server (or a proxy before it) can answer 200 with a body that is not what
# the wire format promises. The SDK does not check its shape: the adapter does.

# `_request()` estimated: 3 per request + (4 + 3) for "Be brief." + (4 + 2) for "Hello?".
REQUEST_TOKENS_ESTIMATE = 16


def _chat_answer(message: object = None, **fields) -> dict:
    """A chat completion whose message (or any field) a test replaces."""
    if message is None:
        message = {"role": "assistant", "content": "Hi there!"}
    payload = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47},
    }
    payload.update(fields)
    return payload


def _chunk(choices: object = None, **fields) -> bytes:
    payload = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [] if choices is None else choices,
        **fields,
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _delta(delta: object, finish_reason: str | None = None) -> list[dict]:
    return [{"index": 0, "delta": delta, "finish_reason": finish_reason}]


DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (raw_reply("<html>502 Bad Gateway</html>", route="chat"), "it is not JSON"),
        (
            raw_reply("<html>502 Bad Gateway</html>", content_type="text/html", route="chat"),
            "it is not JSON",
        ),
        (raw_reply('{"id": "chatcmpl-x", "choi', route="chat"), "it is not JSON"),
        (raw_reply("", route="chat"), "it is not JSON"),
        (json_reply([_chat_answer()], route="chat"), "it is a list, not a JSON object"),
        (json_reply(None, route="chat"), "it is null, not a JSON object"),
        (json_reply({"id": "chatcmpl-x", "model": "m"}, route="chat"), "it has no choices"),
        (json_reply(_chat_answer(choices=[]), route="chat"), "it has no choices"),
        (
            json_reply(_chat_answer(choices={"0": {}}), route="chat"),
            "its choices field is an object, not a list",
        ),
        (
            json_reply(_chat_answer(choices=["Hi"]), route="chat"),
            "its first choice is text, not an object",
        ),
        (
            json_reply(_chat_answer(choices=[{"index": 0, "finish_reason": "stop"}]), route="chat"),
            "its message is missing",
        ),
        (
            json_reply(_chat_answer({"role": "assistant", "content": 42}), route="chat"),
            "its content is a number, not text",
        ),
        (
            json_reply(
                _chat_answer({"role": "assistant", "content": {"text": "Hi"}}), route="chat"
            ),
            "its content is an object, not text",
        ),
        (
            json_reply(_chat_answer({"role": "assistant", "content": ["Hi"]}), route="chat"),
            "a part of its content has no type",
        ),
        (
            json_reply(
                _chat_answer({"role": "assistant", "content": [{"type": "text", "text": 1}]}),
                route="chat",
            ),
            "a text part of its content has no text",
        ),
        (
            json_reply(
                _chat_answer({"role": "assistant", "content": None, "tool_calls": "lookup"}),
                route="chat",
            ),
            "its tool_calls field is text, not a list",
        ),
        (
            json_reply(
                _chat_answer(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "type": "function", "function": {}}],
                    }
                ),
                route="chat",
            ),
            "a tool call has no name",
        ),
        (
            json_reply(
                _chat_answer(
                    choices=[{"index": 0, "message": {"content": "Hi"}, "finish_reason": 1}]
                ),
                route="chat",
            ),
            "its finish_reason is a number, not text",
        ),
    ],
    ids=[
        "html",
        "html-as-text-html",
        "truncated-json",
        "empty-body",
        "json-list",
        "json-null",
        "no-choices",
        "empty-choices",
        "choices-not-a-list",
        "choice-not-an-object",
        "no-message",
        "content-a-number",
        "content-an-object",
        "content-part-without-type",
        "text-part-without-text",
        "tool-calls-not-a-list",
        "tool-call-without-name",
        "finish-reason-a-number",
    ],
)
def test_complete_raises_upstream_unavailable_when_the_answer_is_malformed(
    adapter, openai_upstream, reply, problem
):
    openai_upstream.enqueue(reply)

    with pytest.raises(UpstreamUnavailable) as raised:
        adapter.complete(_request())

    error = raised.value
    assert isinstance(error, MalformedAnswer)
    assert (error.code, error.retryable, error.http_status) == ("upstream_unavailable", True, 502)
    assert error.message == f"The openai answer is malformed: {problem}."


def test_complete_keeps_the_text_of_content_parts_of_kinds_it_does_not_know(
    adapter, openai_upstream
):
    content = [
        {"type": "reference", "reference_ids": [1]},
        {"type": "text", "text": "Hi there!"},
    ]
    openai_upstream.enqueue(json_reply(_chat_answer({"role": "assistant", "content": content})))

    assert adapter.complete(_request()).content == "Hi there!"


def test_complete_takes_tool_call_arguments_sent_as_an_object(adapter, openai_upstream):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
    }
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    openai_upstream.enqueue(json_reply(_chat_answer(message)))

    result = adapter.complete(_request())

    assert result.tool_calls == [
        ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    ]


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "40", "completion_tokens": 7},
        {"prompt_tokens": 40, "completion_tokens": -7},
        {"prompt_tokens": 40.5, "completion_tokens": 7},
        {"prompt_tokens": True, "completion_tokens": 7},
        {"prompt_tokens": 10**12, "completion_tokens": 7},
        {
            "prompt_tokens": 40,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": "x"},
        },
        {"prompt_tokens": 40, "completion_tokens": 7, "prompt_tokens_details": "none"},
        {"prompt_tokens": None, "completion_tokens": 7},
        "lots",
        [40, 7],
    ],
    ids=[
        "text",
        "negative",
        "fraction",
        "boolean",
        "absurd",
        "text-detail",
        "details-not-an-object",
        "no-prompt-figure",
        "text-usage",
        "list-usage",
    ],
)
def test_complete_estimates_usage_whose_figures_are_no_counts(adapter, openai_upstream, usage):
    # given an answer whose usage is garbage (trusting it would bill garbage)
    openai_upstream.enqueue(json_reply(_chat_answer(usage=usage)))

    # when
    result = adapter.complete(_request())

    # then the whole usage is estimated ("Hi there!": 3 tokens) and flagged
    assert result.content == "Hi there!"
    assert result.usage == Usage(input_tokens=REQUEST_TOKENS_ESTIMATE, output_tokens=3)
    assert result.usage_estimated is True


def test_complete_estimates_the_output_when_the_answer_reports_it_null(adapter, openai_upstream):
    # given an answer that reports its prompt (and cache reads) but no output
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": None,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }
    openai_upstream.enqueue(json_reply(_chat_answer(usage=usage)))

    result = adapter.complete(_request())

    # then the prompt's figures are kept and the output estimated, not billed as 0
    assert result.usage == Usage(input_tokens=1200, output_tokens=3, cache_read_tokens=1000)
    assert result.usage_estimated is True


def test_complete_takes_a_figure_written_as_a_whole_float(adapter, openai_upstream):
    usage = {"prompt_tokens": 40.0, "completion_tokens": 7.0, "total_tokens": 47.0}
    openai_upstream.enqueue(json_reply(_chat_answer(usage=usage)))

    result = adapter.complete(_request())

    assert (result.usage, result.usage_estimated) == (
        Usage(input_tokens=40, output_tokens=7),
        False,
    )
    assert type(result.usage.input_tokens) is int


@pytest.mark.parametrize(
    "model", [None, 4, "", ["gpt-4o"]], ids=["null", "number", "blank", "list"]
)
def test_complete_reports_the_requested_model_when_the_answer_names_none(
    adapter, openai_upstream, model
):
    openai_upstream.enqueue(json_reply(_chat_answer(model=model)))

    result = adapter.complete(_request(model="gpt-4o-mini"))

    assert result.model == "gpt-4o-mini"
    assert result.usage == Usage(input_tokens=40, output_tokens=7)


@pytest.mark.parametrize(
    ("chunks", "problem"),
    [
        ([b"data: {oops\n\n", DONE], "a chunk of it is not JSON"),
        ([b"data: 5\n\n", DONE], "a chunk of it is a number, not an object"),
        ([_chunk({"0": {}}), DONE], "a chunk's choices field is an object, not a list"),
        ([_chunk(["Hi"]), DONE], "a chunk's choice is text, not an object"),
        ([_chunk(_delta("Hi")), DONE], "a chunk's delta is text, not an object"),
        ([_chunk(_delta({"content": 5})), DONE], "its content is a number, not text"),
        (
            [_chunk(_delta({"tool_calls": {"index": 0}})), DONE],
            "a chunk's tool_calls field is an object, not a list",
        ),
        (
            [_chunk(_delta({"tool_calls": [{"index": 0, "function": {"arguments": 5}}]})), DONE],
            "a streamed tool call's arguments field is a number, not text",
        ),
        (
            [_chunk(_delta({"tool_calls": [{"index": [0], "id": "c"}]})), DONE],
            "a streamed tool call's index is a list, not a whole number",
        ),
        (
            [_chunk(_delta({}, finish_reason=["stop"])), DONE],
            "a chunk's finish_reason is a list, not text",
        ),
    ],
    ids=[
        "not-json",
        "a-number",
        "choices-not-a-list",
        "choice-not-an-object",
        "delta-not-an-object",
        "content-a-number",
        "tool-calls-not-a-list",
        "tool-call-arguments-a-number",
        "tool-call-index-a-list",
        "finish-reason-a-list",
    ],
)
def test_stream_raises_upstream_unavailable_when_a_chunk_is_malformed(
    adapter, openai_upstream, chunks, problem
):
    # given a valid first chunk, then a malformed one
    first = _chunk(_delta({"role": "assistant", "content": "Hel"}))
    openai_upstream.enqueue_raw(chunks=[first, *chunks], content_type="text/event-stream")

    received = []
    with pytest.raises(MalformedAnswer) as raised:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    # then what came before it was delivered, and the stream fails
    assert received == ["Hel"]
    assert raised.value.code == "upstream_unavailable"
    assert raised.value.message == f"The openai answer is malformed: {problem}."
    # without usage: none was reported before it
    assert raised.value.paid_usage is None


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": 42},
        {"role": "assistant", "content": [{"type": "text", "text": None}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": None}}],
        },
    ],
    ids=["content-a-number", "text-part-null", "tool-call-name-null"],
)
def test_complete_carries_the_usage_a_malformed_answer_reports_as_paid(
    adapter, openai_upstream, message
):
    # given an answer of 1,000 prompt and 500 completion tokens (200 of them
    # cached, a priority tier) whose message cannot be read
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 200},
    }
    answer = _chat_answer(message, usage=usage, service_tier="priority")
    openai_upstream.enqueue(json_reply(answer, route="chat"))

    # when
    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    # then the error carries that usage as the provider's figure for the attempt
    error = raised.value
    assert error.paid_usage == Usage(
        input_tokens=1000, output_tokens=500, cache_read_tokens=200, service_tier="priority"
    )
    assert (error.paid_model, error.paid_usage_final, error.paid_usage_estimated) == (
        "gpt-4o-mini-2024-07-18",
        True,
        False,
    )


@pytest.mark.parametrize(
    ("answer", "paid_model"),
    [
        (_chat_answer(choices=[]), "gpt-4o-mini-2024-07-18"),
        (_chat_answer(choices=["Hi"], model=None), "gpt-4o-mini"),
    ],
    ids=["no-choices", "choice-not-an-object-and-no-model"],
)
def test_complete_carries_the_usage_of_an_answer_without_a_readable_choice(
    adapter, openai_upstream, answer, paid_model
):
    openai_upstream.enqueue(json_reply(answer, route="chat"))

    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request(model="gpt-4o-mini"))

    # the usage is read before the choices; the model asked for stands for a missing one
    assert raised.value.paid_usage == Usage(input_tokens=40, output_tokens=7)
    assert raised.value.paid_model == paid_model


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "1000", "completion_tokens": 500},
        {"prompt_tokens": 1000, "completion_tokens": None},
        {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": "x"},
        None,
    ],
    ids=["text-figure", "no-output-figure", "details-not-an-object", "none"],
)
def test_complete_carries_no_usage_when_a_malformed_answer_reports_none_usable(
    adapter, openai_upstream, usage
):
    message = {"role": "assistant", "content": 42}
    openai_upstream.enqueue(json_reply(_chat_answer(message, usage=usage), route="chat"))

    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    # nothing to bill by: the answer cannot be read, and its usage neither
    assert raised.value.paid_usage is None
    assert raised.value.paid_usage_final is False


@pytest.mark.parametrize(
    ("malformed", "problem"),
    [
        (b"data: 5\n\n", "a chunk of it is a number, not an object"),
        (b"data: {oops\n\n", "a chunk of it is not JSON"),
        (_chunk(_delta({"content": 5})), "its content is a number, not text"),
    ],
    ids=["a-number", "not-json", "content-a-number"],
)
def test_stream_carries_the_usage_reported_before_a_malformed_chunk_as_paid(
    adapter, openai_upstream, malformed, problem
):
    # given a stream that finished, sent its usage chunk, then a malformed chunk
    chunks = [
        _chunk(_delta({"content": "Hi"})),
        _chunk(_delta({}, finish_reason="stop")),
        _chunk(usage={"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}),
        malformed,
        DONE,
    ]
    openai_upstream.enqueue_raw(chunks=chunks, content_type="text/event-stream")

    # when
    received = []
    with pytest.raises(MalformedAnswer) as raised:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    # then the answer fails, carrying the usage the provider reported as paid
    assert received == ["Hi"]
    error = raised.value
    assert error.message == f"The openai answer is malformed: {problem}."
    assert error.paid_usage == Usage(input_tokens=1000, output_tokens=500)
    assert (error.paid_model, error.paid_usage_final) == ("gpt-4o-mini", True)
    assert error.__context__ is None


def test_stream_carries_the_usage_of_a_usage_chunk_whose_choices_are_malformed(
    adapter, openai_upstream
):
    usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    chunks = [
        _chunk(_delta({"content": "Hi"}, finish_reason="stop")),
        _chunk({"0": {}}, usage=usage),
        DONE,
    ]
    openai_upstream.enqueue_raw(chunks=chunks, content_type="text/event-stream")

    with pytest.raises(MalformedAnswer) as raised:
        list(adapter.stream(_request()))

    assert raised.value.paid_usage == Usage(input_tokens=1000, output_tokens=500)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "12", "completion_tokens": 3},
        {"prompt_tokens": 12, "completion_tokens": 3.5},
        "12",
    ],
    ids=["text", "fraction", "not-an-object"],
)
def test_stream_reports_no_usage_when_its_figures_are_no_counts(adapter, openai_upstream, usage):
    chunks = [
        _chunk(_delta({"content": "Hi"})),
        _chunk(_delta({}, finish_reason="stop")),
        _chunk(usage=usage),
        DONE,
    ]
    openai_upstream.enqueue_raw(chunks=chunks, content_type="text/event-stream")

    received = list(adapter.stream(_request()))

    # the completion service then estimates the stream's usage
    assert "".join(chunk.text for chunk in received) == "Hi"
    assert (received[-1].finish_reason, received[-1].usage) == ("stop", None)
    assert received[-1].usage_so_far is None


def test_stream_reports_the_prompts_usage_alone_when_the_output_figure_is_null(
    adapter, openai_upstream
):
    chunks = [
        _chunk(_delta({"content": "Hi"})),
        _chunk(_delta({}, finish_reason="stop")),
        _chunk(usage={"prompt_tokens": 12, "completion_tokens": None, "total_tokens": 12}),
        DONE,
    ]
    openai_upstream.enqueue_raw(chunks=chunks, content_type="text/event-stream")

    received = list(adapter.stream(_request()))

    assert received[-1].usage is None
    assert received[-1].usage_so_far == Usage(input_tokens=12)


def test_stream_reports_no_usage_when_groq_sends_figures_that_are_no_counts(openai_upstream):
    # given Groq's usage in x_groq, with a figure that is text
    adapter = _adapter("groq", openai_upstream.base_url, api_key="gsk_test_key_123456")
    usage = {"prompt_tokens": "forty", "completion_tokens": 2, "total_tokens": 42}
    chunks = [
        _chunk(_delta({"content": "Hi"}, finish_reason="stop"), x_groq={"usage": usage}),
        DONE,
    ]
    openai_upstream.enqueue_raw(chunks=chunks, content_type="text/event-stream")

    received = list(adapter.stream(_request()))

    assert "".join(chunk.text for chunk in received) == "Hi"
    assert (received[-1].finish_reason, received[-1].usage) == ("stop", None)


def test_stream_reports_the_requested_model_while_chunks_name_none(adapter, openai_upstream):
    chunks = [
        _chunk(_delta({"content": "Hi"}), model=None),
        _chunk(_delta({}, finish_reason="stop"), model=7),
        DONE,
    ]
    openai_upstream.enqueue_raw(chunks=chunks, content_type="text/event-stream")

    received = list(adapter.stream(_request(model="gpt-4o-mini")))

    assert {chunk.model for chunk in received} == {"gpt-4o-mini"}


# --- embeddings, models, connection ---------------------------------------------------


def test_embed_returns_vectors_and_input_usage(adapter, openai_upstream):
    openai_upstream.enqueue_embeddings([[0.1, 0.2], [0.3, 0.4]], prompt_tokens=9)

    result = adapter.embed(EmbedRequest(model="text-embedding-3-small", inputs=["a", "b"]))

    assert result.vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert result.usage == Usage(input_tokens=9)
    assert result.model == "text-embedding-3-small"
    assert openai_upstream.last_request.path == "/v1/embeddings"
    assert openai_upstream.last_request.json == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
    }


def _embeddings_answer(data: list[dict], **fields) -> Reply:
    payload = {"object": "list", "data": data, "model": "nomic-embed-text", **fields}
    return json_reply(payload, route="embeddings")


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": None, "total_tokens": None}, {"prompt_tokens": 0, "total_tokens": 0}],
    ids=["nulls", "zeros"],
)
def test_embed_estimates_usage_a_compatible_server_leaves_out(adapter, openai_upstream, usage):
    # given a server whose usage says nothing of the input (older Ollama
    # versions report zeros, other servers nulls)
    data = [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}]
    openai_upstream.enqueue(_embeddings_answer(data, usage=usage))

    # when
    result = adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["abcdefghi"]))

    # then the vectors come back, with the input estimated (9 characters: 3 tokens) and flagged
    assert result.vectors == [[0.5, 0.25]]
    assert (result.usage, result.usage_estimated) == (Usage(input_tokens=3), True)


def test_embed_counts_the_total_tokens_of_a_server_that_sends_no_prompt_tokens(
    adapter, openai_upstream
):
    data = [{"object": "embedding", "index": 0, "embedding": [0.5]}]
    openai_upstream.enqueue(_embeddings_answer(data, usage={"total_tokens": 5}))

    result = adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["abcdefghi"]))

    assert (result.usage, result.usage_estimated) == (Usage(input_tokens=5), False)


def test_embed_decodes_base64_vectors_of_a_server_that_ignores_encoding_format(
    adapter, openai_upstream
):
    # given a server that answers base64 (little-endian float32) although floats were asked
    packed = base64.b64encode(struct.pack("<3f", 0.5, -0.25, 1.0)).decode()
    data = [{"object": "embedding", "index": 0, "embedding": packed}]
    openai_upstream.enqueue(_embeddings_answer(data, usage={"prompt_tokens": 2}))

    result = adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["a"]))

    assert result.vectors == [[0.5, -0.25, 1.0]]


def test_embed_keeps_the_answer_order_of_vectors_without_an_index(adapter, openai_upstream):
    data = [{"object": "embedding", "embedding": [float(n)]} for n in range(3)]
    openai_upstream.enqueue(_embeddings_answer(data, usage={"prompt_tokens": 3}))

    result = adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["a", "b", "c"]))

    assert result.vectors == [[0.0], [1.0], [2.0]]


def _vector_items(*embeddings) -> list[dict]:
    return [
        {"object": "embedding", "index": index, "embedding": embedding}
        for index, embedding in enumerate(embeddings)
    ]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (_vector_items([0.5]), "its embeddings do not match the 2 inputs (indexes [0])"),
        (_vector_items([0.5]) * 2, "its embeddings do not match the 2 inputs (indexes [0, 0])"),
        (
            [
                {"object": "embedding", "index": 0, "embedding": [0.5]},
                {"object": "embedding", "index": 2, "embedding": [0.5]},
            ],
            "its embeddings do not match the 2 inputs (indexes [0, 2])",
        ),
        (
            [{"object": "embedding", "embedding": [0.5]}] * 3,
            "it has 3 embeddings for 2 inputs",
        ),
        (_vector_items([0.5], "not base64!"), "an embedding is not a list of numbers"),
        (_vector_items([0.5], ["x"]), "an embedding is not a list of numbers"),
        (_vector_items([0.5], [[0.5]]), "an embedding is not a list of numbers"),
        (_vector_items([0.5], None), "an embedding is not a list of numbers"),
        (_vector_items([0.5], []), "an embedding is empty"),
        (_vector_items([0.5], [float("nan")]), "an embedding holds NaN or an infinity"),
        (_vector_items([0.5], [float("inf")]), "an embedding holds NaN or an infinity"),
        (
            _vector_items([0.5, 0.25], [0.5]),
            "an embedding has 1 dimensions, not the 2 of the others",
        ),
        ([0.5, 0.25], "an embedding is a number, not an object"),
        ({"0": [0.5]}, "its data field is an object, not a list"),
        (
            [{"object": "embedding", "index": "0", "embedding": [0.5]}] * 2,
            "an embedding's index is text, not a whole number",
        ),
    ],
    ids=[
        "too-few",
        "index-twice",
        "index-gap",
        "too-many",
        "bad-base64",
        "text",
        "nested-lists",
        "null",
        "empty",
        "nan",
        "infinity",
        "dimensions-differ",
        "items-not-objects",
        "data-not-a-list",
        "index-not-a-number",
    ],
)
def test_embed_refuses_an_answer_whose_vectors_do_not_match_the_inputs(
    adapter, openai_upstream, data, problem
):
    # A vector missing, out of place or that is no vector would pair the
    # caller's texts with vectors of other texts, or poison their index.
    # (json.dumps writes NaN and Infinity as Python's json module reads them.)
    openai_upstream.enqueue(_embeddings_answer(data, usage={"prompt_tokens": 2}))

    with pytest.raises(MalformedAnswer) as raised:
        adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["a", "b"]))

    error = raised.value
    assert error.code == "upstream_unavailable"
    assert error.retryable is True
    assert error.message == f"The openai answer is malformed: {problem}."
    # The provider billed the 2 tokens it reported: the attempt's whole usage,
    # none of it kept (there are no vectors to keep).
    assert error.paid_usage == Usage(input_tokens=2)
    assert (error.paid_model, error.paid_usage_final, error.paid_usage_estimated) == (
        "nomic-embed-text",
        True,
        False,
    )
    assert (error.paid_vectors, error.paid_vectors_usage) == (None, None)


def test_embed_refuses_base64_vectors_holding_nan(adapter, openai_upstream):
    packed = base64.b64encode(struct.pack("<2f", 0.5, float("nan"))).decode()
    openai_upstream.enqueue(_embeddings_answer(_vector_items(packed)))

    with pytest.raises(MalformedAnswer) as raised:
        adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["a"]))

    assert raised.value.message == (
        "The openai answer is malformed: an embedding holds NaN or an infinity."
    )


def test_embed_refuses_an_answer_that_is_not_json(adapter, openai_upstream):
    openai_upstream.enqueue_raw("<html>Bad gateway</html>", route="embeddings")

    with pytest.raises(MalformedAnswer) as raised:
        adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["a"]))

    assert raised.value.message == "The openai answer is malformed: it is not JSON."
    # Neither vectors nor usage can be read: nothing to bill by.
    assert raised.value.paid_usage is None


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -2, "total_tokens": -2},
        {"prompt_tokens": "2", "total_tokens": "2"},
        {"prompt_tokens": 0, "total_tokens": 0},
        {"prompt_tokens": None, "total_tokens": None},
        "two",
        None,
    ],
    ids=["negative", "text", "zeros", "nulls", "not-an-object", "none"],
)
def test_embed_carries_no_usage_when_a_malformed_answer_reports_none_usable(
    adapter, openai_upstream, usage
):
    openai_upstream.enqueue(_embeddings_answer(_vector_items([0.5], []), usage=usage))

    with pytest.raises(MalformedAnswer) as raised:
        adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["a", "b"]))

    # an embedding is never free, and a figure that is no count bills nothing
    assert raised.value.message == "The openai answer is malformed: an embedding is empty."
    assert raised.value.paid_usage is None
    assert raised.value.paid_usage_final is False


def _embedding_adapter(provider_type: str, upstream) -> OpenAIChatAdapter:
    if provider_type == "azure_openai":
        return _azure(upstream, deployments={"embedder": "emb"})
    keys = {"gemini": "AIzaSyTestKey1234567890", "mistral": "mistral-test-key-123456"}
    return _adapter(provider_type, upstream.base_url, api_key=keys.get(provider_type, API_KEY))


@pytest.mark.parametrize("provider_type", ["openai", "azure_openai", "gemini", "mistral", "ollama"])
def test_embed_carries_the_usage_a_malformed_answer_reports_as_paid_on_every_preset(
    openai_upstream, provider_type
):
    # given an answer of 2 vectors for 3 inputs, reporting 30 tokens, from a
    # model named otherwise than the one asked for
    adapter = _embedding_adapter(provider_type, openai_upstream)
    openai_upstream.enqueue_embeddings([[0.5], [0.25]], model="embedder-002", prompt_tokens=30)

    # when
    with pytest.raises(MalformedAnswer) as raised:
        adapter.embed(EmbedRequest(model="embedder", inputs=["a", "b", "c"]))

    # then
    error = raised.value
    assert error.message == (
        f"The {provider_type} answer is malformed: "
        "its embeddings do not match the 3 inputs (indexes [0, 1])."
    )
    assert error.paid_usage == Usage(input_tokens=30)
    assert (error.paid_model, error.paid_usage_final) == ("embedder-002", True)
    assert error.paid_vectors is None
    adapter.close()


def test_embed_refuses_vectors_of_other_dimensions_than_an_earlier_attempt_answered(
    adapter, openai_upstream
):
    # given a call whose first attempt was answered vectors of 3 dimensions
    openai_upstream.enqueue_embeddings([[0.5, 0.25]], model="nomic-embed-text")

    with pytest.raises(MalformedAnswer) as raised:
        adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["b"], expected_dimensions=3))

    assert raised.value.message == (
        "The openai answer is malformed: an embedding has 2 dimensions, not the 3 of the others."
    )


def test_gemini_refuses_a_batch_whose_vectors_differ_from_the_earlier_batches(openai_upstream):
    # given a first batch of 2-dimensional vectors, then one of 3 dimensions
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    model = "gemini-embedding-001"
    openai_upstream.enqueue_embeddings([[0.5, 0.5]] * 100, model=model, prompt_tokens=200)
    openai_upstream.enqueue_embeddings([[0.5, 0.5, 0.5]] * 20, model=model, prompt_tokens=40)

    # when
    with pytest.raises(MalformedAnswer) as raised:
        adapter.embed(EmbedRequest(model=model, inputs=[f"text {n}" for n in range(120)]))

    # then the call fails, carrying the first batch as answered and paid, and
    # the second, refused, as paid at the 40 tokens it reported
    error = raised.value
    assert error.message == (
        "The gemini answer is malformed: an embedding has 3 dimensions, not the 2 of the others."
    )
    assert error.paid_usage == Usage(input_tokens=240)
    assert (error.paid_model, error.paid_usage_final) == (model, True)
    assert error.paid_vectors == [[0.5, 0.5]] * 100
    assert error.paid_vectors_usage == Usage(input_tokens=200)


def test_gemini_batch_refused_without_usable_usage_carries_only_the_earlier_batches(
    openai_upstream,
):
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    model = "gemini-embedding-001"
    openai_upstream.enqueue_embeddings([[0.5, 0.5]] * 100, model=model, prompt_tokens=200)
    openai_upstream.enqueue_embeddings([[0.5, 0.5, 0.5]] * 20, model=model, prompt_tokens=None)

    with pytest.raises(MalformedAnswer) as raised:
        adapter.embed(EmbedRequest(model=model, inputs=[f"text {n}" for n in range(120)]))

    # the first batch's usage, as a part of the attempt's: the second's is not known
    error = raised.value
    assert error.paid_usage == error.paid_vectors_usage == Usage(input_tokens=200)
    assert (error.paid_model, error.paid_usage_final) == (model, False)
    assert error.paid_vectors == [[0.5, 0.5]] * 100


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": True, "total_tokens": True},
        {"prompt_tokens": "9", "total_tokens": "9"},
        {"prompt_tokens": -9, "total_tokens": -9},
        {"prompt_tokens": 9.5, "total_tokens": 9.5},
        "nine",
    ],
    ids=["booleans", "text", "negative", "fraction", "not-an-object"],
)
def test_embed_estimates_usage_whose_figures_are_no_counts(adapter, openai_upstream, usage):
    openai_upstream.enqueue(_embeddings_answer(_vector_items([0.5]), usage=usage))

    result = adapter.embed(EmbedRequest(model="nomic-embed-text", inputs=["abcdefghi"]))

    # 9 characters: 3 tokens, estimated and flagged
    assert (result.usage, result.usage_estimated) == (Usage(input_tokens=3), True)


def test_embed_raises_context_too_long_for_an_input_over_the_models_limit(adapter, openai_upstream):
    openai_upstream.enqueue_error(
        400,
        message="Invalid 'input[1]': maximum input length is 8192 tokens.",
        type="invalid_request_error",
    )

    with pytest.raises(ContextTooLong) as raised:
        adapter.embed(EmbedRequest(model="text-embedding-3-small", inputs=["a", "b" * 40_000]))

    assert raised.value.code == "context_too_long"


def test_gemini_embeds_more_than_100_inputs_in_batches_it_accepts(openai_upstream):
    # Gemini's OpenAI-compatible endpoint refuses more than 100 inputs per
    # request; the layer accepts up to 2,048 per call.
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")

    def answer(request):
        inputs = request.json["input"]
        if len(inputs) > 100:
            error = {
                "code": 400,
                "message": "* BatchEmbedContentsRequest.requests: at most 100 requests can be "
                "in one batch\n",
                "status": "INVALID_ARGUMENT",
            }
            return json_reply([{"error": error}], status=400)
        payload = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": [float(text.split()[1])]}
                for index, text in enumerate(inputs)
            ],
            "model": "gemini-embedding-001",
            "usage": {"prompt_tokens": 2 * len(inputs), "total_tokens": 2 * len(inputs)},
        }
        return json_reply(payload, route="embeddings")

    openai_upstream.enqueue(answer, times=3)
    inputs = [f"text {number}" for number in range(250)]

    result = adapter.embed(EmbedRequest(model="gemini-embedding-001", inputs=inputs))

    assert result.vectors == [[float(number)] for number in range(250)]
    assert result.usage == Usage(input_tokens=500)
    assert result.usage_estimated is False
    assert [len(request.json["input"]) for request in openai_upstream.requests] == [100, 100, 50]


@pytest.mark.usefixtures("openai_sdk_warm")
def test_gemini_sends_no_batch_the_calls_deadline_leaves_no_time_for(openai_upstream):
    # given a first batch answered after 0.5 s, and a deadline that leaves
    # less than 0.1 s once it is answered
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey1234567890")
    model = "gemini-embedding-001"
    openai_upstream.enqueue_embeddings(
        [[float(n)] for n in range(100)], model=model, prompt_tokens=200, delay=0.5
    )
    openai_upstream.enqueue_embeddings([[0.5]] * 50, model=model, prompt_tokens=100)
    request = EmbedRequest(
        model=model,
        inputs=[f"text {n}" for n in range(150)],
        deadline=time.monotonic() + 0.595,
    )

    # when
    with pytest.raises(ProviderTimeout) as raised:
        adapter.embed(request)

    # then the second batch is not sent, and the first is reported as paid for
    assert len(openai_upstream.requests) == 1
    assert raised.value.message == (
        "The call's deadline left no time for the next batch: 50 inputs not sent."
    )
    assert raised.value.paid_usage == Usage(input_tokens=200)
    assert raised.value.paid_vectors == [[float(n)] for n in range(100)]
    adapter.close()


def test_embed_sends_nothing_once_the_calls_deadline_has_passed(adapter, openai_upstream):
    openai_upstream.enqueue_embeddings([[0.5]])

    with pytest.raises(ProviderTimeout) as raised:
        adapter.embed(
            EmbedRequest(
                model="text-embedding-3-small", inputs=["alpha"], deadline=time.monotonic() - 1
            )
        )

    assert openai_upstream.requests == []
    assert raised.value.message == (
        "The call's deadline left no time for the next batch: 1 input not sent."
    )
    assert raised.value.paid_usage is None


def test_list_models_returns_the_ids_sorted(adapter, openai_upstream):
    openai_upstream.enqueue_models(["gpt-4o", "gpt-4o-mini", "babbage-002"])

    assert adapter.list_models() == ["babbage-002", "gpt-4o", "gpt-4o-mini"]
    assert openai_upstream.last_request.path == "/v1/models"


def test_gemini_lists_the_model_names_its_chat_endpoint_documents(openai_upstream):
    adapter = _adapter("gemini", openai_upstream.base_url, api_key="AIzaSyTestKey0123456789")
    openai_upstream.enqueue_models(["models/gemini-2.5-pro", "models/gemini-2.5-flash"])

    assert adapter.list_models() == ["gemini-2.5-flash", "gemini-2.5-pro"]


def test_connection_check_succeeds_with_the_models_when_key_works(adapter, openai_upstream):
    openai_upstream.enqueue_models(["gpt-4o"])

    check = adapter.test_connection()

    assert check.ok is True
    assert check.models == ["gpt-4o"]
    assert check.error == ""


# --- clients -------------------------------------------------------------------------


def test_client_is_reused_across_calls(adapter, openai_upstream):
    openai_upstream.enqueue_chat(times=2)
    client = adapter._client

    adapter.complete(_request())
    adapter.complete(_request())

    assert adapter._client is client
    first, second = openai_upstream.requests
    assert first.client_port == second.client_port


def test_close_releases_the_client(adapter):
    adapter.close()

    assert adapter._client.is_closed() is True


def test_keyless_preset_sends_a_placeholder_not_the_environment_key(openai_upstream, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-0000")
    adapter = _adapter("ollama", openai_upstream.base_url)
    openai_upstream.enqueue_chat()

    adapter.complete(_request(model="llama3.2"))

    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


# --- Azure ---------------------------------------------------------------------------


def _azure(openai_upstream, **options) -> OpenAIChatAdapter:
    return _adapter(
        "azure_openai",
        openai_upstream.url,
        api_key="azure-key-0123456789abcdef",
        options={"api_version": "2024-10-21", **options},
    )


def test_azure_calls_the_deployment_url_with_the_api_version(openai_upstream):
    adapter = _azure(openai_upstream, deployments={"gpt-4o": "prod-gpt4o"})
    openai_upstream.enqueue_chat(model="gpt-4o-2024-11-20")

    result = adapter.complete(_request(model="gpt-4o"))

    sent = openai_upstream.last_request
    assert sent.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == "azure-key-0123456789abcdef"
    assert "authorization" not in sent.headers
    assert result.model == "gpt-4o-2024-11-20"


@pytest.mark.parametrize(
    ("api_version", "sent_name"),
    [
        ("2024-06-01", "max_tokens"),
        ("2024-08-01-preview", "max_tokens"),
        ("2024-09-01-preview", "max_completion_tokens"),
        ("2024-10-21", "max_completion_tokens"),
        ("2025-04-01-preview", "max_completion_tokens"),
    ],
)
def test_azure_names_the_output_limit_as_its_api_version_knows_it(
    openai_upstream, api_version, sent_name
):
    adapter = _azure(openai_upstream, deployment="chat", api_version=api_version)
    openai_upstream.enqueue_chat()

    adapter.complete(_request(max_tokens=64))

    sent = openai_upstream.last_request.json
    assert sent[sent_name] == 64
    assert {"max_tokens", "max_completion_tokens"} & set(sent) == {sent_name}


@pytest.mark.parametrize(
    ("api_version", "usage"),
    [
        # Older API versions refuse stream_options (400) and report no stream usage.
        ("2024-06-01", None),
        ("2024-08-01-preview", None),
        ("2024-09-01-preview", Usage(input_tokens=10, output_tokens=5)),
        ("2024-10-21", Usage(input_tokens=10, output_tokens=5)),
    ],
)
def test_azure_streams_under_api_versions_that_do_not_know_stream_options(
    openai_upstream, api_version, usage
):
    adapter = _azure(openai_upstream, deployment="chat", api_version=api_version)
    openai_upstream.enqueue_chat_stream(["Hel", "lo"])

    chunks = list(adapter.stream(_request()))

    assert "".join(c.text for c in chunks) == "Hello"
    assert chunks[-1].usage == usage
    assert ("stream_options" in openai_upstream.last_request.json) is (usage is not None)


def test_azure_uses_the_single_deployment_option_for_any_model(openai_upstream):
    adapter = _azure(openai_upstream, deployment="shared")
    openai_upstream.enqueue_chat_stream()

    list(adapter.stream(_request(model="gpt-4o-mini")))

    assert openai_upstream.last_request.path == "/openai/deployments/shared/chat/completions"


def test_azure_embeddings_use_the_deployment_url(openai_upstream):
    adapter = _azure(openai_upstream, deployments={"text-embedding-3-large": "emb"})
    openai_upstream.enqueue_embeddings([[1.0]])

    adapter.embed(EmbedRequest(model="text-embedding-3-large", inputs=["x"]))

    sent = openai_upstream.last_request
    assert sent.path == "/openai/deployments/emb/embeddings"
    assert sent.query == {"api-version": "2024-10-21"}


def test_azure_lists_the_models_its_deployments_serve(openai_upstream):
    adapter = _azure(openai_upstream, deployments={"gpt-4o": "a", "gpt-4o-mini": "b"})
    openai_upstream.enqueue_models(["gpt-35-turbo", "gpt-4o"])

    assert adapter.list_models() == ["gpt-4o", "gpt-4o-mini"]
    assert openai_upstream.last_request.path == "/openai/models"


# --- through a stored provider config --------------------------------------------------


@pytest.mark.django_db
def test_adapter_for_a_stored_config_reaches_the_loopback_upstream(
    openai_upstream, allow_private_urls
):
    from llm_providers.clients import adapter_for_config
    from tests.factories import ProviderConfigFactory

    config = ProviderConfigFactory(
        provider_type="openai",
        base_url=openai_upstream.base_url,
        default_model="gpt-4o-mini",
        api_key=API_KEY,
    )
    openai_upstream.enqueue_chat("From the config.")

    result = adapter_for_config(config).complete(_request())

    assert result.content == "From the config."
    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {API_KEY}"
