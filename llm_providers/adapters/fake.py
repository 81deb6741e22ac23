"""A deterministic provider with no network, for the demo, tests and benchmarks.

Options (on the provider config):
- ``latency_ms``: wait this long before answering (default 0);
- ``chunk_latency_ms``: wait between streamed chunks (default 0);
  a wait longer than the call's timeout fails it with a timeout;
- ``failure``: one of ``rate_limited``, ``timeout``, ``unavailable``,
  ``authentication``, ``bad_request``, ``context_too_long``, ``refused``:
  every call fails this way;
- ``fail_first``: only the first N calls of this adapter instance fail
  (with ``failure``, default ``unavailable``), later ones succeed;
- ``models``: the model ids it offers (default ``fake-small``, ``fake-large``);
- ``reply``: a fixed answer instead of the echo.

A message containing ``[fake:<failure>]`` fails that call the same way.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator

from .base import Adapter, StreamCut, estimate_text_tokens
from .errors import (
    ContentRefused,
    ContextTooLong,
    ProviderAuthenticationError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    UpstreamUnavailable,
)
from .types import ChatRequest, ChatResult, EmbedRequest, EmbedResult, StreamChunk, ToolCall, Usage

DEFAULT_MODELS = ["fake-small", "fake-large"]
EMBEDDING_DIMENSIONS = 8

FAILURES: dict[str, tuple[type[ProviderError], str]] = {
    "rate_limited": (ProviderRateLimited, "Fake rate limit reached."),
    "timeout": (ProviderTimeout, "Fake provider timed out."),
    "unavailable": (UpstreamUnavailable, "Fake provider is unavailable."),
    "authentication": (ProviderAuthenticationError, "Fake provider rejected the key."),
    "bad_request": (ProviderBadRequest, "Fake provider rejected the request."),
    "context_too_long": (ContextTooLong, "Prompt is longer than the fake context window."),
    "refused": (ContentRefused, "Fake provider refused the content."),
}
_TRIGGER = re.compile(r"\[fake:([a-z_]+)\]")


def _text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


class FakeAdapter(Adapter):
    protocol = "fake"
    supports_embeddings = True

    def __init__(self, settings):
        super().__init__(settings)
        self._calls = 0
        self._lock = threading.Lock()

    # --- behaviour -------------------------------------------------------------

    def _maybe_fail(self, request_text: str) -> None:
        options = self.settings.options
        with self._lock:
            self._calls += 1
            call_number = self._calls
        failure = options.get("failure")
        fail_first = options.get("fail_first")
        if fail_first is not None:
            failure = (failure or "unavailable") if call_number <= int(fail_first) else None
        trigger = _TRIGGER.search(request_text)
        if trigger and trigger.group(1) in FAILURES:
            failure = trigger.group(1)
        if failure:
            error_class, message = FAILURES.get(failure, FAILURES["unavailable"])
            retry_after = 1.0 if error_class is ProviderRateLimited else None
            raise error_class(message, retry_after=retry_after)

    def _sleep(self, option: str, request: ChatRequest) -> None:
        """Wait as the option says; a wait longer than the call's timeout is a
        timeout, as a real provider's stalled read is."""
        delay = float(self.settings.options.get(option) or 0) / 1000
        if not delay:
            return
        limit = self.call_timeout(request.timeout)
        if delay > limit:
            time.sleep(limit)
            raise ProviderTimeout(f"Fake provider did not answer within {limit:g} s.")
        time.sleep(delay)

    def _answer(self, request: ChatRequest) -> tuple[str, list[ToolCall]]:
        last_user = next(
            (_text_of(m) for m in reversed(request.messages) if m.get("role") == "user"), ""
        )
        if request.tools:
            function = request.tools[0].get("function", {})
            name = function.get("name", "tool")
            digest = hashlib.sha256(last_user.encode()).hexdigest()[:12]
            return "", [ToolCall(id=f"call_{digest}", name=name, arguments='{"input": "fake"}')]
        if request.json_mode:
            return '{"echo": ' + _json_string(last_user) + "}", []
        reply = self.settings.options.get("reply")
        text = reply if reply else f"Echo: {last_user}"
        if request.max_tokens:
            # Keep the answer within max_tokens as a real model would.
            text = text[: request.max_tokens * 3]
        return text, []

    def _usage(self, request: ChatRequest, text: str, tool_calls: list[ToolCall]) -> Usage:
        output = estimate_text_tokens(text) + sum(
            estimate_text_tokens(c.arguments) + estimate_text_tokens(c.name) for c in tool_calls
        )
        return Usage(input_tokens=self.count_tokens(request), output_tokens=max(output, 1))

    def _request_text(self, request: ChatRequest) -> str:
        return " ".join(_text_of(m) for m in request.messages)

    # --- the protocol ----------------------------------------------------------

    def complete(self, request: ChatRequest) -> ChatResult:
        self._maybe_fail(self._request_text(request))
        self._sleep("latency_ms", request)
        text, tool_calls = self._answer(request)
        return ChatResult(
            content=text,
            usage=self._usage(request, text, tool_calls),
            model=request.model,
            finish_reason="tool_calls" if tool_calls else "stop",
            tool_calls=tool_calls,
        )

    def stream(
        self, request: ChatRequest, *, cut: StreamCut | None = None
    ) -> Iterator[StreamChunk]:
        self._maybe_fail(self._request_text(request))
        self._sleep("latency_ms", request)
        text, tool_calls = self._answer(request)
        words = re.findall(r"\S+\s*", text) or [text]
        for word in words:
            if word:
                yield StreamChunk(text=word, model=request.model)
                self._sleep("chunk_latency_ms", request)
        for call in tool_calls:
            yield StreamChunk(unseen_text=call.name + call.arguments, model=request.model)
        yield StreamChunk(
            model=request.model,
            finish_reason="tool_calls" if tool_calls else "stop",
            tool_calls=tool_calls or None,
            usage=self._usage(request, text, tool_calls),
        )

    def embed(self, request: EmbedRequest) -> EmbedResult:
        self._maybe_fail(" ".join(request.inputs))
        vectors = []
        for text in request.inputs:
            digest = hashlib.sha256(text.encode()).digest()
            vectors.append([(b - 128) / 128 for b in digest[:EMBEDDING_DIMENSIONS]])
        tokens = sum(estimate_text_tokens(t) for t in request.inputs)
        return EmbedResult(vectors=vectors, usage=Usage(input_tokens=tokens), model=request.model)

    def list_models(self) -> list[str]:
        self._maybe_fail("")
        return list(self.settings.options.get("models") or DEFAULT_MODELS)


def _json_string(text: str) -> str:
    import json

    return json.dumps(text)
