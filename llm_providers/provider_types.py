"""The provider types we support: which wire protocol each speaks and what it needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import models


class ProviderType(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    BEDROCK = "bedrock", "AWS Bedrock"
    AZURE_OPENAI = "azure_openai", "Azure OpenAI"
    GEMINI = "gemini", "Google Gemini"
    MISTRAL = "mistral", "Mistral"
    TOGETHER = "together", "Together AI"
    GROQ = "groq", "Groq"
    OLLAMA = "ollama", "Ollama"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible endpoint"
    FAKE = "fake", "Fake (demo and tests)"


class Protocol(models.TextChoices):
    OPENAI_CHAT = "openai_chat", "OpenAI Chat Completions"
    ANTHROPIC_MESSAGES = "anthropic_messages", "Anthropic Messages"
    BEDROCK_CONVERSE = "bedrock_converse", "Bedrock Converse"
    FAKE = "fake", "Fake"


@dataclass(frozen=True)
class ProviderTypeSpec:
    """What a provider type needs and how it is reached and priced."""

    provider_type: str
    protocol: str
    default_base_url: str = ""
    requires_api_key: bool = True
    requires_base_url: bool = False
    requires_aws_credentials: bool = False
    required_options: tuple[str, ...] = ()
    # genai-prices provider id; None when prices come only from ModelPrice rows.
    price_provider_id: str | None = None
    # Self-hosted models cost nothing per token unless a ModelPrice says otherwise.
    self_hosted: bool = False
    allowed_options: frozenset[str] = field(
        default_factory=lambda: frozenset({"organization", "project", "timeout", "connect_timeout"})
    )


_COMMON_OPTIONS = frozenset({"timeout", "connect_timeout"})

PROVIDER_TYPE_SPECS: dict[str, ProviderTypeSpec] = {
    spec.provider_type: spec
    for spec in (
        ProviderTypeSpec(
            ProviderType.OPENAI,
            Protocol.OPENAI_CHAT,
            default_base_url="https://api.openai.com/v1",
            price_provider_id="openai",
            allowed_options=_COMMON_OPTIONS | {"organization", "project"},
        ),
        ProviderTypeSpec(
            ProviderType.AZURE_OPENAI,
            Protocol.OPENAI_CHAT,
            requires_base_url=True,
            required_options=("api_version",),
            price_provider_id="azure",
            allowed_options=_COMMON_OPTIONS | {"api_version", "deployment", "deployments"},
        ),
        ProviderTypeSpec(
            ProviderType.GEMINI,
            Protocol.OPENAI_CHAT,
            default_base_url="https://generativelanguage.googleapis.com/v1beta/openai/",
            price_provider_id="google",
            allowed_options=_COMMON_OPTIONS,
        ),
        ProviderTypeSpec(
            ProviderType.MISTRAL,
            Protocol.OPENAI_CHAT,
            default_base_url="https://api.mistral.ai/v1",
            price_provider_id="mistral",
            allowed_options=_COMMON_OPTIONS,
        ),
        ProviderTypeSpec(
            ProviderType.TOGETHER,
            Protocol.OPENAI_CHAT,
            default_base_url="https://api.together.xyz/v1",
            price_provider_id="together",
            allowed_options=_COMMON_OPTIONS,
        ),
        ProviderTypeSpec(
            ProviderType.GROQ,
            Protocol.OPENAI_CHAT,
            default_base_url="https://api.groq.com/openai/v1",
            price_provider_id="groq",
            allowed_options=_COMMON_OPTIONS,
        ),
        ProviderTypeSpec(
            ProviderType.OLLAMA,
            Protocol.OPENAI_CHAT,
            default_base_url="http://localhost:11434/v1",
            requires_api_key=False,
            self_hosted=True,
            allowed_options=_COMMON_OPTIONS,
        ),
        ProviderTypeSpec(
            ProviderType.OPENAI_COMPATIBLE,
            Protocol.OPENAI_CHAT,
            requires_api_key=False,
            requires_base_url=True,
            allowed_options=_COMMON_OPTIONS | {"organization", "project"},
        ),
        ProviderTypeSpec(
            ProviderType.ANTHROPIC,
            Protocol.ANTHROPIC_MESSAGES,
            default_base_url="https://api.anthropic.com",
            price_provider_id="anthropic",
            allowed_options=_COMMON_OPTIONS,
        ),
        ProviderTypeSpec(
            ProviderType.BEDROCK,
            Protocol.BEDROCK_CONVERSE,
            requires_api_key=False,
            requires_aws_credentials=True,
            price_provider_id="aws",
            allowed_options=_COMMON_OPTIONS,
        ),
        ProviderTypeSpec(
            ProviderType.FAKE,
            Protocol.FAKE,
            requires_api_key=False,
            allowed_options=frozenset(
                {"latency_ms", "chunk_latency_ms", "failure", "fail_first", "models", "reply"}
            ),
        ),
    )
}


def provider_type_spec(provider_type: str) -> ProviderTypeSpec:
    try:
        return PROVIDER_TYPE_SPECS[provider_type]
    except KeyError:
        raise ValueError(f"Unknown provider type {provider_type!r}.") from None
