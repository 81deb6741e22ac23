"""The adapter contract: one subclass per wire protocol, no Django inside.

An adapter is built once per provider config (its SDK client with it) and
reused for every call until the config changes. It turns a `ChatRequest`
into the vendor's request, the vendor's answer into a `ChatResult` with a
normalised `Usage`, and the vendor's errors into the `ProviderError` tree.
It never retries: the completion service owns retries and fallbacks, so SDK
retries are switched off.
"""

from __future__ import annotations

import contextlib
import functools
import math
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import ClassVar, TypeVar

from .errors import (
    CallDeadlineReached,
    NotSupported,
    ProviderError,
    UpstreamUnavailable,
    scrub_secrets,
    secrets_in_use,
)
from .types import (
    AdapterSettings,
    ChatRequest,
    ChatResult,
    ConnectionCheck,
    EmbedRequest,
    EmbedResult,
    Message,
    StreamChunk,
    ToolCall,
    Usage,
)

# 60 s per call unless the config or the call says otherwise: long generations
# stream, and a non-streamed answer slower than this is better retried elsewhere.
DEFAULT_TIMEOUT_SECONDS = 60.0
# 5 s to connect: a provider that takes longer is down.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
# With less than this left before a call's deadline, no request is sent (no
# provider answers sooner: it would only time out).
DEADLINE_MIN_REQUEST_SECONDS = 0.1

# Offline token estimate. BPE tokenizers average about 4 characters of English
# per token; we count 3 so the estimate errs high (it sizes budget
# reservations and TPM windows), plus the per-message framing tokens chat
# formats add, and a flat cost per image.
_CHARS_PER_TOKEN = 3
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_REQUEST = 3
_TOKENS_PER_IMAGE = 1_600


def estimate_text_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN) if text else 0


def estimate_output_tokens(text: str, tool_calls: Iterable[ToolCall] = ()) -> int:
    """An offline count of an answer: its text and the tool calls it made
    (an answer that only calls tools is not free)."""
    return estimate_text_tokens(text) + sum(
        estimate_text_tokens(call.name) + estimate_text_tokens(call.arguments)
        for call in tool_calls
    )


def usage_estimate(*, input_tokens: int, output_tokens: int, reported: Usage | None) -> Usage:
    """The usage of an answer the provider gave no usable final figures for:
    what it reported of the prompt (`reported`: its tokens, cache reads and
    writes), else `input_tokens` estimated; the output estimated
    (`output_tokens`), unless `reported` says more."""
    if reported is None:
        return Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return replace(reported, output_tokens=max(reported.output_tokens, output_tokens))


def estimate_message_tokens(messages: list[Message], tools: list | None = None) -> int:
    """An offline, deliberately generous token count of a prompt."""
    total = _TOKENS_PER_REQUEST
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            total += estimate_text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    total += estimate_text_tokens(part.get("text", ""))
                elif part.get("type") == "image_url":
                    total += _TOKENS_PER_IMAGE
        for call in message.get("tool_calls") or ():
            function = call.get("function", {})
            total += estimate_text_tokens(function.get("name", ""))
            total += estimate_text_tokens(function.get("arguments", ""))
    if tools:
        import json

        total += estimate_text_tokens(json.dumps(tools, separators=(",", ":")))
    return total


_Event = TypeVar("_Event")


class Adapter(ABC):
    """Base of every protocol adapter. Capabilities are class attributes."""

    protocol: ClassVar[str]
    supports_embeddings: ClassVar[bool] = False
    # The max_tokens sent when a request names none (None: the provider's own
    # default applies). Budget reservations size the worst case with it.
    default_max_tokens: ClassVar[int | None] = None
    # The SDK's exception types that `provider_error` translates; anything
    # else (a bug in the adapter) propagates untouched.
    vendor_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, settings: AdapterSettings):
        self.settings = settings
        secrets_in_use.hold(self, settings.secrets())

    # --- the protocol ----------------------------------------------------------

    @abstractmethod
    def complete(self, request: ChatRequest) -> ChatResult:
        """One non-streamed chat completion."""

    @abstractmethod
    def stream(
        self, request: ChatRequest, *, cut: StreamCut | None = None
    ) -> Iterator[StreamChunk]:
        """Yield chunks as they arrive; the last one carries usage if reported.

        The adapter hands `cut` the connection the answer streams on, once it
        has it, so that another thread can stop a read waiting on it."""

    @abstractmethod
    def list_models(self) -> list[str]:
        """Model ids the provider offers to this account."""

    def embed(self, request: EmbedRequest) -> EmbedResult:
        raise self.embeddings_unsupported()

    def embeddings_unsupported(self) -> NotSupported:
        """The error of an embedding call where the protocol has none."""
        return NotSupported(f"{self.settings.provider_type} does not offer embeddings here.")

    def count_tokens(self, request: ChatRequest) -> int:
        """Prompt tokens, estimated offline (nothing is downloaded)."""
        return estimate_message_tokens(request.messages, request.tools)

    def answer_usage_estimate(
        self,
        request: ChatRequest,
        text: str,
        tool_calls: Iterable[ToolCall] = (),
        reported: Usage | None = None,
    ) -> Usage:
        """The usage of an answer that came without usable figures: see `usage_estimate`."""
        return usage_estimate(
            input_tokens=self.count_tokens(request),
            output_tokens=estimate_output_tokens(text, tool_calls),
            reported=reported,
        )

    def test_connection(self) -> ConnectionCheck:
        """Authenticate and list models; never raises for provider failures."""
        started = time.perf_counter()
        try:
            models = self.list_models()
        except ProviderError as exc:
            return ConnectionCheck(
                ok=False,
                latency_ms=_elapsed_ms(started),
                error=f"{exc.code}: {self.scrub(exc.message)}",
            )
        return ConnectionCheck(ok=True, latency_ms=_elapsed_ms(started), models=models)

    # --- shared helpers --------------------------------------------------------

    @property
    def timeout(self) -> float:
        return float(self.settings.options.get("timeout") or DEFAULT_TIMEOUT_SECONDS)

    @property
    def connect_timeout(self) -> float:
        return float(
            self.settings.options.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT_SECONDS
        )

    def call_timeout(self, requested: float | None) -> float:
        """Seconds for one call: the request's, else the config's, else the default."""
        return float(requested) if requested else self.timeout

    def batch_timeout(self, request: EmbedRequest, sent: int) -> float:
        """Seconds for the next request of an embedding call that has sent
        `sent` of its inputs: the call's timeout, or the time its deadline
        leaves when that is less. Raises `CallDeadlineReached` when the
        deadline leaves no time for it."""
        seconds = self.call_timeout(request.timeout)
        if request.deadline is None:
            return seconds
        left = request.deadline - time.monotonic()
        if left < DEADLINE_MIN_REQUEST_SECONDS:
            unsent = len(request.inputs) - sent
            raise CallDeadlineReached(
                "The call's deadline left no time for the next batch: "
                f"{unsent} input{'' if unsent == 1 else 's'} not sent."
            )
        return min(seconds, left)

    def events_read(
        self, events: Iterable[_Event], *, cut: StreamCut, end: StreamEnd
    ) -> Iterator[_Event]:
        """A stream's `events`, read to their end. A connection that breaks
        (or stalls) once the adapter marked the answer whole (`end`) ends them
        as if the stream had ended. A stream its caller stopped (`cut`) fails
        as the read did. An event the SDK cannot read (`unreadable_answer`)
        raises its `MalformedAnswer` here, so that the adapter can attach the
        usage the stream reported before it."""
        iterator = iter(events)
        while True:
            try:
                event = next(iterator)
            except StopIteration:
                return
            except self.vendor_errors:
                if not end.whole or cut.requested.is_set():
                    raise
                return
            except Exception as exc:
                unreadable = self.unreadable_answer(exc, streamed=True)
                if unreadable is None:
                    raise
            else:
                yield event
                continue
            # Raised outside the except block: no SDK exception as context.
            raise unreadable

    def provider_error(self, exc: BaseException) -> ProviderError:
        """Translate one of `vendor_errors` into the error tree, message scrubbed."""
        return UpstreamUnavailable(self.scrub(f"{type(exc).__name__}: {exc}"))

    def unreadable_answer(self, exc: Exception, *, streamed: bool) -> ProviderError | None:
        """The error of `exc` when it is the SDK failing to read an answer (a
        body that is not JSON, a broken event-stream frame): a
        `MalformedAnswer`. None for any other exception (a bug: it propagates
        untouched). `streamed`: raised while reading a stream."""
        return None

    def scrub(self, message: str) -> str:
        return scrub_secrets(message, self.settings.secrets())

    def close(self) -> None:
        """Release the SDK client's connections (called when the config changes).

        Adapters without pooled connections have nothing to release.
        """
        return None


class StreamCut:
    """Stops a stream's upstream read from another thread.

    A thread reading a stream blocks in its SDK until the provider sends
    something; `request()` shuts the connection's socket down, so that read
    fails at once. The adapter holds the socket here (`holding`) from when
    it has it (once the provider's response headers came) until the
    response is closed, not after: the connection may then serve another
    call. A cut requested before the socket is held happens as it is.
    `made` tells whether a connection was cut: a request that failed before
    its answer streamed (an error status, no connection) failed on its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.requested = threading.Event()
        self.made = False

    @contextlib.contextmanager
    def holding(self, sock: socket.socket | None) -> Iterator[None]:
        self._attach(sock)
        try:
            yield
        finally:
            self._attach(None)

    def _attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._socket = sock
            if self.requested.is_set():
                self._shut()

    def request(self) -> None:
        with self._lock:
            self.requested.set()
            self._shut()

    def _shut(self) -> None:
        if self._socket is None:
            return
        self.made = True
        # Already closed or shut by the peer: nothing is waiting on it.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)


class StreamEnd:
    """Whether a stream's answer is whole: it finished and its final usage
    came (set by the adapter as it reads). All a connection that breaks after
    that loses is the protocol's closing event (OpenAI's `[DONE]`,
    Anthropic's `message_stop`), which carries nothing: the answer is
    complete, and its usage known."""

    def __init__(self) -> None:
        self.whole = False


def httpx_response_socket(response: object) -> socket.socket | None:
    """The socket an httpx response streams on (its `network_stream` extension)."""
    extensions = getattr(response, "extensions", None) or {}
    stream = extensions.get("network_stream")
    return stream.get_extra_info("socket") if stream is not None else None


_Method = TypeVar("_Method", bound=Callable)


def translate_errors(method: _Method) -> _Method:
    """Raise the adapter's vendor errors as `ProviderError`s, and an answer
    the SDK could not read (`Adapter.unreadable_answer`) as a `MalformedAnswer`.

    The translated error is raised outside the `except` block so that it
    carries no `__context__`: the SDK exception (whose text may quote part
    of the key) never travels with it into logs or tracebacks.
    """

    @functools.wraps(method)
    def wrapper(self: Adapter, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except self.vendor_errors as exc:
            error = self.provider_error(exc)
        except Exception as exc:
            unreadable = self.unreadable_answer(exc, streamed=False)
            if unreadable is None:
                raise
            error = unreadable
        raise error

    return wrapper  # type: ignore[return-value]


def translate_stream_errors(method: _Method) -> _Method:
    """`translate_errors` for generator methods: chunks already yielded stay
    delivered, the failure arrives as the next item's exception."""

    @functools.wraps(method)
    def wrapper(self: Adapter, *args, **kwargs):
        iterator = method(self, *args, **kwargs)
        try:
            while True:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
                except self.vendor_errors as exc:
                    error = self.provider_error(exc)
                except Exception as exc:
                    unreadable = self.unreadable_answer(exc, streamed=True)
                    if unreadable is None:
                        raise
                    error = unreadable
                else:
                    yield chunk
                    continue
                raise error
        finally:
            iterator.close()

    return wrapper  # type: ignore[return-value]


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
