"""A loopback server speaking Anthropic Messages (JSON and SSE) and the models list.

    def test_cache_usage(anthropic_upstream):
        anthropic_upstream.enqueue_message("Hi", input_tokens=200, output_tokens=300,
                                           cache_read_tokens=1000, cache_write_tokens=500)
        anthropic_upstream.enqueue_error(529, type="overloaded_error", message="Overloaded")
        ... point the config's base_url at anthropic_upstream.base_url ...
        assert anthropic_upstream.requests[0].headers["x-api-key"] == "sk-ant-..."

Usage in a stream: `message_start` carries the input side (and output 1),
then one `message_delta` per entry of `output_token_steps` carries the
cumulative output (the last equals `output_tokens`), as the API does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from .server import LoopbackUpstream, RecordedRequest, Reply, Script, json_reply

DEFAULT_MODEL = "claude-sonnet-4-6-20260217"
# What the Messages API answers (400) to a text block that is empty or only whitespace.
BLANK_TEXT_BLOCK = "messages: text content blocks must contain non-whitespace text"
# What it answers (400) to a stop sequence that is only whitespace, such as "\n".
BLANK_STOP_SEQUENCE = "stop_sequences: each stop sequence must contain non-whitespace"
# What a tool_use id (and a tool_result's tool_use_id) must be, or the API answers 400.
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
# The first bytes of each image format the API takes: it answers 400 to a
# base64 image whose bytes are of another format than its media_type says.
IMAGE_SIGNATURES = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
    "image/webp": b"RIFF",
}


def sse(event: str, payload: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()


def anthropic_usage(
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    thinking_tokens: int | None = None,
    cache_write_1h_tokens: int | None = None,
) -> dict[str, Any]:
    """`cache_write_1h_tokens`: the part of the cache writes kept for an hour,
    reported with the rest (5 minutes) in `cache_creation`; None leaves it out."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_write_tokens,
        "cache_read_input_tokens": cache_read_tokens,
        "service_tier": "standard",
    }
    if cache_write_1h_tokens is not None:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": cache_write_tokens - cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": cache_write_1h_tokens,
        }
    if thinking_tokens is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    return usage


class AnthropicUpstream(LoopbackUpstream):
    @property
    def base_url(self) -> str:
        return self.url

    def route_of(self, method: str, path: str) -> str | None:
        if path.endswith("/v1/messages"):
            return "messages"
        if path.startswith("/v1/models"):
            return "models"
        return None

    def _reply_for(self, request: RecordedRequest) -> Reply:
        reply = super()._reply_for(request)
        if request.route != "messages":
            return reply
        body = request.json or {}
        refusal = BLANK_TEXT_BLOCK if _has_blank_text_block(body) else None
        refusal = refusal or _image_media_type_mismatch(body)
        refusal = refusal or _tool_id_mismatch(body)
        if any(not stop.strip() for stop in body.get("stop_sequences") or ()):
            refusal = refusal or BLANK_STOP_SEQUENCE
        if refusal:
            return self.error_reply(400, type="invalid_request_error", message=refusal)
        return reply

    def message_reply(
        self,
        content: str = "Hello!",
        *,
        model: str = DEFAULT_MODEL,
        input_tokens: int = 10,
        output_tokens: int = 5,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int | None = None,
        thinking_tokens: int | None = None,
        tool_uses: list[dict[str, Any]] | None = None,
        stop_reason: str | None = None,
        delay: float = 0.0,
    ) -> Script:
        """A non-streamed message. `tool_uses`: [{"id", "name", "input": {...}}]."""
        blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
        blocks += [
            {"type": "tool_use", "id": use["id"], "name": use["name"], "input": use["input"]}
            for use in tool_uses or ()
        ]
        payload = {
            "id": "msg_loopback",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop_reason or ("tool_use" if tool_uses else "end_turn"),
            "stop_sequence": None,
            "usage": anthropic_usage(
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                thinking_tokens,
                cache_write_1h_tokens,
            ),
        }
        return json_reply(payload, delay=delay, route="messages")

    def enqueue_message(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `message_reply(...)`."""
        self.enqueue(self.message_reply(*args, **kwargs), times=times)

    def message_stream_reply(
        self,
        pieces: list[str] = ("Hel", "lo", "!"),  # type: ignore[assignment]
        *,
        model: str = DEFAULT_MODEL,
        input_tokens: int = 10,
        output_tokens: int = 5,
        output_token_steps: list[int] | None = None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int | None = None,
        thinking_tokens: int | None = None,
        tool_uses: list[dict[str, Any]] | None = None,
        stop_reason: str | None = None,
        error: dict[str, Any] | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        break_after: int | None = None,
    ) -> Script:
        """An SSE stream: message_start, ping, a text block (one delta per piece),
        one tool_use block per tool use (input JSON in two halves), message_delta
        events, message_stop.

        `error={"type": ..., "message": ...}` replaces the message_delta and
        message_stop events by an `error` event (as when the API overloads
        mid-answer). `break_after=n` drops the connection after n events.
        """
        start_usage = anthropic_usage(
            input_tokens,
            1,
            cache_read_tokens,
            cache_write_tokens,
            cache_write_1h_tokens=cache_write_1h_tokens,
        )
        events = [
            sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_loopback",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            ),
            sse("ping", {"type": "ping"}),
        ]
        index = 0
        if pieces:
            events.append(
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for piece in pieces:
                events.append(
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                )
            events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        for use in tool_uses or ():
            arguments = json.dumps(use["input"])
            half = len(arguments) // 2
            events.append(
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": use["id"],
                            "name": use["name"],
                            "input": {},
                        },
                    },
                )
            )
            for fragment in (arguments[:half], arguments[half:]):
                events.append(
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": fragment},
                        },
                    )
                )
            events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        if error is not None:
            events.append(sse("error", {"type": "error", "error": error}))
        else:
            for step in output_token_steps or [output_tokens]:
                usage: dict[str, Any] = {"output_tokens": step}
                if thinking_tokens is not None:
                    usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
                events.append(
                    sse(
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {
                                "stop_reason": stop_reason
                                or ("tool_use" if tool_uses else "end_turn"),
                                "stop_sequence": None,
                            },
                            "usage": usage,
                        },
                    )
                )
            events.append(sse("message_stop", {"type": "message_stop"}))
        return Reply(
            headers={"Content-Type": "text/event-stream"},
            chunks=events,
            delay=delay,
            chunk_delay=chunk_delay,
            break_after=break_after,
            route="messages",
        )

    def enqueue_message_stream(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `message_stream_reply(...)`."""
        self.enqueue(self.message_stream_reply(*args, **kwargs), times=times)

    def models_reply(self, ids: list[str]) -> Script:
        payload = {
            "data": [
                {
                    "type": "model",
                    "id": model,
                    "display_name": model,
                    "created_at": "2025-09-29T00:00:00Z",
                }
                for model in ids
            ],
            "has_more": False,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        }
        return json_reply(payload, route="models")

    def enqueue_models(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `models_reply(...)`."""
        self.enqueue(self.models_reply(*args, **kwargs), times=times)

    def error_reply(
        self,
        status: int,
        *,
        type: str = "api_error",
        message: str = "Internal server error",
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> Script:
        """An error answer in Anthropic's body shape, to any endpoint;
        `error_code` goes in `error.details`, where the API names the cause."""
        error: dict[str, Any] = {"type": type, "message": message}
        if error_code is not None:
            error["details"] = {"error_code": error_code}
        payload = {"type": "error", "error": error, "request_id": "req_loopback"}
        return json_reply(payload, status=status, headers=headers, delay=delay)

    def enqueue_error(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `error_reply(...)`."""
        self.enqueue(self.error_reply(*args, **kwargs), times=times)


def _has_blank_text_block(body: dict[str, Any]) -> bool:
    """Whether a Messages request holds a text block without non-whitespace text
    (a tool result's text included: its string content stands for a text block)."""
    blocks = [
        block
        for message in body.get("messages") or ()
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict)
    ]
    for block in blocks:
        if block.get("type") == "tool_result" and "content" in block:
            content = block["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            blocks += [part for part in parts if isinstance(part, dict)]
    return any(block.get("type") == "text" and not block["text"].strip() for block in blocks)


def _tool_id_mismatch(body: dict[str, Any]) -> str | None:
    """The API's message for a tool_use id or tool_result tool_use_id that is
    not made of letters, digits, `_` and `-` only."""
    for message_index, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        for block_index, block in enumerate(content if isinstance(content, list) else ()):
            field = {"tool_use": "id", "tool_result": "tool_use_id"}.get(block.get("type"))
            if field and not TOOL_ID.fullmatch(str(block.get(field))):
                return (
                    f"messages.{message_index}.content.{block_index}.{block['type']}.{field}: "
                    f"String should match pattern '{TOOL_ID.pattern}'"
                )
    return None


def _image_media_type_mismatch(body: dict[str, Any]) -> str | None:
    """The API's message for a base64 image whose bytes are not of its media_type."""
    for message_index, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        for block_index, block in enumerate(content if isinstance(content, list) else ()):
            source = block.get("source") if block.get("type") == "image" else None
            if not source or source.get("type") != "base64":
                continue
            signature = IMAGE_SIGNATURES.get(source.get("media_type"), b"")
            try:
                start = source.get("data", "")[:16]
                head = base64.b64decode(start[: len(start) // 4 * 4])
            except binascii.Error:
                head = b""
            if not signature or not head.startswith(signature):
                return (
                    f"messages.{message_index}.content.{block_index}.image.source.base64.data: "
                    f"Image does not match the provided media type {source.get('media_type')}"
                )
    return None
