"""Serializers of call logs, usage reports, budgets and alerts, and of their query parameters.

Money is a decimal string in USD. A budget's webhook URL is write-only:
responses say only whether one is stored (`has_webhook`).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from llm_providers.api.serializers import (
    KnownFieldsOnly,
    ModelSerializer,
    PlainIntegerField,
    ProviderConfigSummarySerializer,
    TenantProviderConfigField,
)
from usage.models import AlertDelivery, Budget, CallLog, CostAlert, email_list_parse

# What the admin proposes for a new budget, too.
DEFAULT_ALERT_PERCENTAGES = (50, 80, 100)


class CallLogSerializer(ModelSerializer):
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
        help_text=(
            "USD, exact; null when the model has no known price (price_source `unknown`) "
            "or when nothing was priced: a call refused or failed before any answer "
            "(price_source empty)."
        ),
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


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that names its UTC offset.

    One without (or a date alone) is refused: it could be meant in UTC or in
    the tenant's time zone, up to a day apart, and reading it in either would
    silently answer other rows than asked for.
    """

    default_error_messages = {
        "no_offset": "Give the time with its UTC offset (Z or ±HH:MM), e.g. "
        "2026-03-01T00:00:00Z: without one it could be UTC's time or the tenant's."
    }

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None  # not a time: the parent says so
            if parsed is not None and parsed.tzinfo is None:
                self.fail("no_offset")
        return super().to_internal_value(value)


class CallLogFilterSerializer(serializers.Serializer):
    """Query parameters of the call log list; each narrows the list."""

    status = serializers.ChoiceField(choices=CallLog.Status.choices, required=False)
    provider_config = serializers.UUIDField(required=False)
    model = serializers.CharField(max_length=200, required=False)
    service_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    customer_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    request_id = serializers.UUIDField(required=False)
    created_after = AwareDateTimeField(
        required=False, help_text="ISO 8601 with its UTC offset; calls at or after this instant."
    )
    created_before = AwareDateTimeField(
        required=False, help_text="ISO 8601 with its UTC offset; calls before this instant."
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


# --- usage reports -------------------------------------------------------------

# 30 days unless told otherwise: the dashboard's window.
DEFAULT_DAYS = 30
MAX_DAYS = 365
# A start/end range may cover a whole leap year.
MAX_RANGE_DAYS = 366
DEFAULT_GROUP_LIMIT = 100
MAX_GROUP_LIMIT = 1000


class UsageWindowSerializer(serializers.Serializer):
    """Query parameters choosing the tenant-local days of a usage report.

    Either `days` (the last N days, today included) or `start` and `end`
    (inclusive); nothing means the last 30 days. `validated_data` holds
    `first_day` and `last_day`. The serializer context names `today` in the
    tenant's time zone.
    """

    days = PlainIntegerField(
        min_value=1,
        max_value=MAX_DAYS,
        required=False,
        help_text="The last N days in the tenant's time zone, today included (default 30).",
    )
    start = serializers.DateField(
        required=False, help_text="First day (YYYY-MM-DD, inclusive), in the tenant's time zone."
    )
    end = serializers.DateField(
        required=False,
        help_text=f"Last day (inclusive; default today). At most {MAX_RANGE_DAYS} days from start.",
    )

    def validate(self, attrs):
        today = self.context["today"]
        days, start, end = attrs.get("days"), attrs.get("start"), attrs.get("end")
        if days is not None and (start is not None or end is not None):
            raise serializers.ValidationError(
                {"days": ["Give either days or a start (and end) date, not both."]}
            )
        if start is None and end is not None:
            raise serializers.ValidationError(
                {"start": ["Give the first day of the range too (start=YYYY-MM-DD)."]}
            )
        if start is None:
            count = days or DEFAULT_DAYS
            return {"first_day": today - timedelta(days=count - 1), "last_day": today}
        if end is None:
            # The range ends today: a refusal names `start`, the parameter given.
            if start > today:
                raise serializers.ValidationError(
                    {
                        "start": [
                            f"The first day ({start}) is after today ({today}), "
                            "where a range without end ends."
                        ]
                    }
                )
            length = (today - start).days + 1
            if length > MAX_RANGE_DAYS:
                raise serializers.ValidationError(
                    {
                        "start": [
                            f"The range from {start} to today ({today}) covers {length} days; "
                            f"at most {MAX_RANGE_DAYS} are allowed."
                        ]
                    }
                )
            return {"first_day": start, "last_day": today}
        if end < start:
            raise serializers.ValidationError(
                {"end": [f"The last day ({end}) is before the first day ({start})."]}
            )
        length = (end - start).days + 1
        if length > MAX_RANGE_DAYS:
            raise serializers.ValidationError(
                {"end": [f"The range covers {length} days; at most {MAX_RANGE_DAYS} are allowed."]}
            )
        return {"first_day": start, "last_day": end}


class UsageGroupLimitSerializer(UsageWindowSerializer):
    limit = PlainIntegerField(
        min_value=1,
        max_value=MAX_GROUP_LIMIT,
        default=DEFAULT_GROUP_LIMIT,
        help_text=f"At most this many groups, most expensive first (default "
        f"{DEFAULT_GROUP_LIMIT}, at most {MAX_GROUP_LIMIT}).",
    )

    def validate(self, attrs):
        limit = attrs["limit"]
        return {**super().validate(attrs), "limit": limit}


def _count(help_text: str) -> PlainIntegerField:
    return PlainIntegerField(help_text=help_text)


class UsageFiguresSerializer(serializers.Serializer):
    requests = _count("Requests: provider attempts, cache hits and refused calls.")
    errors = _count("Attempts that failed.")
    blocked = _count("Calls refused before any provider call (budget or rate limit).")
    cached = _count("Calls served from the response cache.")
    unpriced_requests = _count("Requests whose model has no known price: not in cost_usd.")
    input_tokens = _count("Prompt tokens, cache reads and writes included.")
    output_tokens = _count("Generated tokens, reasoning included.")
    cache_read_tokens = _count("Prompt tokens read from the provider's cache.")
    cache_write_tokens = _count("Prompt tokens written to the provider's cache.")
    reasoning_tokens = _count("Reasoning tokens (part of output_tokens).")
    cost_usd = serializers.DecimalField(
        max_digits=24,
        decimal_places=12,
        allow_null=True,
        help_text="USD, exact, of the priced requests ($0 included: cache hits, free models); "
        "null only when there are unpriced requests and none priced (the cost is unknown, "
        "not $0).",
    )
    average_latency_ms = _count("Mean latency per request, in milliseconds.")


class _UsageWindowFieldsSerializer(serializers.Serializer):
    start = serializers.DateField(source="first_day", help_text="First day, inclusive.")
    end = serializers.DateField(source="last_day", help_text="Last day, inclusive.")
    timezone = serializers.CharField(
        source="timezone_name", help_text="The tenant's time zone, in which days are counted."
    )
    totals = UsageFiguresSerializer()


class UsageSummarySerializer(_UsageWindowFieldsSerializer):
    """Totals over the window."""


class ProviderUsageGroupSerializer(UsageFiguresSerializer):
    provider_config = serializers.UUIDField(
        source="provider_config_id",
        allow_null=True,
        help_text="Null for calls that had no provider config.",
    )
    provider_name = serializers.CharField(
        allow_null=True, help_text="Null when the provider config has been deleted since."
    )
    provider_type = serializers.CharField(
        help_text="The config's current type (one group per config, whatever types it had); "
        "for calls without a config, theirs."
    )


class ModelUsageGroupSerializer(UsageFiguresSerializer):
    model = serializers.CharField(help_text="The model that answered (else the one asked for).")


class ServiceUsageGroupSerializer(UsageFiguresSerializer):
    service_name = serializers.CharField(help_text="Empty: calls that named no service.")


class CustomerUsageGroupSerializer(UsageFiguresSerializer):
    customer_id = serializers.CharField(help_text="Empty: calls that named no customer.")


class DayUsageSerializer(UsageFiguresSerializer):
    day = serializers.DateField()


class UsageByProviderSerializer(_UsageWindowFieldsSerializer):
    groups = ProviderUsageGroupSerializer(many=True)


class UsageByModelSerializer(_UsageWindowFieldsSerializer):
    groups = ModelUsageGroupSerializer(many=True)


class UsageByServiceSerializer(_UsageWindowFieldsSerializer):
    groups = ServiceUsageGroupSerializer(many=True)


class UsageByCustomerSerializer(_UsageWindowFieldsSerializer):
    groups = CustomerUsageGroupSerializer(many=True)
    has_more = serializers.BooleanField(help_text="More customers than `limit` had usage.")


class UsageDailySerializer(_UsageWindowFieldsSerializer):
    days = DayUsageSerializer(many=True, source="groups", help_text="Every day, in order.")


class ProviderUsageSerializer(_UsageWindowFieldsSerializer):
    provider_config = ProviderConfigSummarySerializer()
    models = ModelUsageGroupSerializer(many=True, help_text="Per model, most expensive first.")
    days = DayUsageSerializer(many=True, help_text="Every day, in order.")


# --- budgets -------------------------------------------------------------------


class BudgetSerializer(KnownFieldsOnly, serializers.Serializer):
    """A spending limit for the tenant, or for one provider config, service and/or customer."""

    id = PlainIntegerField(read_only=True)
    name = serializers.CharField(max_length=100)
    is_active = serializers.BooleanField(default=True)
    period = serializers.ChoiceField(
        choices=Budget.Period.choices,
        default=Budget.Period.MONTHLY,
        help_text="A tenant-local day or calendar month.",
    )
    limit_usd = serializers.DecimalField(
        max_digits=14,
        decimal_places=4,
        min_value=Decimal("0.0001"),
        help_text="USD per period, as a decimal string.",
    )
    action = serializers.ChoiceField(
        choices=Budget.Action.choices,
        default=Budget.Action.ALERT,
        help_text="`block` refuses calls that would go over the limit; `alert` only alerts.",
    )
    provider_config = TenantProviderConfigField(
        pk_field=serializers.UUIDField(),
        allow_null=True,
        default=None,
        help_text="Only calls to this provider config of the tenant; null: every provider.",
    )
    service_name = serializers.CharField(
        max_length=200, allow_blank=True, default="", help_text="Empty: every service."
    )
    customer_id = serializers.CharField(
        max_length=200, allow_blank=True, default="", help_text="Empty: every customer."
    )
    alert_percentages = serializers.ListField(
        child=PlainIntegerField(min_value=1, max_value=1000),
        default=lambda: list(DEFAULT_ALERT_PERCENTAGES),
        max_length=20,
        help_text="Alert when spend crosses these percentages of the limit.",
    )
    alert_emails = serializers.ListField(
        child=serializers.EmailField(max_length=254),
        default=list,
        max_length=50,
        help_text="Addresses that receive alerts.",
    )
    webhook_url = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=2000,
        style={"input_type": "password"},
        help_text="Write-only: receives a JSON POST with a Slack-compatible “text”; http(s) to "
        "a public host. Omitted keeps the stored URL; empty or null removes it.",
    )
    has_webhook = serializers.BooleanField(read_only=True, help_text="A webhook URL is stored.")
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["alert_emails"] = email_list_parse(instance.alert_emails)
        data["has_webhook"] = bool(instance.webhook_url)
        return data

    def validate_webhook_url(self, value):
        if value and "\x00" in value:
            raise serializers.ValidationError("The webhook URL must not contain NUL characters.")
        return value

    def service_data(self) -> dict:
        """validated_data as the budget services take it (emails as one text)."""
        data = dict(self.validated_data)
        if "alert_emails" in data:
            data["alert_emails"] = ", ".join(data["alert_emails"])
        return data


# --- alerts --------------------------------------------------------------------


class AlertDeliverySerializer(ModelSerializer):
    state = serializers.ChoiceField(
        choices=["pending", "sending", "retrying", "delivered", "failed"], read_only=True
    )
    target_label = serializers.CharField(
        read_only=True,
        help_text="What may be shown of the target: the addresses of an email, only "
        "scheme and host of a webhook.",
    )

    class Meta:
        model = AlertDelivery
        fields = [
            "channel",
            "target_label",
            "state",
            "attempts",
            "last_error",
            "next_attempt_at",
            "delivered_at",
        ]
        read_only_fields = fields


class CostAlertSerializer(ModelSerializer):
    budget = PlainIntegerField(
        source="budget_id", read_only=True, allow_null=True, help_text="Null once deleted."
    )
    provider_config = serializers.UUIDField(
        source="provider_config_id", read_only=True, allow_null=True
    )
    spend_usd = serializers.DecimalField(
        max_digits=24, decimal_places=12, read_only=True, allow_null=True
    )
    limit_usd = serializers.DecimalField(
        max_digits=14, decimal_places=4, read_only=True, allow_null=True
    )
    deliveries = AlertDeliverySerializer(many=True, read_only=True)

    class Meta:
        model = CostAlert
        fields = [
            "id",
            "kind",
            "budget",
            "provider_config",
            "period_key",
            "percent",
            "spend_usd",
            "limit_usd",
            "message",
            "created_at",
            "deliveries",
        ]
        read_only_fields = fields


class CostAlertFilterSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=CostAlert.Kind.choices, required=False)
    budget = PlainIntegerField(
        min_value=1, max_value=2**63 - 1, required=False, help_text="A budget's id."
    )

    def selector_filters(self) -> dict:
        data = dict(self.validated_data)
        if "budget" in data:
            data["budget_id"] = data.pop("budget")
        return data
