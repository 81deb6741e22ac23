"""AWS Bedrock Converse / ConverseStream through boto3 (`bedrock-runtime`).

Credentials are the config's AWS key pair and region, never this process's
own AWS identity: without a key pair every call fails with an
authentication error. botocore retries are off (one attempt) and timeouts
explicit. botocore has no per-call timeout, so one runtime client is kept per
read timeout in use (the configured one is built with the adapter); a shorter
one, such as what a call's deadline leaves, is rounded down to whole seconds
(tenths below a second) so that calls share their clients.

Translation from the OpenAI chat shape: system messages become `system`
blocks, images (data URLs only: Bedrock takes bytes) `image` blocks, tool
calls `toolUse` blocks and tool messages `toolResult` blocks in a user turn.
Turns are shaped as for Anthropic (`conversation_turns`): Converse refuses a
conversation whose turns do not alternate or that begins with the assistant.
`json_mode` appends an instruction to the system prompt (Converse has no
JSON switch common to its models). A request without `max_tokens` sends
`DEFAULT_MAX_TOKENS` (4096, as on Anthropic), so the model's own, larger
default never outruns the budget reservation; a model whose limit is lower
refuses it naming the limit, and gets that limit instead, remembered per
model. Stop sequences that are only whitespace are applied here, not sent,
as on Anthropic. Claude models get `temperature` without
`top_p` when a request gives both (newer ones refuse the pair). Embeddings
are a different Bedrock API (InvokeModel with per-model bodies) and are not
offered here.

Usage: `inputTokens` excludes `cacheReadInputTokens` and
`cacheWriteInputTokens`, so they are added back; `cacheDetails` splits the
writes by lifetime, and those kept for an hour ("1h") cost more than the
5-minute ones. ConverseStream reports usage in its closing `metadata` event.
"""

from __future__ import annotations

import functools
import json
import math
import re
import socket
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import replace
from types import TracebackType
from typing import Any

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.eventstream import ParserError as EventStreamParserError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from .answers import (
    UnusableUsage,
    json_kind,
    member,
    optional_index,
    optional_list,
    optional_object,
    optional_text,
    required_object,
    token_figures,
)
from .base import Adapter, StreamCut, translate_errors, translate_stream_errors
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
    ContextTooLong,
    MalformedAnswer,
    ProviderAuthenticationError,
    ProviderBadRequest,
    ProviderError,
    ProviderPermissionError,
    ProviderRateLimited,
    ProviderTimeout,
    UpstreamUnavailable,
    connection_failure,
    error_for_status,
    failed_answer_error,
    malformed_answer,
    message_says_context_too_long,
    paid_usage_attach,
    retry_after_from_headers,
)
from .types import AdapterSettings, ChatRequest, ChatResult, Message, StreamChunk, ToolCall, Usage

LABEL = "bedrock"
# Sent as maxTokens when a request names none, as on Anthropic: without it
# the model's own default applies (up to its whole output window), past what
# budget reservations and TPM limits assume (`default_max_tokens`). A model
# whose limit is lower refuses it, naming the limit, which is sent instead.
DEFAULT_MAX_TOKENS = 4096
_MODEL_LIMIT = re.compile(r"exceeds the model limit of (\d+)", re.IGNORECASE)
# The region Bedrock's console starts in, for settings built without one
# (provider configs require a region).
DEFAULT_REGION = "us-east-1"
# Distinct per-call read timeouts kept as clients; past this many, the
# oldest one other than the configured timeout is dropped for the new one.
_MAX_TIMEOUT_CLIENTS = 8

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Converse ends an answer the model garbled (a tool call it could not parse,
# output it could not read) with these: not an answer, and another attempt
# may well succeed.
_FAILED_STOP_REASONS = frozenset({"malformed_model_output", "malformed_tool_use"})
# Converse refuses a conversation holding toolUse/toolResult blocks unless
# the request has a toolConfig, and a toolConfig needs at least one tool. A
# request that offers no tools but carries an earlier tool exchange declares
# this one, which says not to call it, instead of the tools of the history
# (which the caller did not offer for this turn).
NO_TOOL_NAME = "no_tool_available"
_NO_TOOL = {
    "toolSpec": {
        "name": NO_TOOL_NAME,
        "description": "No tool is available in this turn. Never call this tool.",
        "inputSchema": {"json": {"type": "object", "properties": {}}},
    }
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
# AWS error codes (lower-cased: ConverseStream's in-stream exceptions are
# camelCase) and the error each stands for.
_AUTH_CODES = frozenset(
    {
        "unrecognizedclientexception",
        "invalidsignatureexception",
        "signaturedoesnotmatch",
        "incompletesignature",
        "invalidclienttokenid",
        "expiredtokenexception",
        "missingauthenticationtokenexception",
    }
)
_CODE_ERRORS: dict[str, type[ProviderError]] = {
    "accessdeniedexception": ProviderPermissionError,
    "throttlingexception": ProviderRateLimited,
    "servicequotaexceededexception": ProviderRateLimited,
    "toomanyrequestsexception": ProviderRateLimited,
    "modeltimeoutexception": ProviderTimeout,
    "internalserverexception": UpstreamUnavailable,
    "serviceunavailableexception": UpstreamUnavailable,
    "modelstreamerrorexception": UpstreamUnavailable,
    "modelerrorexception": UpstreamUnavailable,
    "modelnotreadyexception": UpstreamUnavailable,
    "validationexception": ProviderBadRequest,
    "resourcenotfoundexception": ProviderBadRequest,
}

# What Bedrock says, as a ResourceNotFoundException (or another refusal of the
# request), when the account may not use the model: a legacy model it has not
# used lately ("Access denied. This Model is marked by provider as Legacy"),
# an Anthropic model before its use case form ("use-case form") is filed.
# The request is fine; another account or provider may serve it.
_ACCOUNT_REFUSALS = re.compile(r"access denied|use[- ]case (?:details|form)", re.IGNORECASE)


def _event_stream_socket(events: Any) -> socket.socket | None:
    """The socket a botocore event stream reads from (its urllib3 response's)."""
    raw = getattr(events, "_raw_stream", None)
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    return getattr(connection, "sock", None)


# The usage figures of Converse answers. botocore reads them with int(): it
# would cut 10.5 to 10, take true for 1 and fail on text.
_USAGE_FIGURES = (
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
)
# The module in which botocore reads an answer (an event-stream event's
# payload too): an exception raised there is an answer it could not read (its
# parsers take values as they come: a `str` where an object belongs fails
# with AttributeError).
_ANSWER_READING_MODULE = "botocore.parsers"


# The usage of the Converse answer botocore reads in this thread, as the
# before-parse hook found it: when botocore then cannot read the rest
# of the answer, the provider still reported, and charges, that usage.
_answer_usage: ContextVar[Usage | None] = ContextVar("bedrock_answer_usage", default=None)


def _converse_answer_check(response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's before-parse hook of Converse. botocore reads a body that is
    not JSON as an answer without output or usage; one that is, but no
    object, fails as a bug would: both are refused here as malformed. A usage
    object holding a figure that is no count is left out (botocore would
    cut or misread it), so that the usage is estimated; a usable one is kept
    in `_answer_usage`."""
    _answer_usage.set(None)
    if response_dict.get("status_code", 200) >= 300:
        return
    try:
        answer = json.loads(response_dict.get("body") or b"")
    except ValueError:
        answer = None
        problem = "it is not JSON"
    else:
        problem = (
            None if isinstance(answer, dict) else f"it is {json_kind(answer)}, not a JSON object"
        )
    if problem is not None:
        raise malformed_answer(LABEL, problem)
    if answer.get("usage") is None:
        return
    try:
        _usage_figures(answer["usage"])
    except UnusableUsage:
        response_dict["body"] = json.dumps({**answer, "usage": None}).encode()
    else:
        _answer_usage.set(_usage_read(answer["usage"])[0])


def _raised_reading_answer(exc: BaseException) -> bool:
    """Whether `exc` was raised while botocore read an answer."""
    trace: TracebackType | None = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_globals.get("__name__") == _ANSWER_READING_MODULE:
            return True
        trace = trace.tb_next
    return False


# One boto3 session for every adapter: it caches the service models, so a
# client costs milliseconds instead of a quarter second. Credentials and
# region are given per client; creating clients from one session is not
# thread-safe, hence the lock.
_session_lock = threading.Lock()


@functools.cache
def _shared_session() -> boto3.session.Session:
    return boto3.session.Session()


class BedrockConverseAdapter(Adapter):
    protocol = "bedrock_converse"
    default_max_tokens = DEFAULT_MAX_TOKENS
    vendor_errors = (BotoCoreError, ClientError, urllib3.exceptions.HTTPError)

    def __init__(self, settings: AdapterSettings):
        super().__init__(settings)
        self._has_credentials = bool(settings.aws_access_key_id and settings.aws_secret_access_key)
        self._lock = threading.Lock()
        # Model → the largest maxTokens it takes, when below the default;
        # replaced, never mutated (the adapter serves concurrent calls).
        self._max_tokens_limits: dict[str, int] = {}
        self._runtime_clients = {self.timeout: self._client_build("bedrock-runtime", self.timeout)}
        self._control_client = self._client_build("bedrock", self.timeout)

    def _client_build(self, service: str, read_timeout: float) -> Any:
        config = Config(
            connect_timeout=min(self.connect_timeout, read_timeout),
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        with _session_lock:
            client = _shared_session().client(
                service,
                region_name=self.settings.aws_region or DEFAULT_REGION,
                aws_access_key_id=self.settings.aws_access_key_id or None,
                aws_secret_access_key=self.settings.aws_secret_access_key or None,
                endpoint_url=self.settings.base_url or None,
                config=config,
            )
        if service == "bedrock-runtime":
            client.meta.events.register(
                "before-parse.bedrock-runtime.Converse", _converse_answer_check
            )
        return client

    def _runtime(self, requested_timeout: float | None) -> Any:
        """The runtime client for this call's read timeout."""
        self._require_credentials()
        timeout = self._read_timeout(requested_timeout)
        client = self._runtime_clients.get(timeout)
        if client is not None:
            return client
        with self._lock:
            client = self._runtime_clients.get(timeout)
            if client is None:
                client = self._client_build("bedrock-runtime", timeout)
                clients = dict(self._runtime_clients)
                if len(clients) >= _MAX_TIMEOUT_CLIENTS:
                    # The oldest other timeout makes room; a call still using
                    # its client keeps it until that call ends.
                    del clients[next(t for t in clients if t != self.timeout)]
                clients[timeout] = client
                # Replaced, never mutated: other calls read it without the lock.
                self._runtime_clients = clients
        return client

    def _read_timeout(self, requested: float | None) -> float:
        """The call's timeout; one shorter than the config's is rounded down to
        whole seconds (tenths below a second). A deadline caps an attempt at
        the time left, a different fraction of a second each call: rounded,
        those calls share a client instead of building one each."""
        timeout = self.call_timeout(requested)
        if timeout >= self.timeout:
            return timeout
        if timeout >= 1:
            return float(math.floor(timeout))
        if timeout >= 0.1:
            return math.floor(timeout * 10) / 10
        return timeout

    def _require_credentials(self) -> None:
        if not self._has_credentials:
            raise ProviderAuthenticationError(
                "Bedrock needs an AWS access key id and secret access key on the provider config."
            )

    # --- request -----------------------------------------------------------------

    def _converse_arguments(self, request: ChatRequest) -> dict[str, Any]:
        messages = bedrock_messages(request.messages)
        arguments: dict[str, Any] = {"modelId": request.model, "messages": messages}
        system = system_prompt(request.messages, json_mode=request.json_mode)
        if system:
            arguments["system"] = [{"text": system}]
        inference: dict[str, Any] = {"maxTokens": self._max_tokens(request)}
        if request.temperature is not None:
            inference["temperature"] = request.temperature
        if request.top_p is not None and not (
            request.temperature is not None and _is_claude(request.model)
        ):
            inference["topP"] = request.top_p
        sent_stops = sent_stop_sequences(request.stop)
        if sent_stops:
            inference["stopSequences"] = sent_stops
        arguments["inferenceConfig"] = inference
        if request.tools:
            arguments["toolConfig"] = {"tools": [_bedrock_tool(tool) for tool in request.tools]}
        elif _has_tool_blocks(messages):
            arguments["toolConfig"] = {"tools": [_NO_TOOL]}
        return arguments

    def _max_tokens(self, request: ChatRequest) -> int:
        if request.max_tokens is not None:
            return request.max_tokens
        return self._max_tokens_limits.get(request.model, DEFAULT_MAX_TOKENS)

    def _send(self, operation: str, request: ChatRequest) -> Any:
        """Converse or ConverseStream; a default maxTokens above the model's
        limit is sent again at that limit, which later calls then send."""
        arguments = self._converse_arguments(request)
        call = getattr(self._runtime(request.timeout), operation)
        try:
            return call(**arguments)
        except ClientError as exc:
            limit = _model_limit(exc) if request.max_tokens is None else None
            if limit is None or not 0 < limit < arguments["inferenceConfig"]["maxTokens"]:
                raise
        self._max_tokens_limits = {**self._max_tokens_limits, request.model: limit}
        arguments["inferenceConfig"]["maxTokens"] = limit
        return call(**arguments)

    # --- the protocol ------------------------------------------------------------

    @translate_errors
    def complete(self, request: ChatRequest) -> ChatResult:
        response = self._converse(request)
        # Read before the rest: an answer found malformed is still charged for
        # the usage it reports.
        usage, usage_so_far = _usage_read(response.get("usage"))
        try:
            return self._answer_read(request, response, usage, usage_so_far)
        except MalformedAnswer as error:
            paid_usage_attach(error, usage, request.model)
            raise

    def _converse(self, request: ChatRequest) -> Any:
        """Converse's answer, as botocore read it. One botocore cannot read
        is a `MalformedAnswer` carrying as paid the usage it reported, which
        the before-parse hook read from it."""
        try:
            return self._send("converse", request)
        except Exception as exc:
            error = self.unreadable_answer(exc, streamed=False)
            if error is None:
                raise
        # Raised outside the except block: no botocore exception as context.
        raise paid_usage_attach(error, _answer_usage.get(), request.model)

    def _answer_read(
        self,
        request: ChatRequest,
        response: Any,
        usage: Usage | None,
        usage_so_far: Usage | None,
    ) -> ChatResult:
        """The result of a Converse answer whose usage was read."""
        stop_reason = optional_text(response.get("stopReason"), LABEL, "its stopReason")
        self._refuse_failed_answer(stop_reason, usage=usage, model=request.model)
        output = required_object(response.get("output"), LABEL, "its output")
        message = required_object(member(output, "message"), LABEL, "its output message")
        blocks = member(message, "content")
        if blocks is None:
            raise malformed_answer(LABEL, "its output message has no content")
        own_stops = local_stops(request.stop)
        finish_reason = _FINISH_REASONS.get(stop_reason or "", "stop")
        text = ""
        tool_calls: list[ToolCall] = []
        for block in optional_list(blocks, LABEL, "its content field"):
            block = required_object(block, LABEL, "a content block")
            if "text" in block:
                text += _required_text(block["text"], "a text block's text")
                cut = stop_position(text, own_stops)
                if cut is not None:
                    # What followed the stop sequence would not have been generated.
                    text, finish_reason = text[:cut], "stop"
                    break
            elif "toolUse" in block:
                tool_use = required_object(block["toolUse"], LABEL, "a toolUse block")
                call_id, name = _tool_use_identity(tool_use)
                arguments = tool_use.get("input")
                if arguments is not None and not isinstance(arguments, dict):
                    raise malformed_answer(
                        LABEL, f"a toolUse block's input is {json_kind(arguments)}, not an object"
                    )
                tool_calls.append(
                    ToolCall(id=call_id, name=name, arguments=arguments_dump(arguments))
                )
        estimated = usage is None
        if estimated:
            # No usage, a figure that is no count (then none is trusted), or
            # no output figure: estimated rather than billed as nothing.
            usage = self.answer_usage_estimate(request, text, tool_calls, usage_so_far)
        return ChatResult(
            content=text,
            usage=usage,
            model=request.model,
            finish_reason=finish_reason,
            tool_calls=tool_calls,
            usage_estimated=estimated,
        )

    @translate_stream_errors
    def stream(
        self, request: ChatRequest, *, cut: StreamCut | None = None
    ) -> Iterator[StreamChunk]:
        response = self._send("converse_stream", request)
        events = response["stream"]
        cut = cut or StreamCut()
        stop_reason: str | None = None
        # The usage of the closing metadata (None: none, or none usable), and
        # what it says of the prompt when its output figure is missing.
        usage: Usage | None = None
        usage_so_far: Usage | None = None
        tools: dict[int, dict[str, str]] = {}
        own_stops = local_stops(request.stop)
        # Text not yielded yet because it may be the start of a local stop sequence.
        held = ""
        stopped = False
        try:
            with cut.holding(_event_stream_socket(events)):
                for event in self._events_read(events):
                    event = required_object(event, LABEL, "an event of it")
                    if "contentBlockStart" in event:
                        start = required_object(
                            event["contentBlockStart"], LABEL, "a contentBlockStart event"
                        )
                        begun = optional_object(
                            start.get("start"), LABEL, "a contentBlockStart event's start"
                        )
                        tool_use = optional_object(
                            member(begun, "toolUse"), LABEL, "a contentBlockStart event's toolUse"
                        )
                        if tool_use:
                            call_id, name = _tool_use_identity(tool_use)
                            tools[_block_index(start)] = {
                                "id": call_id,
                                "name": name,
                                "arguments": "",
                            }
                            yield StreamChunk(unseen_text=name, model=request.model)
                    elif "contentBlockDelta" in event:
                        block = required_object(
                            event["contentBlockDelta"], LABEL, "a contentBlockDelta event"
                        )
                        delta = required_object(
                            block.get("delta"), LABEL, "a contentBlockDelta event's delta"
                        )
                        text = optional_text(delta.get("text"), LABEL, "a text delta")
                        reasoning = optional_object(
                            delta.get("reasoningContent"), LABEL, "a reasoning delta"
                        )
                        reasoning_text = optional_text(
                            member(reasoning, "text"), LABEL, "a reasoning delta's text"
                        )
                        if text:
                            ready, held, stopped = held_text_split(held + text, own_stops)
                            if stopped:
                                break
                            if ready:
                                yield StreamChunk(text=ready, model=request.model)
                        elif reasoning_text:
                            # Billed output the caller does not read: counted if
                            # the stream ends before its usage arrives.
                            yield StreamChunk(unseen_text=reasoning_text, model=request.model)
                        elif "toolUse" in delta:
                            tool_delta = optional_object(delta["toolUse"], LABEL, "a toolUse delta")
                            call = tools.setdefault(
                                _block_index(block), {"id": "", "name": "", "arguments": ""}
                            )
                            piece = optional_text(
                                member(tool_delta, "input"), LABEL, "a toolUse delta's input"
                            )
                            if piece:
                                call["arguments"] += piece
                                yield StreamChunk(unseen_text=piece, model=request.model)
                    elif "messageStop" in event:
                        message_stop = required_object(
                            event["messageStop"], LABEL, "a messageStop event"
                        )
                        stop_reason = (
                            optional_text(message_stop.get("stopReason"), LABEL, "its stopReason")
                            or "end_turn"
                        )
                    elif "metadata" in event:
                        metadata = required_object(event["metadata"], LABEL, "a metadata event")
                        usage, usage_so_far = _usage_read(metadata.get("usage"))
        except MalformedAnswer as error:
            # An event malformed after the metadata: the answer is lost, but
            # the provider reported, and charges, its usage.
            paid_usage_attach(error, usage, request.model)
            raise
        finally:
            events.close()
        if held:
            yield StreamChunk(text=held, model=request.model)
        if stopped:
            # Closing the stream ended the generation there; its usage, which
            # the closing metadata would have brought, is left to estimate.
            stop_reason, usage, usage_so_far = "stop_sequence", None, None
        elif stop_reason is None:
            raise UpstreamUnavailable("The bedrock stream ended before the answer finished.")
        self._refuse_failed_answer(stop_reason, usage=usage, model=request.model)
        tool_calls = [
            ToolCall(id=call["id"], name=call["name"], arguments=call["arguments"] or "{}")
            for _, call in sorted(tools.items())
        ]
        yield StreamChunk(
            model=request.model,
            finish_reason=_FINISH_REASONS.get(stop_reason, "stop"),
            tool_calls=tool_calls or None,
            usage=usage,
            usage_so_far=usage_so_far,
        )

    def _events_read(self, events: Any) -> Iterator[Any]:
        """A ConverseStream's events. An event botocore cannot read raises its
        `MalformedAnswer` here (so that the usage reported before it can be
        attached), except once the answer stopped (its messageStop came): it
        is then the closing metadata, whose usage botocore reads with int(),
        and it ends the events, the usage estimated rather than the whole
        answer lost."""
        stopped = False
        iterator = iter(events)
        while True:
            try:
                event = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                unreadable = self.unreadable_answer(exc, streamed=True)
                if unreadable is None:
                    raise
                if stopped:
                    return
            else:
                stopped = stopped or (isinstance(event, dict) and "messageStop" in event)
                yield event
                continue
            # Raised outside the except block: no botocore exception as context.
            raise unreadable

    @translate_errors
    def list_models(self) -> list[str]:
        self._require_credentials()
        response = self._control_client.list_foundation_models(byOutputModality="TEXT")
        return sorted(summary["modelId"] for summary in response.get("modelSummaries") or ())

    def close(self) -> None:
        with self._lock:
            clients = [*self._runtime_clients.values(), self._control_client]
            self._runtime_clients.clear()
        for client in clients:
            client.close()

    # --- errors ------------------------------------------------------------------

    def _refuse_failed_answer(
        self, stop_reason: str | None, *, usage: Usage | None = None, model: str = ""
    ) -> None:
        """The `usage` reported for a failed answer (Converse's, ConverseStream's
        metadata) is what the provider charges for."""
        if stop_reason in _FAILED_STOP_REASONS:
            raise failed_answer_error(
                f"bedrock stopped the answer with an error ({stop_reason}).", usage, model
            )

    def unreadable_answer(self, exc: Exception, *, streamed: bool) -> ProviderError | None:
        if isinstance(exc, self.vendor_errors) or not (
            isinstance(exc, ResponseParserError | EventStreamParserError)
            or _raised_reading_answer(exc)
        ):
            return None
        what = "an event of it" if streamed else "it"
        return malformed_answer(LABEL, f"{what} could not be read ({type(exc).__name__})")

    def provider_error(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, ClientError):
            return self._client_error(exc)
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
            return ProviderTimeout("bedrock did not answer in time.")
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            return ProviderTimeout("bedrock did not answer in time.")
        if isinstance(exc, NoCredentialsError):
            return ProviderAuthenticationError("bedrock has no AWS credentials to sign with.")
        if isinstance(exc, ParamValidationError):
            return ProviderBadRequest(self.scrub(f"bedrock refused the request: {exc}"))
        return UpstreamUnavailable(self.scrub(connection_failure("bedrock", exc)))

    def _client_error(self, exc: ClientError) -> ProviderError:
        error = exc.response.get("Error") or {}
        metadata = exc.response.get("ResponseMetadata") or {}
        code = str(error.get("Code") or "")
        status = metadata.get("HTTPStatusCode")
        said = f"{code}: {error.get('Message') or 'no message'}"
        # In-stream exceptions arrive without an HTTP status of their own.
        prefix = f"bedrock answered {status}" if status else "bedrock failed mid-answer"
        message = self.scrub(f"{prefix} {said}")
        options = {
            "status_code": status,
            "retry_after": retry_after_from_headers(metadata.get("HTTPHeaders")),
        }
        lowered = code.lower()
        if lowered in _AUTH_CODES:
            return ProviderAuthenticationError(message, **options)
        error_class = _CODE_ERRORS.get(lowered)
        if error_class is ProviderBadRequest and _ACCOUNT_REFUSALS.search(message):
            return ProviderPermissionError(message, **options)
        if error_class is ProviderBadRequest and message_says_context_too_long(message):
            return ContextTooLong(message, **options)
        if error_class is not None:
            return error_class(message, **options)
        return error_for_status(status, message, code=code, retry_after=options["retry_after"])


def bedrock_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation without system messages, as Converse content blocks."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "system":
            continue
        if role == "tool":
            text = content_text(message.get("content"))
            result = {
                "toolUseId": message.get("tool_call_id") or "",
                # A blank text block is refused inside a tool result too.
                "content": [{"text": text}] if has_visible_text(text) else [],
            }
            converted.append({"role": "user", "content": [{"toolResult": result}]})
            continue
        if role not in ("user", "assistant"):
            raise ProviderBadRequest(f"Messages cannot have the role “{role}”.")
        blocks = _content_blocks(message.get("content"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            name = function.get("name") or ""
            tool_use = {
                "toolUseId": call.get("id") or "",
                "name": name,
                "input": tool_arguments_parse(function.get("arguments"), name),
            }
            blocks.append({"toolUse": tool_use})
        converted.append({"role": role, "content": blocks})
    return conversation_turns(
        converted,
        text_block=lambda text: {"text": text},
        is_tool_result=lambda block: "toolResult" in block,
    )


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if has_visible_text(part.get("text")):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            image = image_parse(image_url_of(part))
            if image is None:
                raise ProviderBadRequest(
                    "Bedrock takes images as base64 data URLs, not links to fetch."
                )
            image_format = _IMAGE_FORMATS.get(image.media_type)
            if image_format is None:
                raise ProviderBadRequest(
                    f"Bedrock takes PNG, JPEG, GIF or WebP images, not {image.media_type}."
                )
            blocks.append({"image": {"format": image_format, "source": {"bytes": image.raw()}}})
        else:
            raise ProviderBadRequest(f"Message parts of type “{kind}” are not supported.")
    return blocks


def _is_claude(model: str) -> bool:
    """Whether a model id (or inference profile ARN) names a Claude model: from
    Sonnet 4.5 on, they refuse (400) temperature and top_p together, so a
    request giving both sends them the temperature only, as Anthropic advises."""
    return "claude" in model.lower()


def _model_limit(exc: ClientError) -> int | None:
    """The output limit a refusal of maxTokens names, if it is one."""
    error = exc.response.get("Error") or {}
    if str(error.get("Code") or "").lower() != "validationexception":
        return None
    match = _MODEL_LIMIT.search(str(error.get("Message") or ""))
    return int(match.group(1)) if match else None


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any(
        "toolUse" in block or "toolResult" in block
        for message in messages
        for block in message["content"]
    )


def _bedrock_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool_function(tool)
    spec: dict[str, Any] = {
        "name": function["name"],
        "inputSchema": {"json": function["parameters"]},
    }
    if function["description"]:
        spec["description"] = function["description"]
    return {"toolSpec": spec}


def _usage_figures(usage: Any) -> dict[str, int]:
    """The figures a Converse usage object reports (missing and null ones left
    out), with `oneHourTokens`, the cache writes its `cacheDetails` say are
    kept for an hour. Raises `UnusableUsage` when one is no count of tokens."""
    figures = token_figures(usage, _USAGE_FIGURES)
    details = member(usage, "cacheDetails")
    if details is not None and not isinstance(details, list):
        raise UnusableUsage
    one_hour = 0
    for detail in details or ():
        tokens = token_figures(detail, ("inputTokens",)).get("inputTokens", 0)
        if member(detail, "ttl") == "1h":
            one_hour += tokens
    figures["oneHourTokens"] = one_hour
    return figures


def _usage_read(usage: Any) -> tuple[Usage | None, Usage | None]:
    """The usage a Converse answer reports, and what it reports of the prompt
    when it reports no output figure: (usage, None) when the figures are all
    there; (None, the prompt's) when `outputTokens` is missing, so that the
    output is estimated, not taken for 0; (None, None) when there is no usage
    to go by (none, no input figure, or a figure that is no count)."""
    try:
        figures = _usage_figures(usage)
    except UnusableUsage:
        return None, None
    if "inputTokens" not in figures:
        return None, None
    cache_read = figures.get("cacheReadInputTokens", 0)
    cache_write = figures.get("cacheWriteInputTokens", 0)
    prompt = Usage(
        input_tokens=figures["inputTokens"] + cache_read + cache_write,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=min(figures["oneHourTokens"], cache_write),
    )
    if "outputTokens" not in figures:
        return None, prompt
    return replace(prompt, output_tokens=figures["outputTokens"]), None


def _required_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise malformed_answer(LABEL, f"{what} is {json_kind(value)}, not text")
    return value


def _tool_use_identity(tool_use: Any) -> tuple[str, str]:
    """The id and name of a toolUse block; a call without a name is no call."""
    call_id = optional_text(member(tool_use, "toolUseId"), LABEL, "a toolUse block's id") or ""
    name = optional_text(member(tool_use, "name"), LABEL, "a toolUse block's name")
    if not name:
        raise malformed_answer(LABEL, "a toolUse block has no name")
    return call_id, name


def _block_index(event: Any) -> int:
    """The content block a stream event is about (the first when it names none)."""
    index = optional_index(member(event, "contentBlockIndex"), LABEL, "an event's block index")
    return index or 0
