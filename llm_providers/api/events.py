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
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from rest_framework.utils.encoders import JSONEncoder

from llm_providers.completion import CompletionStream

from .exception_handlers import REQUEST_ID_HEADER, api_exception_handler
from .serializers import CompletionDoneSerializer

EVENT_STREAM = "text/event-stream"
EVENT_CHUNK = "chunk"
EVENT_ERROR = "error"
EVENT_DONE = "done"

# One event of the stream, as the OpenAPI schema (3.0) describes it.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One server-sent event.",
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


class CompletionEvents:
    """The events of a completion stream, for a StreamingHttpResponse.

    Closing it (the server does when the client goes away) closes the
    completion stream, which stops the upstream request and records what was
    received.
    """

    def __init__(self, chunks: CompletionStream, first: str | None):
        self._chunks = chunks
        self._events = self._generate(first)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._chunks.close()

    def _generate(self, first: str | None) -> Iterator[bytes]:
        chunks = self._chunks
        try:
            if first is not None:
                yield sse_event(EVENT_CHUNK, {"text": first})
            for text in chunks:
                yield sse_event(EVENT_CHUNK, {"text": text})
        except Exception as exc:  # every failure becomes an error event in the one shape
            yield sse_event(EVENT_ERROR, api_exception_handler(exc, {}).data)
        if chunks.result is not None:
            yield sse_event(EVENT_DONE, CompletionDoneSerializer(chunks.result).data)


def completion_event_response(chunks: CompletionStream) -> StreamingHttpResponse:
    """Start the stream and answer with its events.

    The first piece of text is awaited here, so that a failure before any
    text (no provider reachable, a refusal) raises and is answered as an
    ordinary error with its HTTP status.
    """
    try:
        first = next(iter(chunks))
    except StopIteration:
        first = None
    response = StreamingHttpResponse(CompletionEvents(chunks, first), content_type=EVENT_STREAM)
    response["Cache-Control"] = "no-cache"
    # Proxies such as nginx would otherwise buffer the events.
    response["X-Accel-Buffering"] = "no"
    response[REQUEST_ID_HEADER] = str(chunks.request_id)
    return response
