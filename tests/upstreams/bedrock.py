"""A loopback server speaking Bedrock Converse (JSON), ConverseStream (AWS event-stream
binary frames, see `eventstream.py`) and the control plane's ListFoundationModels.

Point the config's `base_url` (the adapter's `endpoint_url`) at `upstream.url`:

    def test_stream(bedrock_upstream):
        bedrock_upstream.enqueue_converse_stream(["Hel", "lo"], input_tokens=200,
                                                 cache_read_tokens=1000, output_tokens=30)
        bedrock_upstream.enqueue_error(429, "ThrottlingException", "Too many requests")
        ...
        assert bedrock_upstream.requests[0].path == "/model/anthropic.claude-v2/converse-stream"
"""

from __future__ import annotations

import json
from typing import Any

from .eventstream import event_encode, exception_encode
from .server import LoopbackUpstream, RecordedRequest, Reply, Script, json_reply

# What Converse answers to a conversation holding tool blocks without a toolConfig.
TOOL_CONFIG_MISSING = (
    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
)

# What Converse answers to a text block that is empty or only whitespace.
BLANK_TEXT_BLOCK = (
    "The text field in the ContentBlock object at {where} is blank. "
    "Add text to the text field, and try again."
)

# What Converse answers when a request gives a Claude model (Sonnet 4.5 and
# later) both temperature and topP.
SAMPLING_PARAMETERS_CONFLICT = (
    "The model returned the following errors: `temperature` and `top_p` cannot both be "
    "specified for this model. Please use only one."
)

# What Converse answers to a conversation that does not begin with a user turn.
CONVERSATION_START = (
    "A conversation must start with a user message. "
    "Try again with a conversation that starts with a user message."
)

# What Converse answers to two consecutive turns of one role.
CONVERSATION_ALTERNATION = (
    "A conversation must alternate between user and assistant roles. "
    "Make sure the conversation alternates between user and assistant roles and try again."
)

EVENT_STREAM_TYPE = "application/vnd.amazon.eventstream"


def bedrock_usage(
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int | None = None,
) -> dict[str, Any]:
    """`cache_write_1h_tokens`: the part of the cache writes kept for an hour,
    reported with the rest (5 minutes) in `cacheDetails`; None leaves it out."""
    usage: dict[str, Any] = {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": input_tokens + output_tokens + cache_read_tokens + cache_write_tokens,
        "cacheReadInputTokens": cache_read_tokens,
        "cacheWriteInputTokens": cache_write_tokens,
    }
    if cache_write_1h_tokens is not None:
        usage["cacheDetails"] = [
            {"ttl": "1h", "inputTokens": cache_write_1h_tokens},
            {"ttl": "5m", "inputTokens": cache_write_tokens - cache_write_1h_tokens},
        ]
    return usage


def model_id_of(request: RecordedRequest) -> str:
    """The model id a runtime request named in its path."""
    return request.path.split("/model/", 1)[1].rsplit("/", 1)[0]


class BedrockUpstream(LoopbackUpstream):
    @property
    def base_url(self) -> str:
        return self.url

    def route_of(self, method: str, path: str) -> str | None:
        if path.startswith("/model/") and path.endswith("/converse-stream"):
            return "converse_stream"
        if path.startswith("/model/") and path.endswith("/converse"):
            return "converse"
        if path == "/foundation-models":
            return "foundation_models"
        return None

    def _reply_for(self, request: RecordedRequest) -> Reply:
        reply = super()._reply_for(request)
        if request.route not in ("converse", "converse_stream"):
            return reply
        body = request.json or {}
        roles = [message.get("role") for message in body.get("messages") or ()]
        if roles and roles[0] != "user":
            return self.error_reply(400, "ValidationException", CONVERSATION_START)
        if any(first == second for first, second in zip(roles, roles[1:], strict=False)):
            return self.error_reply(400, "ValidationException", CONVERSATION_ALTERNATION)
        if _tool_blocks_without_config(body):
            return self.error_reply(400, "ValidationException", TOOL_CONFIG_MISSING)
        inference = body.get("inferenceConfig") or {}
        if "claude" in model_id_of(request) and {"temperature", "topP"} <= inference.keys():
            return self.error_reply(400, "ValidationException", SAMPLING_PARAMETERS_CONFLICT)
        blank = _blank_text_block(body)
        if blank:
            return self.error_reply(
                400, "ValidationException", BLANK_TEXT_BLOCK.format(where=blank)
            )
        return reply

    def converse_reply(
        self,
        content: str = "Hello!",
        *,
        input_tokens: int = 10,
        output_tokens: int = 5,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int | None = None,
        tool_uses: list[dict[str, Any]] | None = None,
        stop_reason: str | None = None,
        delay: float = 0.0,
    ) -> Script:
        """A Converse answer. `tool_uses`: [{"id", "name", "input": {...}}]."""
        blocks: list[dict[str, Any]] = [{"text": content}] if content else []
        blocks += [
            {"toolUse": {"toolUseId": use["id"], "name": use["name"], "input": use["input"]}}
            for use in tool_uses or ()
        ]
        payload = {
            "output": {"message": {"role": "assistant", "content": blocks}},
            "stopReason": stop_reason or ("tool_use" if tool_uses else "end_turn"),
            "usage": bedrock_usage(
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                cache_write_1h_tokens,
            ),
            "metrics": {"latencyMs": 120},
        }
        return json_reply(payload, delay=delay, route="converse")

    def enqueue_converse(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `converse_reply(...)`."""
        self.enqueue(self.converse_reply(*args, **kwargs), times=times)

    def converse_stream_reply(
        self,
        pieces: list[str] = ("Hel", "lo", "!"),  # type: ignore[assignment]
        *,
        input_tokens: int = 10,
        output_tokens: int = 5,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int | None = None,
        tool_uses: list[dict[str, Any]] | None = None,
        stop_reason: str | None = None,
        exception: tuple[str, str] | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        break_after: int | None = None,
    ) -> Script:
        """A ConverseStream answer, one event-stream message per HTTP chunk:
        messageStart, a text block (one delta per piece), one toolUse block per
        tool use (input JSON in two halves), messageStop, metadata with usage.

        `exception=(type, message)`, e.g. ("throttlingException", "Slow down"),
        replaces messageStop and metadata by an in-stream exception.
        `break_after=n` drops the connection after n messages.
        """
        events = [event_encode("messageStart", {"role": "assistant"})]
        index = 0
        if pieces:
            for piece in pieces:
                events.append(
                    event_encode(
                        "contentBlockDelta",
                        {"contentBlockIndex": index, "delta": {"text": piece}},
                    )
                )
            events.append(event_encode("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        for use in tool_uses or ():
            arguments = json.dumps(use["input"])
            half = len(arguments) // 2
            events.append(
                event_encode(
                    "contentBlockStart",
                    {
                        "contentBlockIndex": index,
                        "start": {"toolUse": {"toolUseId": use["id"], "name": use["name"]}},
                    },
                )
            )
            for fragment in (arguments[:half], arguments[half:]):
                events.append(
                    event_encode(
                        "contentBlockDelta",
                        {"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}},
                    )
                )
            events.append(event_encode("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        if exception is not None:
            events.append(exception_encode(*exception))
        else:
            events.append(
                event_encode(
                    "messageStop",
                    {"stopReason": stop_reason or ("tool_use" if tool_uses else "end_turn")},
                )
            )
            events.append(
                event_encode(
                    "metadata",
                    {
                        "usage": bedrock_usage(
                            input_tokens,
                            output_tokens,
                            cache_read_tokens,
                            cache_write_tokens,
                            cache_write_1h_tokens,
                        ),
                        "metrics": {"latencyMs": 120},
                    },
                )
            )
        return Reply(
            headers={"Content-Type": EVENT_STREAM_TYPE},
            chunks=events,
            delay=delay,
            chunk_delay=chunk_delay,
            break_after=break_after,
            route="converse_stream",
        )

    def enqueue_converse_stream(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `converse_stream_reply(...)`."""
        self.enqueue(self.converse_stream_reply(*args, **kwargs), times=times)

    def foundation_models_reply(self, ids: list[str]) -> Script:
        payload = {
            "modelSummaries": [
                {
                    "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model}",
                    "modelId": model,
                    "modelName": model,
                    "providerName": model.split(".", 1)[0],
                    "inputModalities": ["TEXT"],
                    "outputModalities": ["TEXT"],
                    "responseStreamingSupported": True,
                }
                for model in ids
            ]
        }
        return json_reply(payload, route="foundation_models")

    def enqueue_foundation_models(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `foundation_models_reply(...)`."""
        self.enqueue(self.foundation_models_reply(*args, **kwargs), times=times)

    def error_reply(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> Script:
        """An AWS JSON error (type in `x-amzn-ErrorType`), to any endpoint."""
        return Reply(
            status=status,
            headers={
                "Content-Type": "application/json",
                "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/",
                "x-amzn-RequestId": "loopback-request",
                **(headers or {}),
            },
            body=json.dumps({"message": message}).encode(),
            delay=delay,
        )

    def enqueue_error(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `error_reply(...)`."""
        self.enqueue(self.error_reply(*args, **kwargs), times=times)


def _tool_blocks_without_config(body: dict[str, Any]) -> bool:
    """Whether a Converse request holds toolUse/toolResult blocks but no toolConfig."""
    if body.get("toolConfig"):
        return False
    return any(
        "toolUse" in block or "toolResult" in block
        for message in body.get("messages") or ()
        for block in message.get("content") or ()
    )


def _blank_text_block(body: dict[str, Any]) -> str | None:
    """Where a Converse request holds a text block without non-whitespace text, if it does."""
    for index, block in enumerate(body.get("system") or ()):
        if "text" in block and not block["text"].strip():
            return f"system.{index}"
    for message_index, message in enumerate(body.get("messages") or ()):
        for block_index, block in enumerate(message.get("content") or ()):
            where = f"messages.{message_index}.content.{block_index}"
            if "text" in block and not block["text"].strip():
                return where
            # The text of a tool result is held to the same rule.
            for part_index, part in enumerate((block.get("toolResult") or {}).get("content") or ()):
                if "text" in part and not part["text"].strip():
                    return f"{where}.toolResult.content.{part_index}"
    return None
