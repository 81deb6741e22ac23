"""Serializers of call logs and of their list filters."""

from __future__ import annotations

from rest_framework import serializers

from usage.models import CallLog


class CallLogSerializer(serializers.ModelSerializer):
    provider_config = serializers.UUIDField(
        source="provider_config_id",
        read_only=True,
        allow_null=True,
        help_text="Null when the provider config was deleted since.",
    )
    cost_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=12,
        read_only=True,
        allow_null=True,
        help_text="USD, exact; null when the model has no known price (price_source `unknown`).",
    )

    class Meta:
        model = CallLog
        fields = [
            "id",
            "request_id",
            "attempt",
            "operation",
            "provider_config",
            "provider_type",
            "model_requested",
            "model_answered",
            "customer_id",
            "service_name",
            "route_rule",
            "status",
            "error_code",
            "error_message",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "usage_estimated",
            "cost_usd",
            "price_source",
            "latency_ms",
            "time_to_first_token_ms",
            "streamed",
            "prompt_preview",
            "created_at",
        ]
        read_only_fields = fields


class CallLogFilterSerializer(serializers.Serializer):
    """Query parameters of the call log list; each narrows the list."""

    status = serializers.ChoiceField(choices=CallLog.Status.choices, required=False)
    provider_config = serializers.UUIDField(required=False)
    model = serializers.CharField(max_length=200, required=False)
    service_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    customer_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    request_id = serializers.UUIDField(required=False)
    created_after = serializers.DateTimeField(
        required=False, help_text="ISO 8601; calls at or after this instant."
    )
    created_before = serializers.DateTimeField(
        required=False, help_text="ISO 8601; calls before this instant."
    )

    def validate(self, attrs):
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after is not None and before is not None and after >= before:
            raise serializers.ValidationError(
                {"created_before": "Must be later than created_after."}
            )
        return attrs

    def selector_filters(self) -> dict:
        data = dict(self.validated_data)
        if "provider_config" in data:
            data["provider_config_id"] = data.pop("provider_config")
        return data
