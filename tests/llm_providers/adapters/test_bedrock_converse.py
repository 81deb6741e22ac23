"""BedrockConverseAdapter through boto3 against the loopback Bedrock server (event streams)."""

from __future__ import annotations

import time

import pytest

from llm_providers.adapters.bedrock_converse import (
    DEFAULT_MAX_TOKENS,
    NO_TOOL_NAME,
    BedrockConverseAdapter,
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
from tests.upstreams.bedrock import EVENT_STREAM_TYPE, model_id_of
from tests.upstreams.eventstream import event_encode, message_encode
from tests.upstreams.server import Reply, json_reply, raw_reply

ACCESS_KEY_ID = "AKIAQ3EGXYZ7LMN4PRST"
SECRET_ACCESS_KEY = "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"
MODEL = "anthropic.claude-sonnet-4-6-v1:0"
NOVA_MODEL = "amazon.nova-pro-v1:0"
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
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello?"},
        ],
    }
    fields.update(overrides)
    return ChatRequest(**fields)


def _adapter(base_url: str, **settings) -> BedrockConverseAdapter:
    settings.setdefault("aws_access_key_id", ACCESS_KEY_ID)
    settings.setdefault("aws_secret_access_key", SECRET_ACCESS_KEY)
    settings.setdefault("aws_region", "eu-west-1")
    return adapter_build(AdapterSettings("bedrock", base_url=base_url, **settings))


@pytest.fixture
def adapter(bedrock_upstream):
    adapter = _adapter(bedrock_upstream.base_url)
    yield adapter
    adapter.close()


# --- complete ------------------------------------------------------------------------


def test_complete_adds_cache_reads_and_writes_to_input_tokens(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse(
        "Hi!", input_tokens=200, cache_read_tokens=1000, cache_write_tokens=500, output_tokens=300
    )

    result = adapter.complete(_request())

    assert result.content == "Hi!"
    assert result.usage == Usage(
        input_tokens=1700, output_tokens=300, cache_read_tokens=1000, cache_write_tokens=500
    )
    assert result.model == MODEL
    assert result.finish_reason == "stop"


def test_complete_sends_system_and_inference_config_on_the_wire(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse()

    adapter.complete(
        _request(model=NOVA_MODEL, max_tokens=64, temperature=0.2, top_p=0.9, stop=["END"])
    )

    sent = bedrock_upstream.last_request
    assert sent.path == f"/model/{NOVA_MODEL}/converse"
    assert model_id_of(sent) == NOVA_MODEL
    assert sent.json == {
        "messages": [{"role": "user", "content": [{"text": "Hello?"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {
            "maxTokens": 64,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
    }


def test_complete_sends_the_default_max_tokens_when_request_names_none(adapter, bedrock_upstream):
    # Without maxTokens the model's own default applies, which can be far
    # above what the budget reservation assumed.
    bedrock_upstream.enqueue_converse("Hi!")

    result = adapter.complete(_request())

    assert result.content == "Hi!"
    assert bedrock_upstream.last_request.json["inferenceConfig"] == {"maxTokens": 4096}
    assert adapter.default_max_tokens == DEFAULT_MAX_TOKENS == 4096


@pytest.mark.parametrize("streamed", [False, True])
def test_complete_sends_the_model_limit_when_the_default_max_tokens_exceeds_it(
    adapter, bedrock_upstream, streamed
):
    # Some Bedrock models (Meta Llama, Titan Text Premier) answer at most
    # fewer than 4096 tokens and refuse a larger maxTokens.
    model = "meta.llama3-70b-instruct-v1:0"
    bedrock_upstream.enqueue_error(400, "ValidationException", _max_tokens_refusal(2048))
    if streamed:
        bedrock_upstream.enqueue_converse_stream(["Hi!"], times=2)
    else:
        bedrock_upstream.enqueue_converse("Hi!", times=2)

    assert _answer(adapter, _request(model=model), streamed=streamed) == "Hi!"
    # The model's limit is kept: the next call sends it at once.
    assert _answer(adapter, _request(model=model), streamed=streamed) == "Hi!"

    sent = [request.json["inferenceConfig"]["maxTokens"] for request in bedrock_upstream.requests]
    assert sent == [4096, 2048, 2048]
    # Another model still gets the default.
    bedrock_upstream.enqueue_converse("Hi!")
    adapter.complete(_request())
    assert bedrock_upstream.last_request.json["inferenceConfig"] == {"maxTokens": 4096}


def test_complete_raises_bad_request_when_the_max_tokens_asked_for_exceeds_the_model_limit(
    adapter, bedrock_upstream
):
    # The caller's own max_tokens is not lowered behind its back.
    bedrock_upstream.enqueue_error(400, "ValidationException", _max_tokens_refusal(2048))

    with pytest.raises(ProviderBadRequest, match="model limit of 2048"):
        adapter.complete(_request(model="meta.llama3-70b-instruct-v1:0", max_tokens=3000))

    assert len(bedrock_upstream.requests) == 1
    assert bedrock_upstream.last_request.json["inferenceConfig"] == {"maxTokens": 3000}


def _answer(adapter: BedrockConverseAdapter, request: ChatRequest, *, streamed: bool) -> str:
    if streamed:
        return "".join(chunk.text for chunk in adapter.stream(request))
    return adapter.complete(request).content


def _max_tokens_refusal(limit: int) -> str:
    return (
        f"The maximum tokens you requested exceeds the model limit of {limit}. "
        f"Try again with a maximum tokens value that is lower than {limit}."
    )


def test_complete_stops_at_a_whitespace_stop_sequence_instead_of_sending_it(
    adapter, bedrock_upstream
):
    # As on Anthropic, whose API refuses a stop sequence that is only
    # whitespace ("\n"), as Claude on Bedrock does: it is applied to the
    # answer here instead, the others are sent.
    bedrock_upstream.enqueue_converse("First line\nSecond line\n", output_tokens=6)

    result = adapter.complete(_request(stop=["\n", "END"]))

    assert bedrock_upstream.last_request.json["inferenceConfig"] == {
        "maxTokens": 4096,
        "stopSequences": ["END"],
    }
    assert result.content == "First line"
    assert result.finish_reason == "stop"
    assert result.usage == Usage(input_tokens=10, output_tokens=6)


def test_complete_keeps_an_answer_without_the_whitespace_stop_sequence_whole(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse("One paragraph.\nNo blank line.", stop_reason="max_tokens")

    result = adapter.complete(_request(stop=["\n\n"]))

    assert bedrock_upstream.last_request.json["inferenceConfig"] == {"maxTokens": 4096}
    assert (result.content, result.finish_reason) == ("One paragraph.\nNo blank line.", "length")


def test_stream_stops_at_a_whitespace_stop_sequence_split_across_pieces(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse_stream(
        ["First", " line\n", "\nSecond", " paragraph"], output_tokens=9
    )

    chunks = list(adapter.stream(_request(stop=["\n\n"])))

    assert bedrock_upstream.last_request.json["inferenceConfig"] == {"maxTokens": 4096}
    assert "".join(chunk.text for chunk in chunks) == "First line"
    assert chunks[-1].finish_reason == "stop"
    # Stopped before the closing metadata: the caller estimates the usage.
    assert chunks[-1].usage is None


def test_stream_yields_whitespace_that_does_not_complete_a_stop_sequence(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse_stream(["a\n", "b\n"], input_tokens=10, output_tokens=4)

    chunks = list(adapter.stream(_request(stop=["\n\n"])))

    assert "".join(chunk.text for chunk in chunks) == "a\nb\n"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == Usage(input_tokens=10, output_tokens=4)


@pytest.mark.parametrize(
    "model",
    [
        MODEL,
        "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-opus-4-6-v1:0",
    ],
)
def test_complete_sends_a_claude_model_the_temperature_without_top_p_when_both_are_given(
    adapter, bedrock_upstream, model
):
    # Claude models from Sonnet 4.5 on refuse both at once (400
    # ValidationException); OpenAI takes both, so a call falling back here
    # from OpenAI would fail as a bad request.
    bedrock_upstream.enqueue_converse("Hi!")

    result = adapter.complete(_request(model=model, temperature=0.2, top_p=0.9))

    assert result.content == "Hi!"
    assert bedrock_upstream.last_request.json["inferenceConfig"] == {
        "maxTokens": 4096,
        "temperature": 0.2,
    }


def test_stream_sends_a_claude_model_top_p_when_it_is_the_only_sampling_parameter(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse_stream(["Hi!"])

    chunks = list(adapter.stream(_request(top_p=0.9)))

    assert "".join(chunk.text for chunk in chunks) == "Hi!"
    assert bedrock_upstream.last_request.json["inferenceConfig"] == {"maxTokens": 4096, "topP": 0.9}


def test_complete_signs_with_the_config_key_pair_and_region_in_one_attempt(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse()

    adapter.complete(_request())

    headers = bedrock_upstream.last_request.headers
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")
    assert "/eu-west-1/bedrock/aws4_request" in headers["authorization"]
    assert headers["amz-sdk-request"] == "attempt=1; max=1"


def test_complete_appends_the_json_instruction_to_system_when_json_mode(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse('{"a": 1}')

    adapter.complete(_request(json_mode=True))

    assert bedrock_upstream.last_request.json["system"] == [
        {"text": f"Be brief.\n\n{JSON_MODE_INSTRUCTION}"}
    ]


def test_complete_sends_image_data_urls_as_image_bytes(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse("A dot.")
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
    ]

    adapter.complete(_request(messages=[{"role": "user", "content": content}]))

    # botocore carries blobs as base64 in the JSON body.
    assert bedrock_upstream.last_request.json["messages"] == [
        {
            "role": "user",
            "content": [
                {"text": "What is this?"},
                {"image": {"format": "png", "source": {"bytes": PNG_BASE64}}},
            ],
        }
    ]


def test_complete_sends_line_wrapped_base64_as_image_bytes(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse("A dot.")
    wrapped = "\r\n".join(PNG_BASE64[i : i + 76] for i in range(0, len(PNG_BASE64), 76))
    content = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{wrapped}"}}]

    adapter.complete(_request(messages=[{"role": "user", "content": content}]))

    [block] = bedrock_upstream.last_request.json["messages"][0]["content"]
    assert block == {"image": {"format": "png", "source": {"bytes": PNG_BASE64}}}


def test_complete_refuses_image_links_because_bedrock_takes_bytes(adapter, bedrock_upstream):
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]

    with pytest.raises(ProviderBadRequest) as caught:
        adapter.complete(_request(messages=[{"role": "user", "content": content}]))

    assert caught.value.message == "Bedrock takes images as base64 data URLs, not links to fetch."
    assert bedrock_upstream.requests == []


def test_complete_sends_tool_calls_and_results_as_tool_use_and_tool_result_blocks(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse("Sunny.")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "tooluse_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "Sunny, 21°C"},
    ]

    adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL]))

    sent = bedrock_upstream.last_request.json
    assert sent["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "inputSchema": {
                        "json": {"type": "object", "properties": {"city": {"type": "string"}}}
                    },
                    "description": "Weather of a city",
                }
            }
        ]
    }
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": "tooluse_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "Sunny, 21°C"}]}}
            ],
        },
    ]


def test_complete_sends_a_tool_result_without_output_as_one_without_text(adapter, bedrock_upstream):
    # Converse refuses a blank text block, inside a tool result too; a tool
    # that printed nothing is common.
    bedrock_upstream.enqueue_converse("Done.")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "tooluse_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tooluse_1", "content": ""},
    ]

    result = adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL]))

    assert result.content == "Done."
    assert bedrock_upstream.last_request.json["messages"][2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": []}}],
    }


def test_complete_answers_a_tool_conversation_when_the_request_offers_no_tools(
    adapter, bedrock_upstream
):
    # Converse refuses toolUse/toolResult blocks without a toolConfig (OpenAI takes them).
    bedrock_upstream.enqueue_converse("It was sunny in Paris.")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "tooluse_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "Sunny, 21°C"},
        {"role": "user", "content": "Summarise that in one sentence."},
    ]

    result = adapter.complete(_request(messages=messages))

    assert result.content == "It was sunny in Paris."
    assert bedrock_upstream.unanswered == []
    tools = bedrock_upstream.last_request.json["toolConfig"]["tools"]
    assert [tool["toolSpec"]["name"] for tool in tools] == [NO_TOOL_NAME]


def test_stream_answers_a_tool_conversation_when_the_request_offers_no_tools(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse_stream(["Sunny."])
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "tooluse_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "Sunny, 21°C"},
    ]

    chunks = list(adapter.stream(_request(messages=messages)))

    assert "".join(chunk.text for chunk in chunks) == "Sunny."
    assert chunks[-1].finish_reason == "stop"


def test_complete_leaves_out_text_blocks_that_are_only_whitespace(adapter, bedrock_upstream):
    # Converse refuses a text block that is blank (400 ValidationException);
    # models often write "\n\n" before calling a tool.
    bedrock_upstream.enqueue_converse("Sunny in Paris.")
    messages = [
        {"role": "system", "content": " \n"},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "\n\n",
            "tool_calls": [
                {
                    "id": "tooluse_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "Sunny, 21°C"},
    ]

    result = adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL]))

    assert result.content == "Sunny in Paris."
    sent = bedrock_upstream.last_request.json
    assert "system" not in sent
    assert sent["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}
    ]


@pytest.mark.parametrize("streamed", [False, True])
def test_complete_begins_a_conversation_that_begins_with_the_assistant_with_a_user_turn(
    adapter, bedrock_upstream, streamed
):
    # Converse refuses a conversation whose first turn is not the user's
    # (400 ValidationException); a greeting shown before the user spoke is common.
    if streamed:
        bedrock_upstream.enqueue_converse_stream(["Sunny."])
    else:
        bedrock_upstream.enqueue_converse("Sunny.")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hello! Ask me about the weather."},
        {"role": "user", "content": "Weather in Paris?"},
    ]

    assert _answer(adapter, _request(messages=messages), streamed=streamed) == "Sunny."

    sent = bedrock_upstream.last_request.json
    assert sent["system"] == [{"text": "Be brief."}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": LEADING_USER_TEXT}]},
        {"role": "assistant", "content": [{"text": "Hello! Ask me about the weather."}]},
        {"role": "user", "content": [{"text": "Weather in Paris?"}]},
    ]


def test_complete_merges_consecutive_turns_of_one_role_around_system_messages(
    adapter, bedrock_upstream
):
    # Converse wants user and assistant turns to alternate; system messages
    # in the middle go to `system` and leave their neighbours adjacent.
    bedrock_upstream.enqueue_converse("Sunny.")
    messages = [
        {"role": "user", "content": "Hi."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me see."},
        {"role": "assistant", "content": "Mostly sunny."},
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "And tomorrow?"},
    ]

    assert adapter.complete(_request(messages=messages)).content == "Sunny."

    sent = bedrock_upstream.last_request.json
    assert sent["system"] == [{"text": "Be brief.\n\nAnswer in English."}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": "Hi."}, {"text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [{"text": "Let me see."}, {"text": "Mostly sunny."}]},
        {"role": "user", "content": [{"text": "And tomorrow?"}]},
    ]


def test_complete_puts_tool_results_first_in_the_user_turn_they_are_merged_into(
    adapter, bedrock_upstream
):
    # Each toolUse wants its toolResult at the start of the next user turn
    # (Claude refuses text before it); a user message between or after the
    # results joins that turn after them.
    bedrock_upstream.enqueue_converse("Sunny in both.")
    messages = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"tooluse_{index}",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'},
                }
                for index, city in ((1, "Paris"), (2, "Oslo"))
            ],
        },
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "Sunny, 21°C"},
        {"role": "user", "content": "In Fahrenheit, please."},
        {"role": "tool", "tool_call_id": "tooluse_2", "content": "Sunny, 12°C"},
    ]

    assert adapter.complete(_request(messages=messages, tools=[WEATHER_TOOL])).content == (
        "Sunny in both."
    )

    sent = bedrock_upstream.last_request.json["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"] == [
        {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "Sunny, 21°C"}]}},
        {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "Sunny, 12°C"}]}},
        {"text": "In Fahrenheit, please."},
    ]


def test_complete_sends_no_tool_config_when_neither_tools_nor_tool_blocks(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse("Hi!")

    adapter.complete(_request())

    assert "toolConfig" not in bedrock_upstream.last_request.json


def test_complete_returns_tool_calls_when_model_uses_a_tool(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse(
        "", tool_uses=[{"id": "tooluse_9", "name": "get_weather", "input": {"city": "Oslo"}}]
    )

    result = adapter.complete(_request(tools=[WEATHER_TOOL]))

    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        ToolCall(id="tooluse_9", name="get_weather", arguments='{"city":"Oslo"}')
    ]


# --- stream --------------------------------------------------------------------------


def test_stream_yields_pieces_then_metadata_usage_on_the_final_chunk(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse_stream(
        ["Hel", "lo"],
        input_tokens=40,
        cache_read_tokens=2048,
        cache_write_tokens=128,
        output_tokens=77,
    )

    chunks = list(adapter.stream(_request()))

    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == Usage(
        input_tokens=2216, output_tokens=77, cache_read_tokens=2048, cache_write_tokens=128
    )
    assert bedrock_upstream.last_request.path == f"/model/{MODEL}/converse-stream"


def test_stream_assembles_tool_calls_on_the_final_chunk(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse_stream(
        ["Checking."],
        tool_uses=[
            {"id": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"id": "tooluse_2", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
    )

    chunks = list(adapter.stream(_request(tools=[WEATHER_TOOL])))

    assert [c.text for c in chunks] == ["Checking."] + [""] * 7
    assert [c.unseen_text for c in chunks[1:-1]] == [
        "get_weather", '{"city":', ' "Paris"}', "get_weather", '{"city":', ' "Oslo"}',
    ]  # fmt: skip
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].tool_calls == [
        ToolCall(id="tooluse_1", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="tooluse_2", name="get_weather", arguments='{"city": "Oslo"}'),
    ]


def test_stream_raises_rate_limited_when_a_throttling_exception_arrives_mid_stream(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse_stream(
        ["Hel", "lo"], exception=("throttlingException", "Too many tokens, please wait.")
    )
    received = []

    with pytest.raises(ProviderRateLimited) as caught:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    assert received == ["Hel", "lo"]
    assert caught.value.message == (
        "bedrock failed mid-answer throttlingException: Too many tokens, please wait."
    )


def test_stream_raises_upstream_unavailable_after_the_chunks_received_when_connection_breaks(
    adapter, bedrock_upstream
):
    # messageStart, "Hel", "lo", then the connection drops.
    bedrock_upstream.enqueue_converse_stream(["Hel", "lo", "!"], break_after=3)
    received = []

    with pytest.raises(UpstreamUnavailable) as caught:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    assert received == ["Hel", "lo"]
    assert caught.value.retryable is True
    assert "broke off" in caught.value.message


@pytest.mark.parametrize("stop_reason", ["malformed_tool_use", "malformed_model_output"])
def test_complete_raises_upstream_unavailable_when_the_model_garbled_its_answer(
    stop_reason, adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse("", stop_reason=stop_reason)

    with pytest.raises(UpstreamUnavailable) as caught:
        adapter.complete(_request(tools=[WEATHER_TOOL]))

    assert caught.value.retryable is True
    assert caught.value.message == f"bedrock stopped the answer with an error ({stop_reason})."


def test_stream_raises_upstream_unavailable_after_the_chunks_when_the_model_garbled_its_answer(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse_stream(["Let me"], stop_reason="malformed_tool_use")
    received = []

    with pytest.raises(UpstreamUnavailable) as caught:
        for chunk in adapter.stream(_request(tools=[WEATHER_TOOL])):
            received.append(chunk.text)

    assert received == ["Let me"]
    assert caught.value.message == "bedrock stopped the answer with an error (malformed_tool_use)."


def test_stream_counts_reasoning_as_output_when_the_connection_breaks_before_the_answer(
    adapter, bedrock_upstream
):
    # Reasoning is billed output: a stream that breaks after it, before any
    # text, must leave its pieces to estimate instead of nothing.
    events = [
        event_encode("messageStart", {"role": "assistant"}),
        event_encode("contentBlockDelta", {"contentBlockIndex": 0,
                     "delta": {"reasoningContent": {"text": "The user greets me."}}}),
        event_encode("contentBlockDelta", {"contentBlockIndex": 0,
                     "delta": {"reasoningContent": {"signature": "EqQBCkYIBxgCKkA"}}}),
        event_encode("contentBlockStop", {"contentBlockIndex": 0}),
        event_encode("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hi"}}),
    ]  # fmt: skip
    bedrock_upstream.enqueue(
        Reply(headers={"Content-Type": EVENT_STREAM_TYPE}, chunks=events, break_after=4)
    )
    received = []

    with pytest.raises(UpstreamUnavailable):
        for chunk in adapter.stream(_request()):
            received.append(chunk)

    assert [(c.text, c.unseen_text) for c in received] == [("", "The user greets me.")]


# --- malformed answers -----------------------------------------------------------------
# botocore reads a body that is not JSON as an answer without output, takes
# most values as they come and fails as a bug would on others: the adapter
# refuses them as malformed answers (retryable), never as a crash.

# `_request()` estimated: 3 per request + (4 + 3) for "Be brief." + (4 + 2) for "Hello?".
REQUEST_TOKENS_ESTIMATE = 16


def _converse(content: object = None, **fields) -> dict:
    """A Converse answer whose content (or any field) a test replaces."""
    payload = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"text": "Hi there!"}] if content is None else content,
            }
        },
        "stopReason": "end_turn",
        "usage": {"inputTokens": 40, "outputTokens": 7, "totalTokens": 47},
        "metrics": {"latencyMs": 120},
    }
    payload.update(fields)
    return payload


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (raw_reply("<html>502 Bad Gateway</html>", route="converse"), "it is not JSON"),
        (
            raw_reply("<html>502 Bad Gateway</html>", content_type="text/html", route="converse"),
            "it is not JSON",
        ),
        (raw_reply("", route="converse"), "it is not JSON"),
        (json_reply([_converse()], route="converse"), "it is a list, not a JSON object"),
        (json_reply({"stopReason": "end_turn"}, route="converse"), "its output is missing"),
        (
            json_reply(_converse("Hi there!"), route="converse"),
            "it could not be read (AttributeError)",
        ),
        (
            json_reply(_converse(output="Hi"), route="converse"),
            "it could not be read (AttributeError)",
        ),
        (
            json_reply(_converse([{"text": "Hi", "toolUse": {"name": "f"}}]), route="converse"),
            "it could not be read (ResponseParserError)",
        ),
        (
            json_reply(_converse([{"text": 42}]), route="converse"),
            "a text block's text is a number, not text",
        ),
        (
            json_reply(
                _converse([{"toolUse": {"toolUseId": "t1", "input": {}}}]), route="converse"
            ),
            "a toolUse block has no name",
        ),
        (
            json_reply(_converse(stopReason=7), route="converse"),
            "its stopReason is a number, not text",
        ),
    ],
    ids=[
        "html",
        "html-as-text-html",
        "empty-body",
        "json-list",
        "no-output",
        "content-text",
        "output-text",
        "block-of-two-kinds",
        "text-a-number",
        "tool-use-without-name",
        "stop-reason-a-number",
    ],
)
def test_complete_raises_upstream_unavailable_when_the_answer_is_malformed(
    adapter, bedrock_upstream, reply, problem
):
    bedrock_upstream.enqueue(reply)

    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    error = raised.value
    assert (error.code, error.retryable, error.http_status) == ("upstream_unavailable", True, 502)
    assert error.message == f"The bedrock answer is malformed: {problem}."


# 1,000 input tokens (300 of them cache reads, 200 cache writes) and 500 output tokens.
PAID_USAGE = {
    "inputTokens": 500,
    "outputTokens": 500,
    "cacheReadInputTokens": 300,
    "cacheWriteInputTokens": 200,
    "totalTokens": 1500,
}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (_converse([{"text": 42}]), "a text block's text is a number, not text"),
        (_converse([{"text": None}]), "it could not be read (ResponseParserError)"),
        (
            _converse([{"toolUse": {"toolUseId": "t1", "name": None, "input": {}}}]),
            "a toolUse block has no name",
        ),
        (_converse(stopReason=7), "its stopReason is a number, not text"),
        (_converse(output="Hi"), "it could not be read (AttributeError)"),
        (_converse("Hi there!"), "it could not be read (AttributeError)"),
        (
            _converse([{"text": "Hi", "toolUse": {"name": "f"}}]),
            "it could not be read (ResponseParserError)",
        ),
        (_converse(metrics={"latencyMs": "fast"}), "it could not be read (ValueError)"),
    ],
    ids=[
        "text-a-number",
        "text-null",
        "tool-use-name-null",
        "stop-reason-a-number",
        "output-text",
        "content-text",
        "block-of-two-kinds",
        "latency-text",
    ],
)
def test_complete_carries_the_usage_a_malformed_answer_reports_as_paid(
    adapter, bedrock_upstream, answer, problem
):
    # given an answer with usable usage whose rest the adapter, or botocore
    # (after the before-parse hook read the usage), cannot read
    bedrock_upstream.enqueue(json_reply({**answer, "usage": PAID_USAGE}, route="converse"))

    # when
    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    # then the error carries that usage (cache reads and writes added back) as paid
    error = raised.value
    assert error.message == f"The bedrock answer is malformed: {problem}."
    assert error.paid_usage == Usage(
        input_tokens=1000, output_tokens=500, cache_read_tokens=300, cache_write_tokens=200
    )
    assert (error.paid_model, error.paid_usage_final, error.paid_usage_estimated) == (
        MODEL,
        True,
        False,
    )
    assert error.__context__ is None


@pytest.mark.parametrize(
    "answer",
    [
        _converse(output="Hi", usage={"inputTokens": 1000, "outputTokens": 500.5}),
        _converse(output="Hi", usage={"inputTokens": 1000}),
        _converse(output="Hi", usage=None),
        _converse([{"text": None}], usage={"inputTokens": "1000", "outputTokens": 500}),
    ],
    ids=["fraction-unread", "no-output-figure-unread", "none-unread", "text-figure"],
)
def test_complete_carries_no_usage_when_a_malformed_answer_reports_none_usable(
    adapter, bedrock_upstream, answer
):
    bedrock_upstream.enqueue(json_reply(answer, route="converse"))

    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    assert raised.value.paid_usage is None


def test_complete_unreadable_answer_carries_no_usage_of_an_earlier_answer(
    adapter, bedrock_upstream
):
    # given an answer with usage, then an unreadable one without usage
    bedrock_upstream.enqueue_converse("Hi", input_tokens=1000, output_tokens=500)
    bedrock_upstream.enqueue(json_reply(_converse(output="Hi", usage=None), route="converse"))

    adapter.complete(_request())
    with pytest.raises(MalformedAnswer) as raised:
        adapter.complete(_request())

    # then the second carries none: the first's usage is not taken for its own
    assert raised.value.paid_usage is None


@pytest.mark.parametrize(
    "usage",
    [
        {"inputTokens": "forty", "outputTokens": 7},
        {"inputTokens": 40, "outputTokens": 7.5},
        {"inputTokens": True, "outputTokens": 7},
        {"inputTokens": 40, "outputTokens": -7},
        {"inputTokens": 40, "outputTokens": 7, "cacheDetails": [{"ttl": "1h", "inputTokens": "x"}]},
        {"inputTokens": 40, "outputTokens": 7, "cacheDetails": "1h"},
        {"outputTokens": 7},
        "lots",
    ],
    ids=[
        "text",
        "fraction",
        "boolean",
        "negative",
        "text-cache-detail",
        "cache-details-text",
        "no-input-figure",
        "text-usage",
    ],
)
def test_complete_estimates_usage_whose_figures_are_no_counts(adapter, bedrock_upstream, usage):
    # given an answer whose usage botocore would cut (7.5 to 7), misread (true
    # as 1) or fail on (text)
    bedrock_upstream.enqueue(json_reply(_converse(usage=usage), route="converse"))

    result = adapter.complete(_request())

    # then the whole usage is estimated ("Hi there!": 3 tokens) and flagged
    assert result.content == "Hi there!"
    assert result.usage == Usage(input_tokens=REQUEST_TOKENS_ESTIMATE, output_tokens=3)
    assert result.usage_estimated is True


def test_complete_estimates_the_output_when_the_answer_reports_it_null(adapter, bedrock_upstream):
    usage = {"inputTokens": 200, "outputTokens": None, "cacheReadInputTokens": 1000}
    bedrock_upstream.enqueue(json_reply(_converse(usage=usage), route="converse"))

    result = adapter.complete(_request())

    # the prompt's figures are kept (cache reads added back), the output estimated
    assert result.usage == Usage(input_tokens=1200, output_tokens=3, cache_read_tokens=1000)
    assert result.usage_estimated is True


def test_complete_records_a_failed_answer_with_garbage_usage_as_unpaid(adapter, bedrock_upstream):
    answer = _converse(stopReason="malformed_model_output", usage={"inputTokens": "x"})
    bedrock_upstream.enqueue(json_reply(answer, route="converse"))

    with pytest.raises(UpstreamUnavailable) as raised:
        adapter.complete(_request())

    assert (
        raised.value.message == "bedrock stopped the answer with an error (malformed_model_output)."
    )
    assert raised.value.paid_usage is None


def _stream_events(*middle: bytes, usage: object = None) -> list[bytes]:
    """messageStart, a text delta "Hi", `middle`, messageStop and metadata
    (with `usage`, else 40 input and 3 output tokens)."""
    return [
        event_encode("messageStart", {"role": "assistant"}),
        event_encode("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        *middle,
        event_encode("messageStop", {"stopReason": "end_turn"}),
        event_encode(
            "metadata",
            {"usage": {"inputTokens": 40, "outputTokens": 3} if usage is None else usage},
        ),
    ]


def _frame(event_type: str, payload: bytes) -> bytes:
    """An event-stream frame carrying `payload` as given."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return message_encode(headers, payload)


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (
            b"\x00\x00\x00\x20\x00\x00\x00\x00garbage-garbage-garbage!",
            "an event of it could not be read (ChecksumMismatch)",
        ),
        (
            event_encode("contentBlockDelta", {"delta": {"text": "!"}})[:-1] + b"\x00",
            "an event of it could not be read (ChecksumMismatch)",
        ),
        (_frame("contentBlockDelta", b"{oops"), "a contentBlockDelta event's delta is missing"),
        (_frame("contentBlockDelta", b"[1]"), "an event of it could not be read (AttributeError)"),
        (
            event_encode("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": 5}}),
            "a text delta is a number, not text",
        ),
        (
            event_encode(
                "contentBlockStart",
                {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1"}}},
            ),
            "a toolUse block has no name",
        ),
    ],
    ids=[
        "garbage-frame",
        "bad-checksum",
        "payload-not-json",
        "payload-a-list",
        "text-a-number",
        "tool-use-without-name",
    ],
)
def test_stream_raises_upstream_unavailable_when_an_event_is_malformed(
    adapter, bedrock_upstream, frame, problem
):
    bedrock_upstream.enqueue_raw(
        chunks=_stream_events(frame), content_type=EVENT_STREAM_TYPE, route="converse_stream"
    )

    received = []
    with pytest.raises(MalformedAnswer) as raised:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    # what came before it was delivered, and the stream fails
    assert received == ["Hi"]
    assert raised.value.message == f"The bedrock answer is malformed: {problem}."
    # without usage: its metadata had not come
    assert raised.value.paid_usage is None


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (
            event_encode("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": 5}}),
            "a text delta is a number, not text",
        ),
        (
            event_encode("messageStop", {"stopReason": ["end_turn"]}),
            "its stopReason is a list, not text",
        ),
    ],
    ids=["text-a-number", "stop-reason-a-list"],
)
def test_stream_carries_the_usage_of_metadata_before_a_malformed_event_as_paid(
    adapter, bedrock_upstream, frame, problem
):
    # given a whole stream (metadata: 1,000 input and 500 output tokens), then a malformed event
    events = [*_stream_events(usage=PAID_USAGE), frame]
    bedrock_upstream.enqueue_raw(
        chunks=events, content_type=EVENT_STREAM_TYPE, route="converse_stream"
    )

    # when
    received = []
    with pytest.raises(MalformedAnswer) as raised:
        for chunk in adapter.stream(_request()):
            received.append(chunk.text)

    # then the answer fails, carrying the metadata's usage as paid
    assert received == ["Hi"]
    error = raised.value
    assert error.message == f"The bedrock answer is malformed: {problem}."
    assert error.paid_usage == Usage(
        input_tokens=1000, output_tokens=500, cache_read_tokens=300, cache_write_tokens=200
    )
    assert (error.paid_model, error.paid_usage_final) == (MODEL, True)


@pytest.mark.parametrize(
    "usage",
    [
        {"inputTokens": "forty", "outputTokens": 3},
        {"inputTokens": 40, "outputTokens": -3},
        {"inputTokens": 40, "outputTokens": 10**9},
        "lots",
    ],
    ids=["text", "negative", "absurd", "text-usage"],
)
def test_stream_reports_no_usage_when_its_metadata_figures_are_no_counts(
    adapter, bedrock_upstream, usage
):
    bedrock_upstream.enqueue_raw(
        chunks=_stream_events(usage=usage), content_type=EVENT_STREAM_TYPE, route="converse_stream"
    )

    received = list(adapter.stream(_request()))

    # the answer stands; the completion service estimates its usage
    assert "".join(chunk.text for chunk in received) == "Hi"
    assert (received[-1].finish_reason, received[-1].usage) == ("stop", None)
    assert received[-1].usage_so_far is None


def test_stream_connection_broken_after_message_stop_is_no_unreadable_metadata(
    adapter, bedrock_upstream
):
    # given a stream whose connection drops after messageStop, before its metadata
    chunks = _stream_events()
    bedrock_upstream.enqueue(
        Reply(
            headers={"Content-Type": EVENT_STREAM_TYPE},
            chunks=chunks,
            break_after=len(chunks) - 1,
            route="converse_stream",
        )
    )

    # then it fails as a broken connection, not as an answer without usage
    with pytest.raises(UpstreamUnavailable) as raised:
        list(adapter.stream(_request()))

    assert not isinstance(raised.value, MalformedAnswer)
    assert raised.value.message.startswith("The connection to bedrock broke off")


def test_stream_reports_the_prompts_usage_alone_when_the_output_figure_is_null(
    adapter, bedrock_upstream
):
    usage = {"inputTokens": 40, "outputTokens": None, "cacheWriteInputTokens": 60}
    bedrock_upstream.enqueue_raw(
        chunks=_stream_events(usage=usage), content_type=EVENT_STREAM_TYPE, route="converse_stream"
    )

    received = list(adapter.stream(_request()))

    assert received[-1].usage is None
    assert received[-1].usage_so_far == Usage(input_tokens=100, cache_write_tokens=60)


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected", "retryable"),
    [
        (403, "UnrecognizedClientException", "The security token included in the request is "
         "invalid.", ProviderAuthenticationError, False),
        (403, "AccessDeniedException", "You don't have access to the model with the specified "
         "model ID.", ProviderPermissionError, False),
        (400, "ValidationException", "Input is too long for requested model.", ContextTooLong,
         False),
        (400, "ValidationException", "Input Tokens Exceeded: Number of input tokens exceeds "
         "maximum length. Please update the request and try again.", ContextTooLong, False),
        (400, "ValidationException", "The provided model identifier is invalid.",
         ProviderBadRequest, False),
        (404, "ResourceNotFoundException", "Access denied. This Model is marked by provider as "
         "Legacy and you have not been actively using the model in the last 15 days. Please "
         "upgrade to an active model on Amazon Bedrock", ProviderPermissionError, False),
        (404, "ResourceNotFoundException", "Model use case details have not been submitted for "
         "this account. Fill out the Anthropic use case details form before using the model. If "
         "you have already filled out the form, try again in 15 minutes.",
         ProviderPermissionError, False),
        (400, "ValidationException", "The model returned the following errors: You have not "
         "filled out the required use-case form for this model. Complete the form before "
         "requesting access.", ProviderPermissionError, False),
        (408, "ModelTimeoutException", "Model has timed out in processing the request.",
         ProviderTimeout, True),
        (500, "InternalServerException", "Internal server error", UpstreamUnavailable, True),
        (503, "ServiceUnavailableException", "Service unavailable", UpstreamUnavailable, True),
    ],
)  # fmt: skip
def test_complete_maps_aws_errors_onto_the_error_tree(
    adapter, bedrock_upstream, status, error_type, message, expected, retryable
):
    bedrock_upstream.enqueue_error(status, error_type, message)

    with pytest.raises(expected) as caught:
        adapter.complete(_request())

    assert type(caught.value) is expected
    assert caught.value.status_code == status
    assert caught.value.retryable is retryable
    assert caught.value.message == f"bedrock answered {status} {error_type}: {message}"


def test_complete_raises_rate_limited_with_retry_after_when_throttled(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_error(
        429, "ThrottlingException", "Too many requests", headers={"Retry-After": "3"}
    )

    with pytest.raises(ProviderRateLimited) as caught:
        adapter.complete(_request())

    assert caught.value.retry_after == 3.0
    assert caught.value.retryable is True
    assert len(bedrock_upstream.requests) == 1


def test_complete_scrubs_the_access_key_when_the_error_message_quotes_it(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_error(
        403,
        "InvalidSignatureException",
        f"Signature for access key {ACCESS_KEY_ID} does not match.",
    )

    with pytest.raises(ProviderAuthenticationError) as caught:
        adapter.complete(_request())

    assert ACCESS_KEY_ID not in str(caught.value)
    assert ACCESS_KEY_ID[4:12] not in str(caught.value)
    assert caught.value.__context__ is None


def test_complete_raises_timeout_when_upstream_is_slower_than_the_request_timeout(
    adapter, bedrock_upstream
):
    bedrock_upstream.enqueue_converse(delay=5)
    started = time.monotonic()

    with pytest.raises(ProviderTimeout) as caught:
        adapter.complete(_request(timeout=0.3))

    assert time.monotonic() - started < 2
    assert caught.value.retryable is True


def test_complete_keeps_one_runtime_client_per_timeout(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse(times=3)

    adapter.complete(_request())
    adapter.complete(_request(timeout=5))
    short_client = adapter._runtime(5)
    adapter.complete(_request(timeout=5))

    assert adapter._runtime(5) is short_client
    assert adapter._runtime(None) is not short_client
    assert short_client.meta.config.read_timeout == 5
    assert adapter._runtime(None).meta.config.read_timeout == 60


def test_runtime_clients_round_shorter_timeouts_down_and_keep_the_newest(adapter):
    # Shorter timeouts share a client per whole second (tenth below one second).
    assert adapter._runtime(9.97) is adapter._runtime(9.02)
    assert adapter._runtime(9.5).meta.config.read_timeout == 9
    assert adapter._runtime(0.35).meta.config.read_timeout == 0.3
    assert adapter._runtime(75.5).meta.config.read_timeout == 75.5

    # Past the clients kept, the oldest other one makes room; the configured one stays.
    configured = adapter._runtime(None)
    for seconds in range(1, 9):
        adapter._runtime(seconds)
    assert adapter._runtime(8) is adapter._runtime(8.4)
    assert set(adapter._runtime_clients) == {60, *range(2, 9)}
    assert adapter._runtime(None) is configured


def test_complete_raises_upstream_unavailable_when_connection_is_refused(refused_url):
    adapter = _adapter(refused_url)

    with pytest.raises(UpstreamUnavailable) as caught:
        adapter.complete(_request())

    assert caught.value.message == "bedrock could not be reached (EndpointConnectionError)."


def test_complete_raises_authentication_error_without_calling_when_key_pair_missing(
    bedrock_upstream, monkeypatch
):
    # This process's own AWS identity must never stand in for a tenant's.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPROCESSOWNKEY000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "process-own-secret")
    adapter = _adapter(bedrock_upstream.base_url, aws_access_key_id="", aws_secret_access_key="")

    with pytest.raises(ProviderAuthenticationError):
        adapter.complete(_request())

    assert bedrock_upstream.requests == []


# --- embeddings, models, connection, clients ----------------------------------------------


def test_embed_raises_not_supported(adapter):
    with pytest.raises(NotSupported):
        adapter.embed(EmbedRequest(model="amazon.titan-embed-text-v2:0", inputs=["x"]))


def test_connection_check_lists_text_models_from_the_control_plane(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_foundation_models([MODEL, "amazon.nova-pro-v1:0"])

    check = adapter.test_connection()

    assert check.ok is True
    assert check.models == ["amazon.nova-pro-v1:0", MODEL]
    assert bedrock_upstream.last_request.path == "/foundation-models"
    assert bedrock_upstream.last_request.query == {"byOutputModality": "TEXT"}


def test_connection_check_reports_the_error_when_keys_are_rejected(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_error(
        403, "UnrecognizedClientException", "The security token included in the request is invalid."
    )

    check = adapter.test_connection()

    assert check.ok is False
    assert check.error == (
        "provider_authentication: bedrock answered 403 UnrecognizedClientException: "
        "The security token included in the request is invalid."
    )


def test_client_is_reused_across_calls(adapter, bedrock_upstream):
    bedrock_upstream.enqueue_converse(times=2)
    client = adapter._runtime(None)

    adapter.complete(_request())
    adapter.complete(_request())

    assert adapter._runtime(None) is client
    first, second = bedrock_upstream.requests
    assert first.client_port == second.client_port
