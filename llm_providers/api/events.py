"""Server-sent events of a streamed completion.

The answer to `POST /completions` with `"stream": true` is `text/event-stream`:

    event: chunk
    data: {"text": "Hel"}

    event: chunk
    data: {"text": "lo"}

    event: done
    data: {"request_id": "…", "usage": {…}, "cost_usd": "0.000012000000", "provider": …}

One `chunk` event per piece of text as the provider sends it, then one
`done` event with everything about the call but its text (usage, cost,
provider, model, request id, tool calls, finish reason). A failure before
the first piece of text is an ordinary JSON error answer with its HTTP
status; a failure after it is an `error` event in the API's one error shape
(`{"error": {"code", "message", "fields", "extra"}}`), followed by the
`done` event of what was received (usage estimated).

While no event has been written for STREAM_KEEPALIVE_SECONDS, the stream
carries an SSE comment (`: keep-alive`), so that a client gone away is
noticed while the provider is silent, and its upstream request stopped. The
first piece of text is awaited as long before the answer starts: a failure
before any text that comes later is an `error` event.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

from django.db import connections
from django.http import StreamingHttpResponse
from rest_framework.utils.encoders import JSONEncoder

from llm_providers.completion import CompletionStream
from llm_providers.exceptions import ApplicationError

from .exception_handlers import REQUEST_ID_HEADER, api_exception_handler
from .serializers import CompletionDoneSerializer

logger = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
EVENT_CHUNK = "chunk"
EVENT_ERROR = "error"
EVENT_DONE = "done"
# An SSE comment: clients ignore it; it lets the server notice a client gone.
KEEPALIVE_COMMENT = b": keep-alive\n\n"

# One event of the stream, as the OpenAPI schema (3.0) describes it.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One server-sent event. Comment lines (`: keep-alive`) between "
    "events are not events: SSE clients skip them.",
    "properties": {
        "event": {"type": "string", "enum": [EVENT_CHUNK, EVENT_ERROR, EVENT_DONE]},
        "data": {
            "type": "string",
            "description": 'One line of JSON: `chunk` {"text": ...}; `error` the error shape '
            '({"error": {"code", "message", "fields", "extra"}}); `done` a '
            "CompletionResult without `content`.",
        },
    },
    "required": ["event", "data"],
}


def sse_event(event: str, data: Any) -> bytes:
    """One event: its name and its data as one line of JSON (ASCII: no raw newlines)."""
    payload = json.dumps(data, cls=JSONEncoder, ensure_ascii=True, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode("ascii")


class _Relay:
    """Reads a completion stream for the response: `next()` gives
    `(EVENT_CHUNK, text)`, then `(EVENT_DONE, None)` at the end or
    `(EVENT_ERROR, exception)`, or None when `wait` seconds passed without
    any of them.

    With a wait, the stream is read on a thread of its own, so that the
    response can write keep-alive comments while the provider sends nothing
    it would see: a client that went away is then noticed on one of those
    writes, and `stop()` cuts the upstream request. That thread ends with
    the stream, closing its database connections. Without a wait (keep-alives
    off), the stream is read on the response's own thread.
    """

    def __init__(self, chunks: CompletionStream, wait: float):
        self._chunks = chunks
        self._wait = wait
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self._stopped = threading.Event()
        if wait:
            self.thread = threading.Thread(
                target=self._read, name=f"completion stream {chunks.request_id}", daemon=True
            )
            self.thread.start()

    @property
    def result(self):
        return self._chunks.result

    def next(self) -> tuple[str, Any] | None:
        if self.thread is None:
            return self._read_one()
        try:
            return self._queue.get(timeout=self._wait)
        except queue.Empty:
            return None

    def stop(self) -> None:
        """The client went away: stop the stream where it is."""
        if self.thread is None:
            self._chunks.close()
        else:
            # Whatever the reading thread is doing, it ends the stream itself,
            # so its bookkeeping runs once, there.
            self._stopped.set()
            self._chunks.stop()

    def _read_one(self) -> tuple[str, Any]:
        try:
            return (EVENT_CHUNK, next(self._chunks))
        except StopIteration:
            return (EVENT_DONE, None)
        except Exception as exc:  # every failure becomes an error event in the one shape
            return (EVENT_ERROR, exc)

    def _read(self) -> None:
        try:
            while True:
                item = self._read_one()
                unexpected = item[0] == EVENT_ERROR and not isinstance(item[1], ApplicationError)
                if unexpected and self._stopped.is_set():
                    # Nobody reads the queue any more: the failure is logged here.
                    logger.error(
                        "Completion stream %s failed after its client left.",
                        self._chunks.request_id,
                        exc_info=item[1],
                    )
                self._queue.put(item)
                if item[0] != EVENT_CHUNK:
                    return
        except BaseException as exc:  # an interruption, for the response to raise
            self._queue.put((EVENT_ERROR, exc))
        finally:
            connections.close_all()


class CompletionEvents:
    """The events of a completion stream, for a StreamingHttpResponse.

    Closing it (the server does when the client goes away) stops the
    completion stream, which stops the upstream request and records what was
    received.
    """

    def __init__(self, relay: _Relay, first: tuple[str, Any] | None):
        self._relay = relay
        self._events = self._generate(first)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._relay.stop()

    def _generate(self, item: tuple[str, Any] | None) -> Iterator[bytes]:
        relay = self._relay
        while True:
            if item is None:
                yield KEEPALIVE_COMMENT
            elif item[0] == EVENT_CHUNK:
                yield sse_event(EVENT_CHUNK, {"text": item[1]})
            elif item[0] == EVENT_ERROR:
                if not isinstance(item[1], Exception):
                    raise item[1]
                yield sse_event(EVENT_ERROR, api_exception_handler(item[1], {}).data)
                break
            else:
                break
            item = relay.next()
        if relay.result is not None:
            yield sse_event(EVENT_DONE, CompletionDoneSerializer(relay.result).data)


def completion_event_response(
    chunks: CompletionStream, *, keepalive_seconds: float = 0.0
) -> StreamingHttpResponse:
    """Start the stream and answer with its events.

    The first piece of text is awaited here, for up to `keepalive_seconds`
    (without limit when 0), so that a failure before any text (no provider
    reachable, a refusal) raises and is answered as an ordinary error with
    its HTTP status. When none came by then, the answer starts with a
    keep-alive comment, and one follows each further `keepalive_seconds`
    without an event; a failure after that is an error event.
    """
    relay = _Relay(chunks, keepalive_seconds)
    first = relay.next()
    if first is not None and first[0] == EVENT_ERROR:
        raise first[1]
    response = StreamingHttpResponse(CompletionEvents(relay, first), content_type=EVENT_STREAM)
    response["Cache-Control"] = "no-cache"
    # Proxies such as nginx would otherwise buffer the events.
    response["X-Accel-Buffering"] = "no"
    response[REQUEST_ID_HEADER] = str(chunks.request_id)
    return response
