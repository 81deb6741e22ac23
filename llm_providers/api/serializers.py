"""Serializers of provider configs, connection tests and service keys.

Secrets are write-only: a response shows `key_mask` (`sk-…abcd`) and
`has_key`, never a key, its fingerprint or its ciphertext. Serializers only
validate types and shapes; the services validate the configuration itself.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from llm_providers.models import ProviderConfig, ServiceKey
from llm_providers.provider_types import ProviderType

from .health import STATUS_ERROR, STATUS_NOT_CONFIGURED, STATUS_OK

# PostgreSQL's integer column.
MAX_INTEGER = 2_147_483_647


def _secret_field(label: str) -> serializers.CharField:
    return serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=2000,
        label=label,
        style={"input_type": "password"},
        help_text=f"Write-only. Omitted or empty keeps the stored {label.lower()}.",
    )


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(v) for v in value)
    return False


class ProviderConfigSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    name = serializers.CharField(max_length=100)
    provider_type = serializers.ChoiceField(choices=ProviderType.choices)
    api_key = _secret_field("API key")
    aws_access_key_id = _secret_field("AWS access key id")
    aws_secret_access_key = _secret_field("AWS secret access key")
    aws_region = serializers.CharField(max_length=32, allow_blank=True, default="")
    base_url = serializers.CharField(
        max_length=500,
        allow_blank=True,
        default="",
        help_text="Empty: the provider's standard endpoint.",
    )
    options = serializers.DictField(
        default=dict,
        help_text="Provider-specific options (api_version, organization, deployments, timeout…).",
    )
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200), default=list, max_length=1000
    )
    default_model = serializers.CharField(max_length=200, allow_blank=True, default="")
    is_active = serializers.BooleanField(default=True)
    is_default = serializers.BooleanField(default=False)
    priority = serializers.IntegerField(min_value=0, max_value=MAX_INTEGER, default=100)
    rpm_limit = serializers.IntegerField(
        min_value=1, max_value=MAX_INTEGER, allow_null=True, default=None
    )
    tpm_limit = serializers.IntegerField(
        min_value=1, max_value=MAX_INTEGER, allow_null=True, default=None
    )

    key_mask = serializers.CharField(read_only=True, help_text="The key as shown: `sk-…abcd`.")
    has_key = serializers.BooleanField(read_only=True)
    last_test_status = serializers.ChoiceField(
        choices=ProviderConfig.TestStatus.choices, read_only=True
    )
    last_tested_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_test_latency_ms = serializers.IntegerField(read_only=True, allow_null=True)
    last_test_error = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def validate_options(self, value: dict) -> dict:
        if _contains_nul(value):
            raise serializers.ValidationError("Options must not contain NUL characters.")
        return value


class ProviderConfigSummarySerializer(serializers.Serializer):
    """A provider config named in another resource (routes, call logs)."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    provider_type = serializers.ChoiceField(choices=ProviderType.choices)


class ConnectionCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    latency_ms = serializers.IntegerField()
    models = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(
        allow_blank=True, help_text="Empty when ok; the provider's answer, secrets removed."
    )


class ServiceKeySerializer(serializers.ModelSerializer):
    has_expired = serializers.BooleanField(read_only=True)

    class Meta:
        model = ServiceKey
        fields = ["prefix", "name", "created", "expiry_date", "revoked", "has_expired"]
        read_only_fields = ["prefix", "created", "revoked"]
        extra_kwargs = {
            "name": {
                "required": True,
                "help_text": "What the key is for, e.g. the program using it.",
            },
            "expiry_date": {"help_text": "Empty: never expires."},
        }


class ServiceKeyCreatedSerializer(ServiceKeySerializer):
    key = serializers.CharField(
        read_only=True,
        help_text="The full key, shown this once: send it as `Authorization: Api-Key <key>`.",
    )

    class Meta(ServiceKeySerializer.Meta):
        fields = [*ServiceKeySerializer.Meta.fields, "key"]


class ComponentHealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[STATUS_OK, STATUS_ERROR, STATUS_NOT_CONFIGURED])
    latency_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True, help_text="The failure's kind, when down.")


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[STATUS_OK, STATUS_ERROR])
    components = serializers.DictField(child=ComponentHealthSerializer())
