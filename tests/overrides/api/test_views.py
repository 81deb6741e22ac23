"""Routing override endpoints (with ordered fallbacks) and route resolution."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.models import LogEntry

from overrides.models import RoutingOverride
from tests.factories import ProviderConfigFactory, RoutingFallbackFactory, RoutingOverrideFactory

pytestmark = pytest.mark.django_db

OVERRIDES = "/api/v1/overrides/"
RESOLVE = "/api/v1/routes/resolve/"


@pytest.fixture
def providers(tenant):
    return {
        "main": ProviderConfigFactory(tenant=tenant, name="main", is_default=True),
        "backup": ProviderConfigFactory(
            tenant=tenant, name="backup", default_model="fake-large", priority=200
        ),
        "third": ProviderConfigFactory(tenant=tenant, name="third", priority=300),
    }


def test_override_create_keeps_fallback_order_and_records_history(
    admin_api, admin_user, tenant, providers
):
    response = admin_api.post(
        OVERRIDES,
        {
            "customer_id": "acme-corp",
            "service_name": "summarizer",
            "provider_config": str(providers["main"].pk),
            "model": "fake-large",
            "fallbacks": [
                {"provider_config": str(providers["third"].pk)},
                {"provider_config": str(providers["backup"].pk), "model": "fake-small"},
            ],
        },
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["rule"] == "customer_service"
    assert body["fallbacks"] == [
        {"provider_config": str(providers["third"].pk), "model": ""},
        {"provider_config": str(providers["backup"].pk), "model": "fake-small"},
    ]
    override = RoutingOverride.objects.get(pk=body["id"])
    assert [(f.position, f.provider_config.name) for f in override.fallbacks.all()] == [
        (0, "third"),
        (1, "backup"),
    ]
    entry = LogEntry.objects.get(object_id=str(override.pk))
    assert (entry.user_id, entry.get_change_message()) == (admin_user.pk, "Added.")


def test_override_create_answers_400_and_writes_nothing_when_fallback_invalid(
    admin_api, tenant, providers
):
    response = admin_api.post(
        OVERRIDES,
        {
            "customer_id": "acme-corp",
            "provider_config": str(providers["main"].pk),
            "fallbacks": [
                {"provider_config": str(providers["backup"].pk)},
                {"provider_config": str(providers["backup"].pk)},
            ],
        },
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "fallbacks": ["“backup” / “default model” is listed twice."]
    }
    assert not RoutingOverride.objects.exists()


def test_override_create_answers_400_and_writes_nothing_when_a_fallback_is_inactive(
    admin_api, tenant, providers
):
    # given a retired provider config (routing skips it)
    retired = ProviderConfigFactory(tenant=tenant, name="retired", is_active=False)

    # when an active override names it as a fallback
    response = admin_api.post(
        OVERRIDES,
        {
            "customer_id": "acme-corp",
            "provider_config": str(providers["main"].pk),
            "fallbacks": [{"provider_config": str(retired.pk)}],
        },
    )

    # then it is refused, as the admin refuses it, rather than kept and never tried
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "fallbacks": [
            "Fallback 1: The provider config “retired” is inactive: choose an active one, or "
            "deactivate this override."
        ]
    }
    assert not RoutingOverride.objects.exists()


def test_override_create_answers_400_when_scope_empty(admin_api, providers):
    response = admin_api.post(OVERRIDES, {"provider_config": str(providers["main"].pk)})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "non_field_errors": [
            "An override needs a customer, a service or both; the tenant-wide route is the "
            "default provider config."
        ]
    }


def test_override_create_answers_400_when_model_not_allowed(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant, name="narrow", allowed_models=["fake-small"])

    response = admin_api.post(
        OVERRIDES,
        {"customer_id": "c", "provider_config": str(config.pk), "model": "fake-large"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "model": ["The model “fake-large” is not among the allowed models of “narrow”."]
    }


def test_override_list_filters_by_customer_and_service(admin_api, tenant, providers):
    main = providers["main"]
    RoutingOverrideFactory(tenant=tenant, provider_config=main, customer_id="a", service_name="")
    RoutingOverrideFactory(tenant=tenant, provider_config=main, customer_id="a", service_name="s")
    RoutingOverrideFactory(tenant=tenant, provider_config=main, customer_id="", service_name="s")

    by_customer = admin_api.get(OVERRIDES, {"customer_id": "a"}).json()["results"]
    by_service = admin_api.get(OVERRIDES, {"service_name": "s"}).json()["results"]
    tenant_wide_services = admin_api.get(OVERRIDES, {"customer_id": ""}).json()["results"]

    assert [(o["customer_id"], o["service_name"]) for o in by_customer] == [("a", ""), ("a", "s")]
    assert [(o["customer_id"], o["service_name"]) for o in by_service] == [("", "s"), ("a", "s")]
    assert [(o["customer_id"], o["service_name"]) for o in tenant_wide_services] == [("", "s")]


def test_override_patch_replaces_fallbacks_and_records_fields(
    admin_api, admin_user, tenant, providers
):
    override = RoutingOverrideFactory(tenant=tenant, provider_config=providers["main"])
    RoutingFallbackFactory(override=override, provider_config=providers["backup"], position=0)

    response = admin_api.patch(
        f"{OVERRIDES}{override.pk}/",
        {"note": "moved", "fallbacks": [{"provider_config": str(providers["third"].pk)}]},
    )

    assert response.status_code == 200
    assert [f["provider_config"] for f in response.json()["fallbacks"]] == [
        str(providers["third"].pk)
    ]
    entry = LogEntry.objects.get(object_id=str(override.pk))
    assert entry.user_id == admin_user.pk
    assert json.loads(entry.change_message) == [{"changed": {"fields": ["Note", "Fallbacks"]}}]


def test_override_patch_keeps_fallbacks_when_omitted(admin_api, tenant, providers):
    override = RoutingOverrideFactory(tenant=tenant, provider_config=providers["main"])
    RoutingFallbackFactory(override=override, provider_config=providers["backup"], position=0)

    response = admin_api.patch(f"{OVERRIDES}{override.pk}/", {"is_active": False})

    assert response.status_code == 200
    assert [f.provider_config.name for f in override.fallbacks.all()] == ["backup"]
    override.refresh_from_db()
    assert override.is_active is False


def test_override_put_answers_400_when_scope_taken(admin_api, tenant, providers):
    RoutingOverrideFactory(tenant=tenant, provider_config=providers["main"], customer_id="x")
    other = RoutingOverrideFactory(tenant=tenant, provider_config=providers["main"])

    response = admin_api.put(
        f"{OVERRIDES}{other.pk}/",
        {"customer_id": "x", "provider_config": str(providers["main"].pk)},
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "non_field_errors": [
            "An override for this customer and service already exists in this tenant."
        ]
    }


def test_override_delete_answers_204_and_records_deletion(admin_api, admin_user, tenant):
    override = RoutingOverrideFactory(tenant=tenant)
    override_id = override.pk

    response = admin_api.delete(f"{OVERRIDES}{override_id}/")

    assert response.status_code == 204
    assert not RoutingOverride.objects.filter(pk=override_id).exists()
    assert LogEntry.objects.get(object_id=str(override_id)).user_id == admin_user.pk


# --- routes/resolve ----------------------------------------------------------------


def test_route_resolve_explains_matching_customer_override(admin_api, tenant, providers):
    override = RoutingOverrideFactory(
        tenant=tenant, provider_config=providers["backup"], customer_id="acme-corp"
    )
    RoutingFallbackFactory(override=override, provider_config=providers["third"], position=0)

    response = admin_api.get(RESOLVE, {"customer_id": "acme-corp", "service_name": "chat"})

    assert response.status_code == 200
    assert response.json() == {
        "rule": "customer",
        "override_id": override.pk,
        "provider_config": {
            "id": str(providers["backup"].pk),
            "name": "backup",
            "provider_type": "fake",
        },
        "model": "fake-large",
        "fallbacks": [
            {
                "provider_config": {
                    "id": str(providers["third"].pk),
                    "name": "third",
                    "provider_type": "fake",
                },
                "model": "fake-small",
            }
        ],
        "explanation": "backup / fake-large, chosen by the customer override",
    }


def test_route_resolve_falls_back_to_tenant_default(admin_api, providers):
    response = admin_api.get(RESOLVE, {"service_name": "unknown-service"})

    body = response.json()
    assert (body["rule"], body["override_id"], body["provider_config"]["name"]) == (
        "default",
        None,
        "main",
    )
    assert [f["provider_config"]["name"] for f in body["fallbacks"]] == ["backup", "third"]
    assert body["explanation"] == (
        "main / fake-small, chosen by the tenant's default provider config"
    )


def test_route_resolve_answers_422_when_no_route(admin_api, tenant):
    response = admin_api.get(RESOLVE, {"customer_id": "nobody"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "no_route"
    assert error["message"].startswith("No route for customer “nobody” and service “-”")
    assert error["extra"] == {"customer_id": "nobody", "service_name": ""}


def test_route_resolve_answers_400_when_customer_id_too_long(admin_api, providers):
    response = admin_api.get(RESOLVE, {"customer_id": "x" * 201})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "customer_id": ["Ensure this field has no more than 200 characters."]
    }


def test_override_patch_answers_400_when_fallback_lacks_provider(admin_api, tenant, providers):
    override = RoutingOverrideFactory(tenant=tenant, provider_config=providers["main"])

    response = admin_api.patch(f"{OVERRIDES}{override.pk}/", {"fallbacks": [{"model": "x"}]})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["fields"] == {"fallbacks": {"0": {"provider_config": ["This field is required."]}}}
    assert error["message"] == "Invalid input: fallbacks.0.provider_config: This field is required."


@pytest.mark.parametrize(
    ("fallbacks", "fields", "message"),
    [
        (
            {"provider_config": "x"},
            {"fallbacks": {"non_field_errors": ['Expected a list of items but got type "dict".']}},
            'Invalid input: fallbacks: Expected a list of items but got type "dict".',
        ),
        (
            ["backup"],
            {
                "fallbacks": {
                    "0": {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}
                }
            },
            "Invalid input: fallbacks.0: Invalid data. Expected a dictionary, but got str.",
        ),
    ],
    ids=["not-a-list", "not-an-object"],
)
def test_override_create_error_message_names_the_malformed_fallbacks(
    admin_api, tenant, providers, fallbacks, fields, message
):
    response = admin_api.post(
        OVERRIDES,
        {
            "customer_id": "acme",
            "provider_config": str(providers["main"].pk),
            "fallbacks": fallbacks,
        },
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["fields"], error["message"]) == (fields, message)
    assert not RoutingOverride.objects.exists()


def test_override_create_refuses_a_customer_id_no_call_can_carry(admin_api, tenant, providers):
    # given a customer id with a tab: complete() refuses every call that carries one
    response = admin_api.post(
        OVERRIDES,
        {"customer_id": "acme\tcorp", "provider_config": str(providers["backup"].pk)},
    )

    # then the override is refused with the reason, rather than saved never to match
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["fields"] == {
        "customer_id": [
            "customer_id must not contain control characters. Calls that carry one are "
            "refused, so this override would never match."
        ]
    }
    assert not RoutingOverride.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize("where", ["override", "fallback"])
def test_override_create_refuses_a_model_name_with_a_control_character(
    admin_api, tenant, providers, where
):
    body = {"customer_id": "acme-corp", "provider_config": str(providers["backup"].pk)}
    fallback = {"provider_config": str(providers["main"].pk)}
    if where == "override":
        body["model"] = "fake\nlarge"
    else:
        fallback["model"] = "fake\rsmall"
    body["fallbacks"] = [fallback]

    response = admin_api.post(OVERRIDES, body, format="json")

    assert response.status_code == 400, response.json()
    message = "A model name must not contain control characters (such as a line break)."
    expected = (
        {"model": [message]} if where == "override" else {"fallbacks": [f"Fallback 1: {message}"]}
    )
    assert response.json()["error"]["fields"] == expected
    assert not RoutingOverride.objects.filter(tenant=tenant).exists()


def test_route_resolve_of_inactive_tenant_says_its_calls_are_refused(tenant, providers):
    # given a superuser, who may still act for a tenant once it is deactivated
    from tests.api.fixtures import token_client
    from tests.factories import UserFactory

    tenant.is_active = False
    tenant.save()
    api = token_client(UserFactory(is_superuser=True, is_staff=True), tenant=tenant)

    # when it asks which route a call would take
    response = api.get(RESOLVE, {"customer_id": "acme-corp"})

    # then the answer is the one complete() gives: no call is served
    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert error["code"] == "no_route"
    assert error["message"] == "The tenant “acme” is inactive: its calls are refused."


def test_route_resolve_refuses_a_customer_id_complete_refuses(admin_api, providers):
    response = admin_api.get(RESOLVE, {"customer_id": "acme\tcorp"})

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["fields"] == {
        "customer_id": ["customer_id must not contain control characters."]
    }


def test_override_create_answers_400_naming_the_type_when_the_config_id_is_a_number(admin_api):
    # A number would otherwise be read as the integer value of a UUID ("…0005").
    response = admin_api.post(
        "/api/v1/overrides/", {"customer_id": "acme", "provider_config": 5}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "provider_config": ["A provider config id is a UUID string, not int."]
    }
