"""Every endpoint: a query parameter it does not take is refused with a 400
naming it, before anything is read or written; the parameters it documents
are taken."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llm_providers.models import ProviderConfig
from tests.api.endpoints import ENDPOINTS, call, tenant_objects_build
from usage.models import CallLog

pytestmark = pytest.mark.django_db


def _with_query(endpoint, query: dict):
    if endpoint.method == "get":
        return replace(endpoint, query={**endpoint.query, **query})
    return replace(
        endpoint, path=endpoint.path + "?" + "&".join(f"{k}={v}" for k, v in query.items())
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_misspelt_query_parameter_is_refused_naming_it(endpoint, admin_api, tenant):
    objects = tenant_objects_build(tenant)
    calls_before = CallLog.objects.count()

    response = call(admin_api, _with_query(endpoint, {"stauts": "error"}), objects.ids(), objects)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    (message,) = error["fields"]["stauts"]
    assert message.startswith("Unknown query parameter. The parameters this endpoint takes are: ")
    assert "format, " in message and "tenant" in message
    assert CallLog.objects.count() == calls_before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_query_parameter_given_twice_is_refused_naming_it(endpoint, admin_api, tenant):
    objects = tenant_objects_build(tenant)
    calls_before = CallLog.objects.count()
    if endpoint.method == "get":
        twice = replace(endpoint, query={**endpoint.query, "tenant": [tenant.slug, tenant.slug]})
    else:
        twice = replace(endpoint, path=f"{endpoint.path}?tenant={tenant.slug}&tenant={tenant.slug}")

    response = call(admin_api, twice, objects.ids(), objects)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == (
        "validation_error",
        {"tenant": ["Given 2 times: this parameter takes one value. Give it once."]},
    )
    assert CallLog.objects.count() == calls_before


def test_call_log_filter_given_twice_is_refused_not_narrowed_to_its_last_value(admin_api, tenant):
    # given a tenant with an ok call and a failed one
    tenant_objects_build(tenant)
    assert CallLog.objects.filter(tenant=tenant, status="ok").exists()

    # when the list is asked for ok calls and failed calls alike
    response = admin_api.get("/api/v1/calls/?status=ok&status=error")

    # then it says a filter takes one value, rather than listing the failed calls alone
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "status": ["Given 2 times: this parameter takes one value. Give it once."]
    }


def test_call_log_filters_and_cursor_parameters_are_taken(admin_api, tenant):
    tenant_objects_build(tenant)

    response = admin_api.get(
        "/api/v1/calls/", {"status": "ok", "page_size": 1, "tenant": tenant.slug}
    )

    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["status"] == "ok"


def test_unknown_parameter_lists_what_the_endpoint_takes(admin_api, tenant):
    response = admin_api.get("/api/v1/usage/summary/", {"dayz": 3})

    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["dayz"]
    assert message == (
        "Unknown query parameter. The parameters this endpoint takes are: "
        "days, end, format, start, tenant."
    )


def test_pagination_parameters_are_unknown_where_nothing_is_paginated(admin_api, tenant):
    response = admin_api.get("/api/v1/usage/daily/", {"page": 2})

    assert response.status_code == 400
    assert "page" in response.json()["error"]["fields"]


@pytest.mark.parametrize("path", ["/api/v1/providers/", "/api/v1/calls/"])
@pytest.mark.parametrize("page_size", ["abc", "0", "-3", "1.5"])
def test_page_size_that_is_not_a_whole_number_from_1_is_refused(admin_api, path, page_size):
    response = admin_api.get(path, {"page_size": page_size})

    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"]["page_size"] == [
        "A whole number from 1 to 200 is required."
    ]


def test_page_size_above_the_largest_page_is_taken_as_the_largest(admin_api, tenant):
    tenant_objects_build(tenant)

    response = admin_api.get("/api/v1/providers/", {"page_size": 5000})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["next"] is None
    stored = ProviderConfig.objects.filter(tenant=tenant).values_list("pk", flat=True)
    assert sorted(row["id"] for row in body["results"]) == sorted(str(pk) for pk in stored)
