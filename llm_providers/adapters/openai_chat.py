"""OpenAI Chat Completions through the openai SDK: OpenAI, Azure OpenAI and the
OpenAI-compatible presets (Gemini, Mistral, Together, Groq, Ollama, any base URL).

Usage arrives normalised already: `prompt_tokens` includes the cached tokens
(`prompt_tokens_details.cached_tokens`) and `completion_tokens` the reasoning
tokens (`completion_tokens_details.reasoning_tokens`). Streams ask for
`stream_options={"include_usage": True}` (Mistral, which refuses the field,
sends usage unasked; Azure API versions before 2024-09-01 refuse it and send
none, so the usage is estimated) and read the usage chunk at the end. The
answer's `service_tier` (every chunk of a stream names it) goes with the
usage, as the tier sets the price.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import string
import struct
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx2
import openai

from .answers import (
    UnusableUsage,
    answer_object,
    answered_model,
    json_kind,
    member,
    optional_index,
    optional_list,
    optional_object,
    optional_text,
    required_object,
    token_figures,
)
from .base import (
    Adapter,
    StreamCut,
    StreamEnd,
    estimate_text_tokens,
    httpx_response_socket,
    translate_errors,
    translate_stream_errors,
)
from .content import JSON_MODE_INSTRUCTION, arguments_dump, content_text
from .errors import (
    MalformedAnswer,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    UpstreamUnavailable,
    connection_failure,
    error_for_status,
    failed_answer_error,
    is_redirect,
    malformed_answer,
    paid_usage_attach,
    redirect_refused,
    retry_after_from_headers,
)
from .types import (
    AdapterSettings,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Message,
    StreamChunk,
    ToolCall,
    Usage,
)

AZURE = "azure_openai"
# Servers that take no key (Ollama, many self-hosted endpoints) still get a
# bearer header: the SDK refuses to run without a key and would otherwise
# read OPENAI_API_KEY from this process's environment and send it there.
PLACEHOLDER_API_KEY = "no-key-configured"
# OpenAI and Azure reasoning models refuse `max_tokens`; the other presets
# speak the older parameter name.
_MAX_COMPLETION_TOKENS_TYPES = frozenset({"openai", AZURE})
# Azure API versions before this one refuse `max_completion_tokens`
# ("Unrecognized request argument supplied"). Versions are dates, so they
# compare as text: "2024-08-01-preview" < "2024-09-01-preview" < "2024-10-21".
_AZURE_MAX_COMPLETION_TOKENS_SINCE = "2024-09-01"
# The same versions refuse `stream_options` as well; their streams report no
# usage, which is then estimated.
_AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"
# Mistral refuses `stream_options` (422, extra fields forbidden) and sends the
# stream's usage in its last chunk unasked.
_USAGE_UNASKED_TYPES = frozenset({"mistral"})
# Finish reasons compatible servers give besides OpenAI's own: Together says
# `eos` for the end of a sequence, Mistral `model_length` for an answer cut at
# the end of the context window, older servers `function_call` for a tool
# call. Anything unknown reads as `stop`.
_FINISH_REASONS = {
    "stop": "stop",
    "eos": "stop",
    "length": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
# Inputs per embeddings request where a preset takes fewer than the 2,048 a
# call may carry: Gemini refuses more than 100 ("at most 100 requests can be
# in one batch"). Larger calls are sent in batches of this size.
_EMBED_BATCH_SIZES = {"gemini": 100}
# Mistral ends an answer whose generation failed part-way with this reason.
_FINISH_REASON_ERROR = "error"
# Mistral refuses (400) a tool call id that is not 9 letters or digits.
_MISTRAL_TOOL_CALL_ID_LENGTH = 9
_MISTRAL_TOOL_CALL_ID = re.compile(rf"[A-Za-z0-9]{{{_MISTRAL_TOOL_CALL_ID_LENGTH}}}")
_BASE62 = string.digits + string.ascii_letters
# Sampling parameters that OpenAI's reasoning models (o-series, GPT-5) refuse
# other than at their defaults (400 `unsupported_value` or
# `unsupported_parameter`, naming the parameter). They are hints, as on
# Anthropic, which takes none: such a request is sent again without them, and
# later requests for that model leave them out. Stop sequences, which change
# the answer, are never left out.
_OPTIONAL_PARAMETERS = frozenset({"temperature", "top_p"})
_UNSUPPORTED_CODES = frozenset({"unsupported_value", "unsupported_parameter"})
# Gemini 3 answers 400 to a tool call step (an assistant message's tool
# calls) whose first call does not bring back the thought signature the model
# gave with it (`extra_content.google.thought_signature`). A step without one
# (begun on another provider, or whose caller kept none) gets the value
# Google documents for histories without signatures, which skips the check
# (and, Google warns, may lower the quality of the answer).
GEMINI_SKIP_THOUGHT_SIGNATURE = "skip_thought_signature_validator"
# The presets to which a tool call's `extra_content` is sent back. Others do
# not get it: it is data their servers did not give, OpenAI refuses tool call
# fields it does not know and Mistral any field it does not know (422).
_EXTRA_CONTENT_TYPES = frozenset({"gemini"})
# Gemini's models list names each model "models/<id>"; its chat endpoint
# documents the bare id, which is also the name prices are known by.
_GEMINI_MODEL_PREFIX = "models/"
# A google.protobuf.Duration in JSON: seconds with up to nine decimals, "s".
_GOOGLE_DURATION = re.compile(r"(\d+(?:\.\d{1,9})?)s")


class OpenAIChatAdapter(Adapter):
    protocol = "openai_chat"
    supports_embeddings = True
    vendor_errors = (openai.OpenAIError, httpx2.HTTPError)

    def __init__(self, settings: AdapterSettings):
        super().__init__(settings)
        self._client = self._client_build()
        # Model → the optional parameters it refused; replaced, never mutated
        # (the adapter serves concurrent calls).
        self._refused_parameters: dict[str, frozenset[str]] = {}

    def _client_build(self) -> openai.OpenAI:
        options = self.settings.options
        common: dict[str, Any] = {
            "api_key": self.settings.api_key or PLACEHOLDER_API_KEY,
            "max_retries": 0,
            "timeout": self._timeout(self.timeout),
            # The SDK follows redirects by default, to wherever they lead.
            "http_client": openai.DefaultHttpxClient(follow_redirects=False),
        }
        if self.settings.provider_type == AZURE:
            if not options.get("api_version"):
                raise ProviderBadRequest("Azure OpenAI needs the api_version option.")
            if not self.settings.base_url:
                raise ProviderBadRequest("Azure OpenAI needs the resource endpoint as base URL.")
            return openai.AzureOpenAI(
                azure_endpoint=self.settings.base_url,
                api_version=options["api_version"],
                **common,
            )
        client = openai.OpenAI(base_url=self.settings.base_url or None, **common)
        # Only the config's own organization and project: the SDK would
        # otherwise take OPENAI_ORG_ID / OPENAI_PROJECT_ID from this process's
        # environment and send them with every tenant's requests.
        client.organization = options.get("organization") or None
        client.project = options.get("project") or None
        return client

    # --- request -----------------------------------------------------------------

    def _timeout(self, seconds: float) -> openai.Timeout:
        return openai.Timeout(seconds, connect=min(self.connect_timeout, seconds))

    def wire_model(self, model: str) -> str:
        """The model name sent: on Azure, the deployment that serves `model`."""
        if self.settings.provider_type != AZURE:
            return model
        options = self.settings.options
        deployments = options.get("deployments") or {}
        return deployments.get(model) or options.get("deployment") or model

    def _max_tokens_name(self) -> str:
        provider_type = self.settings.provider_type
        if provider_type not in _MAX_COMPLETION_TOKENS_TYPES:
            return "max_tokens"
        if provider_type == AZURE and self._azure_api_version_before(
            _AZURE_MAX_COMPLETION_TOKENS_SINCE
        ):
            return "max_tokens"
        return "max_completion_tokens"

    def _azure_api_version_before(self, version: str) -> bool:
        return str(self.settings.options.get("api_version") or "") < version

    def _asks_stream_usage(self) -> bool:
        if self.settings.provider_type in _USAGE_UNASKED_TYPES:
            return False
        return not (self._is_azure and self._azure_api_version_before(_AZURE_STREAM_OPTIONS_SINCE))

    def _chat_arguments(self, request: ChatRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.wire_model(request.model),
            "messages": _messages_for(request, self.settings.provider_type),
            "timeout": self._timeout(self.call_timeout(request.timeout)),
        }
        if request.max_tokens is not None:
            arguments[self._max_tokens_name()] = request.max_tokens
        if request.temperature is not None:
            arguments["temperature"] = request.temperature
        if request.top_p is not None:
            arguments["top_p"] = request.top_p
        if request.stop:
            arguments["stop"] = list(request.stop)
        if request.json_mode:
            arguments["response_format"] = {"type": "json_object"}
        if request.tools:
            arguments["tools"] = request.tools
        return arguments

    def _create(self, request: ChatRequest, arguments: dict[str, Any], **options: Any) -> Any:
        """`chat.completions.create`, leaving out the optional parameters the
        model refuses: those it refused before, and any it refuses now."""
        for _ in range(len(_OPTIONAL_PARAMETERS) + 1):
            refused = self._refused_parameters.get(request.model, frozenset())
            sent = {name: value for name, value in arguments.items() if name not in refused}
            try:
                return self._client.chat.completions.create(**sent, **options)
            except openai.BadRequestError as exc:
                parameter = exc.param if exc.code in _UNSUPPORTED_CODES else None
                if parameter not in _OPTIONAL_PARAMETERS or parameter not in sent:
                    raise
            self._refused_parameters = {
                **self._refused_parameters,
                request.model: refused | {parameter},
            }
        raise AssertionError("unreachable: each pass leaves out one more parameter")

    # --- the protocol ------------------------------------------------------------

    @translate_errors
    def complete(self, request: ChatRequest) -> ChatResult:
        label = self.settings.provider_type
        response = answer_object(self._create(request, self._chat_arguments(request)), label)
        # Read before the rest: an answer found malformed is still charged for
        # the usage it reports.
        model = answered_model(member(response, "model"), request.model)
        usage, usage_so_far = usage_from_openai(
            member(response, "usage"), member(response, "service_tier")
        )
        try:
            return self._answer_read(request, response, model, usage, usage_so_far)
        except MalformedAnswer as error:
            paid_usage_attach(error, usage, model)
            raise

    def _answer_read(
        self,
        request: ChatRequest,
        response: Any,
        model: str,
        usage: Usage | None,
        usage_so_far: Usage | None,
    ) -> ChatResult:
        """The result of a non-streamed answer whose model and usage were read."""
        label = self.settings.provider_type
        choices = optional_list(member(response, "choices"), label, "its choices field")
        if not choices:
            raise malformed_answer(label, "it has no choices")
        choice = required_object(choices[0], label, "its first choice")
        finish_reason = optional_text(member(choice, "finish_reason"), label, "its finish_reason")
        self._refuse_failed_answer(finish_reason, usage=usage, model=model)
        message = required_object(member(choice, "message"), label, "its message")
        refusal = _refusal_text(message)
        content = _answer_text(member(message, "content"), label) or refusal
        tool_calls = _answered_tool_calls(member(message, "tool_calls"), label)
        estimated = usage is None
        if estimated:
            # Some compatible servers omit usage, or send figures that are no
            # counts: an estimate beats billing nothing, or garbage.
            usage = self.answer_usage_estimate(request, content, tool_calls, usage_so_far)
        return ChatResult(
            content=content,
            usage=usage,
            model=model,
            finish_reason=(
                "content_filter"
                if refusal
                else finish_reason_normalise(finish_reason, bool(tool_calls))
            ),
            tool_calls=tool_calls,
            usage_estimated=estimated,
        )

    @translate_stream_errors
    def stream(
        self, request: ChatRequest, *, cut: StreamCut | None = None
    ) -> Iterator[StreamChunk]:
        arguments = self._chat_arguments(request)
        if self._asks_stream_usage():
            arguments["stream_options"] = {"include_usage": True}
        response = self._create(request, arguments, stream=True)
        label = self.settings.provider_type
        cut = cut or StreamCut()
        model = request.model
        finish_reason: str | None = None
        # The usage reported (None: none, or none usable), and what it says
        # of the prompt when its output figure is missing.
        usage: Usage | None = None
        usage_so_far: Usage | None = None
        service_tier: str | None = None
        refused = False
        calls = _StreamedToolCalls(label)
        end = StreamEnd()
        try:
            with response, cut.holding(httpx_response_socket(response.response)):
                for chunk in self.events_read(response, cut=cut, end=end):
                    chunk = required_object(chunk, label, "a chunk of it")
                    model = answered_model(member(chunk, "model"), model)
                    tier = member(chunk, "service_tier")
                    service_tier = tier if isinstance(tier, str) and tier else service_tier
                    reported = member(chunk, "usage")
                    if reported is None:
                        reported = _groq_usage(chunk)
                    if reported is not None:
                        usage, usage_so_far = usage_from_openai(reported, service_tier)
                    # Some compatible servers send "choices": null beside their usage.
                    choices = optional_list(
                        member(chunk, "choices"), label, "a chunk's choices field"
                    )
                    for choice in choices[:1]:
                        choice = required_object(choice, label, "a chunk's choice")
                        delta = optional_object(member(choice, "delta"), label, "a chunk's delta")
                        for call in optional_list(
                            member(delta, "tool_calls"), label, "a chunk's tool_calls field"
                        ):
                            if piece := calls.add(call):
                                yield StreamChunk(unseen_text=piece, model=model)
                        reason = optional_text(
                            member(choice, "finish_reason"), label, "a chunk's finish_reason"
                        )
                        if reason:
                            finish_reason = reason
                        text = _answer_text(member(delta, "content"), label)
                        if refusal := _refusal_text(delta):
                            refused = True
                            text += refusal
                        if text:
                            yield StreamChunk(text=text, model=model)
                    # Once finished with its usage reported, only `[DONE]` follows.
                    end.whole = finish_reason is not None and usage is not None
        except MalformedAnswer as error:
            # A chunk malformed after the usage chunk (or beside it): the
            # answer is lost, but the provider reported, and charges, that usage.
            paid_usage_attach(error, usage, model)
            raise
        if finish_reason is None:
            # Unfinished, so not an answer; the usage the server reported for
            # it (its usage chunk came) is what it charges.
            raise failed_answer_error(
                f"The {self.settings.provider_type} stream ended before the answer finished.",
                usage,
                model,
            )
        self._refuse_failed_answer(finish_reason, usage=usage, model=model)
        tool_calls = calls.assembled()
        yield StreamChunk(
            model=model,
            finish_reason=(
                "content_filter"
                if refused
                else finish_reason_normalise(finish_reason, bool(tool_calls))
            ),
            tool_calls=tool_calls or None,
            usage=usage,
            usage_so_far=usage_so_far,
        )

    @translate_errors
    def embed(self, request: EmbedRequest) -> EmbedResult:
        label = self.settings.provider_type
        inputs = list(request.inputs)
        size = _EMBED_BATCH_SIZES.get(label) or len(inputs) or 1
        vectors: list[list[float]] = []
        dimensions = request.expected_dimensions
        input_tokens = 0
        estimated = False
        model = ""
        for start in range(0, len(inputs), size):
            batch = inputs[start : start + size]
            failure: ProviderError | None = None
            # Read before the vectors: a batch whose vectors are refused is
            # still charged for the tokens it reports (0: none usable).
            reported = 0
            batch_model = ""
            try:
                timeout = self.batch_timeout(request, start)
                response = self._client.embeddings.create(
                    model=self.wire_model(request.model),
                    input=batch,
                    encoding_format="float",
                    timeout=self._timeout(timeout),
                )
                response = answer_object(response, label)
                reported = _embed_prompt_tokens(response)
                batch_model = answered_model(member(response, "model"), "")
                batch_vectors = self._embedded_vectors(
                    member(response, "data"), len(batch), dimensions
                )
            except self.vendor_errors as exc:
                failure = self.provider_error(exc)
            except ProviderError as exc:
                failure = exc
            except Exception as exc:
                failure = self.unreadable_answer(exc, streamed=False)
                if failure is None:
                    raise
            if failure is not None:
                # Raised outside the except block: no SDK exception as context.
                raise _embed_failure_paid(
                    failure,
                    vectors=vectors,
                    usage=Usage(input_tokens=input_tokens),
                    estimated=estimated,
                    model=model or batch_model or request.model,
                    refused_tokens=reported,
                )
            vectors += batch_vectors
            # Every batch's vectors have the dimensions of the first one's.
            dimensions = dimensions or len(batch_vectors[0])
            if reported:
                input_tokens += reported
            else:
                input_tokens += sum(estimate_text_tokens(text) for text in batch)
                estimated = True
            model = model or batch_model
        return EmbedResult(
            vectors=vectors,
            usage=Usage(input_tokens=input_tokens),
            model=model or request.model,
            usage_estimated=estimated,
        )

    def _embedded_vectors(
        self, data: Any, expected: int, dimensions: int | None
    ) -> list[list[float]]:
        """One vector per input, in input order, from an embeddings answer.

        Items are placed by their `index`; a server that numbers none of them
        answers in input order. An answer that is not one vector per input
        (too few, an index twice or missing) is refused: it would pair texts
        with the vectors of other texts. So is one whose vectors are not all
        of `dimensions` (None: of the first one's), not numbers, or empty:
        no vector index can hold them together.
        """
        label = self.settings.provider_type
        items = [
            required_object(item, label, "an embedding")
            for item in optional_list(data, label, "its data field")
        ]
        indexes = [
            optional_index(member(item, "index"), label, "an embedding's index") for item in items
        ]
        if all(index is not None for index in indexes):
            if sorted(indexes) != list(range(expected)):
                raise malformed_answer(
                    label,
                    f"its embeddings do not match the {expected} inputs "
                    f"(indexes {sorted(indexes)[:10]})",
                )
            items = [item for _, item in sorted(zip(indexes, items, strict=True))]
        elif len(items) != expected:
            raise malformed_answer(label, f"it has {len(items)} embeddings for {expected} inputs")
        vectors = [_embedding_vector(member(item, "embedding"), label) for item in items]
        for vector in vectors:
            dimensions = dimensions or len(vector)
            if len(vector) != dimensions:
                raise malformed_answer(
                    label,
                    f"an embedding has {len(vector)} dimensions, not the {dimensions} "
                    "of the others",
                )
        return vectors

    @translate_errors
    def list_models(self) -> list[str]:
        listed = [m.id for m in self._client.models.list(timeout=self._timeout(self.timeout))]
        if self.settings.provider_type == "gemini":
            listed = [model.removeprefix(_GEMINI_MODEL_PREFIX) for model in listed]
        listed.sort()
        deployments = self.settings.options.get("deployments") if self._is_azure else None
        # On Azure a config serves the models its deployments map; listing
        # checked the key, the mapping says what can be called.
        return sorted(deployments) if deployments else listed

    def close(self) -> None:
        self._client.close()

    @property
    def _is_azure(self) -> bool:
        return self.settings.provider_type == AZURE

    # --- errors ------------------------------------------------------------------

    def _refuse_failed_answer(
        self, finish_reason: str | None, *, usage: Usage | None = None, model: str = ""
    ) -> None:
        """A choice that finished with `error` failed part-way: it is not an answer.
        The `usage` reported for it (the answer's, a stream's closing figures)
        is what the provider charges for."""
        if finish_reason == _FINISH_REASON_ERROR:
            raise failed_answer_error(
                f"{self.settings.provider_type} stopped the answer with an error.", usage, model
            )

    def unreadable_answer(self, exc: Exception, *, streamed: bool) -> ProviderError | None:
        # The SDK decodes a body (a stream's event) that its server sent as
        # JSON with json.loads.
        if not isinstance(exc, json.JSONDecodeError):
            return None
        problem = "a chunk of it is not JSON" if streamed else "it is not JSON"
        return malformed_answer(self.settings.provider_type, problem)

    def provider_error(self, exc: BaseException) -> ProviderError:
        label = self.settings.provider_type
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return ProviderTimeout(f"{label} did not answer in time.")
        if isinstance(exc, openai.APIStatusError) and is_redirect(exc.status_code):
            return redirect_refused(label, exc.status_code)
        if isinstance(exc, openai.APIStatusError):
            message = self.scrub(f"{label} answered {exc.status_code}: {_vendor_message(exc)}")
            return error_for_status(
                exc.status_code,
                message,
                code=exc.code or _gemini_reason(exc),
                retry_after=_retry_after(exc),
            )
        if isinstance(exc, openai.APIConnectionError | httpx2.HTTPError):
            return UpstreamUnavailable(self.scrub(connection_failure(label, exc)))
        if isinstance(exc, openai.APIError):
            # An error event inside a stream: no HTTP status to go by.
            code = (exc.code or exc.type or "").lower()
            message = self.scrub(f"{label} failed mid-answer: {_vendor_message(exc)}")
            if "rate_limit" in code:
                return ProviderRateLimited(message)
            return error_for_status(None, message, code=code)
        return UpstreamUnavailable(self.scrub(f"{label} failed: {exc}"))


def _messages_for(request: ChatRequest, provider_type: str) -> list[Message]:
    """The messages sent: as given, except that JSON mode needs one of them to
    mention JSON (OpenAI and Azure refuse `response_format` json_object (400)
    when none does; the instruction is then put first), that tool calls carry
    their `extra_content` only to the presets that take it back, and that
    Mistral gets tool call ids it accepts and Gemini a thought signature on
    each tool call step. The caller's list is left as it was."""
    keep_extra_content = provider_type in _EXTRA_CONTENT_TYPES
    messages = [
        _with_extra_content(message, keep=keep_extra_content) for message in request.messages
    ]
    if provider_type == "mistral":
        messages = [_with_mistral_tool_call_ids(message) for message in messages]
    if provider_type == "gemini":
        messages = [_with_thought_signature(message) for message in messages]
    if not request.json_mode or any(
        "json" in content_text(message.get("content")).lower() for message in messages
    ):
        return messages
    return [{"role": "system", "content": JSON_MODE_INSTRUCTION}, *messages]


def _with_extra_content(message: Message, *, keep: bool) -> Message:
    """An assistant message whose tool calls carry `extra_content` only when
    `keep` and when it is data: a null (a call answered without any, sent
    back as the API returned it) is left out everywhere."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not any(
        isinstance(call, dict) and "extra_content" in call for call in calls
    ):
        return message
    sent = []
    for call in calls:
        if (
            isinstance(call, dict)
            and "extra_content" in call
            and (not keep or call["extra_content"] is None)
        ):
            call = {name: value for name, value in call.items() if name != "extra_content"}
        sent.append(call)
    return {**message, "tool_calls": sent}


def _extra_content(call: Any) -> dict[str, Any] | None:
    """The `extra_content` object of a tool call answered (the SDK keeps
    fields it does not know as attributes), or None."""
    extra = member(call, "extra_content")
    return extra if isinstance(extra, dict) and extra else None


def _answered_tool_calls(calls: Any, label: str) -> list[ToolCall]:
    """The function calls of an answer's message (calls of other kinds are left out)."""
    tool_calls = []
    for call in optional_list(calls, label, "its tool_calls field"):
        call = required_object(call, label, "a tool call")
        function = optional_object(member(call, "function"), label, "a tool call's function")
        if function is None:
            continue
        name = optional_text(member(function, "name"), label, "a tool call's name")
        if not name:
            raise malformed_answer(label, "a tool call has no name")
        tool_calls.append(
            ToolCall(
                id=optional_text(member(call, "id"), label, "a tool call's id") or "",
                name=name,
                arguments=_tool_arguments(member(function, "arguments"), label),
                extra_content=_extra_content(call),
            )
        )
    return tool_calls


def _tool_arguments(arguments: Any, label: str) -> str:
    """A tool call's arguments as JSON text. Some compatible servers send the
    arguments object itself instead of its text."""
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, dict):
        return arguments_dump(arguments)
    raise malformed_answer(label, f"a tool call's arguments are {json_kind(arguments)}, not text")


def _merged(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`new` over `old`, objects within merged key by key."""
    merged = dict(old or {})
    for name, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            value = _merged(merged[name], value)
        merged[name] = value
    return merged


def _with_mistral_tool_call_ids(message: Message) -> Message:
    if message.get("role") == "tool" and isinstance(message.get("tool_call_id"), str):
        return {**message, "tool_call_id": _mistral_tool_call_id(message["tool_call_id"])}
    if message.get("tool_calls"):
        calls = [
            {**call, "id": _mistral_tool_call_id(call.get("id") or "")}
            for call in message["tool_calls"]
        ]
        return {**message, "tool_calls": calls}
    return message


def _with_thought_signature(message: Message) -> Message:
    """An assistant message whose tool calls carry no thought signature, with
    `GEMINI_SKIP_THOUGHT_SIGNATURE` on the first (Gemini checks the first call
    of each step)."""
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    if not calls or any(_thought_signature(call) for call in calls):
        return message
    first = calls[0]
    extra = first.get("extra_content") if isinstance(first.get("extra_content"), dict) else {}
    google = extra.get("google") if isinstance(extra.get("google"), dict) else {}
    signed = {
        **first,
        "extra_content": {
            **extra,
            "google": {**google, "thought_signature": GEMINI_SKIP_THOUGHT_SIGNATURE},
        },
    }
    return {**message, "tool_calls": [signed, *calls[1:]]}


def _thought_signature(call: Any) -> str | None:
    extra = call.get("extra_content") if isinstance(call, dict) else None
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _mistral_tool_call_id(call_id: str) -> str:
    """A tool call id as Mistral takes it: 9 letters or digits. Others (OpenAI's
    "call_...", Anthropic's "toolu_...") are mapped to one by a hash, so that a
    call and its result still name the same id."""
    if _MISTRAL_TOOL_CALL_ID.fullmatch(call_id):
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    characters = []
    for _ in range(_MISTRAL_TOOL_CALL_ID_LENGTH):
        number, digit = divmod(number, len(_BASE62))
        characters.append(_BASE62[digit])
    return "".join(characters)


def _answer_text(content: Any, label: str) -> str:
    """The text of an answer's content (of a message, or a stream's delta).
    Mistral's reasoning models send a list of chunks instead of a string:
    `{"type": "thinking", ...}` (left out, as every adapter leaves out
    reasoning, and so are other kinds) and `{"type": "text", "text": ...}`.
    Content of another shape (a number, an object, chunks without a type or
    a text chunk without text) is no answer."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise malformed_answer(label, f"its content is {json_kind(content)}, not text")
    texts = []
    for part in content:
        kind = member(part, "type")
        if not isinstance(kind, str):
            raise malformed_answer(label, "a part of its content has no type")
        if kind == "text":
            text = member(part, "text")
            if not isinstance(text, str):
                raise malformed_answer(label, "a text part of its content has no text")
            texts.append(text)
    return "".join(texts)


def _refusal_text(message: Any) -> str:
    """The refusal a model gave instead of an answer (`refusal` of an OpenAI
    message or stream delta), or ""."""
    refusal = member(message, "refusal")
    return refusal if isinstance(refusal, str) else ""


def finish_reason_normalise(reported: str | None, has_tool_calls: bool) -> str:
    """One of stop, length, tool_calls, content_filter. An answer that calls
    tools finished to call them, whatever the server says (Gemini and some
    compatible servers say `stop`)."""
    finish_reason = _FINISH_REASONS.get(reported or "", "stop")
    if has_tool_calls and finish_reason == "stop":
        return "tool_calls"
    return finish_reason


def usage_from_openai(usage: Any, service_tier: Any = None) -> tuple[Usage | None, Usage | None]:
    """The usage an answer reports, and what it reports of the prompt when
    it reports no output figure.

    OpenAI's usage already counts cached tokens in the prompt and reasoning in
    the output. `service_tier` is the tier the answer says served the call
    (`default`, `flex`, `priority`): a project's settings at OpenAI can make
    priority its default, which costs more, and genai-prices prices each tier
    apart. Some compatible servers (Gemini's thinking models among them)
    report the reasoning beside `completion_tokens` instead of inside it;
    their `total_tokens` then adds it once more, which gives it away.

    Returns (usage, None) when the figures are all there; (None, the prompt's
    figures) when `completion_tokens` is missing or null: the output is then
    estimated, not taken for 0; (None, None) when there is no usage to go by:
    none, no prompt figure, or a figure that is no count (text, a fraction,
    a negative or absurd number), which makes the whole object untrusted.
    """
    try:
        figures = token_figures(usage, ("prompt_tokens", "completion_tokens", "total_tokens"))
        cached = token_figures(
            member(usage, "prompt_tokens_details"), ("cached_tokens", "cache_write_tokens")
        )
        reasoning = token_figures(
            member(usage, "completion_tokens_details"), ("reasoning_tokens",)
        ).get("reasoning_tokens", 0)
    except UnusableUsage:
        return None, None
    input_tokens = figures.get("prompt_tokens")
    if input_tokens is None:
        return None, None
    prompt = Usage(
        input_tokens=input_tokens,
        cache_read_tokens=cached.get("cached_tokens", 0),
        cache_write_tokens=cached.get("cache_write_tokens", 0),
        service_tier=service_tier if isinstance(service_tier, str) else "",
    )
    output_tokens = figures.get("completion_tokens")
    if output_tokens is None:
        return None, prompt
    if reasoning and figures.get("total_tokens") == input_tokens + output_tokens + reasoning:
        output_tokens += reasoning
    return replace(prompt, output_tokens=output_tokens, reasoning_tokens=reasoning), None


def _embed_prompt_tokens(response: Any) -> int:
    """The input tokens an embeddings answer reports; 0 when it reports none.

    An embedding produces no tokens, so a `total_tokens` without
    `prompt_tokens` (some compatible servers) counts the input. Servers also
    leave `usage` out, or send nulls or zeros (Ollama versions that do not
    count the prompt): text is never free to embed, so none of these is a
    count, and neither is a figure that is no count of tokens.
    """
    try:
        figures = token_figures(member(response, "usage"), ("prompt_tokens", "total_tokens"))
    except UnusableUsage:
        return 0
    return figures.get("prompt_tokens") or figures.get("total_tokens") or 0


def _embed_failure_paid(
    failure: ProviderError,
    *,
    vectors: list[list[float]],
    usage: Usage,
    estimated: bool,
    model: str,
    refused_tokens: int,
) -> ProviderError:
    """`failure`, of a batch of an embedding call, carrying what the provider
    charges for: the batches answered before it (their `vectors` and
    `usage`), which a retry keeps, and the batch itself when its answer was
    refused (vectors not one per input, empty, not finite, of other
    dimensions) but reported `refused_tokens` (0: none usable). The batch
    then ended the attempt, so `usage` and it are the whole attempt's."""
    if vectors:
        failure.paid_usage = usage
        failure.paid_usage_estimated = estimated
        failure.paid_model = model
        failure.paid_vectors = vectors
        failure.paid_vectors_usage = usage
    if refused_tokens:
        paid_usage_attach(
            failure, replace(usage, input_tokens=usage.input_tokens + refused_tokens), model
        )
    return failure


def _embedding_vector(embedding: Any, label: str) -> list[float]:
    """A vector as floats. Servers that ignore `encoding_format` answer
    base64 of little-endian float32 values, as OpenAI does when asked for it.
    A vector that is empty or holds anything but finite numbers is refused."""
    vector: list[float] | None = None
    if isinstance(embedding, str):
        try:
            packed = base64.b64decode(embedding, validate=True)
        except binascii.Error:
            packed = b"?"
        if len(packed) % 4 == 0:
            vector = list(struct.unpack(f"<{len(packed) // 4}f", packed))
    elif isinstance(embedding, list) and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in embedding
    ):
        vector = [float(value) for value in embedding]
    if vector is None:
        raise malformed_answer(label, "an embedding is not a list of numbers")
    if not vector:
        raise malformed_answer(label, "an embedding is empty")
    if not all(math.isfinite(value) for value in vector):
        raise malformed_answer(label, "an embedding holds NaN or an infinity")
    return vector


def _groq_usage(chunk: Any) -> Any:
    """Groq reports stream usage in `x_groq.usage` of the last chunk (the SDK
    keeps fields it does not know as attributes)."""
    return member(member(chunk, "x_groq"), "usage")


class _StreamedToolCalls:
    """Streamed tool calls come in pieces keyed by index: id and name first, then
    fragments of the JSON arguments. Calls are kept in the order they start.

    Compatible servers bend the keying: Gemini sends each call whole and
    without an index (the first of a step with its thought signature in
    `extra_content`), Ollama each call whole with index 0 every time. A delta
    that brings an id other than that of the call its index (or, without an
    index, the latest call) points at starts the next call; a delta without
    an index continues the latest call.
    """

    def __init__(self, label: str) -> None:
        self._label = label
        self._calls: list[dict[str, Any]] = []
        # Wire index → position in `_calls` of the call it stands for now.
        self._positions: dict[int, int] = {}

    def add(self, delta: Any) -> str:
        """Take one tool call delta; returns the name and argument fragment it brings."""
        label = self._label
        delta = required_object(delta, label, "a streamed tool call")
        index = optional_index(member(delta, "index"), label, "a streamed tool call's index")
        call_id = optional_text(member(delta, "id"), label, "a streamed tool call's id")
        function = optional_object(
            member(delta, "function"), label, "a streamed tool call's function"
        )
        name = optional_text(member(function, "name"), label, "a streamed tool call's name")
        arguments = optional_text(
            member(function, "arguments"), label, "a streamed tool call's arguments field"
        )
        if index is None:
            position = len(self._calls) - 1 if self._calls else None
        else:
            position = self._positions.get(index)
        current = self._calls[position] if position is not None else None
        if current is None or (call_id and current["id"] not in ("", call_id)):
            current = {"id": "", "name": "", "arguments": "", "extra_content": None}
            self._calls.append(current)
            if index is not None:
                self._positions[index] = len(self._calls) - 1
        if call_id:
            current["id"] = call_id
        if name:
            current["name"] = name
        if arguments:
            current["arguments"] += arguments
        if extra := _extra_content(delta):
            current["extra_content"] = _merged(current["extra_content"], extra)
        return (name or "") + (arguments or "")

    def assembled(self) -> list[ToolCall]:
        return [
            ToolCall(
                id=call["id"],
                name=call["name"],
                arguments=call["arguments"],
                extra_content=call["extra_content"],
            )
            for call in self._calls
        ]


def _vendor_error_body(exc: openai.APIError) -> object:
    body = exc.body
    # Gemini's OpenAI-compatible endpoint answers errors as a list:
    # [{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT"}}].
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0].get("error", body[0])
    return body


def _vendor_message(exc: openai.APIError) -> str:
    body = _vendor_error_body(exc)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """The wait the provider asks for: its `retry-after(-ms)` header, else the
    `retryDelay` of a Google error's RetryInfo detail (Gemini answers 429
    without the header, with "retryDelay": "19s" in the body)."""
    from_headers = retry_after_from_headers(exc.response.headers)
    if from_headers is not None:
        return from_headers
    body = _vendor_error_body(exc)
    details = body.get("details") if isinstance(body, dict) else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and (seconds := _GOOGLE_DURATION.fullmatch(delay.strip())):
            return float(seconds.group(1))
    return None


def _gemini_reason(exc: openai.APIError) -> str | None:
    """The `reason` of a Google error's ErrorInfo detail (e.g. API_KEY_INVALID):
    Google answers several causes with one status, the reason tells them apart."""
    body = _vendor_error_body(exc)
    details = body.get("details") if isinstance(body, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
            return detail["reason"]
    return None
