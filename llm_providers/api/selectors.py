"""Reads behind the provider and service key endpoints."""

from __future__ import annotations

from django.db.models import QuerySet

from llm_providers.models import ServiceKey, Tenant


def service_key_list(*, tenant: Tenant) -> QuerySet[ServiceKey]:
    return ServiceKey.objects.filter(tenant=tenant).order_by("-created", "prefix")
