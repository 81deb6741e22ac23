"""Call logs: one row per provider attempt, the source of every usage figure."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from llm_providers.models import ProviderConfig, Tenant
from llm_providers.provider_types import ProviderType


class CallLog(models.Model):
    """One attempt at a provider (retries and fallbacks each get a row), or a
    cache hit, or a call refused by a budget. Rows of one request share
    `request_id` and are numbered by `attempt`.

    Prompts are not kept unless the tenant turns previews on.
    """

    class Status(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        BLOCKED = "blocked", "Blocked"
        CACHED = "cached", "Cached"

    class PriceSource(models.TextChoices):
        GENAI_PRICES = "genai_prices", "genai-prices"
        OVERRIDE = "override", "ModelPrice override"
        SELF_HOSTED = "self_hosted", "Self-hosted (free)"
        NONE = "none", "Nothing to price"
        UNKNOWN = "unknown", "Unknown model price"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="call_logs")
    request_id = models.UUIDField()
    attempt = models.PositiveSmallIntegerField(default=1)
    operation = models.CharField(max_length=16, default="complete")

    provider_config = models.ForeignKey(
        ProviderConfig, on_delete=models.SET_NULL, null=True, blank=True, related_name="call_logs"
    )
    provider_type = models.CharField(max_length=32, choices=ProviderType.choices, blank=True)
    model_requested = models.CharField(max_length=200, blank=True)
    model_answered = models.CharField(max_length=200, blank=True)
    customer_id = models.CharField(max_length=200, blank=True)
    service_name = models.CharField(max_length=200, blank=True)
    route_rule = models.CharField(max_length=32, blank=True)

    status = models.CharField(max_length=8, choices=Status.choices)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)

    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)

    cost_usd = models.DecimalField(max_digits=20, decimal_places=12, null=True, blank=True)
    price_source = models.CharField(max_length=16, choices=PriceSource.choices, blank=True)

    latency_ms = models.PositiveIntegerField(default=0)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    streamed = models.BooleanField(default=False)
    input_hash = models.CharField(max_length=64, blank=True)
    prompt_preview = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "attempt"], name="call_log_unique_request_attempt"
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="call_log_tenant_created"),
            models.Index(fields=["created_at"], name="call_log_created"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id}#{self.attempt} {self.status}"
