"""Recording call logs: one row per provider attempt, cache hit or refused call."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings

from llm_providers.adapters.errors import MAX_MESSAGE_LENGTH
from llm_providers.adapters.types import Usage

from .models import CallLog

# A prompt preview keeps this many characters (only when the tenant turns previews on).
PREVIEW_LENGTH = 500


def call_log_record(
    *,
    tenant_id,
    request_id,
    attempt: int,
    status: str,
    created_at: datetime,
    operation: str = "complete",
    provider_config_id=None,
    provider_type: str = "",
    model_requested: str = "",
    model_answered: str = "",
    customer_id: str = "",
    service_name: str = "",
    route_rule: str = "",
    error_code: str = "",
    error_message: str = "",
    usage: Usage | None = None,
    usage_estimated: bool = False,
    cost_usd: Decimal | None = None,
    price_source: str = "",
    latency_ms: int = 0,
    time_to_first_token_ms: int | None = None,
    streamed: bool = False,
    input_hash: str = "",
    prompt_preview: str = "",
) -> CallLog:
    """Write one CallLog row. Error messages must already be scrubbed of secrets.

    The row is committed on its own connection (settings.CALL_LOG_DATABASE),
    independently of any transaction the caller has open.
    """
    usage = usage or Usage()
    return CallLog.objects.using(settings.CALL_LOG_DATABASE).create(
        tenant_id=tenant_id,
        request_id=request_id,
        attempt=attempt,
        operation=operation,
        provider_config_id=provider_config_id,
        provider_type=provider_type,
        model_requested=model_requested[:200],
        model_answered=model_answered[:200],
        customer_id=customer_id,
        service_name=service_name,
        route_rule=route_rule,
        status=status,
        error_code=error_code[:64],
        error_message=error_message[:MAX_MESSAGE_LENGTH],
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        usage_estimated=usage_estimated,
        cost_usd=cost_usd,
        price_source=price_source,
        latency_ms=max(latency_ms, 0),
        time_to_first_token_ms=time_to_first_token_ms,
        streamed=streamed,
        input_hash=input_hash,
        prompt_preview=prompt_preview[:PREVIEW_LENGTH],
        created_at=created_at,
    )
