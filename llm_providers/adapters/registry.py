"""The adapter registry: provider type → adapter class (SDK modules load on first use)."""

from __future__ import annotations

import importlib
from functools import cache

from .base import Adapter
from .types import AdapterSettings

# Protocol → adapter class. Imported lazily: a process that never talks to
# Bedrock need not import boto3.
ADAPTER_PATHS: dict[str, str] = {
    "openai_chat": "llm_providers.adapters.openai_chat.OpenAIChatAdapter",
    "anthropic_messages": "llm_providers.adapters.anthropic_messages.AnthropicMessagesAdapter",
    "bedrock_converse": "llm_providers.adapters.bedrock_converse.BedrockConverseAdapter",
    "fake": "llm_providers.adapters.fake.FakeAdapter",
}


@cache
def adapter_class(provider_type: str) -> type[Adapter]:
    """The adapter class that speaks for `provider_type`."""
    from llm_providers.provider_types import provider_type_spec

    module_path, _, class_name = ADAPTER_PATHS[
        provider_type_spec(provider_type).protocol
    ].rpartition(".")
    return getattr(importlib.import_module(module_path), class_name)


def adapter_build(settings: AdapterSettings) -> Adapter:
    return adapter_class(settings.provider_type)(settings)
