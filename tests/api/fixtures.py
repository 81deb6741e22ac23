"""Fixtures shared by the API tests: two tenants, their users, keys and API clients."""

from __future__ import annotations

import http.client
import json
import threading

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


def http_at_once(base_url: str, requests: list[tuple[str, str, dict | None]]) -> list[tuple]:
    """Send every (Authorization header, path, JSON body or None for a GET) to a live
    server at the same moment, each on a connection of its own opened beforehand.

    Answers (the request, status, headers, JSON body) in the order the answers came.
    """
    host, port = base_url.removeprefix("http://").split(":")
    connections = []
    for _ in requests:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.connect()
        connections.append(connection)
    start = threading.Barrier(len(requests))
    answers = []

    def send(connection, request):
        authorization, path, body = request
        headers = {"Authorization": authorization}
        if body is not None:
            headers["Content-Type"] = "application/json"
        start.wait()
        connection.request(
            "GET" if body is None else "POST",
            path,
            body=None if body is None else json.dumps(body),
            headers=headers,
        )
        reply = connection.getresponse()
        answers.append((request, reply.status, dict(reply.getheaders()), json.loads(reply.read())))
        connection.close()

    threads = [
        threading.Thread(target=send, args=pair) for pair in zip(connections, requests, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == len(requests)
    return answers


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
