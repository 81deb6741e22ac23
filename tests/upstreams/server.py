"""A threaded HTTP server on 127.0.0.1 that answers scripted replies in order and records requests.

The protocol servers (`openai.py`, `anthropic.py`, `bedrock.py`) build their
wire formats on top of it. A `Reply` is a status, headers and either a whole
body or chunks sent with chunked transfer encoding (each flushed at once, so
an SSE event reaches the client when written). A reply may wait before
answering (`delay`, to exceed a client's timeout), between chunks
(`chunk_delay`), or cut the connection after some chunks (`break_after`):
the body then never ends, as when a provider drops a stream.
`open_connections` counts the client connections open now,
`replies_in_progress` the replies still being sent and `streams_cut` the
chunked replies whose client went away before their end, so a test can
check that a client closed what it gave up.

Replies are served first in, first out, whatever the path; each reply built
for one endpoint names its `route` and is refused (HTTP 418 with an
explanation) when a request for another route takes its turn. A request with
no reply scripted gets 418 too, unless `set_default` gave one. Each
`enqueue_<kind>(..., times=1)` of a protocol server enqueues its
`<kind>_reply(...)`, and `enqueue_raw(...)` a body (or chunks) sent as given,
for answers that are not what the wire format promises; pass a reply to
`set_default` to answer every request alike (benchmarks, long runs). 418 maps to a
non-retryable bad request, so a missing script fails a test plainly instead
of being retried.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

UNSCRIPTED_STATUS = 418


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str  # percent-decoded, without the query
    raw_path: str  # as sent, query included
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    client_port: int  # the client's TCP port: equal ports mean a reused connection
    route: str | None

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: list[bytes] | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    break_after: int | None = None
    route: str | None = None  # None: answers a request for any route


# A reply, or a function building one from the request it answers (for
# answers that depend on what the client sent, like OpenAI's usage chunk).
Script = Reply | Callable[[RecordedRequest], Reply]


def json_reply(payload: Any, *, status: int = 200, headers: dict | None = None, **options) -> Reply:
    return Reply(
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
        body=json.dumps(payload).encode(),
        **options,
    )


def raw_reply(
    body: bytes | str = b"",
    *,
    chunks: list[bytes | str] | None = None,
    content_type: str = "application/json",
    status: int = 200,
    route: str | None = None,
) -> Reply:
    """A reply sent as given, not encoded: a whole `body`, or `chunks` streamed
    one by one (SSE events, event-stream frames). For answers that are not
    what the wire format promises (HTML, broken JSON, a garbled frame)."""

    def encoded(value: bytes | str) -> bytes:
        return value.encode() if isinstance(value, str) else value

    return Reply(
        status=status,
        headers={"Content-Type": content_type},
        body=encoded(body),
        chunks=None if chunks is None else [encoded(chunk) for chunk in chunks],
        route=route,
    )


class LoopbackUpstream:
    """Start with `start()`, stop with `stop()` (the fixtures do both)."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        # Requests that found no matching reply, with the reason.
        self.unanswered: list[tuple[RecordedRequest, str]] = []
        self._scripts: deque[Script] = deque()
        self._default: Script | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open_connections = 0
        self._replies_in_progress = 0
        self._streams_cut = 0

    # --- scripting ---------------------------------------------------------------

    def enqueue(self, script: Script, *, times: int = 1) -> None:
        """Answer the next request(s) with this reply."""
        with self._lock:
            self._scripts.extend([script] * times)

    def enqueue_raw(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `raw_reply(...)`."""
        self.enqueue(raw_reply(*args, **kwargs), times=times)

    def set_default(self, script: Script | None) -> None:
        """Answer with this reply whenever nothing is enqueued (benchmarks, long runs)."""
        with self._lock:
            self._default = script

    def route_of(self, method: str, path: str) -> str | None:
        """The endpoint a request is for; protocol servers name theirs."""
        return None

    @property
    def pending(self) -> int:
        """Replies enqueued and not yet served."""
        with self._lock:
            return len(self._scripts)

    @property
    def open_connections(self) -> int:
        """Client connections open now (kept-alive idle ones included)."""
        with self._lock:
            return self._open_connections

    @property
    def replies_in_progress(self) -> int:
        """Replies started and not yet finished or given up."""
        with self._lock:
            return self._replies_in_progress

    @property
    def streams_cut(self) -> int:
        """Chunked replies the client stopped reading (closed) before their end."""
        with self._lock:
            return self._streams_cut

    def _count(self, name: str, change: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + change)

    @property
    def last_request(self) -> RecordedRequest:
        return self.requests[-1]

    # --- life cycle --------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the server is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackUpstream:
        upstream = self

        class Handler(_Handler):
            owner = upstream

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes replies that are waiting out a delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- serving -----------------------------------------------------------------

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            script = self._scripts.popleft() if self._scripts else self._default
        if script is None:
            return self._unanswered(request, "no reply is scripted")
        reply = script(request) if callable(script) else script
        if reply.route is not None and reply.route != request.route:
            return self._unanswered(
                request, f"the next reply is for a {reply.route!r} request, not {request.route!r}"
            )
        return reply

    def _unanswered(self, request: RecordedRequest, reason: str) -> Reply:
        with self._lock:
            self.unanswered.append((request, reason))
        message = f"Loopback upstream: {reason} for {request.method} {request.raw_path}."
        return json_reply(
            {"error": {"message": message, "type": "loopback_unscripted"}, "message": message},
            status=UNSCRIPTED_STATUS,
        )

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server stops meanwhile; False when it stopped."""
        return not (seconds and self._stopping.wait(seconds))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog of 5 resets connections when a burst of calls
    # connects at once, as a provider's server does not.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping a kept-alive connection is normal; anything else is a bug here.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackUpstream
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers offer
    timeout = 30  # idle kept-alive connections are dropped after this

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        self.owner._count("_open_connections", 1)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._count("_open_connections", -1)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        request = RecordedRequest(
            method=self.command,
            path=path,
            raw_path=self.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client_port=self.client_address[1],
            route=self.owner.route_of(self.command, path),
        )
        reply = self.owner._reply_for(request)
        self.owner._count("_replies_in_progress", 1)
        try:
            if not self.owner._wait(reply.delay):
                self.close_connection = True
                return
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout passed): nothing left to answer.
            self.close_connection = True
            if reply.chunks is not None:
                self.owner._count("_streams_cut", 1)
        finally:
            self.owner._count("_replies_in_progress", -1)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunks is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for number, chunk in enumerate(reply.chunks):
            if reply.break_after is not None and number >= reply.break_after:
                # Drop the connection with the body unfinished.
                self.close_connection = True
                return
            if number and not self.owner._wait(reply.chunk_delay):
                self.close_connection = True
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle
