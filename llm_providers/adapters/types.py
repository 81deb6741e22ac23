"""Plain data passed between the completion service and the adapters (no Django here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Messages use the OpenAI chat shape, which every adapter translates from:
#   {"role": "system" | "user" | "assistant" | "tool",
#    "content": str | [{"type": "text", "text": ...},
#                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}],
#    "tool_calls": [{"id", "type": "function", "function": {"name", "arguments"},   # assistant
#                    "extra_content": {...} | None}],  # as ToolCall.extra_content gave it
#    "tool_call_id": "..."}                                                          # tool
Message = dict[str, Any]
# Tools use the OpenAI function-tool shape:
#   {"type": "function", "function": {"name", "description", "parameters": {JSON schema}}}
Tool = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call, normalised across providers.

    `input_tokens` counts the whole prompt, cached parts included;
    `cache_read_tokens` and `cache_write_tokens` are the parts of it read
    from / written to the provider's prompt cache, and `cache_write_1h_tokens`
    the part of the writes kept for an hour rather than five minutes (Anthropic
    and Bedrock charge more for it). `output_tokens` counts everything
    generated, reasoning included; `reasoning_tokens` is that part. (OpenAI
    reports this way already; Anthropic and Bedrock report input without the
    cache parts, and their adapters add them back.) `service_tier` is the
    processing tier the provider says served the call (OpenAI's `priority`,
    `flex`, `default`), which prices its tokens; empty when none is named.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    service_tier: str = ""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of a tool the model made.

    `extra_content` is the provider's opaque data about the call, which the
    provider wants back with the call in later requests, as a JSON object
    kept verbatim (None: the provider gave none). Gemini 3 gives its thought
    signature so: `{"google": {"thought_signature": "..."}}`, in the field of
    that name of its OpenAI-compatible tool calls. The object is namespaced
    by provider and taken whole, so that what a provider adds beside the
    signature, or another provider's data, reaches the caller and comes back
    without a change here.
    """

    id: str
    name: str
    arguments: str  # JSON text, as the model produced it
    extra_content: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    json_mode: bool = False
    tools: list[Tool] | None = None
    # Seconds for the whole call; None: the adapter's configured default.
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    content: str
    usage: Usage
    model: str
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] = field(default_factory=list)
    # True when the provider reported no usage and the adapter estimated it.
    usage_estimated: bool = False


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer. The last chunk carries finish_reason,
    the complete tool calls and the usage (when the provider reported it).

    `usage_so_far` is what the provider reported before the end (Anthropic's
    `message_start` gives the prompt's tokens, cache reads and writes): a
    stream that ends early is recorded with it rather than with an estimate.

    `unseen_text` is output the caller does not read as it streams: a piece
    of a tool call (its name, or a fragment of its JSON arguments, which reach
    the caller whole at the end) or of the model's reasoning (thinking). The
    provider charges for it, so a stream that ends early counts it.
    """

    text: str = ""
    unseen_text: str = ""
    model: str = ""
    finish_reason: str | None = None
    tool_calls: list[ToolCall] | None = None
    usage: Usage | None = None
    usage_so_far: Usage | None = None


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """`deadline`: the `time.monotonic()` by which the whole call must end
    (None: no deadline); each request of a call sent in batches is bounded by
    the time it leaves."""

    model: str
    inputs: list[str]
    timeout: float | None = None
    deadline: float | None = None
    # The dimensions every vector answered must have: those of the vectors an
    # earlier attempt of the call answered (None: those of the first one).
    expected_dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: list[list[float]]
    usage: Usage
    model: str
    usage_estimated: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    ok: bool
    latency_ms: int
    models: list[str] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    """Everything an adapter needs to build its SDK client. Holds plaintext
    secrets: never log it, never put it in a cache key (its repr hides them)."""

    provider_type: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    aws_access_key_id: str = field(default="", repr=False)
    aws_secret_access_key: str = field(default="", repr=False)
    aws_region: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """The secret values, for scrubbing error messages."""
        return [s for s in (self.api_key, self.aws_access_key_id, self.aws_secret_access_key) if s]
