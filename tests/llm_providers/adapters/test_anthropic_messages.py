"""AnthropicMessagesAdapter through the anthropic SDK against the loopback Anthropic server."""

from __future__ import annotations

import re
import time

import pytest

from llm_providers.adapters.anthropic_messages import (
    DEFAULT_MAX_TOKENS,
    PLACEHOLDER_API_KEY,
    AnthropicMessagesAdapter,
)
from llm_providers.adapters.content import JSON_MODE_INSTRUCTION, LEADING_USER_TEXT
from llm_providers.adapters.errors import (
    ContextTooLong,
    MalformedAnswer,
    NotSupported,
    ProviderAuthenticationError,
    ProviderBadRequest,
    ProviderPermissionError,
    ProviderRateLimited,
    ProviderTimeout,
    UpstreamUnavailable,
)
from llm_providers.adapters.registry import adapter_build
from llm_providers.adapters.types import (
    AdapterSettings,
    ChatRequest,
    EmbedRequest,
    ToolCall,
    Usage,
)
from tests.upstreams.anthropic import AnthropicUpstream, sse
from tests.upstreams.server import Reply, json_reply, raw_reply

API_KEY = "sk-ant-api03-Hq4Lm9Zt2Wx7Rb5Nc8Vd1Kf6Gj3Ps0Ty"
# A 1×1 PNG.
PNG_BASE64 = (
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
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello?"},
        ],
    }
    fields.update(overrides)
    return ChatRequest(**fields)


def _adapter(base_url: str, **settings) -> AnthropicMessagesAdapter:
    settings.setdefault("api_key", API_KEY)
    return adapter_build(AdapterSettings("anthropic", base_url=base_url, **settings))


@pytest.fixture
def adapter(anthropic_upstream):
    adapter = _adapter(anthropic_upstream.base_url)
    yield adapter
    adapter.close()


# --- complete ------------------------------------------------------------------------


def test_complete_adds_cache_reads_and_writes_to_input_tokens(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_message(
        "Hi!",
        input_tokens=200,
        cache_read_tokens=1000,
        cache_write_tokens=500,
        output_tokens=300,
        thinking_tokens=120,
    )

    result = adapter.complete(_request())

    assert result.content == "Hi!"
    assert result.usage == Usage(
        input_tokens=1700,
        output_tokens=300,
        cache_read_tokens=1000,
        cache_write_tokens=500,
        reasoning_tokens=120,
    )
    assert result.model == "claude-sonnet-4-6-20260217"
    assert result.finish_reason == "stop"


def test_complete_sends_system_and_stop_sequences_but_no_sampling_parameters(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message()

    # API version 2026-10-21 refuses temperature and top_p at any value.
    adapter.complete(_request(max_tokens=64, temperature=0.2, top_p=0.9, stop=["END"]))

    sent = anthropic_upstream.last_request
    assert sent.path == "/v1/messages"
    assert API_KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    assert sent.json == {
        "model": "claude-sonnet-4-6",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}],
        "max_tokens": 64,
        "stop_sequences": ["END"],
    }


def test_complete_stops_at_a_whitespace_stop_sequence_the_api_refuses(adapter, anthropic_upstream):
    # The API answers 400 to a stop sequence that is only whitespace ("\n"):
    # it is applied to the answer here instead, the others are sent.
    anthropic_upstream.enqueue_message("First line\nSecond line\n", output_tokens=6)

    result = adapter.complete(_request(stop=["\n", "END"]))

    assert anthropic_upstream.last_request.json["stop_sequences"] == ["END"]
    assert result.content == "First line"
    assert result.finish_reason == "stop"
    assert result.usage == Usage(input_tokens=10, output_tokens=6)


def test_complete_keeps_an_answer_without_the_whitespace_stop_sequence_whole(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message("One paragraph.\nNo blank line.", stop_reason="max_tokens")

    result = adapter.complete(_request(stop=["\n\n"]))

    assert "stop_sequences" not in anthropic_upstream.last_request.json
    assert (result.content, result.finish_reason) == ("One paragraph.\nNo blank line.", "length")


def test_complete_sends_the_default_max_tokens_when_request_names_none(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_message()

    adapter.complete(_request())

    assert anthropic_upstream.last_request.json["max_tokens"] == DEFAULT_MAX_TOKENS == 4096
    assert adapter.default_max_tokens == 4096


def test_complete_appends_the_json_instruction_to_system_when_json_mode(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message('{"a": 1}')

    adapter.complete(_request(json_mode=True))

    assert anthropic_upstream.last_request.json["system"] == f"Be brief.\n\n{JSON_MODE_INSTRUCTION}"


def test_complete_sends_image_data_urls_as_base64_image_blocks(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_message("A dot.")
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
    ]

    adapter.complete(_request(messages=[{"role": "user", "content": content}]))

    assert anthropic_upstream.last_request.json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64},
                },
            ],
        }
    ]


def test_complete_sends_line_wrapped_base64_as_one_base64_image_block(adapter, anthropic_upstream):
    # MIME encoders wrap base64 every 76 characters; the layer accepts such data URLs.
    anthropic_upstream.enqueue_message("A dot.")
    wrapped = "\n".join(PNG_BASE64[i : i + 76] for i in range(0, len(PNG_BASE64), 76))
    content = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{wrapped}\n"}}]

    adapter.complete(_request(messages=[{"role": "user", "content": content}]))

    [block] = anthropic_upstream.last_request.json["messages"][0]["content"]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64},
    }


def test_complete_sends_image_jpg_data_urls_as_the_jpeg_media_type(adapter, anthropic_upstream):
    # Anthropic takes image/jpeg only; browsers and tools still write image/jpg.
    anthropic_upstream.enqueue_message("A dot.")
    content = [{"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}}]

    adapter.complete(_request(messages=[{"role": "user", "content": content}]))

    [block] = anthropic_upstream.last_request.json["messages"][0]["content"]
    assert block["source"] == {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}


def test_complete_sends_the_media_type_of_the_image_bytes_when_the_data_url_mislabels_them(
    adapter, anthropic_upstream
):
    # OpenAI takes a JPEG labelled image/png; Anthropic answers 400, so a call
    # falling back from one to the other would fail on the label alone.
    anthropic_upstream.enqueue_message("A photo.")
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,/9j/4AAQSkZJRg=="}}
    ]

    result = adapter.complete(_request(messages=[{"role": "user", "content": content}]))

    assert result.content == "A photo."
    [block] = anthropic_upstream.last_request.json["messages"][0]["content"]
    assert block["source"] == {
        "type": "base64",
        "media_type": "image/jpeg",
        "data": "/9j/4AAQSkZJRg==",
    }


def test_complete_sends_tool_calls_and_results_as_tool_use_and_tool_result_blocks(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message("Sunny in both.")
    messages = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 21°C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Sunny, 12°C"},
    ]

    adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL]))

    sent = anthropic_upstream.last_request.json
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                 "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21°C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "Sunny, 12°C"},
            ],
        },
    ]  # fmt: skip


def test_complete_sends_tool_call_ids_of_other_providers_in_the_form_anthropic_accepts(
    adapter, anthropic_upstream
):
    # Kimi models name their calls "functions.<name>:<n>"; the API refuses
    # ids with other characters than letters, digits, "_" and "-".
    anthropic_upstream.enqueue_message("Sunny in both.")
    messages = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": f"functions.get_weather:{n}",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'},
                }
                for n, city in enumerate(("Paris", "Oslo"))
            ],
        },
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "Sunny, 21°C"},
        {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "Sunny, 12°C"},
        {"role": "user", "content": "Thanks."},
    ]

    result = adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL]))

    assert result.content == "Sunny in both."
    sent = anthropic_upstream.last_request.json["messages"]
    used = [block["id"] for block in sent[1]["content"]]
    answered = [block["tool_use_id"] for block in sent[2]["content"][:2]]
    assert used == answered
    assert len(set(used)) == 2
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", call_id) for call_id in used)
    # The mapping is the same on every call, so a conversation keeps its ids.
    anthropic_upstream.enqueue_message("Again.")
    adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL]))
    assert [
        block["id"] for block in anthropic_upstream.last_request.json["messages"][1]["content"]
    ] == used


def test_complete_begins_a_conversation_that_begins_with_the_assistant_with_a_user_turn(
    adapter, anthropic_upstream
):
    # As on Bedrock, which refuses such a conversation: one request, one shape.
    anthropic_upstream.enqueue_message("Sunny.")
    messages = [
        {"role": "assistant", "content": "Hello! Ask me about the weather."},
        {"role": "user", "content": "Weather in Paris?"},
    ]

    assert adapter.complete(_request(messages=messages)).content == "Sunny."

    assert anthropic_upstream.last_request.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": LEADING_USER_TEXT}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello! Ask me about the weather."}],
        },
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    ]


def test_complete_puts_tool_results_first_in_the_user_turn_they_are_merged_into(
    adapter, anthropic_upstream
):
    # The API refuses a user turn answering tool calls whose tool_result
    # blocks do not come first.
    anthropic_upstream.enqueue_message("Sunny.")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "user", "content": "In Fahrenheit, please."},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 21°C"},
    ]

    assert adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL])).content == "Sunny."

    assert anthropic_upstream.last_request.json["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21°C"},
            {"type": "text", "text": "In Fahrenheit, please."},
        ],
    }


def test_complete_sends_a_tool_result_without_output_without_content(adapter, anthropic_upstream):
    # The API refuses a blank tool result text ("\n" from a command that
    # printed nothing); a tool_result without content is how it takes none.
    anthropic_upstream.enqueue_message("Done.")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "\n"},
    ]

    result = adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL]))

    assert result.content == "Done."
    assert anthropic_upstream.last_request.json["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}],
    }


def test_complete_leaves_out_text_blocks_that_are_only_whitespace(adapter, anthropic_upstream):
    # Models often write "\n\n" before calling a tool; the Messages API refuses
    # a text block without non-whitespace text (400), so replaying such a
    # conversation must not send one.
    anthropic_upstream.enqueue_message("Sunny in Paris.")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "\n\n",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 21°C"},
        {
            "role": "user",
            "content": [{"type": "text", "text": " "}, {"type": "text", "text": "Thanks"}],
        },
    ]

    result = adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL]))

    assert result.content == "Sunny in Paris."
    sent = anthropic_upstream.last_request.json["messages"]
    assert sent[1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert sent[2]["content"][1:] == [{"type": "text", "text": "Thanks"}]


def test_complete_refuses_tool_call_arguments_that_are_not_json(adapter, anthropic_upstream):
    messages = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
            ],
        },
    ]

    with pytest.raises(ProviderBadRequest) as caught:
        adapter.complete(_request(messages=messages))

    assert caught.value.message == "The arguments of the call to tool “f” are not valid JSON."
    assert anthropic_upstream.requests == []


def test_complete_returns_tool_calls_when_model_uses_a_tool(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_message(
        "", tool_uses=[{"id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}}]
    )

    result = adapter.complete(_request(tools=[WEATHER_TOOL]))

    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        ToolCall(id="toolu_9", name="get_weather", arguments='{"city":"Paris"}')
    ]


def test_complete_reports_length_when_max_tokens_stopped_the_answer(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_message("Once upon", stop_reason="max_tokens")

    assert adapter.complete(_request(max_tokens=2)).finish_reason == "length"


# --- stream --------------------------------------------------------------------------


def test_stream_keeps_the_last_cumulative_message_delta_usage(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_message_stream(
        ["Hel", "lo"],
        input_tokens=25,
        cache_read_tokens=4000,
        cache_write_tokens=300,
        output_token_steps=[10, 40, 95],
        thinking_tokens=50,
    )

    chunks = list(adapter.stream(_request()))

    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].model == "claude-sonnet-4-6-20260217"
    assert chunks[-1].usage == Usage(
        input_tokens=4325,
        output_tokens=95,
        cache_read_tokens=4000,
        cache_write_tokens=300,
        reasoning_tokens=50,
    )
    assert anthropic_upstream.last_request.json["stream"] is True


def test_stream_assembles_tool_calls_on_the_final_chunk(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_message_stream(
        ["Let me check."],
        tool_uses=[
            {"id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
    )

    chunks = list(adapter.stream(_request(tools=[WEATHER_TOOL])))

    assert [c.text for c in chunks] == ["Let me check."] + [""] * 7
    assert [c.unseen_text for c in chunks[1:-1]] == [
        "get_weather", '{"city":', ' "Paris"}', "get_weather", '{"city":', ' "Oslo"}',
    ]  # fmt: skip
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].tool_calls == [
        ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="toolu_2", name="get_weather", arguments='{"city": "Oslo"}'),
    ]


def test_stream_stops_at_a_whitespace_stop_sequence_split_across_pieces(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message_stream(
        ["First", " line\n", "\nSecond", " paragraph"], output_tokens=9
    )

    chunks = list(adapter.stream(_request(stop=["\n\n"])))

    assert "stop_sequences" not in anthropic_upstream.last_request.json
    assert "".join(c.text for c in chunks) == "First line"
    assert chunks[-1].finish_reason == "stop"
    # Stopped before the provider's closing usage: the caller estimates it.
    assert chunks[-1].usage is None


def test_stream_yields_whitespace_that_does_not_complete_a_stop_sequence(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message_stream(["a\n", "b\n"], output_tokens=4)

    chunks = list(adapter.stream(_request(stop=["\n\n"])))

    assert "".join(c.text for c in chunks) == "a\nb\n"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == Usage(input_tokens=10, output_tokens=4)


def test_stream_raises_upstream_unavailable_when_an_overloaded_error_event_arrives(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message_stream(
        ["Hel", "lo"], error={"type": "overloaded_error", "message": "Overloaded"}
    )
    received = []

    with pytest.raises(UpstreamUnavailable) as caught:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    assert received == ["Hel", "lo"]
    assert caught.value.status_code == 529
    assert caught.value.retryable is True
    assert caught.value.message == "anthropic failed mid-answer overloaded_error: Overloaded"


def test_stream_raises_upstream_unavailable_after_the_chunks_received_when_connection_breaks(
    adapter, anthropic_upstream
):
    # message_start, ping, block start, "Hel", "lo", then the connection drops.
    anthropic_upstream.enqueue_message_stream(["Hel", "lo", "!"], break_after=5)
    received = []

    with pytest.raises(UpstreamUnavailable) as caught:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    assert received == ["Hel", "lo"]
    assert caught.value.retryable is True
    assert "broke off" in caught.value.message


def test_stream_counts_thinking_as_output_when_the_connection_breaks_before_the_answer(
    adapter, anthropic_upstream
):
    # Thinking is billed output: a stream that breaks after it, before any
    # text, must leave its pieces to estimate instead of nothing.
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
             "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 12, "output_tokens": 1}}  # fmt: skip
    events = [
        sse("message_start", {"type": "message_start", "message": start}),
        sse("content_block_start", {"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "The user greets me."}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQBCkYIBxgCKkA"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("content_block_start", {"type": "content_block_start", "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
        sse("content_block_start", {"type": "content_block_start", "index": 2,
            "content_block": {"type": "text", "text": ""}}),
    ]  # fmt: skip
    anthropic_upstream.enqueue(
        Reply(headers={"Content-Type": "text/event-stream"}, chunks=events, break_after=8)
    )
    received = []

    with pytest.raises(UpstreamUnavailable):
        for chunk in adapter.stream(_request()):
            received.append(chunk)

    assert [(c.text, c.unseen_text) for c in received] == [("", "The user greets me.")]
    assert received[0].usage_so_far == Usage(input_tokens=12, output_tokens=1)


# --- malformed answers -----------------------------------------------------------------
# A proxy before the API can answer 200 with a body that is not a message.

# `_request()` estimated: 3 per request + (4 + 3) for "Be brief." + (4 + 2) for "Hello?".
REQUEST_TOKENS_ESTIMATE = 16


def _message(content: object = None, **fields) -> dict:
    """A message whose content (or any field) a test replaces."""
    payload = {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6-20260217",
        "content": [{"type": "text", "text": "Hi there!"}] if content is None else content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 7},
    }
    payload.update(fields)
    return payload


def _without(payload: dict, name: str) -> dict:
    return {key: value for key, value in payload.items() if key != name}


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (raw_reply("<html>502 Bad Gateway</html>", route="messages"), "it is not JSON"),
        (
            raw_reply("upstream connect error", content_type="text/plain", route="messages"),
            "it is not JSON",
        ),
        (json_reply([_message()], route="messages"), "it is a list, not a JSON object"),
        (json_reply(_without(_message(), "content"), route="messages"), "it has no content"),
        (
            json_reply(_message("Hi there!"), route="messages"),
            "its content field is text, not a list",
        ),
        (
            json_reply(_message(["Hi there!"]), route="messages"),
            "a content block is text, not an object",
        ),
        (json_reply(_message([{"text": "Hi"}]), route="messages"), "a content block has no type"),
        (
            json_reply(_message([{"type": "text", "text": 42}]), route="messages"),
            "a text block's text is a number, not text",
        ),
        (
            json_reply(
                _message([{"type": "tool_use", "id": "toolu_1", "input": {}}]), route="messages"
            ),
            "a tool_use block has no name",
        ),
        (
            json_reply(
                _message([{"type": "tool_use", "id": "toolu_1", "name": "f", "input": "x"}]),
                route="messages",
            ),
            "a tool_use block's input is text, not an object",
        ),
        (
            json_reply(_message(stop_reason=["end_turn"]), route="messages"),
            "its stop_reason is a list, not text",
        ),
    ],
    ids=[
        "html",
        "text-plain",
        "json-list",
        "no-content",
        "content-text",
        "block-text",
        "block-without-type",
        "text-a-number",
        "tool-use-without-name",
        "tool-use-input-text",
        "stop-reason-a-list",
    ],
)
def test_complete_raises_upstream_unavailable_when_the_answer_is_malformed(
    adapter, anthropic_upstream, reply, problem
):
    anthropic_upstream.enqueue(reply)

    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    error = raised.value
    assert (error.code, error.retryable, error.http_status) == ("upstream_unavailable", True, 502)
    assert error.message == f"The anthropic answer is malformed: {problem}."


def test_complete_leaves_out_content_blocks_of_kinds_it_does_not_read(adapter, anthropic_upstream):
    blocks = [{"type": "thinking", "thinking": "Hmm.", "signature": "c2ln"}]
    blocks += [{"type": "text", "text": "Hi there!"}]
    anthropic_upstream.enqueue(json_reply(_message(blocks), route="messages"))

    assert adapter.complete(_request()).content == "Hi there!"


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": "40", "output_tokens": 7},
        {"input_tokens": 40, "output_tokens": 7.5},
        {"input_tokens": 40, "output_tokens": False},
        {"input_tokens": -40, "output_tokens": 7},
        {"input_tokens": 40, "output_tokens": 7, "cache_read_input_tokens": 10**10},
        {
            "input_tokens": 40,
            "output_tokens": 7,
            "cache_creation": {"ephemeral_1h_input_tokens": "x"},
        },
        {"output_tokens": 7},
        None,
        "n/a",
    ],
    ids=[
        "text",
        "fraction",
        "boolean",
        "negative",
        "absurd",
        "text-cache-detail",
        "no-input-figure",
        "null",
        "text-usage",
    ],
)
def test_complete_estimates_usage_whose_figures_are_no_counts(adapter, anthropic_upstream, usage):
    # given an answer whose usage is missing or garbage (it was billed as 0 before)
    anthropic_upstream.enqueue(json_reply(_message(usage=usage), route="messages"))

    result = adapter.complete(_request())

    # then the whole usage is estimated ("Hi there!": 3 tokens) and flagged
    assert result.usage == Usage(input_tokens=REQUEST_TOKENS_ESTIMATE, output_tokens=3)
    assert result.usage_estimated is True


def test_complete_estimates_the_output_when_the_answer_reports_it_null(adapter, anthropic_upstream):
    usage = {"input_tokens": 200, "output_tokens": None, "cache_read_input_tokens": 1000}
    anthropic_upstream.enqueue(json_reply(_message(usage=usage), route="messages"))

    result = adapter.complete(_request())

    # the prompt's figures are kept (cache reads added back), the output estimated
    assert result.usage == Usage(input_tokens=1200, output_tokens=3, cache_read_tokens=1000)
    assert result.usage_estimated is True


def test_complete_reports_the_requested_model_when_the_answer_names_none(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue(json_reply(_message(model=None), route="messages"))

    result = adapter.complete(_request(model="claude-sonnet-4-6"))

    assert (result.model, result.usage_estimated) == ("claude-sonnet-4-6", False)


def _stream_events(*middle: bytes, delta_usage: object = None) -> list[bytes]:
    """message_start (40 input tokens), a text block "Hi", `middle`, then
    message_delta (with `delta_usage`, else 3 output tokens) and message_stop."""
    start = _message([], usage={"input_tokens": 40, "output_tokens": 1})
    return [
        sse("message_start", {"type": "message_start", "message": start}),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        *middle,
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 3} if delta_usage is None else delta_usage,
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (b"event: content_block_delta\ndata: {oops\n\n", "an event of it is not JSON"),
        (b"event: content_block_delta\ndata: [1]\n\n", "an event of it is a list, not an object"),
        (
            sse("content_block_delta", {"type": "content_block_delta", "index": 0}),
            "a content block delta is missing",
        ),
        (
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": 5},
                },
            ),
            "a text delta's text is a number, not text",
        ),
        (
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "t"},
                },
            ),
            "a tool_use block has no name",
        ),
        (
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                },
            ),
            "an event of a content block has no index",
        ),
    ],
    ids=[
        "not-json",
        "a-list",
        "delta-missing",
        "text-a-number",
        "tool-use-without-name",
        "tool-use-without-index",
    ],
)
def test_stream_raises_upstream_unavailable_when_an_event_is_malformed(
    adapter, anthropic_upstream, event, problem
):
    anthropic_upstream.enqueue_raw(chunks=_stream_events(event), content_type="text/event-stream")

    received = []
    with pytest.raises(MalformedAnswer) as raised:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    # what came before it was delivered, and the stream fails
    assert received == ["Hi"]
    assert raised.value.message == f"The anthropic answer is malformed: {problem}."
    # without usage: its final figures had not come
    assert raised.value.paid_usage is None


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "text", "text": None}],
        [{"type": "tool_use", "id": "toolu_1", "name": None, "input": {}}],
        "Hi there!",
    ],
    ids=["text-null", "tool-use-name-null", "content-text"],
)
def test_complete_carries_the_usage_a_malformed_answer_reports_as_paid(
    adapter, anthropic_upstream, content
):
    # given a message of 1,000 input tokens (300 of them cache reads) and 500
    # output tokens whose content cannot be read
    usage = {"input_tokens": 700, "output_tokens": 500, "cache_read_input_tokens": 300}
    anthropic_upstream.enqueue(json_reply(_message(content, usage=usage), route="messages"))

    # when
    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    # then the error carries that usage (cache reads added back) as paid
    error = raised.value
    assert error.paid_usage == Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=300)
    assert (error.paid_model, error.paid_usage_final, error.paid_usage_estimated) == (
        "claude-sonnet-4-6-20260217",
        True,
        False,
    )


@pytest.mark.parametrize(
    "usage",
    [{"input_tokens": 700, "output_tokens": "500"}, {"input_tokens": 700}, None],
    ids=["text-figure", "no-output-figure", "none"],
)
def test_complete_carries_no_usage_when_a_malformed_answer_reports_none_usable(
    adapter, anthropic_upstream, usage
):
    answer = _message([{"type": "text", "text": None}], usage=usage)
    anthropic_upstream.enqueue(json_reply(answer, route="messages"))

    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    assert raised.value.paid_usage is None


def _after_message_delta(event: bytes, delta_usage: object = None) -> list[bytes]:
    """`_stream_events` with `event` between message_delta and message_stop."""
    events = _stream_events(delta_usage=delta_usage)
    return [*events[:-1], event, events[-1]]


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (b"event: content_block_delta\ndata: {oops\n\n", "an event of it is not JSON"),
        (b"event: content_block_delta\ndata: [1]\n\n", "an event of it is a list, not an object"),
        (
            sse("message_delta", {"type": "message_delta", "delta": "end_turn"}),
            "a message delta is text, not an object",
        ),
    ],
    ids=["not-json", "a-list", "delta-text"],
)
def test_stream_carries_the_final_usage_reported_before_a_malformed_event_as_paid(
    adapter, anthropic_upstream, event, problem
):
    # given message_start (40 input tokens), "Hi", the message_delta with
    # the final 3 output tokens, then a malformed event
    anthropic_upstream.enqueue_raw(
        chunks=_after_message_delta(event), content_type="text/event-stream"
    )

    # when
    received = []
    with pytest.raises(MalformedAnswer) as raised:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    # then the answer fails, carrying the reported usage, not message_start's
    assert received == ["Hi"]
    error = raised.value
    assert error.message == f"The anthropic answer is malformed: {problem}."
    assert error.paid_usage == Usage(input_tokens=40, output_tokens=3)
    assert (error.paid_model, error.paid_usage_final) == ("claude-sonnet-4-6-20260217", True)
    assert error.__context__ is None


def test_stream_carries_no_usage_when_the_final_figure_before_a_malformed_event_is_garbage(
    adapter, anthropic_upstream
):
    events = _after_message_delta(
        b"event: content_block_delta\ndata: [1]\n\n", {"output_tokens": "three"}
    )
    anthropic_upstream.enqueue_raw(chunks=events, content_type="text/event-stream")

    with pytest.raises(MalformedAnswer) as raised:
        list(adapter.stream(_request()))

    # the completion service estimates the output beside the prompt's figures
    assert raised.value.paid_usage is None


@pytest.mark.parametrize(
    "delta_usage",
    [
        {"output_tokens": "three"},
        {"output_tokens": None},
        {},
        {"output_tokens": 3, "input_tokens": -1},
    ],
    ids=["text", "null", "missing", "negative-input"],
)
def test_stream_leaves_the_output_to_estimate_when_its_final_figure_is_unusable(
    adapter, anthropic_upstream, delta_usage
):
    # given message_start's usage (40 input tokens, 1 output), then a
    # message_delta whose output figure is garbage or missing
    anthropic_upstream.enqueue_raw(
        chunks=_stream_events(delta_usage=delta_usage), content_type="text/event-stream"
    )

    received = list(adapter.stream(_request()))

    # then no final usage (not message_start's 1 output token): the completion
    # service estimates the output, with the prompt's reported figures
    assert received[-1].finish_reason == "stop"
    assert received[-1].usage is None
    assert received[-1].usage_so_far == Usage(input_tokens=40, output_tokens=1)


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected", "retryable"),
    [
        (401, "authentication_error", "invalid x-api-key", ProviderAuthenticationError, False),
        (403, "permission_error", "Your key cannot use this model.", ProviderPermissionError,
         False),
        (400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum",
         ContextTooLong, False),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.",
         ContextTooLong, False),
        (400, "invalid_request_error", "temperature: range: 0..1", ProviderBadRequest, False),
        (500, "api_error", "Internal server error", UpstreamUnavailable, True),
        (529, "overloaded_error", "Overloaded", UpstreamUnavailable, True),
    ],
)  # fmt: skip
def test_complete_maps_error_status_onto_the_error_tree(
    adapter, anthropic_upstream, status, error_type, message, expected, retryable
):
    anthropic_upstream.enqueue_error(status, type=error_type, message=message)

    with pytest.raises(expected) as caught:
        adapter.complete(_request())

    assert type(caught.value) is expected
    assert caught.value.status_code == status
    assert caught.value.retryable is retryable
    assert caught.value.message == f"anthropic answered {status} {error_type}: {message}"


@pytest.mark.parametrize(
    "message",
    [
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
        "Billing to upgrade or purchase credits.",
        "This organization has been disabled.",
    ],
)
def test_complete_raises_permission_error_when_a_400_says_the_account_cannot_be_used(
    adapter, anthropic_upstream, message
):
    # The API answers these with 400 invalid_request_error: the request is
    # fine, the config's account is not, so another provider may serve it.
    anthropic_upstream.enqueue_error(400, type="invalid_request_error", message=message)

    with pytest.raises(ProviderPermissionError) as caught:
        adapter.complete(_request())

    assert type(caught.value) is ProviderPermissionError
    assert caught.value.status_code == 400
    assert caught.value.message == f"anthropic answered 400 invalid_request_error: {message}"


@pytest.mark.parametrize(
    ("status", "error_type", "error_code", "message"),
    [
        (
            429,
            "rate_limit_error",
            "enforced_spend_limit_reached",
            "You have reached your specified API usage limits.",
        ),
        (
            429,
            "rate_limit_error",
            "contract_spend_limit_reached",
            "Your organization has reached the spend limit of its contract.",
        ),
        (
            400,
            "invalid_request_error",
            "organization_on_hold",
            "Your organization is on hold.",
        ),
    ],
)
def test_complete_raises_permission_error_when_the_error_code_says_the_account_cannot_be_used(
    adapter, anthropic_upstream, status, error_type, error_code, message
):
    # A spend limit lasts until the month or the contract ends: no wait within
    # a call cures it, so it is not retried, and another provider may serve it.
    anthropic_upstream.enqueue_error(
        status,
        type=error_type,
        message=message,
        error_code=error_code,
        headers={"retry-after": "3"},
    )

    with pytest.raises(ProviderPermissionError) as caught:
        adapter.complete(_request())

    assert type(caught.value) is ProviderPermissionError
    assert caught.value.retryable is False
    assert caught.value.status_code == status
    assert caught.value.message == f"anthropic answered {status} {error_type}: {message}"


def test_stream_raises_permission_error_when_an_error_event_says_the_spend_limit_is_reached(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message_stream(
        ["Hel"],
        error={
            "type": "rate_limit_error",
            "message": "You have reached your specified API usage limits.",
            "details": {"error_code": "enforced_spend_limit_reached"},
        },
    )

    with pytest.raises(ProviderPermissionError) as caught:
        list(adapter.stream(_request()))

    assert type(caught.value) is ProviderPermissionError
    assert caught.value.status_code == 429
    assert caught.value.message == (
        "anthropic failed mid-answer rate_limit_error: "
        "You have reached your specified API usage limits."
    )


def test_complete_raises_rate_limited_with_retry_after_seconds(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_error(
        429,
        type="rate_limit_error",
        message="Number of request tokens has exceeded your per-minute rate limit",
        headers={"retry-after": "12"},
    )

    with pytest.raises(ProviderRateLimited) as caught:
        adapter.complete(_request())

    assert caught.value.retry_after == 12.0
    assert caught.value.retryable is True


def test_complete_scrubs_the_key_when_the_error_message_quotes_it(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_error(
        401, type="authentication_error", message=f"invalid x-api-key {API_KEY[:20]}…"
    )

    with pytest.raises(ProviderAuthenticationError) as caught:
        adapter.complete(_request())

    assert API_KEY[:20] not in str(caught.value)
    assert API_KEY[12:20] not in str(caught.value)
    assert caught.value.__context__ is None


def test_complete_raises_timeout_when_upstream_is_slower_than_the_request_timeout(
    adapter, anthropic_upstream
):
    anthropic_upstream.enqueue_message(delay=5)
    started = time.monotonic()

    with pytest.raises(ProviderTimeout) as caught:
        adapter.complete(_request(timeout=0.3))

    assert time.monotonic() - started < 2
    assert caught.value.retryable is True


def test_complete_raises_upstream_unavailable_when_connection_is_refused(refused_url):
    adapter = _adapter(refused_url)

    with pytest.raises(UpstreamUnavailable) as caught:
        adapter.complete(_request())

    assert caught.value.message == "anthropic could not be reached (ConnectError)."


@pytest.mark.parametrize("status", [302, 307])
def test_complete_refuses_to_follow_a_redirect_when_upstream_answers_one(
    status, anthropic_upstream
):
    # given: an endpoint that sends the call on to another server (which the
    # SSRF check of the base URL never saw)
    with AnthropicUpstream() as elsewhere:
        elsewhere.enqueue_message("followed")
        anthropic_upstream.enqueue(
            Reply(status=status, headers={"Location": f"{elsewhere.url}/v1/messages"})
        )
        adapter = _adapter(anthropic_upstream.base_url)

        # when
        with pytest.raises(ProviderBadRequest) as caught:
            adapter.complete(_request())

        # then
        assert elsewhere.requests == []
    assert caught.value.retryable is False
    assert caught.value.status_code == status
    assert caught.value.message == (
        f"anthropic answered {status}, a redirect, which is not followed; "
        "set the base URL to the address the provider documents."
    )


def test_complete_is_not_retried_by_the_sdk_when_upstream_overloads(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_error(529, type="overloaded_error", message="Overloaded")
    anthropic_upstream.enqueue_message()

    with pytest.raises(UpstreamUnavailable):
        adapter.complete(_request())

    assert len(anthropic_upstream.requests) == 1
    assert anthropic_upstream.pending == 1


# --- embeddings, models, connection, clients ----------------------------------------------


def test_embed_raises_not_supported(adapter):
    with pytest.raises(NotSupported) as caught:
        adapter.embed(EmbedRequest(model="claude-sonnet-4-6", inputs=["x"]))

    assert caught.value.message == "anthropic does not offer embeddings here."
    assert adapter.supports_embeddings is False


def test_connection_check_lists_the_models_when_key_works(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_models(["claude-sonnet-4-6-20260217", "claude-haiku-4-5"])

    check = adapter.test_connection()

    assert check.ok is True
    assert check.models == ["claude-haiku-4-5", "claude-sonnet-4-6-20260217"]
    assert anthropic_upstream.last_request.path == "/v1/models"


def test_connection_check_reports_the_error_when_key_is_rejected(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_error(401, type="authentication_error", message="invalid x-api-key")

    check = adapter.test_connection()

    assert check.ok is False
    assert check.error == (
        "provider_authentication: anthropic answered 401 authentication_error: invalid x-api-key"
    )


def test_client_is_reused_across_calls(adapter, anthropic_upstream):
    anthropic_upstream.enqueue_message(times=2)
    client = adapter._client

    adapter.complete(_request())
    adapter.complete(_request())

    assert adapter._client is client
    assert adapter._client.max_retries == 0
    first, second = anthropic_upstream.requests
    assert first.client_port == second.client_port


def test_keyless_config_sends_a_placeholder_not_the_environment_key(
    anthropic_upstream, monkeypatch
):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-environment")
    adapter = _adapter(anthropic_upstream.base_url, api_key="")
    anthropic_upstream.enqueue_message()

    adapter.complete(_request())

    headers = anthropic_upstream.last_request.headers
    assert "sk-ant-from-the-environment" not in str(headers)
    assert PLACEHOLDER_API_KEY in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
