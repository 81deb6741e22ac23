"""Pytest fixtures for the loopback upstream servers (loaded by tests/conftest.py).

Each fixture starts a fresh server on 127.0.0.1 for the test and stops it
afterwards. Provider configs stored in the database that point at these
servers also need the `allow_private_urls` fixture; adapters built directly
from `AdapterSettings` do not.

    def test_openai(openai_upstream):
        openai_upstream.enqueue_chat("Hi", prompt_tokens=12, completion_tokens=3)
        adapter = adapter_build(AdapterSettings("openai", base_url=openai_upstream.base_url,
                                                api_key="sk-test"))
        assert adapter.complete(ChatRequest("gpt-4o-mini", [...])).content == "Hi"
        assert openai_upstream.last_request.path == "/v1/chat/completions"
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from .anthropic import AnthropicUpstream
from .bedrock import BedrockUpstream
from .openai import OpenAIUpstream


@pytest.fixture
def openai_upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as upstream:
        yield upstream


@pytest.fixture
def openai_sdk_warm(openai_upstream: OpenAIUpstream) -> OpenAIUpstream:
    """`openai_upstream`, after one chat, one streamed chat and one embedding
    call through the OpenAI SDK (outside the completion service: no call log):
    the SDK's modules, imported on first use, then take none of a timed call's
    time."""
    from llm_providers.adapters.registry import adapter_build
    from llm_providers.adapters.types import AdapterSettings, ChatRequest, EmbedRequest

    adapter = adapter_build(
        AdapterSettings("openai", base_url=openai_upstream.base_url, api_key="sk-test")
    )
    openai_upstream.enqueue_chat("warm")
    openai_upstream.enqueue_chat_stream(["warm"])
    openai_upstream.enqueue_embeddings([[0.0]])
    adapter.complete(ChatRequest("gpt-4o", [{"role": "user", "content": "hi"}]))
    list(adapter.stream(ChatRequest("gpt-4o", [{"role": "user", "content": "hi"}])))
    adapter.embed(EmbedRequest("text-embedding-3-small", ["hi"]))
    adapter.close()
    openai_upstream.requests.clear()
    return openai_upstream


@pytest.fixture
def anthropic_upstream() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream() as upstream:
        yield upstream


@pytest.fixture
def bedrock_upstream() -> Iterator[BedrockUpstream]:
    with BedrockUpstream() as upstream:
        yield upstream


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
