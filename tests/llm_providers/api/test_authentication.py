"""Service key authentication, and the 401s of missing or bad credentials."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.api.fixtures import service_key_client, token_client
from tests.factories import ServiceKeyFactory, UserFactory

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"


def test_service_key_authenticates_for_its_tenant(service_api, service_key):
    response = service_api.get(PROVIDERS)

    assert response.status_code == 200
    assert response.wsgi_request.auth == service_key


def test_request_without_credentials_answers_401_with_token_challenge(anonymous_api):
    response = anonymous_api.get(PROVIDERS)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"] == {
        "code": "not_authenticated",
        "message": "Authentication credentials were not provided.",
        "fields": {},
        "extra": {},
    }


def test_service_key_answers_401_when_secret_wrong(service_key):
    forged = type("Key", (), {"secret": f"{service_key.prefix}.{'x' * 32}"})

    response = service_key_client(forged).get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid service key."


def test_service_key_answers_401_when_prefix_unknown(anonymous_api):
    anonymous_api.credentials(HTTP_AUTHORIZATION="Api-Key nosuchkey.abcdef")

    response = anonymous_api.get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_service_key_answers_401_when_revoked(tenant):
    service_key = ServiceKeyFactory(tenant=tenant, revoked=True)

    response = service_key_client(service_key).get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "This service key has been revoked."


def test_service_key_answers_401_when_expired(tenant):
    service_key = ServiceKeyFactory(
        tenant=tenant, expiry_date=timezone.now() - timedelta(minutes=1)
    )

    response = service_key_client(service_key).get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "This service key has expired."


def test_service_key_answers_401_when_tenant_inactive(tenant, service_key):
    tenant.is_active = False
    tenant.save()

    response = service_key_client(service_key).get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "The tenant of this service key is inactive."


def test_token_answers_401_when_user_inactive(admin_user):
    client = token_client(admin_user)
    admin_user.is_active = False
    admin_user.save()

    response = client.get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User inactive or deleted."


def test_session_user_authenticates_like_token_user(tenant, admin_user, client):
    client.force_login(admin_user)

    response = client.get(PROVIDERS, HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response.json()["count"] == 0


def test_user_without_membership_answers_403(db):
    client = token_client(UserFactory(username="stranger"))

    response = client.get(PROVIDERS)

    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "tenant_forbidden",
        "message": "You are not a member of any active tenant.",
        "fields": {},
        "extra": {},
    }


@pytest.mark.parametrize(
    "authorization",
    ["Api-Key ab\x00cd.secret", "Api-Key abc-def.secret", "Api-Key abcdefghi.secret"],
    ids=["nul", "not-alphanumeric", "too-long"],
)
def test_service_key_of_impossible_prefix_answers_401_without_a_query(
    anonymous_api, authorization, django_assert_num_queries
):
    # Django's own server passes a NUL in a header on; PostgreSQL refuses it in a query.
    anonymous_api.credentials(HTTP_AUTHORIZATION=authorization)

    with django_assert_num_queries(0):
        response = anonymous_api.get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid service key."


def test_token_with_nul_answers_401(anonymous_api):
    anonymous_api.credentials(HTTP_AUTHORIZATION="Token abc\x00def")

    response = anonymous_api.get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid token."
