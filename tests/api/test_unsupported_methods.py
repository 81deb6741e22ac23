"""Every path: a method it does not have answers 405 with the methods it has,
whatever the query and tenant the request names."""

from __future__ import annotations

import pytest

from tests.api.endpoints import ENDPOINTS, tenant_objects_build

pytestmark = pytest.mark.django_db

ALL_METHODS = ("get", "post", "put", "patch", "delete")


def _route(path: str) -> str:
    # The table deletes a spare provider config, at the route of the others.
    return path.replace("{spare_provider}", "{provider}")


PATHS = sorted({_route(endpoint.path) for endpoint in ENDPOINTS})


def _methods_of(path: str) -> set[str]:
    return {endpoint.method for endpoint in ENDPOINTS if _route(endpoint.path) == path}


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
    if "get" in allowed:
        allowed |= {"head"}

    for method in [m for m in ALL_METHODS if m not in allowed] + ["trace"]:
        response = admin_api.generic(
            method.upper(), url + "?" + "&".join(f"{k}={v}" for k, v in query.items())
        )

        assert response.status_code == 405, (method, response.content)
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert {m.strip().lower() for m in response["Allow"].split(",")} == allowed | {"options"}


def test_method_a_path_does_not_have_answers_405_to_anyone(anonymous_api):
    response = anonymous_api.generic("TRACE", "/api/v1/budgets/?page=2")

    assert response.status_code == 405
    assert response["Allow"] == "GET, POST, HEAD, OPTIONS"
