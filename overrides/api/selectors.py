"""Reads behind the override endpoints: a tenant's overrides with their fallbacks."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from llm_providers.models import Tenant
from overrides.models import RoutingFallback, RoutingOverride


def routing_override_list(
    *, tenant: Tenant, customer_id: str | None = None, service_name: str | None = None
) -> QuerySet[RoutingOverride]:
    """The tenant's overrides, most specific scope first, fallbacks prefetched in order."""
    overrides = RoutingOverride.objects.filter(tenant=tenant)
    if customer_id is not None:
        overrides = overrides.filter(customer_id=customer_id)
    if service_name is not None:
        overrides = overrides.filter(service_name=service_name)
    return overrides.prefetch_related(
        Prefetch(
            "fallbacks",
            queryset=RoutingFallback.objects.order_by("position", "id"),
        )
    ).order_by("customer_id", "service_name", "id")
