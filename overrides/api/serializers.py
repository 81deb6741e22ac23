"""Serializers of routing overrides (with ordered fallbacks) and resolved routes.

Provider configs are chosen among the request tenant's only: an id of
another tenant's config is "object does not exist", like an unknown id.
"""

from __future__ import annotations

from rest_framework import serializers

from llm_providers.api.serializers import (
    KnownFieldsOnly,
    PlainIntegerField,
    ProviderConfigSummarySerializer,
    TenantProviderConfigField,
)


class RoutingFallbackSerializer(KnownFieldsOnly, serializers.Serializer):
    """A provider config and model tried when the ones before it fail."""

    provider_config = TenantProviderConfigField(
        pk_field=serializers.UUIDField(), help_text="Id of a provider config of this tenant."
    )
    model = serializers.CharField(
        max_length=200, allow_blank=True, default="", help_text="Empty: its default model."
    )

    def validate(self, attrs):
        # A PATCH makes nested fields optional too; a fallback still needs its target.
        if "provider_config" not in attrs:
            raise serializers.ValidationError({"provider_config": "This field is required."})
        return attrs


class RoutingOverrideSerializer(KnownFieldsOnly, serializers.Serializer):
    """Routes a customer's and/or a service's calls to a provider config and model."""

    id = PlainIntegerField(read_only=True)
    customer_id = serializers.CharField(
        max_length=200, allow_blank=True, default="", help_text="Empty matches any customer."
    )
    service_name = serializers.CharField(
        max_length=200, allow_blank=True, default="", help_text="Empty matches any service."
    )
    provider_config = TenantProviderConfigField(
        pk_field=serializers.UUIDField(), help_text="Id of a provider config of this tenant."
    )
    model = serializers.CharField(
        max_length=200,
        allow_blank=True,
        default="",
        help_text="For the calls that name no model (a call's model replaces it); empty: "
        "the provider config's default model.",
    )
    fallbacks = RoutingFallbackSerializer(
        many=True,
        default=list,
        max_length=20,
        help_text="Tried in this order when the target fails; a write replaces the whole list.",
    )
    is_active = serializers.BooleanField(default=True)
    note = serializers.CharField(max_length=300, allow_blank=True, default="")
    rule = serializers.ChoiceField(
        choices=["customer_service", "customer", "service"],
        read_only=True,
        help_text="Which routing rule this override is.",
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class RoutingOverrideFilterSerializer(serializers.Serializer):
    """Query parameters of the override list."""

    customer_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    service_name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class RouteQuerySerializer(serializers.Serializer):
    customer_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    service_name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class RouteTargetSerializer(serializers.Serializer):
    provider_config = ProviderConfigSummarySerializer()
    model = serializers.CharField()


class RouteSerializer(serializers.Serializer):
    rule = serializers.ChoiceField(
        choices=["customer_service", "customer", "service", "default"],
        help_text="The rule that matched: an override's scope, or the tenant default.",
    )
    override_id = PlainIntegerField(allow_null=True)
    provider_config = ProviderConfigSummarySerializer(source="primary.provider_config")
    model = serializers.CharField(source="primary.model")
    fallbacks = RouteTargetSerializer(many=True)
    explanation = serializers.CharField(source="explain")
