"""Every request body: a field the endpoint does not have is refused with a 400
naming it, and nothing is written; read-only fields sent back are accepted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llm_providers.models import ProviderConfig, ServiceKey
from overrides.models import RoutingFallback, RoutingOverride
from tests.api.endpoints import ENDPOINTS, call, tenant_objects_build
from usage.models import Budget, CallLog

pytestmark = pytest.mark.django_db

WITH_BODY = [endpoint for endpoint in ENDPOINTS if endpoint.body is not None]


def _state(tenant) -> list:
    return [
        sorted(ProviderConfig.objects.filter(tenant=tenant).values_list("name", "priority")),
        sorted(RoutingOverride.objects.filter(tenant=tenant).values_list("customer_id", "note")),
        sorted(Budget.objects.filter(tenant=tenant).values_list("name", "limit_usd")),
        CallLog.objects.filter(tenant=tenant).count(),
        sorted(ServiceKey.objects.filter(tenant=tenant).values_list("name", "revoked")),
        sorted(
            RoutingFallback.objects.filter(override__tenant=tenant).values_list(
                "override__customer_id", "provider_config__name", "position"
            )
        ),
    ]


@pytest.mark.parametrize("endpoint", WITH_BODY, ids=str)
def test_misspelt_field_is_refused_and_nothing_written(endpoint, admin_api, tenant):
    # given: a request body with a misspelt field next to valid ones
    objects = tenant_objects_build(tenant)
    body = {**endpoint.body(objects), "webhok_url": "https://198.51.100.7/hook"}
    before = _state(tenant)

    # when
    response = call(admin_api, replace(endpoint, body=lambda o: body), objects.ids(), objects)

    # then
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    (message,) = error["fields"]["webhok_url"]
    assert message.startswith("Unknown field. The fields that can be set are: ")
    assert _state(tenant) == before


def test_unknown_field_inside_a_fallback_is_refused(admin_api, tenant):
    objects = tenant_objects_build(tenant)

    response = admin_api.post(
        "/api/v1/overrides/",
        {
            "customer_id": "acme",
            "provider_config": str(objects.provider.pk),
            "fallbacks": [{"provider_config": str(objects.spare_provider.pk), "modle": "x"}],
        },
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "fallbacks": {
            "0": {
                "modle": ["Unknown field. The fields that can be set are: provider_config, model."]
            }
        }
    }
    assert not RoutingOverride.objects.filter(tenant=tenant, customer_id="acme").exists()


def test_provider_sent_back_as_read_is_accepted(admin_api, tenant):
    # given: a provider as a GET returns it (read-only fields included)
    objects = tenant_objects_build(tenant)
    url = f"/api/v1/providers/{objects.provider.pk}/"
    read = admin_api.get(url).json()

    # when: it is sent back with one change
    response = admin_api.put(url, {**read, "priority": 9}, format="json")

    # then
    assert response.status_code == 200, response.content
    objects.provider.refresh_from_db()
    assert objects.provider.priority == 9


def test_misspelt_completion_parameter_is_refused(admin_api, tenant):
    tenant_objects_build(tenant)
    calls = CallLog.objects.filter(tenant=tenant).count()

    response = admin_api.post(
        "/api/v1/completions/",
        {"messages": [{"role": "user", "content": "hi"}], "max_token": 5},
        format="json",
    )

    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["max_token"]
    assert "max_tokens" in message
    assert CallLog.objects.filter(tenant=tenant).count() == calls
