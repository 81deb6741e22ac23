"""Which tenant a request acts for: implicit, named by header or query, or refused."""

from __future__ import annotations

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from llm_providers.api.tenancy import request_tenant_context
from llm_providers.models import TenantMembership
from tests.api.fixtures import service_key_client, token_client
from tests.factories import ProviderConfigFactory, TenantMembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"


@pytest.fixture
def two_tenant_user(tenant, other_tenant):
    user = UserFactory(username="mallory")
    TenantMembershipFactory(user=user, tenant=tenant, role=TenantMembership.Role.ADMIN)
    TenantMembershipFactory(user=user, tenant=other_tenant, role=TenantMembership.Role.VIEWER)
    ProviderConfigFactory(tenant=tenant, name="acme-provider")
    ProviderConfigFactory(tenant=other_tenant, name="globex-provider")
    return user


def _names(response) -> list[str]:
    return [p["name"] for p in response.json()["results"]]


def test_single_tenant_user_acts_for_it_without_naming_it(admin_api, tenant):
    ProviderConfigFactory(tenant=tenant, name="mine")

    assert _names(admin_api.get(PROVIDERS)) == ["mine"]


def test_several_tenants_answer_400_listing_them_when_none_named(two_tenant_user):
    response = token_client(two_tenant_user).get(PROVIDERS)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "tenant_ambiguous"
    assert error["extra"] == {"tenants": ["acme", "globex"]}
    assert "X-Tenant" in error["message"]


def test_header_names_tenant_by_slug(two_tenant_user):
    client = token_client(two_tenant_user)

    response = client.get(PROVIDERS, HTTP_X_TENANT="globex")

    assert _names(response) == ["globex-provider"]


def test_query_parameter_names_tenant_by_id(two_tenant_user, tenant):
    response = token_client(two_tenant_user).get(PROVIDERS, {"tenant": str(tenant.pk)})

    assert _names(response) == ["acme-provider"]


def test_named_tenant_sets_role_of_that_membership(two_tenant_user):
    client = token_client(two_tenant_user)

    response = client.post(
        PROVIDERS, {"name": "x", "provider_type": "fake"}, HTTP_X_TENANT="globex"
    )

    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "Viewers can read but not change anything in this tenant."
    )


def test_named_tenant_answers_403_when_user_not_member(admin_api, other_tenant):
    response = admin_api.get(PROVIDERS, HTTP_X_TENANT="globex")

    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "You are not a member of a tenant “globex” (or it does not exist)."
    )


def test_named_tenant_answers_403_alike_when_tenant_does_not_exist(admin_api):
    response = admin_api.get(PROVIDERS, HTTP_X_TENANT="no-such-tenant")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_forbidden"


def test_header_and_query_naming_different_tenants_answer_400(two_tenant_user):
    client = token_client(two_tenant_user)

    response = client.get(PROVIDERS, {"tenant": "acme"}, HTTP_X_TENANT="globex")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "tenant_invalid"


def test_header_and_query_naming_same_tenant_by_slug_and_id_agree(two_tenant_user, tenant):
    client = token_client(two_tenant_user)

    response = client.get(PROVIDERS, {"tenant": str(tenant.pk)}, HTTP_X_TENANT="acme")

    assert _names(response) == ["acme-provider"]


def test_browsable_api_answers_tenant_errors_not_500(client, two_tenant_user):
    # The browsable API checks permissions again while it renders its forms.
    client.force_login(two_tenant_user)

    ambiguous = client.get(PROVIDERS, HTTP_ACCEPT="text/html")
    unknown = client.get(PROVIDERS, {"tenant": "nope"}, HTTP_ACCEPT="text/html")

    assert ambiguous.status_code == 400
    assert "tenant_ambiguous" in ambiguous.content.decode()
    assert unknown.status_code == 403


def test_service_key_answers_403_when_naming_another_tenant(service_key, other_tenant):
    response = service_key_client(service_key).get(PROVIDERS, HTTP_X_TENANT="globex")

    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "This service key belongs to tenant “acme” and cannot act for another tenant."
    )


def test_service_key_may_name_its_own_tenant(service_key, tenant):
    response = service_key_client(service_key).get(PROVIDERS, {"tenant": str(tenant.pk)})
    upper_case = service_key_client(service_key).get(PROVIDERS, {"tenant": str(tenant.pk).upper()})

    assert response.status_code == 200
    assert upper_case.status_code == 200


def test_superuser_acts_as_admin_of_named_tenant(tenant, other_tenant):
    superuser = UserFactory(username="root", is_superuser=True)

    response = token_client(superuser).post(
        PROVIDERS, {"name": "by-root", "provider_type": "fake"}, HTTP_X_TENANT="globex"
    )

    assert response.status_code == 201
    assert other_tenant.provider_configs.get().name == "by-root"


def test_superuser_naming_no_tenant_among_several_is_told_to_name_one(
    superuser, tenant, other_tenant
):
    response = token_client(superuser).get(PROVIDERS)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "tenant_ambiguous"
    assert error["extra"] == {"tenants": ["acme", "globex"]}
    assert error["message"] == (
        "Several tenants exist: name one with the X-Tenant header or the `tenant` query "
        "parameter (its slug or id), e.g. X-Tenant: acme."
    )


def test_superuser_naming_a_tenant_that_does_not_exist_is_told_so(superuser, tenant):
    response = token_client(superuser).get(PROVIDERS, HTTP_X_TENANT="nope")

    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("tenant_forbidden", "No tenant “nope” exists.")


def test_membership_of_inactive_tenant_does_not_count(two_tenant_user, other_tenant):
    other_tenant.is_active = False
    other_tenant.save()

    response = token_client(two_tenant_user).get(PROVIDERS)

    assert _names(response) == ["acme-provider"]


def test_member_naming_its_inactive_tenant_is_told_it_is_inactive(two_tenant_user, other_tenant):
    other_tenant.is_active = False
    other_tenant.save()

    response = token_client(two_tenant_user).get(PROVIDERS, HTTP_X_TENANT="globex")

    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (
        "tenant_forbidden",
        "The tenant “globex” is inactive: its members cannot act for it.",
    )


def test_non_member_naming_an_inactive_tenant_learns_nothing_of_it(admin_api, other_tenant):
    other_tenant.is_active = False
    other_tenant.save()

    response = admin_api.get(PROVIDERS, HTTP_X_TENANT="globex")

    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "You are not a member of a tenant “globex” (or it does not exist)."
    )


def test_tenant_and_role_resolve_in_one_query(two_tenant_user, django_assert_num_queries):
    request = Request(APIRequestFactory().get(PROVIDERS, HTTP_X_TENANT="globex"))
    request.user, request.auth = two_tenant_user, None

    with django_assert_num_queries(1):
        context = request_tenant_context(request)
        request_tenant_context(request)

    assert (context.tenant.slug, context.role) == ("globex", "viewer")
