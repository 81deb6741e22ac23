"""Every path: a method it does not have answers 405 with the methods it has,
whatever the query and tenant the request names, and whoever asks."""

from __future__ import annotations

import pytest
import yaml
from rest_framework.test import APIClient

from tests.api.endpoints import ENDPOINTS, tenant_objects_build
from tests.api.fixtures import service_key_client, token_client
from tests.factories import ServiceKeyFactory, TenantMembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

ALL_METHODS = ("get", "post", "put", "patch", "delete")
# Paths outside the endpoint table: public, or the schema.
READ_ONLY_PATHS = ("/api/v1/health/", "/api/schema/")


def _route(path: str) -> str:
    # The table deletes a spare provider config, at the route of the others.
    return path.replace("{spare_provider}", "{provider}")


PATHS = sorted({_route(endpoint.path) for endpoint in ENDPOINTS})


def _methods_of(path: str) -> set[str]:
    if path in READ_ONLY_PATHS:
        return {"get", "head"}
    methods = {endpoint.method for endpoint in ENDPOINTS if _route(endpoint.path) == path}
    return methods | {"head"} if "get" in methods else methods


def _unsupported(path: str) -> list[str]:
    return [m for m in ALL_METHODS if m not in _methods_of(path)] + ["trace", "propfind"]


def _allowed(response) -> set[str]:
    return {m.strip().lower() for m in response["Allow"].split(",")}


def _error_code(response) -> str:
    """The error's code; the schema answers in its first format, YAML."""
    if response["Content-Type"].startswith("application/vnd.oai.openapi"):
        return yaml.safe_load(response.content)["error"]["code"]
    return response.json()["error"]["code"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "query",
    [{"page": "2"}, {"tenant": "no-such-tenant"}, {"stauts": "error"}],
    ids=["list-parameter", "unknown-tenant", "unknown-parameter"],
)
def test_method_a_path_does_not_have_answers_405_listing_the_ones_it_has(
    path, query, admin_api, tenant
):
    objects = tenant_objects_build(tenant)
    url = path.format(**objects.ids())
    allowed = _methods_of(path)

    for method in _unsupported(path):
        response = admin_api.generic(
            method.upper(), url + "?" + "&".join(f"{k}={v}" for k, v in query.items())
        )

        assert response.status_code == 405, (method, response.content)
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert _allowed(response) == allowed | {"options"}


def _session_client(user) -> APIClient:
    """A browser's session: unsafe methods without a CSRF token, as a script would send them."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _bad_token_client() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token abcdefgh.not-a-token-of-anyone")
    return client


def _bad_service_key_client() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key Abc12345.not-a-key-of-anyone")
    return client


def _revoked_service_key_client(tenant) -> APIClient:
    return service_key_client(ServiceKeyFactory(tenant=tenant, name="retired", revoked=True))


def _member_client(tenant, role) -> APIClient:
    user = UserFactory(username=f"member-{role}")
    TenantMembershipFactory(tenant=tenant, user=user, role=role)
    return token_client(user)


CREDENTIALS = {
    "admin-session": lambda t: _session_client(
        TenantMembershipFactory(tenant=t, user=UserFactory(username="sam"), role="admin").user
    ),
    "admin-token": lambda t: _member_client(t, "admin"),
    "viewer-token": lambda t: _member_client(t, "viewer"),
    "service-key": lambda t: service_key_client(ServiceKeyFactory(tenant=t, name="billing")),
    "revoked-service-key": _revoked_service_key_client,
    "unknown-service-key": lambda t: _bad_service_key_client(),
    "unknown-token": lambda t: _bad_token_client(),
    "anonymous": lambda t: APIClient(),
}


@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
def test_method_a_path_does_not_have_answers_405_to_every_credential(credential, tenant):
    client = CREDENTIALS[credential](tenant)
    ids = tenant_objects_build(tenant).ids()

    answers = {}
    for path in [*PATHS, *READ_ONLY_PATHS]:
        for method in _unsupported(path):
            response = client.generic(method.upper(), path.format(**ids))
            answers[(method, path)] = (
                response.status_code,
                _error_code(response),
                _allowed(response),
            )

    expected = {
        (method, path): (405, "method_not_allowed", _methods_of(path) | {"options"})
        for path in [*PATHS, *READ_ONLY_PATHS]
        for method in _unsupported(path)
    }
    assert answers == expected


def test_service_key_deleting_a_list_answers_405_not_403(service_api, tenant):
    # The service key may not write provider configs; the path has no DELETE at all.
    response = service_api.delete("/api/v1/providers/")

    assert response.status_code == 405
    assert response["Allow"] == "GET, POST, HEAD, OPTIONS"
    assert response.json() == {
        "error": {
            "code": "method_not_allowed",
            "message": 'Method "DELETE" not allowed.',
            "fields": {},
            "extra": {},
        }
    }


def test_service_key_of_another_tenant_naming_an_object_answers_405(tenant, other_tenant):
    client = service_key_client(ServiceKeyFactory(tenant=other_tenant, name="outsider"))
    provider = tenant_objects_build(tenant).provider

    response = client.post(f"/api/v1/providers/{provider.pk}/")

    assert response.status_code == 405
    assert response["Allow"] == "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"


def test_method_a_path_does_not_have_answers_405_to_anyone(anonymous_api):
    response = anonymous_api.generic("TRACE", "/api/v1/budgets/?page=2")

    assert response.status_code == 405
    assert response["Allow"] == "GET, POST, HEAD, OPTIONS"


def test_unsupported_methods_with_a_wrong_key_are_no_failed_authentications(settings, tenant):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "auth_failure": "3/min",
        },
    }
    client = _bad_service_key_client()
    for _ in range(5):
        assert client.delete("/api/v1/providers/").status_code == 405

    # The key was never checked: the address has failed no authentication yet.
    response = client.get("/api/v1/providers/")

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid service key."


@pytest.mark.parametrize("path", ["/api/v1/providers/", "/api/v1/usage/summary/"])
def test_method_a_path_does_not_have_answers_405_in_json_to_a_browser(path):
    # The browsable API's page would show the caller, whose token is not checked.
    client = _bad_token_client()

    response = client.delete(path, HTTP_ACCEPT="text/html")

    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "method_not_allowed"
