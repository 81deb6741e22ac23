"""Fixtures shared by the API tests: two tenants, their users, keys and API clients."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from llm_providers.models import TenantMembership
from tests.factories import (
    ServiceKeyFactory,
    TenantFactory,
    TenantMembershipFactory,
    UserFactory,
    UserTokenFactory,
)


def token_client(user, *, tenant=None) -> APIClient:
    """An API client authenticated by the user's token (`Authorization: Token ...`)."""
    client = APIClient()
    token = UserTokenFactory(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.secret}")
    if tenant is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.secret}", HTTP_X_TENANT=tenant.slug)
    return client


def session_client(user) -> APIClient:
    """An API client logged in with a session, as the browsable API is."""
    client = APIClient()
    client.force_login(user)
    return client


def service_key_client(service_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {service_key.secret}")
    return client


@pytest.fixture
def tenant(db):
    return TenantFactory(slug="acme", name="Acme")


@pytest.fixture
def other_tenant(db):
    return TenantFactory(slug="globex", name="Globex")


@pytest.fixture
def admin_user(tenant):
    return TenantMembershipFactory(
        tenant=tenant, user=UserFactory(username="alice"), role=TenantMembership.Role.ADMIN
    ).user


@pytest.fixture
def viewer_user(tenant):
    return TenantMembershipFactory(
        tenant=tenant, user=UserFactory(username="victor"), role=TenantMembership.Role.VIEWER
    ).user


@pytest.fixture
def service_key(tenant):
    return ServiceKeyFactory(tenant=tenant, name="billing-app")


@pytest.fixture
def admin_api(admin_user) -> APIClient:
    return token_client(admin_user)


@pytest.fixture
def viewer_api(viewer_user) -> APIClient:
    return token_client(viewer_user)


@pytest.fixture
def service_api(service_key) -> APIClient:
    return service_key_client(service_key)


@pytest.fixture
def anonymous_api(db) -> APIClient:
    return APIClient()
