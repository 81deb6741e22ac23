"""Every endpoint and method of the API, with the roles allowed to use it.

The role matrix and the cross-tenant matrix both walk this table, so an
endpoint added here is covered by both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from llm_providers.api.tenancy import ROLE_ADMIN, ROLE_SERVICE, ROLE_VIEWER
from tests.factories import (
    AlertDeliveryFactory,
    BudgetFactory,
    CallLogFactory,
    CostAlertFactory,
    DailyUsageFactory,
    ProviderConfigFactory,
    RoutingFallbackFactory,
    RoutingOverrideFactory,
    ServiceKeyFactory,
)

ALL = frozenset({ROLE_ADMIN, ROLE_VIEWER, ROLE_SERVICE})
MEMBERS = frozenset({ROLE_ADMIN, ROLE_VIEWER})
ADMINS = frozenset({ROLE_ADMIN})
CALLERS = frozenset({ROLE_ADMIN, ROLE_SERVICE})


@dataclass
class TenantObjects:
    """One of each tenant-owned object the API exposes."""

    provider: object
    spare_provider: object
    override: object
    call: object
    service_key: object
    budget: object
    alert: object

    def ids(self) -> dict[str, str]:
        return {
            "provider": str(self.provider.pk),
            "spare_provider": str(self.spare_provider.pk),
            "override": str(self.override.pk),
            "call": str(self.call.pk),
            "service_key": self.service_key.prefix,
            "budget": str(self.budget.pk),
            "alert": str(self.alert.pk),
        }


def tenant_objects_build(tenant) -> TenantObjects:
    provider = ProviderConfigFactory(tenant=tenant, name=f"{tenant.slug}-main", is_default=True)
    fallback_provider = ProviderConfigFactory(tenant=tenant, name=f"{tenant.slug}-fallback")
    override = RoutingOverrideFactory(
        tenant=tenant, provider_config=provider, customer_id=f"{tenant.slug}-customer"
    )
    RoutingFallbackFactory(override=override, provider_config=fallback_provider, position=0)
    # Usage of today (UTC, the factories' tenants' zone) and a budget that alerted.
    DailyUsageFactory(
        tenant=tenant,
        provider_config=provider,
        model=f"{tenant.slug}-model",
        service_name=f"{tenant.slug}-service",
        customer_id=f"{tenant.slug}-customer",
    )
    budget = BudgetFactory(
        tenant=tenant,
        name=f"{tenant.slug}-budget",
        provider_config=provider,
        webhook_url=f"https://198.51.100.7/hooks/{tenant.slug}-webhook-secret",
    )
    alert = CostAlertFactory(tenant=tenant, budget=budget)
    AlertDeliveryFactory(alert=alert)
    return TenantObjects(
        provider=provider,
        spare_provider=ProviderConfigFactory(tenant=tenant, name=f"{tenant.slug}-spare"),
        override=override,
        call=CallLogFactory(tenant=tenant, provider_config=provider),
        service_key=ServiceKeyFactory(tenant=tenant, name=f"{tenant.slug}-app"),
        budget=budget,
        alert=alert,
    )


def missing_ids() -> dict[str, str]:
    """Ids of the right shape that name nothing."""
    return {
        "provider": str(uuid.uuid4()),
        "spare_provider": str(uuid.uuid4()),
        "override": "987654321",
        "call": "987654321",
        "service_key": "Zz9Zz9Zz",
        "budget": "987654321",
        "alert": "987654321",
    }


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    allowed: frozenset[str]
    success: int
    # The request body, from the caller's own tenant objects.
    body: Callable[[TenantObjects], dict] | None = None
    query: dict = field(default_factory=dict)

    @property
    def names_object(self) -> bool:
        return "{" in self.path

    def url(self, ids: dict[str, str]) -> str:
        return self.path.format(**ids)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


def _provider_body(objects: TenantObjects) -> dict:
    return {"name": "brand-new", "provider_type": "fake", "default_model": "fake-small"}


def _override_body(objects: TenantObjects) -> dict:
    return {
        "customer_id": "brand-new-customer",
        "provider_config": str(objects.provider.pk),
        "fallbacks": [{"provider_config": str(objects.spare_provider.pk), "model": ""}],
    }


def _budget_body(objects: TenantObjects) -> dict:
    return {
        "name": "brand-new-budget",
        "limit_usd": "25.0000",
        "action": "block",
        "provider_config": str(objects.provider.pk),
        "alert_emails": ["ops@example.com"],
    }


def _completion_body(objects: TenantObjects) -> dict:
    return {"messages": [{"role": "user", "content": "hello"}], "customer_id": "someone"}


def _embedding_body(objects: TenantObjects) -> dict:
    return {"inputs": ["hello"], "model": "fake-embed", "customer_id": "someone"}


ENDPOINTS = [
    Endpoint("get", "/api/v1/providers/", ALL, 200),
    Endpoint("post", "/api/v1/providers/", ADMINS, 201, _provider_body),
    Endpoint("get", "/api/v1/providers/{provider}/", ALL, 200),
    Endpoint("put", "/api/v1/providers/{provider}/", ADMINS, 200, _provider_body),
    Endpoint("patch", "/api/v1/providers/{provider}/", ADMINS, 200, lambda o: {"priority": 7}),
    Endpoint("delete", "/api/v1/providers/{spare_provider}/", ADMINS, 204),
    Endpoint("post", "/api/v1/providers/{provider}/test/", ADMINS, 200),
    Endpoint("get", "/api/v1/overrides/", MEMBERS, 200),
    Endpoint("post", "/api/v1/overrides/", ADMINS, 201, _override_body),
    Endpoint("get", "/api/v1/overrides/{override}/", MEMBERS, 200),
    Endpoint("put", "/api/v1/overrides/{override}/", ADMINS, 200, _override_body),
    Endpoint("patch", "/api/v1/overrides/{override}/", ADMINS, 200, lambda o: {"note": "hi"}),
    Endpoint("delete", "/api/v1/overrides/{override}/", ADMINS, 204),
    Endpoint("get", "/api/v1/routes/resolve/", MEMBERS, 200, query={"customer_id": "someone"}),
    Endpoint("get", "/api/v1/calls/", ALL, 200),
    Endpoint("get", "/api/v1/calls/{call}/", ALL, 200),
    Endpoint("get", "/api/v1/service-keys/", MEMBERS, 200),
    Endpoint("post", "/api/v1/service-keys/", ADMINS, 201, lambda o: {"name": "new-app"}),
    Endpoint("get", "/api/v1/service-keys/{service_key}/", MEMBERS, 200),
    Endpoint("post", "/api/v1/service-keys/{service_key}/revoke/", ADMINS, 200),
    Endpoint("get", "/api/v1/providers/{provider}/usage/", ALL, 200, query={"days": 7}),
    Endpoint("get", "/api/v1/usage/summary/", ALL, 200),
    Endpoint("get", "/api/v1/usage/by-provider/", ALL, 200),
    Endpoint("get", "/api/v1/usage/by-model/", ALL, 200),
    Endpoint("get", "/api/v1/usage/by-service/", ALL, 200),
    Endpoint("get", "/api/v1/usage/by-customer/", ALL, 200, query={"limit": 5}),
    Endpoint("get", "/api/v1/usage/daily/", ALL, 200, query={"days": 7}),
    Endpoint("get", "/api/v1/budgets/", ALL, 200),
    Endpoint("post", "/api/v1/budgets/", ADMINS, 201, _budget_body),
    Endpoint("get", "/api/v1/budgets/{budget}/", ALL, 200),
    Endpoint("put", "/api/v1/budgets/{budget}/", ADMINS, 200, _budget_body),
    Endpoint("patch", "/api/v1/budgets/{budget}/", ADMINS, 200, lambda o: {"limit_usd": "5"}),
    Endpoint("delete", "/api/v1/budgets/{budget}/", ADMINS, 204),
    Endpoint("get", "/api/v1/alerts/", ALL, 200),
    Endpoint("get", "/api/v1/alerts/{alert}/", ALL, 200),
    Endpoint("post", "/api/v1/completions/", CALLERS, 200, _completion_body),
    Endpoint("post", "/api/v1/embeddings/", CALLERS, 200, _embedding_body),
]


def call(client, endpoint: Endpoint, ids: dict[str, str], objects: TenantObjects):
    """Send the endpoint's request; the body refers to `objects` (the caller's tenant)."""
    body = endpoint.body(objects) if endpoint.body else None
    url = endpoint.url(ids)
    if endpoint.method == "get":
        return client.get(url, endpoint.query)
    return getattr(client, endpoint.method)(url, body, format="json")
