"""Reads behind the call log endpoints: a tenant's call logs, filtered."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import Q, QuerySet

from llm_providers.models import Tenant
from usage.models import CallLog


def call_log_list(
    *,
    tenant: Tenant,
    status: str | None = None,
    provider_config_id: uuid.UUID | None = None,
    model: str | None = None,
    service_name: str | None = None,
    customer_id: str | None = None,
    request_id: uuid.UUID | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[CallLog]:
    """The tenant's call logs; `model` matches the model requested or answered,
    `created_after` is inclusive and `created_before` exclusive."""
    logs = CallLog.objects.filter(tenant=tenant)
    if status is not None:
        logs = logs.filter(status=status)
    if provider_config_id is not None:
        logs = logs.filter(provider_config_id=provider_config_id)
    if model is not None:
        logs = logs.filter(Q(model_requested=model) | Q(model_answered=model))
    if service_name is not None:
        logs = logs.filter(service_name=service_name)
    if customer_id is not None:
        logs = logs.filter(customer_id=customer_id)
    if request_id is not None:
        logs = logs.filter(request_id=request_id)
    if created_after is not None:
        logs = logs.filter(created_at__gte=created_after)
    if created_before is not None:
        logs = logs.filter(created_at__lt=created_before)
    return logs
