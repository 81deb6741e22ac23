"""Tenant A's credentials never reach tenant B's objects: 404, and nothing changes.

Every endpoint that names an object is called with A's admin token, A's admin
session, A's viewer token and A's service key against B's objects. The
answer must be the one for an id that does not exist at all (404 when the
caller's role may use the endpoint, 403 otherwise: either way it tells
nothing about B), and B's rows must be exactly as before. Lists and reports
show nothing of B; writes that name no object (creations, completions,
embeddings) act in A and leave B's rows as they were.
"""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.forms.models import model_to_dict

from llm_providers.api.tenancy import ROLE_ADMIN, ROLE_SERVICE, ROLE_VIEWER
from llm_providers.models import ProviderConfig, ServiceKey
from overrides.models import RoutingFallback, RoutingOverride
from tests.api.endpoints import ENDPOINTS, call, missing_ids, tenant_objects_build
from tests.api.fixtures import session_client
from usage.models import AlertDelivery, Budget, CallLog, CostAlert, DailyUsage

pytestmark = pytest.mark.django_db

OBJECT_ENDPOINTS = [e for e in ENDPOINTS if e.names_object]
LIST_ENDPOINTS = [e for e in ENDPOINTS if not e.names_object and e.method == "get"]
WRITE_ENDPOINTS = [e for e in ENDPOINTS if not e.names_object and e.method != "get"]
# What each paginated list lists, by the key of TenantObjects.ids().
LISTED_KIND = {
    "/api/v1/providers/": "provider",
    "/api/v1/overrides/": "override",
    "/api/v1/calls/": "call",
    "/api/v1/service-keys/": "service_key",
    "/api/v1/budgets/": "budget",
    "/api/v1/alerts/": "alert",
}


def _snapshot(tenant, *, history: bool = True) -> dict:
    """Every row tenant B owns, field by field."""

    def rows(queryset):
        return sorted((model_to_dict(obj) for obj in queryset), key=lambda row: str(row))

    return {
        "providers": rows(ProviderConfig.objects.filter(tenant=tenant)),
        "overrides": rows(RoutingOverride.objects.filter(tenant=tenant)),
        "fallbacks": rows(RoutingFallback.objects.filter(override__tenant=tenant)),
        "calls": rows(CallLog.objects.filter(tenant=tenant)),
        "service_keys": rows(ServiceKey.objects.filter(tenant=tenant)),
        "budgets": rows(Budget.objects.filter(tenant=tenant)),
        "alerts": rows(CostAlert.objects.filter(tenant=tenant)),
        "deliveries": rows(AlertDelivery.objects.filter(alert__tenant=tenant)),
        "daily_usage": rows(DailyUsage.objects.filter(tenant=tenant)),
        **({"history": LogEntry.objects.count()} if history else {}),
    }


@pytest.fixture
def callers(admin_api, admin_user, viewer_api, service_api):
    return {
        "admin-token": (ROLE_ADMIN, admin_api),
        "admin-session": (ROLE_ADMIN, session_client(admin_user)),
        "viewer-token": (ROLE_VIEWER, viewer_api),
        "service-key": (ROLE_SERVICE, service_api),
    }


@pytest.fixture
def objects_a(tenant):
    return tenant_objects_build(tenant)


@pytest.fixture
def objects_b(other_tenant):
    return tenant_objects_build(other_tenant)


@pytest.mark.parametrize("endpoint", OBJECT_ENDPOINTS, ids=str)
@pytest.mark.parametrize("caller", ["admin-token", "admin-session", "viewer-token", "service-key"])
def test_other_tenants_object_answers_as_if_missing_and_stays_unchanged(
    caller, endpoint, callers, objects_a, objects_b, other_tenant
):
    role, client = callers[caller]
    before = _snapshot(other_tenant)

    response = call(client, endpoint, objects_b.ids(), objects_a)
    missing = call(client, endpoint, missing_ids(), objects_a)

    expected = 404 if role in endpoint.allowed else 403
    assert (response.status_code, missing.status_code) == (expected, expected)
    assert response.json() == missing.json()
    assert _snapshot(other_tenant) == before


@pytest.mark.parametrize("endpoint", LIST_ENDPOINTS, ids=str)
@pytest.mark.parametrize("caller", ["admin-token", "admin-session", "viewer-token", "service-key"])
def test_lists_show_nothing_of_other_tenant(caller, endpoint, callers, objects_a, objects_b):
    role, client = callers[caller]

    response = call(client, endpoint, {}, objects_a)

    if role not in endpoint.allowed:
        assert response.status_code == 403
        return
    assert response.status_code == 200
    body = response.content.decode()
    ids_b = objects_b.ids()
    for name in ("provider", "spare_provider", "service_key"):
        assert ids_b[name] not in body
    assert "globex" not in body
    payload = response.json()
    if "totals" in payload:
        # Exactly the caller's one day of usage (10 requests, $0.002): B's would double it.
        totals = payload["totals"]
        assert (totals["requests"], totals["cost_usd"]) == (10, "0.002000000000")
    if "results" in payload:
        listed = {str(item.get("id", item.get("prefix"))) for item in payload["results"]}
        # The caller's own objects are listed: an empty list would hide nothing.
        assert listed
        # Compared with B's object of the same kind: ids of other tables may be equal.
        kind = LISTED_KIND[endpoint.path]
        assert ids_b[kind] not in listed


@pytest.mark.parametrize("endpoint", WRITE_ENDPOINTS, ids=str)
@pytest.mark.parametrize("caller", ["admin-token", "admin-session", "viewer-token", "service-key"])
def test_writes_without_object_act_in_own_tenant_only(
    caller, endpoint, callers, objects_a, objects_b, other_tenant
):
    role, client = callers[caller]
    before = _snapshot(other_tenant, history=False)

    response = call(client, endpoint, {}, objects_a)

    expected = endpoint.success if role in endpoint.allowed else 403
    assert response.status_code == expected, response.content
    assert _snapshot(other_tenant, history=False) == before
    body = response.content.decode()
    for value in objects_b.ids().values():
        if len(value) > 8:  # uuids and prefixes, not small integers
            assert value not in body
    assert "globex" not in body


def test_override_create_refuses_other_tenants_provider(admin_api, objects_a, objects_b, tenant):
    response = admin_api.post(
        "/api/v1/overrides/",
        {"customer_id": "sneaky", "provider_config": str(objects_b.provider.pk)},
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "provider_config": [f"No provider config with id “{objects_b.provider.pk}” in this tenant."]
    }
    assert not RoutingOverride.objects.filter(customer_id="sneaky").exists()


def test_override_update_refuses_other_tenants_fallback(admin_api, objects_a, objects_b):
    response = admin_api.patch(
        f"/api/v1/overrides/{objects_a.override.pk}/",
        {"fallbacks": [{"provider_config": str(objects_b.provider.pk)}]},
    )

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["fallbacks"]
    # The override keeps exactly the fallback it had.
    fallbacks = objects_a.override.fallbacks.order_by("position")
    assert [f.provider_config.name for f in fallbacks] == ["acme-fallback"]


def test_call_filter_by_other_tenants_provider_finds_nothing(admin_api, objects_a, objects_b):
    response = admin_api.get("/api/v1/calls/", {"provider_config": str(objects_b.provider.pk)})
    own = admin_api.get("/api/v1/calls/", {"provider_config": str(objects_a.provider.pk)})

    assert response.status_code == 200
    assert response.json()["results"] == []
    # The filter does select by provider: the caller's own provider finds its call.
    assert [item["id"] for item in own.json()["results"]] == [objects_a.call.pk]


def test_route_resolve_ignores_other_tenants_override(admin_api, objects_a, objects_b):
    customer_of_b = objects_b.override.customer_id

    response = admin_api.get("/api/v1/routes/resolve/", {"customer_id": customer_of_b})

    assert response.status_code == 200
    body = response.json()
    assert body["rule"] == "default"
    assert body["provider_config"]["id"] == str(objects_a.provider.pk)
