"""Every endpoint, every role: admins write, viewers read, service keys read providers, calls,
usage, budgets and alerts, and call completions and embeddings (as admins may)."""

from __future__ import annotations

import pytest

from llm_providers.api.tenancy import ROLE_ADMIN, ROLE_SERVICE, ROLE_VIEWER
from tests.api.endpoints import ENDPOINTS, call, tenant_objects_build

pytestmark = pytest.mark.django_db

REFUSALS = {
    ROLE_VIEWER: "Viewers can read but not change anything in this tenant.",
    ROLE_SERVICE: "Service keys are not allowed to do this; use a tenant admin's credentials.",
}


@pytest.fixture
def clients(admin_api, viewer_api, service_api):
    return {ROLE_ADMIN: admin_api, ROLE_VIEWER: viewer_api, ROLE_SERVICE: service_api}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("role", [ROLE_ADMIN, ROLE_VIEWER, ROLE_SERVICE])
def test_role_may_use_endpoint_only_when_allowed(role, endpoint, clients, tenant):
    objects = tenant_objects_build(tenant)

    response = call(clients[role], endpoint, objects.ids(), objects)

    if role in endpoint.allowed:
        assert response.status_code == endpoint.success, response.content
    else:
        assert response.status_code == 403
        assert response.json()["error"] == {
            "code": "permission_denied",
            "message": REFUSALS[role],
            "fields": {},
            "extra": {},
        }


def test_service_key_sees_providers_masked(service_api, tenant):
    objects = tenant_objects_build(tenant)
    objects.provider.set_api_key("sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123")
    objects.provider.save()

    response = service_api.get(f"/api/v1/providers/{objects.provider.pk}/")

    assert response.status_code == 200
    assert response.json()["key_mask"] == "sk-ant-…0123"
    assert "abcdefghijklmnop" not in response.content.decode()
