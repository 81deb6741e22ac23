"""Serializers of provider configs, connection tests, service keys, completions and embeddings.

Secrets are write-only: a response shows `key_mask` (`sk-…abcd`) and
`has_key`, never a key, its fingerprint or its ciphertext. Serializers only
validate types and shapes; the services validate the configuration itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from llm_providers.chat_input import (
    MAX_DEADLINE_SECONDS,
    MAX_EMBED_INPUTS,
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_LIMIT,
    MAX_TOOL_CALL_EXTRA_CONTENT_BYTES,
    MIN_DEADLINE_SECONDS,
    InvalidRequest,
    deadline_validate,
)
from llm_providers.json_values import (
    MAX_JSON_DEPTH,
    TOO_DEEP,
    json_value_error,
    json_value_problem,
    text_problem,
)
from llm_providers.models import ProviderConfig, ServiceKey, model_names_unique
from llm_providers.provider_types import ProviderType
from llm_providers.selectors import provider_config_list

from .health import STATUS_ERROR, STATUS_NOT_CONFIGURED, STATUS_OK

# PostgreSQL's integer column.
MAX_INTEGER = 2_147_483_647

_PLAIN_INTEGER = re.compile(r"-?[0-9]+")


def integer_text_is_plain(text: str) -> bool:
    """Whether text is an integer as the API takes one: ASCII digits, a minus sign
    before them at most. int() also takes "1_000", "+50", " 50" and digits of other
    scripts."""
    return _PLAIN_INTEGER.fullmatch(text) is not None


class PlainIntegerField(serializers.IntegerField):
    """An integer; one sent as a string is plain digits (see integer_text_is_plain).

    A negative one is an integer: the field's min_value refuses it, naming the bound.
    """

    def to_internal_value(self, data):
        if isinstance(data, str) and not integer_text_is_plain(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class PlainBigIntegerField(PlainIntegerField, serializers.BigIntegerField):
    """A big integer; one sent as a string is plain digits."""


_PLAIN_INTEGER_FIELDS = {
    serializers.IntegerField: PlainIntegerField,
    serializers.BigIntegerField: PlainBigIntegerField,
}


# The base of the API's model serializers: model integer fields become plain
# integer fields, as declared ones are. A comment, not a docstring, for the
# reason given at KnownFieldsOnly.
class ModelSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        model_field: _PLAIN_INTEGER_FIELDS.get(field, field)
        for model_field, field in serializers.ModelSerializer.serializer_field_mapping.items()
    }


# Input with a field the serializer does not have is refused, not ignored: a
# misspelt name (`apikey`, `webhook`) would otherwise create the object without
# what the caller meant to set. Read-only fields are known: what a GET returned
# can be sent back. Mixed in before the DRF serializer class. A comment, not a
# docstring: the schema describes a serializer without a docstring of its own
# by the first one in its bases, and this one is about the code, not the API.
class KnownFieldsOnly:
    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(str(name) for name in data if name not in self.fields)
            if unknown:
                known = ", ".join(n for n, field in self.fields.items() if not field.read_only)
                raise serializers.ValidationError(
                    {
                        name: [f"Unknown field. The fields that can be set are: {known}."]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


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


class ProviderConfigSerializer(KnownFieldsOnly, serializers.Serializer):
    """One tenant's account at one provider."""

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
        help_text=(
            "Empty: the provider's standard endpoint; azure_openai and openai_compatible need one."
        ),
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
    priority = PlainIntegerField(min_value=0, max_value=MAX_INTEGER, default=100)
    rpm_limit = PlainIntegerField(min_value=1, max_value=MAX_INTEGER, allow_null=True, default=None)
    tpm_limit = PlainIntegerField(min_value=1, max_value=MAX_INTEGER, allow_null=True, default=None)

    key_mask = serializers.CharField(read_only=True, help_text="The key as shown: `sk-…abcd`.")
    has_key = serializers.BooleanField(read_only=True)
    last_test_status = serializers.ChoiceField(
        choices=ProviderConfig.TestStatus.choices, read_only=True
    )
    last_tested_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_test_latency_ms = PlainIntegerField(read_only=True, allow_null=True)
    last_test_error = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def validate_allowed_models(self, value: list[str]) -> list[str]:
        return model_names_unique(value)

    def validate_options(self, value: dict) -> dict:
        error = json_value_error(value, subject="Options")
        if error:
            raise serializers.ValidationError(error)
        return value


class ProviderConfigSummarySerializer(serializers.Serializer):
    """A provider config named in another resource (routes, call logs)."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    provider_type = serializers.ChoiceField(choices=ProviderType.choices)


class ConnectionCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    latency_ms = PlainIntegerField()
    models = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(
        allow_blank=True, help_text="Empty when ok; the provider's answer, secrets removed."
    )


class ServiceKeySerializer(KnownFieldsOnly, ModelSerializer):
    """A key with which a program acts for the tenant; only its prefix is ever shown."""

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
    """A service key just created: `key` is the full key, shown this once."""

    key = serializers.CharField(
        read_only=True,
        help_text="The full key, shown this once: send it as `Authorization: Api-Key <key>`.",
    )

    class Meta(ServiceKeySerializer.Meta):
        fields = [*ServiceKeySerializer.Meta.fields, "key"]


class ComponentHealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[STATUS_OK, STATUS_ERROR, STATUS_NOT_CONFIGURED])
    latency_ms = PlainIntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True, help_text="The failure's kind, when down.")


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[STATUS_OK, STATUS_ERROR])
    components = serializers.DictField(child=ComponentHealthSerializer())


# --- completions and embeddings --------------------------------------------------


_TEXT_INVALID = "Text must not contain NUL characters or unpaired surrogates."
_TOO_DEEP = f"Must not be nested more than {MAX_JSON_DEPTH} levels deep."

_TEXT_PART_SCHEMA = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    "required": ["type", "text"],
}
_IMAGE_PART_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["image_url"]},
        "image_url": {
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "pattern": "^data:image/(png|jpeg|jpg|gif|webp);base64,[A-Za-z0-9+/=]+$",
                    "description": "A base64 data URL: images are never fetched from links.",
                }
            },
            "required": ["url"],
        },
    },
    "required": ["type", "image_url"],
}


def _message_schema(role: str, content: dict, **extra: dict) -> dict:
    required = ["role", "content", *(name for name in extra if name == "tool_call_id")]
    return {
        "type": "object",
        "title": f"{role} message",
        "properties": {
            "role": {"type": "string", "enum": [role]},
            "content": content,
            **extra,
        },
        "required": required,
    }


EXTRA_CONTENT_DESCRIPTION = (
    "The provider's opaque data about the tool call, which it wants back with the call in "
    "the assistant message of later requests: send it back unchanged. Gemini 3 gives its "
    'thought signature here ({"google": {"thought_signature": "..."}}); null when the '
    "provider gave none."
)
_EXTRA_CONTENT_SCHEMA = {
    "type": "object",
    "nullable": True,
    "additionalProperties": True,
    "properties": {
        "google": {
            "type": "object",
            "additionalProperties": True,
            "properties": {"thought_signature": {"type": "string", "minLength": 1}},
        }
    },
    "description": EXTRA_CONTENT_DESCRIPTION
    + f" At most {MAX_TOOL_CALL_EXTRA_CONTENT_BYTES:,} bytes as JSON; passed on to the gemini "
    "preset only.",
}
_TOOL_CALL_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "arguments": {"type": "string", "description": "JSON text."},
            },
            "required": ["name", "arguments"],
        },
        "extra_content": _EXTRA_CONTENT_SCHEMA,
    },
    "required": ["id", "type", "function"],
}
MESSAGES_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "description": "The conversation, oldest first, as in OpenAI's Chat Completions: at least "
    "one message that is not a system message.",
    "items": {
        "oneOf": [
            _message_schema(
                "system",
                {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": _TEXT_PART_SCHEMA, "minItems": 1},
                    ]
                },
            ),
            _message_schema(
                "user",
                {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "items": {"oneOf": [_TEXT_PART_SCHEMA, _IMAGE_PART_SCHEMA]},
                            "minItems": 1,
                        },
                    ]
                },
            ),
            _message_schema(
                "assistant",
                {"type": "string", "nullable": True},
                tool_calls={"type": "array", "items": _TOOL_CALL_SCHEMA},
            ),
            _message_schema(
                "tool",
                {"type": "string"},
                tool_call_id={"type": "string", "description": "The tool call it answers."},
            ),
        ]
    },
}
TOOLS_SCHEMA = {
    "type": "array",
    "nullable": True,
    "description": "Function tools the model may call.",
    "items": {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["function"]},
            "function": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "description": {"type": "string"},
                    "parameters": {"type": "object", "description": "A JSON schema."},
                },
                "required": ["name"],
            },
        },
        "required": ["type", "function"],
    },
}


class _JSONObjectListField(serializers.ListField):
    """A list of JSON objects whose texts are all storable. Their shape is checked by the
    completion service, which names the exact place at fault (`messages[2].content`)."""

    def __init__(self, **kwargs):
        super().__init__(child=serializers.DictField(), **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        problem = json_value_problem(value)
        if problem == TOO_DEEP:
            raise serializers.ValidationError(_TOO_DEEP)
        if problem:
            raise serializers.ValidationError(_TEXT_INVALID)
        return value


@extend_schema_field(MESSAGES_SCHEMA)
class ChatMessagesField(_JSONObjectListField):
    """The chat messages of a completion request."""


@extend_schema_field(TOOLS_SCHEMA)
class ToolsField(_JSONObjectListField):
    """The function tools of a completion request."""


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}},
        ]
    }
)
class TextOrTextListField(serializers.Field):
    """A string, or a list of strings (stop sequences, embedding inputs)."""

    default_error_messages = {
        "invalid": "Must be a string or a list of strings.",
        "max_items": "At most {max_items} items.",
        "text": _TEXT_INVALID,
    }

    def __init__(self, *, max_items: int, **kwargs):
        self.max_items = max_items
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            self.fail("invalid")
        if len(items) > self.max_items:
            self.fail("max_items", max_items=self.max_items)
        if any(text_problem(item) for item in items):
            self.fail("text")
        return data

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "type": "number",
        "minimum": MIN_DEADLINE_SECONDS,
        "maximum": MAX_DEADLINE_SECONDS,
        "nullable": True,
    }
)
class DeadlineField(serializers.Field):
    """Seconds the whole call may take: a JSON number within the bounds."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault(
            "help_text",
            "Seconds the whole call may take, retries, waits and fallbacks included; "
            "each attempt's timeout is capped at the time left. A streamed call is bounded "
            "until its first chunk. Unset: the server's LLM_CALL_DEADLINE_SECONDS. At most "
            "600, or the server's USAGE_BUDGET_RESERVATION_TTL_SECONDS less 60 when that is less.",
        )
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        try:
            return deadline_validate(data)
        except InvalidRequest as refused:
            raise serializers.ValidationError(refused.message, code="invalid") from None

    def to_representation(self, value):
        return value


# Bounds of a request: far beyond any model's context, small enough to refuse garbage early.
MAX_MESSAGES = 10_000
MAX_TOOLS = 128


class _RoutingFieldsSerializer(KnownFieldsOnly, serializers.Serializer):
    customer_id = serializers.CharField(
        max_length=200,
        allow_blank=True,
        default="",
        help_text="Who the call is for: picks the routing override and budgets.",
    )
    service_name = serializers.CharField(
        max_length=200,
        allow_blank=True,
        default="",
        help_text="Which program calls: picks the routing override and budgets.",
    )


class CompletionRequestSerializer(_RoutingFieldsSerializer):
    """One chat completion: the messages and how to answer them."""

    messages = ChatMessagesField(allow_empty=False, max_length=MAX_MESSAGES)
    model = serializers.CharField(
        max_length=200,
        allow_blank=True,
        default="",
        help_text="Empty: the model of the route. Given: replaces the primary target's model "
        "(it must be allowed on that provider config).",
    )
    max_tokens = PlainIntegerField(
        min_value=1, max_value=MAX_TOKENS_LIMIT, required=False, allow_null=True
    )
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False, allow_null=True)
    top_p = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    stop = TextOrTextListField(
        max_items=MAX_STOP_SEQUENCES,
        required=False,
        allow_null=True,
        help_text=f"A stop sequence, or a list of up to {MAX_STOP_SEQUENCES}.",
    )
    json_mode = serializers.BooleanField(default=False, help_text="Answer with one JSON object.")
    tools = ToolsField(required=False, allow_null=True, max_length=MAX_TOOLS)
    stream = serializers.BooleanField(
        default=False,
        help_text="Answer with server-sent events (text/event-stream) as the text arrives.",
    )
    deadline = DeadlineField()

    def completion_arguments(self) -> dict:
        """validated_data as `complete()` / `stream()` take them (without `stream`)."""
        data = dict(self.validated_data)
        data.pop("stream", None)
        data["model"] = data.get("model") or None
        return data


class EmbeddingRequestSerializer(_RoutingFieldsSerializer):
    """Texts to embed with one model."""

    inputs = TextOrTextListField(
        max_items=MAX_EMBED_INPUTS, help_text="A text, or a list of texts, to embed."
    )
    model = serializers.CharField(
        max_length=200, help_text="The embedding model; vectors of different models do not mix."
    )
    deadline = DeadlineField()


class TokenUsageSerializer(serializers.Serializer):
    input_tokens = PlainIntegerField(help_text="The whole prompt, cached parts included.")
    output_tokens = PlainIntegerField(help_text="Everything generated, reasoning included.")
    cache_read_tokens = PlainIntegerField()
    cache_write_tokens = PlainIntegerField()
    reasoning_tokens = PlainIntegerField()


class ToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    arguments = serializers.CharField(help_text="JSON text, as the model produced it.")
    extra_content = serializers.DictField(allow_null=True, help_text=EXTRA_CONTENT_DESCRIPTION)


class _CallResultSerializer(serializers.Serializer):
    request_id = serializers.UUIDField(help_text="Names the call's rows in /calls/.")
    usage = TokenUsageSerializer()
    cost_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=12,
        allow_null=True,
        help_text="USD, exact; null when the model has no known price (price_source `unknown`).",
    )
    price_source = serializers.CharField()
    provider = serializers.CharField(help_text="The name of the provider config that answered.")
    provider_config = serializers.UUIDField(source="provider_config_id")
    provider_type = serializers.ChoiceField(choices=ProviderType.choices)
    model = serializers.CharField(help_text="The model that answered.")
    latency_ms = PlainIntegerField()
    attempts = PlainIntegerField(help_text="Provider attempts, retries and fallbacks included.")


class CompletionDoneSerializer(_CallResultSerializer):
    """Everything about a completion but its text: the final server-sent event."""

    tool_calls = ToolCallSerializer(many=True)
    finish_reason = serializers.CharField(
        help_text="stop, length, tool_calls, content_filter; aborted or error for a stream "
        "that ended early."
    )
    usage_estimated = serializers.BooleanField(
        help_text="The provider reported no usage (or the stream broke): tokens are estimated."
    )
    cached = serializers.BooleanField(help_text="Served from the response cache (cost 0).")
    route_rule = serializers.CharField(help_text="The routing rule that chose the provider.")


class CompletionResultSerializer(CompletionDoneSerializer):
    content = serializers.CharField(allow_blank=True)


class EmbeddingResultSerializer(_CallResultSerializer):
    vectors = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()),
        help_text="One vector per input, in order.",
    )
    usage_estimated = serializers.BooleanField(
        help_text="The provider reported no usage: tokens are estimated."
    )


class TenantProviderConfigField(serializers.PrimaryKeyRelatedField):
    """A provider config id, looked up among the serializer context's tenant only:
    another tenant's id is as unknown as an id that does not exist."""

    default_error_messages = {
        **serializers.PrimaryKeyRelatedField.default_error_messages,
        "does_not_exist": "No provider config with id “{pk_value}” in this tenant.",
        "incorrect_type": "A provider config id is a UUID string, not {data_type}.",
    }

    def to_internal_value(self, data):
        # A number would be taken as the integer value of a UUID ("…0005").
        if not isinstance(data, str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)

    def get_queryset(self):
        tenant = self.context.get("tenant")
        if tenant is None:
            return ProviderConfig.objects.none()
        return provider_config_list(tenant=tenant)
