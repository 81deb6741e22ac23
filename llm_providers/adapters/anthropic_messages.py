"""Anthropic Messages through the anthropic SDK.

Translation from the OpenAI chat shape: system messages become `system`,
assistant tool calls `tool_use` blocks, tool messages `tool_result` blocks in
a user turn, image data URLs base64 image blocks; turns alternate, tool
results first in theirs, beginning with the user's (`conversation_turns`). `json_mode` appends an
instruction to the system prompt (every Claude model follows it; the
structured-output switch exists only on some). `max_tokens` is required by
the API: requests without one get `DEFAULT_MAX_TOKENS`. `temperature` and
`top_p` are not sent: the API version this SDK speaks (2026-10-21) refuses
every sampling parameter.

Usage: `input_tokens` excludes cache reads and writes, so they are added back;
`cache_creation.ephemeral_1h_input_tokens` is the part of the writes kept for
an hour, which costs more than the 5-minute ones. In a stream, usage starts
in `message_start` and each `message_delta` carries cumulative figures that
replace the earlier ones. Text chunks carry the usage known so far, so that a
stream ending early keeps the prompt's real tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2

from .answers import (
    UnusableUsage,
    answer_object,
    answered_model,
    json_kind,
    member,
    optional_index,
    optional_list,
    optional_text,
    required_object,
    token_figures,
)
from .base import (
    Adapter,
    StreamCut,
    StreamEnd,
    httpx_response_socket,
    translate_errors,
    translate_stream_errors,
)
from .content import (
    arguments_dump,
    content_parts,
    content_text,
    conversation_turns,
    has_visible_text,
    held_text_split,
    image_parse,
    image_url_of,
    local_stops,
    sent_stop_sequences,
    stop_position,
    system_prompt,
    tool_arguments_parse,
    tool_function,
)
from .errors import (
    MalformedAnswer,
    ProviderBadRequest,
    ProviderError,
    ProviderPermissionError,
    ProviderTimeout,
    UpstreamUnavailable,
    connection_failure,
    error_for_status,
    is_redirect,
    malformed_answer,
    paid_usage_attach,
    redirect_refused,
    retry_after_from_headers,
)
from .types import AdapterSettings, ChatRequest, ChatResult, Message, StreamChunk, ToolCall, Usage

LABEL = "anthropic"
# 4096: the largest answer every Claude model can give (older Haiku models
# stop there); callers wanting longer answers say so with max_tokens.
DEFAULT_MAX_TOKENS = 4096
# Sent when a config has no key, so that the SDK does not fall back to the
# ANTHROPIC_API_KEY of this process's environment; the API answers 401.
PLACEHOLDER_API_KEY = "no-key-configured"

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Error types of an error body (also of an `error` event inside a stream,
# which arrives with HTTP 200) and the status each stands for.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# What the API says, as a 400 invalid_request_error, when the account behind
# the key cannot be used (no credit left, organization disabled): the request
# is fine, so it is a permission failure, which another provider may serve.
_ACCOUNT_REFUSALS = re.compile(
    r"credit balance is too low|organization has been disabled", re.IGNORECASE
)
# Codes of an error's `details.error_code` that say the same whatever the
# status: a spend limit reached (429 rate_limit_error, lasting until the month
# or the contract ends, so no wait within a call cures it) and an organization
# on hold (400).
# The API takes tool_use ids (and tool_result tool_use_ids) of letters,
# digits, "_" and "-" only, and answers 400 to others, which other providers
# give (Kimi models: "functions.get_weather:0").
_TOOL_USE_ID = re.compile(r"[A-Za-z0-9_-]+")
_TOOL_USE_ID_OTHER_CHARACTER = re.compile(r"[^A-Za-z0-9_-]")
_ACCOUNT_ERROR_CODES = frozenset(
    {"enforced_spend_limit_reached", "contract_spend_limit_reached", "organization_on_hold"}
)


class AnthropicMessagesAdapter(Adapter):
    protocol = "anthropic_messages"
    default_max_tokens = DEFAULT_MAX_TOKENS
    vendor_errors = (anthropic.AnthropicError, httpx2.HTTPError)

    def __init__(self, settings: AdapterSettings):
        super().__init__(settings)
        self._client = anthropic.Anthropic(
            api_key=settings.api_key or PLACEHOLDER_API_KEY,
            base_url=settings.base_url or None,
            max_retries=0,
            timeout=self._timeout(self.timeout),
            # The SDK follows redirects by default, to wherever they lead.
            http_client=anthropic.DefaultHttpxClient(follow_redirects=False),
        )

    # --- request -----------------------------------------------------------------

    def _timeout(self, seconds: float) -> anthropic.Timeout:
        return anthropic.Timeout(seconds, connect=min(self.connect_timeout, seconds))

    def _create_arguments(self, request: ChatRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": anthropic_messages(request.messages),
            "timeout": self._timeout(self.call_timeout(request.timeout)),
        }
        system = system_prompt(request.messages, json_mode=request.json_mode)
        if system:
            arguments["system"] = system
        # temperature and top_p are left out: API version 2026-10-21 (the one
        # this SDK speaks) answers 400 to any sampling parameter, whatever its
        # value, and the SDK no longer has them.
        sent_stops = sent_stop_sequences(request.stop)
        if sent_stops:
            arguments["stop_sequences"] = sent_stops
        if request.tools:
            arguments["tools"] = [_anthropic_tool(tool) for tool in request.tools]
        return arguments

    # --- the protocol ------------------------------------------------------------

    @translate_errors
    def complete(self, request: ChatRequest) -> ChatResult:
        message = self._client.messages.create(**self._create_arguments(request))
        message = answer_object(message, LABEL)
        # Read before the rest: an answer found malformed is still charged for
        # the usage it reports.
        model = answered_model(member(message, "model"), request.model)
        try:
            fields = _usage_fields(member(message, "usage"))
        except UnusableUsage:
            fields = {}
        reported = _usage(fields) if {"input_tokens", "output_tokens"} <= fields.keys() else None
        try:
            text, tool_calls, finish_reason = _answer_read(message, local_stops(request.stop))
        except MalformedAnswer as error:
            paid_usage_attach(error, reported, model)
            raise
        estimated = reported is None
        if estimated:
            # No usage, a figure that is no count (then none is trusted), or
            # no output figure: estimated rather than billed as nothing.
            usage = self.answer_usage_estimate(request, text, tool_calls, _usage_so_far(fields))
        else:
            usage = reported
        return ChatResult(
            content=text,
            usage=usage,
            model=model,
            finish_reason=finish_reason,
            tool_calls=tool_calls,
            usage_estimated=estimated,
        )

    @translate_stream_errors
    def stream(
        self, request: ChatRequest, *, cut: StreamCut | None = None
    ) -> Iterator[StreamChunk]:
        events = self._client.messages.create(**self._create_arguments(request), stream=True)
        cut = cut or StreamCut()
        model = request.model
        stop_reason: str | None = None
        fields: dict[str, int] = {}
        # Whether a usage object of the stream held a figure that is no count
        # (it is left out, and the stream's usage estimated), and whether a
        # message_delta brought the output's final figure.
        usage_unusable = False
        output_reported = False
        tools: dict[int, dict[str, str]] = {}
        own_stops = local_stops(request.stop)
        # Text not yielded yet because it may be the start of a local stop sequence.
        held = ""
        stopped = False
        end = StreamEnd()
        try:
            with events, cut.holding(httpx_response_socket(events.response)):
                for event in self.events_read(events, cut=cut, end=end):
                    event = required_object(event, LABEL, "an event of it")
                    kind = _block_type(event, "an event of it")
                    text = ""
                    if kind == "message_start":
                        started = required_object(
                            member(event, "message"), LABEL, "its message_start's message"
                        )
                        model = answered_model(member(started, "model"), model)
                        try:
                            fields.update(_usage_fields(member(started, "usage")))
                        except UnusableUsage:
                            usage_unusable = True
                    elif kind == "content_block_start":
                        block = required_object(
                            member(event, "content_block"), LABEL, "a content_block_start's block"
                        )
                        block_kind = _block_type(block, "a content block")
                        if block_kind == "tool_use":
                            call_id, name = _tool_use_identity(block)
                            index = _event_index(event)
                            tools[index] = {"id": call_id, "name": name, "arguments": ""}
                            yield StreamChunk(
                                unseen_text=name, model=model, usage_so_far=_usage_so_far(fields)
                            )
                        elif block_kind == "text":
                            text = optional_text(
                                member(block, "text"), LABEL, "a text block's text"
                            )
                            text = text or ""
                    elif kind == "content_block_delta":
                        delta = required_object(
                            member(event, "delta"), LABEL, "a content block delta"
                        )
                        delta_kind = _block_type(delta, "a content block delta")
                        if delta_kind == "text_delta":
                            text = _required_text(member(delta, "text"), "a text delta's text")
                        elif delta_kind == "thinking_delta":
                            thinking = optional_text(
                                member(delta, "thinking"), LABEL, "a thinking delta's thinking"
                            )
                            if thinking:
                                # Billed output the caller does not read: counted if
                                # the stream ends before its usage arrives.
                                yield StreamChunk(
                                    unseen_text=thinking,
                                    model=model,
                                    usage_so_far=_usage_so_far(fields),
                                )
                        elif delta_kind == "input_json_delta":
                            index = _event_index(event)
                            piece = optional_text(
                                member(delta, "partial_json"), LABEL, "a tool input delta's JSON"
                            )
                            if index in tools and piece:
                                tools[index]["arguments"] += piece
                                yield StreamChunk(
                                    unseen_text=piece,
                                    model=model,
                                    usage_so_far=_usage_so_far(fields),
                                )
                    elif kind == "message_delta":
                        delta = required_object(member(event, "delta"), LABEL, "a message delta")
                        reason = optional_text(
                            member(delta, "stop_reason"), LABEL, "a message delta's stop_reason"
                        )
                        stop_reason = reason or stop_reason
                        # Cumulative: the latest figures replace the earlier ones.
                        try:
                            reported = _usage_fields(member(event, "usage"))
                        except UnusableUsage:
                            usage_unusable = True
                        else:
                            fields.update(reported)
                            output_reported = output_reported or "output_tokens" in reported
                        # The stop reason comes with the final usage: only
                        # message_stop follows.
                        end.whole = stop_reason is not None
                    if not text:
                        continue
                    ready, held, stopped = held_text_split(held + text, own_stops)
                    if stopped:
                        break
                    if ready:
                        yield StreamChunk(
                            text=ready, model=model, usage_so_far=_usage_so_far(fields)
                        )
        except MalformedAnswer as error:
            # An event malformed after the final usage (the message_delta):
            # the answer is lost, but the provider reported, and charges, that usage.
            paid_usage_attach(error, _final_usage(fields, output_reported, usage_unusable), model)
            raise
        if held:
            yield StreamChunk(text=held, model=model, usage_so_far=_usage_so_far(fields))
        if stopped:
            # Leaving the stream closed the connection, so the generation
            # stopped there; its usage is not reported and is left to estimate.
            stop_reason = "stop_sequence"
        elif stop_reason is None:
            raise UpstreamUnavailable("The anthropic stream ended before the answer finished.")
        tool_calls = [
            ToolCall(id=call["id"], name=call["name"], arguments=call["arguments"] or "{}")
            for _, call in sorted(tools.items())
        ]
        yield StreamChunk(
            model=model,
            finish_reason=_FINISH_REASONS.get(stop_reason, "stop"),
            tool_calls=tool_calls or None,
            usage=None if stopped else _final_usage(fields, output_reported, usage_unusable),
            usage_so_far=_usage_so_far(fields),
        )

    @translate_errors
    def list_models(self) -> list[str]:
        page = self._client.models.list(limit=100, timeout=self._timeout(self.timeout))
        return sorted(model.id for model in page)

    def close(self) -> None:
        self._client.close()

    # --- errors ------------------------------------------------------------------

    def unreadable_answer(self, exc: Exception, *, streamed: bool) -> ProviderError | None:
        # The SDK decodes a body (a stream's event) with json.loads.
        if not isinstance(exc, json.JSONDecodeError):
            return None
        return malformed_answer(
            LABEL, "an event of it is not JSON" if streamed else "it is not JSON"
        )

    def provider_error(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            return ProviderTimeout("anthropic did not answer in time.")
        if isinstance(exc, anthropic.APIStatusError) and is_redirect(exc.status_code):
            return redirect_refused("anthropic", exc.status_code)
        if isinstance(exc, anthropic.APIStatusError):
            error_type = getattr(exc, "type", None) or ""
            vendor_message = getattr(exc, "api_message", None) or exc.message
            status = exc.status_code
            if status < 400:
                # An `error` event inside a stream that began with 200 OK.
                status = _ERROR_TYPE_STATUS.get(error_type, 500)
                prefix = "anthropic failed mid-answer"
            else:
                prefix = f"anthropic answered {status}"
            message = self.scrub(f"{prefix} {error_type}: {vendor_message}")
            error_code = getattr(exc, "error_code", None)
            if error_code in _ACCOUNT_ERROR_CODES or _ACCOUNT_REFUSALS.search(vendor_message or ""):
                return ProviderPermissionError(message, status_code=status)
            return error_for_status(
                status,
                message,
                code=error_type,
                retry_after=retry_after_from_headers(exc.response.headers),
            )
        if isinstance(exc, anthropic.APIConnectionError | httpx2.HTTPError):
            return UpstreamUnavailable(self.scrub(connection_failure("anthropic", exc)))
        return UpstreamUnavailable(self.scrub(f"anthropic failed: {exc}"))


def anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation without system messages, as Anthropic content blocks."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "system":
            continue
        if role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": _tool_use_id(message.get("tool_call_id") or ""),
            }
            text = content_text(message.get("content"))
            # A blank result text is refused like any blank text block; a
            # result without content is how the API takes a tool's silence.
            if has_visible_text(text):
                result["content"] = text
            converted.append({"role": "user", "content": [result]})
            continue
        if role not in ("user", "assistant"):
            raise ProviderBadRequest(f"Messages cannot have the role “{role}”.")
        blocks = _content_blocks(message.get("content"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            name = function.get("name") or ""
            blocks.append(
                {
                    "type": "tool_use",
                    "id": _tool_use_id(call.get("id") or ""),
                    "name": name,
                    "input": tool_arguments_parse(function.get("arguments"), name),
                }
            )
        converted.append({"role": role, "content": blocks})
    return conversation_turns(
        converted,
        text_block=lambda text: {"type": "text", "text": text},
        is_tool_result=lambda block: block.get("type") == "tool_result",
    )


def _tool_use_id(call_id: str) -> str:
    """A tool call id as the API takes it. Others have their other characters
    replaced by "_" and a hash of the whole id appended (ids that differ only
    in those characters stay apart); a call and its result, mapped alike,
    still name the same id."""
    if _TOOL_USE_ID.fullmatch(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:8]
    return f"{_TOOL_USE_ID_OTHER_CHARACTER.sub('_', call_id)}_{digest}"


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if has_visible_text(part.get("text")):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = image_url_of(part)
            image = image_parse(url)
            if image is not None:
                source = {"type": "base64", "media_type": image.media_type, "data": image.data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
        else:
            raise ProviderBadRequest(f"Message parts of type “{kind}” are not supported.")
    return blocks


def _anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool_function(tool)
    described = {"description": function["description"]} if function["description"] else {}
    return {"name": function["name"], **described, "input_schema": function["parameters"]}


def _answer_read(message: Any, own_stops: list[str]) -> tuple[str, list[ToolCall], str]:
    """The text (cut at the first of `own_stops`), tool calls and finish
    reason of a non-streamed message."""
    text = ""
    tool_calls: list[ToolCall] = []
    stop_reason = optional_text(member(message, "stop_reason"), LABEL, "its stop_reason")
    finish_reason = _FINISH_REASONS.get(stop_reason or "", "stop")
    blocks = member(message, "content")
    if blocks is None:
        raise malformed_answer(LABEL, "it has no content")
    for block in optional_list(blocks, LABEL, "its content field"):
        kind = _block_type(block, "a content block")
        if kind == "text":
            text += _required_text(member(block, "text"), "a text block's text")
            cut = stop_position(text, own_stops)
            if cut is not None:
                # What followed the stop sequence would not have been generated.
                text, finish_reason = text[:cut], "stop"
                break
        elif kind == "tool_use":
            call_id, name = _tool_use_identity(block)
            arguments = member(block, "input")
            if arguments is not None and not isinstance(arguments, dict):
                raise malformed_answer(
                    LABEL, f"a tool_use block's input is {json_kind(arguments)}, not an object"
                )
            tool_calls.append(ToolCall(id=call_id, name=name, arguments=arguments_dump(arguments)))
    return text, tool_calls, finish_reason


def _usage_fields(usage: Any) -> dict[str, int]:
    """The figures a usage object reports (absent and null ones are left out,
    so a later event's figures replace only what it carries). Raises
    `UnusableUsage` when one of them is no count of tokens."""
    fields = token_figures(
        usage,
        (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ),
    )
    # Cache writes by lifetime, in message_start and non-streamed messages:
    # `cache_creation_input_tokens` adds the 5-minute and 1-hour ones up.
    creation = token_figures(member(usage, "cache_creation"), ("ephemeral_1h_input_tokens",))
    if "ephemeral_1h_input_tokens" in creation:
        fields["cache_write_1h_tokens"] = creation["ephemeral_1h_input_tokens"]
    details = token_figures(member(usage, "output_tokens_details"), ("thinking_tokens",))
    if "thinking_tokens" in details:
        fields["thinking_tokens"] = details["thinking_tokens"]
    return fields


def _block_type(value: Any, what: str) -> str:
    """The `type` of an event, content block or delta, which must be an object that names one."""
    kind = member(required_object(value, LABEL, what), "type")
    if not isinstance(kind, str):
        raise malformed_answer(LABEL, f"{what} has no type")
    return kind


def _required_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise malformed_answer(LABEL, f"{what} is {json_kind(value)}, not text")
    return value


def _tool_use_identity(block: Any) -> tuple[str, str]:
    """The id and name of a tool_use block; a call without a name is no call."""
    call_id = optional_text(member(block, "id"), LABEL, "a tool_use block's id") or ""
    name = optional_text(member(block, "name"), LABEL, "a tool_use block's name")
    if not name:
        raise malformed_answer(LABEL, "a tool_use block has no name")
    return call_id, name


def _event_index(event: Any) -> int:
    """The index of the content block a stream event is about."""
    index = optional_index(member(event, "index"), LABEL, "an event's index")
    if index is None:
        raise malformed_answer(LABEL, "an event of a content block has no index")
    return index


def _final_usage(fields: dict[str, int], output_reported: bool, unusable: bool) -> Usage | None:
    """The usage a stream reported for its whole answer: the prompt's figures
    and the output's final one (`output_reported`: a message_delta brought
    it). None when either is missing, or when one of its usage objects held a
    figure that is no count (`unusable`): the usage is then left to estimate
    from what was reported of the prompt."""
    if unusable or not output_reported or "input_tokens" not in fields:
        return None
    return _usage(fields)


def _usage_so_far(fields: dict[str, int]) -> Usage | None:
    """The usage reported before the stream's end, once it names the prompt's tokens."""
    return _usage(fields) if "input_tokens" in fields else None


def _usage(fields: dict[str, int]) -> Usage:
    cache_read = fields.get("cache_read_input_tokens", 0)
    cache_write = fields.get("cache_creation_input_tokens", 0)
    return Usage(
        input_tokens=fields.get("input_tokens", 0) + cache_read + cache_write,
        output_tokens=fields.get("output_tokens", 0),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=min(fields.get("cache_write_1h_tokens", 0), cache_write),
        reasoning_tokens=fields.get("thinking_tokens", 0),
    )
