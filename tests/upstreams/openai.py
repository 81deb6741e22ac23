"""A loopback server speaking OpenAI Chat Completions (JSON and SSE), embeddings and models.

It also answers Azure OpenAI's deployment URLs
(`/openai/deployments/{deployment}/chat/completions?api-version=...`): point
`base_url` of an openai-type config at `upstream.base_url`, of an Azure config
at `upstream.url`.

    def test_usage(openai_upstream):
        openai_upstream.enqueue_chat("Hi", prompt_tokens=1200, cached_tokens=1000,
                                     completion_tokens=300, reasoning_tokens=200)
        openai_upstream.enqueue_error(429, headers={"Retry-After": "2"})
        ... call the adapter twice ...
        assert openai_upstream.requests[0].json["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from .server import LoopbackUpstream, RecordedRequest, Reply, Script, json_reply

CREATED = 1_760_000_000
# What OpenAI (and Azure) answer (400) to JSON mode when no message mentions JSON.
JSON_WORD_MISSING = (
    "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
    "'json_object'."
)
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
# What Azure OpenAI answers (400) to `stream_options` under an API version
# older than the first that knows it (2024-09-01-preview).
AZURE_STREAM_OPTIONS_UNKNOWN = "Unrecognized request argument supplied: stream_options"
AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"


def sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def openai_usage(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def masked_key(api_key: str) -> str:
    """How OpenAI quotes a wrong key in its 401 message: the start, stars, the end."""
    return f"{api_key[:8]}{'*' * max(len(api_key) - 12, 4)}{api_key[-4:]}"


# What Gemini 3 answers (400) to an assistant tool call step whose first call
# carries no thought signature (`extra_content.google.thought_signature`).
THOUGHT_SIGNATURE_MISSING = (
    "Function call is missing a thought_signature in functionCall parts. This is required for "
    "tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance."
)
# What it answers (400) to a signature it did not give with that call.
THOUGHT_SIGNATURE_INVALID = "Unable to submit request because Thought signature is not valid."
# The value Google documents for histories without signatures: accepted for any call.
SKIP_THOUGHT_SIGNATURE = "skip_thought_signature_validator"


def thought_signature(call_id: str, name: str, arguments: str) -> str:
    """The signature the Gemini 3 mode gives with a tool call: opaque base64, as
    Google's are, and bound to the call, so that one sent back with another
    call (or altered) is refused."""
    digest = hashlib.sha256(f"loopback|{call_id}|{name}|{arguments}".encode()).digest()
    return base64.b64encode(b"\x12\x20" + digest).decode("ascii")


class OpenAIUpstream(LoopbackUpstream):
    # Set by a test to answer as Gemini 3 models do: the first tool call of
    # each answer scripted afterwards carries a thought signature
    # (`extra_content.google.thought_signature`; streamed, each call comes
    # whole, without an index, as Gemini sends it), and a request whose tool
    # call step does not bring back the signature its first call was given
    # (or Google's placeholder) is refused.
    requires_thought_signatures = False

    @property
    def base_url(self) -> str:
        """The base URL of an OpenAI-style config (`/v1` included)."""
        return f"{self.url}/v1"

    def route_of(self, method: str, path: str) -> str | None:
        for suffix, route in (
            ("/chat/completions", "chat"),
            ("/embeddings", "embeddings"),
            ("/models", "models"),
        ):
            if path.endswith(suffix):
                return route
        return None

    def _reply_for(self, request: RecordedRequest) -> Reply:
        reply = super()._reply_for(request)
        if (
            request.route == "chat"
            and request.path.startswith("/openai/deployments/")
            and "stream_options" in (request.json or {})
            and request.query.get("api-version", "") < AZURE_STREAM_OPTIONS_SINCE
        ):
            return json_reply(
                {
                    "error": {
                        "message": AZURE_STREAM_OPTIONS_UNKNOWN,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=400,
            )
        signature_problem = (
            _thought_signature_problem(request.json or {})
            if request.route == "chat" and self.requires_thought_signatures
            else None
        )
        if signature_problem:
            return json_reply(
                [
                    {
                        "error": {
                            "code": 400,
                            "message": signature_problem,
                            "status": "INVALID_ARGUMENT",
                        }
                    }
                ],
                status=400,
            )
        if request.route == "chat" and _json_mode_without_the_word(request.json or {}):
            return json_reply(
                {
                    "error": {
                        "message": JSON_WORD_MISSING,
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": None,
                    }
                },
                status=400,
            )
        return reply

    # --- replies -----------------------------------------------------------------

    def chat_reply(
        self,
        content: str | None = "Hello!",
        *,
        model: str = DEFAULT_MODEL,
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        tool_calls: list[dict[str, str]] | None = None,
        finish_reason: str | None = None,
        service_tier: str | None = None,
        delay: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> Script:
        """A non-streamed completion. `tool_calls`: [{"id", "name", "arguments"}];
        `service_tier`: the tier OpenAI says served the call (None: not named)."""
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if tool_calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                    **self._signed(position, call),
                }
                for position, call in enumerate(tool_calls)
            ]
        payload = {
            "id": "chatcmpl-loopback",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
                }
            ],
            "usage": openai_usage(
                prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens
            ),
            "system_fingerprint": "fp_loopback",
        }
        if service_tier is not None:
            payload["service_tier"] = service_tier
        return json_reply(payload, headers=headers, delay=delay, route="chat")

    def enqueue_chat(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `chat_reply(...)`."""
        self.enqueue(self.chat_reply(*args, **kwargs), times=times)

    def chat_stream_reply(
        self,
        pieces: list[str] = ("Hel", "lo", "!"),  # type: ignore[assignment]
        *,
        model: str = DEFAULT_MODEL,
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        tool_calls: list[dict[str, str]] | None = None,
        finish_reason: str | None = None,
        finished: bool = True,
        service_tier: str | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        break_after: int | None = None,
    ) -> Script:
        """An SSE stream: a role chunk, one chunk per piece, tool call fragments, a
        finish chunk, then (only when the request asked with stream_options
        include_usage, as OpenAI does) a usage chunk, then `[DONE]`.

        Each tool call streams as id+name first, then its arguments in two halves
        (in the Gemini 3 mode: whole, without an index, the first with its
        thought signature). `break_after=n` drops the connection after n events.
        `finished=False` leaves the finish chunk out (a generation that stopped
        without saying why). `service_tier` is named in every chunk, as OpenAI does.
        """

        def build(request: RecordedRequest) -> Reply:
            def chunk(delta: dict | None, finish: str | None = None, **extra: Any) -> bytes:
                choices = (
                    [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                    if delta is not None
                    else []
                )
                return sse(
                    {
                        "id": "chatcmpl-loopback",
                        "object": "chat.completion.chunk",
                        "created": CREATED,
                        "model": model,
                        "system_fingerprint": "fp_loopback",
                        "choices": choices,
                        **({"service_tier": service_tier} if service_tier is not None else {}),
                        **extra,
                    }
                )

            events = [chunk({"role": "assistant", "content": "", "refusal": None})]
            events += [chunk({"content": piece}) for piece in pieces]
            for index, call in enumerate(tool_calls or ()):
                if self.requires_thought_signatures:
                    function = {"name": call["name"], "arguments": call["arguments"]}
                    whole = {"id": call["id"], "type": "function", "function": function}
                    events.append(chunk({"tool_calls": [{**whole, **self._signed(index, call)}]}))
                    continue
                half = len(call["arguments"]) // 2
                events.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                for fragment in (call["arguments"][:half], call["arguments"][half:]):
                    events.append(
                        chunk(
                            {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
                        )
                    )
            if finished:
                events.append(chunk({}, finish_reason or ("tool_calls" if tool_calls else "stop")))
            options = (request.json or {}).get("stream_options") or {}
            if options.get("include_usage"):
                usage = openai_usage(
                    prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens
                )
                events.append(chunk(None, usage=usage))
            events.append(b"data: [DONE]\n\n")
            return Reply(
                headers={"Content-Type": "text/event-stream"},
                chunks=events,
                delay=delay,
                chunk_delay=chunk_delay,
                break_after=break_after,
                route="chat",
            )

        return build

    def _signed(self, position: int, call: dict[str, str]) -> dict[str, Any]:
        """The `extra_content` of a tool call answered: in the Gemini 3 mode,
        the first call of an answer carries the thought signature of its step."""
        if not self.requires_thought_signatures or position:
            return {}
        signature = thought_signature(call["id"], call["name"], call["arguments"])
        return {"extra_content": {"google": {"thought_signature": signature}}}

    def enqueue_chat_stream(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `chat_stream_reply(...)`."""
        self.enqueue(self.chat_stream_reply(*args, **kwargs), times=times)

    def embeddings_reply(
        self,
        vectors: list[list[float]],
        *,
        model: str = "text-embedding-3-small",
        prompt_tokens: int | None = 8,
        delay: float = 0.0,
    ) -> Script:
        """`prompt_tokens=None`: no usage, as some compatible servers answer."""
        payload: dict[str, Any] = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": vector}
                for index, vector in enumerate(vectors)
            ],
            "model": model,
        }
        if prompt_tokens is not None:
            payload["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        return json_reply(payload, delay=delay, route="embeddings")

    def enqueue_embeddings(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `embeddings_reply(...)`."""
        self.enqueue(self.embeddings_reply(*args, **kwargs), times=times)

    def models_reply(self, ids: list[str]) -> Script:
        payload = {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": CREATED, "owned_by": "system"}
                for model in ids
            ],
        }
        return json_reply(payload, route="models")

    def enqueue_models(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `models_reply(...)`."""
        self.enqueue(self.models_reply(*args, **kwargs), times=times)

    def error_reply(
        self,
        status: int,
        *,
        message: str = "The server had an error while processing your request.",
        type: str = "server_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> Script:
        """An error answer in OpenAI's body shape, to any endpoint."""
        payload = {"error": {"message": message, "type": type, "param": param, "code": code}}
        return json_reply(payload, status=status, headers=headers, delay=delay)

    def enqueue_error(self, *args: Any, times: int = 1, **kwargs: Any) -> None:
        """Answer the next request(s) with `error_reply(...)`."""
        self.enqueue(self.error_reply(*args, **kwargs), times=times)

    def enqueue_invalid_key(self, api_key: str) -> None:
        """OpenAI's real 401 for a wrong key, quoting the key masked."""
        self.enqueue_error(
            401,
            message=(
                f"Incorrect API key provided: {masked_key(api_key)}. You can find your API "
                "key at https://platform.openai.com/account/api-keys."
            ),
            type="invalid_request_error",
            code="invalid_api_key",
        )

    def enqueue_timeout(self, delay: float) -> None:
        """Answer only after `delay` seconds (longer than the client's timeout)."""
        self.enqueue_chat(delay=delay)


def _json_mode_without_the_word(body: dict[str, Any]) -> bool:
    """Whether a chat request asks for a JSON object but no message says "json"."""
    if (body.get("response_format") or {}).get("type") != "json_object":
        return False
    return (
        "json"
        not in json.dumps(
            [message.get("content") for message in body.get("messages") or ()]
        ).lower()
    )


def _thought_signature_problem(body: dict[str, Any]) -> str | None:
    """What Gemini 3 says of the first tool call of an assistant message that
    lacks a thought signature, or brings one not given with that call."""
    for message in body.get("messages") or ():
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if not calls:
            continue
        first = calls[0]
        google = (first.get("extra_content") or {}).get("google") or {}
        signature = google.get("thought_signature")
        if not signature:
            return THOUGHT_SIGNATURE_MISSING
        function = first.get("function") or {}
        given = thought_signature(first.get("id"), function.get("name"), function.get("arguments"))
        if signature not in (given, SKIP_THOUGHT_SIGNATURE):
            return THOUGHT_SIGNATURE_INVALID
    return None
