"""User token and service key authentication, and the 401s of missing or bad credentials."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from llm_providers.models import UserToken
from tests.api.fixtures import service_key_client, token_client
from tests.factories import ServiceKeyFactory, UserFactory, UserTokenFactory

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


@pytest.mark.parametrize(
    "authorization",
    ["Token abc\x00def", "Token abcdefgh.\x7fsecret", f"Token {'a' * 151}"],
    ids=["nul", "control-character", "too-long"],
)
def test_token_that_cannot_exist_answers_401_without_a_query(
    anonymous_api, authorization, django_assert_num_queries
):
    anonymous_api.credentials(HTTP_AUTHORIZATION=authorization)

    with django_assert_num_queries(0):
        response = anonymous_api.get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid token."


# --- user tokens -------------------------------------------------------------------


def _token_client(secret: str, client):
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


def test_user_token_authenticates_as_its_user(admin_user, anonymous_api):
    user_token = UserTokenFactory(user=admin_user)

    response = _token_client(user_token.secret, anonymous_api).get(PROVIDERS)

    assert response.status_code == 200
    assert response.wsgi_request.user == admin_user
    assert response.wsgi_request.auth == user_token


def test_user_token_is_prefix_dot_secret(admin_user):
    user_token = UserTokenFactory(user=admin_user)

    prefix, dot, secret = user_token.secret.partition(".")

    assert (prefix, dot, len(secret)) == (user_token.prefix, ".", 32)


@pytest.mark.parametrize(
    "change",
    [
        {"revoked": True},
        {"expiry_date": timezone.now() - timedelta(minutes=1)},
        {"hashed_key": "sha512$$" + "0" * 128},
    ],
    ids=["revoked", "expired", "unknown"],
)
def test_user_token_refused_alike_when_revoked_expired_or_unknown(
    admin_user, anonymous_api, change
):
    user_token = UserTokenFactory(user=admin_user)
    UserToken.objects.filter(pk=user_token.pk).update(**change)

    response = _token_client(user_token.secret, anonymous_api).get(PROVIDERS)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"] == {
        "code": "authentication_failed",
        "message": "Invalid token.",
        "fields": {},
        "extra": {},
    }


def test_user_token_with_known_prefix_and_wrong_secret_answers_401(admin_user, anonymous_api):
    user_token = UserTokenFactory(user=admin_user)

    response = _token_client(f"{user_token.prefix}.{'x' * 32}", anonymous_api).get(PROVIDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid token."


def test_user_tokens_sharing_a_prefix_each_authenticate_their_own_user(
    admin_user, viewer_user, anonymous_api
):
    # given two tokens carried over from DRF's authtoken whose first 8 characters agree
    first = UserTokenFactory(user=admin_user)
    second = UserTokenFactory(user=viewer_user)
    keys = {first: "0badc0de" + "1" * 32, second: "0badc0de" + "2" * 32}
    hasher = UserToken.objects.key_generator
    for user_token, key in keys.items():
        UserToken.objects.filter(pk=user_token.pk).update(
            prefix=key[:8], hashed_key=hasher.hash(key)
        )

    # then each key finds its own token
    for user_token, key in keys.items():
        response = _token_client(key, anonymous_api).get(PROVIDERS)
        assert response.status_code == 200
        assert response.wsgi_request.user == user_token.user
