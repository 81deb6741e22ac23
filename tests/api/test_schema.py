"""The OpenAPI schema and the interactive docs: complete, valid, served without a CDN."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command

from tests.api.endpoints import tenant_objects_build

pytestmark = pytest.mark.django_db

TENANT_SCOPED_PATHS = [
    "/api/v1/providers/",
    "/api/v1/providers/{id}/",
    "/api/v1/providers/{id}/test/",
    "/api/v1/overrides/",
    "/api/v1/overrides/{id}/",
    "/api/v1/routes/resolve/",
    "/api/v1/calls/",
    "/api/v1/calls/{id}/",
    "/api/v1/service-keys/",
    "/api/v1/service-keys/{prefix}/",
    "/api/v1/service-keys/{prefix}/revoke/",
    "/api/v1/providers/{id}/usage/",
    "/api/v1/usage/summary/",
    "/api/v1/usage/by-provider/",
    "/api/v1/usage/by-model/",
    "/api/v1/usage/by-service/",
    "/api/v1/usage/by-customer/",
    "/api/v1/usage/daily/",
    "/api/v1/budgets/",
    "/api/v1/budgets/{id}/",
    "/api/v1/alerts/",
    "/api/v1/alerts/{id}/",
    "/api/v1/completions/",
    "/api/v1/embeddings/",
]


@pytest.fixture
def schema(anonymous_api):
    response = anonymous_api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_schema_is_valid_openapi_without_warnings(tmp_path):
    # --fail-on-warn: any view drf-spectacular cannot describe fails the build.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )

    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3.0.3")


def test_schema_lists_every_endpoint(schema):
    assert sorted(schema["paths"]) == sorted([*TENANT_SCOPED_PATHS, "/api/v1/health/"])


@pytest.mark.parametrize("path", TENANT_SCOPED_PATHS)
def test_tenant_scoped_operations_document_tenant_selection_and_errors(schema, path):
    for operation in schema["paths"][path].values():
        parameters = {(p["in"], p["name"]) for p in operation["parameters"]}
        assert {("header", "X-Tenant"), ("query", "tenant")} <= parameters
        for status in ("400", "401", "403", "404", "429"):
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}


def test_schema_names_both_throttles_in_its_429(schema):
    operation = schema["paths"]["/api/v1/providers/"]["get"]

    description = operation["responses"]["429"]["description"]
    assert "`throttled`" in description
    assert "`auth_throttled`" in description


def test_schema_describes_the_error_shape(schema):
    error = schema["components"]["schemas"]["Error"]["properties"]["error"]

    assert error["required"] == ["code", "message", "fields", "extra"]


def test_schema_names_three_authentication_methods(schema):
    schemes = schema["components"]["securitySchemes"]

    assert set(schemes) == {"tokenAuth", "serviceKey", "cookieAuth"}
    assert schemes["serviceKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "A tenant's service key: `Authorization: Api-Key <prefix>.<secret>`.",
    }
    assert schemes["tokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "A person's API token: `Authorization: Token <prefix>.<secret>` "
        "(tokens from before hashing: 40 hex characters).",
    }


def test_schema_has_secrets_in_requests_only(schema):
    components = schema["components"]["schemas"]
    request = components["ProviderConfigRequest"]["properties"]
    response = components["ProviderConfig"]["properties"]

    assert {"api_key", "aws_access_key_id", "aws_secret_access_key"} <= set(request)
    assert request["api_key"]["writeOnly"] is True
    assert not {"api_key", "aws_secret_access_key", "key_fingerprint"} & set(response)
    assert "key_mask" in response


def test_request_bodies_document_that_unknown_fields_are_refused(schema):
    components = schema["components"]["schemas"]
    requests = {name: c for name, c in components.items() if name.endswith("Request")}

    assert {"ProviderConfigRequest", "RoutingFallbackRequest", "CompletionRequestRequest"} <= set(
        requests
    )
    assert {name: c.get("additionalProperties") for name, c in requests.items()} == dict.fromkeys(
        requests, False
    )


def test_schema_documents_the_max_tokens_range_the_api_accepts(schema):
    max_tokens = schema["components"]["schemas"]["CompletionRequestRequest"]["properties"][
        "max_tokens"
    ]

    assert (max_tokens["minimum"], max_tokens["maximum"]) == (1, 1_000_000)


def test_schema_component_descriptions_speak_of_the_resource_not_the_code(schema):
    # A serializer without a docstring of its own takes its mixin's, which tells
    # developers how the class is built ("Mixed in before the DRF serializer class").
    descriptions = {
        name: component.get("description", "")
        for name, component in schema["components"]["schemas"].items()
    }

    leaking = {name: d for name, d in descriptions.items() if "serializer" in d.lower()}
    assert leaking == {}
    assert descriptions["ProviderConfig"] == "One tenant's account at one provider."
    assert descriptions["BudgetRequest"].startswith("A spending limit")


def test_route_resolve_documents_no_route_as_422(schema):
    responses = schema["paths"]["/api/v1/routes/resolve/"]["get"]["responses"]

    assert responses["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_docs_page_references_only_local_static_files(anonymous_api):
    response = anonymous_api.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"https?:|//[a-z0-9]", html, re.IGNORECASE)
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(urls) >= 3
    for url in urls:
        assert url.startswith("/static/drf_spectacular_sidecar/"), url
        assert finders.find(url.removeprefix("/static/")) is not None, url
    assert 'url: "/api/schema/"' in html


@pytest.fixture
def body_operations(schema, tenant):
    """Every operation that takes a request body, as (method, path with real ids, operation)."""
    objects = tenant_objects_build(tenant)
    ids = {"id": "", "prefix": objects.service_key.prefix}
    collection_ids = {
        "providers": objects.provider.pk,
        "overrides": objects.override.pk,
        "budgets": objects.budget.pk,
    }
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            ids["id"] = collection_ids.get(path.split("/")[3], "")
            found.append((method, path.format(**ids), operation))
    return found


def test_body_operations_document_the_wrong_content_type_they_answer(admin_api, body_operations):
    assert len(body_operations) == 12
    for method, path, operation in body_operations:
        # when
        response = admin_api.generic(method.upper(), path, "name=x", content_type="text/plain")

        # then
        assert (path, response.status_code) == (path, 415)
        assert response.json()["error"]["code"] == "unsupported_media_type"
        documented = operation["responses"].get("415", {}).get("content", {})
        assert (method, path, documented.get("application/json")) == (
            method,
            path,
            {"schema": {"$ref": "#/components/schemas/Error"}},
        )


def test_body_operations_document_the_too_large_body_they_answer(
    admin_api, body_operations, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    body = {"name": "x" * 2_000}
    for method, path, operation in body_operations:
        # when
        response = admin_api.generic(
            method.upper(), path, json.dumps(body), content_type="application/json"
        )

        # then
        assert (path, response.status_code) == (path, 413)
        assert response.json()["error"]["extra"] == {"max_bytes": 1_000}
        documented = operation["responses"].get("413", {}).get("content", {})
        assert (method, path, documented.get("application/json")) == (
            method,
            path,
            {"schema": {"$ref": "#/components/schemas/Error"}},
        )


def test_bad_request_description_names_every_400_code(schema):
    description = schema["paths"]["/api/v1/budgets/"]["post"]["responses"]["400"]["description"]

    for code in ("validation_error", "parse_error", "tenant_ambiguous", "tenant_invalid"):
        assert f"`{code}`" in description


def test_list_operations_document_the_page_sizes_they_accept(schema, admin_api, tenant):
    tenant_objects_build(tenant)
    lists = [
        path
        for path, operations in schema["paths"].items()
        if any(p["name"] == "page_size" for p in operations.get("get", {}).get("parameters", []))
    ]
    assert len(lists) == 6
    for path in lists:
        parameter = next(
            p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "page_size"
        )

        assert parameter["schema"]["minimum"] == 1, path
        assert "maximum" not in parameter["schema"], path
        assert admin_api.get(path, {"page_size": 0}).status_code == 400
        assert admin_api.get(path, {"page_size": 1}).status_code == 200
        assert admin_api.get(path, {"page_size": 5000}).status_code == 200


def test_numbered_lists_document_the_pages_they_accept(schema, admin_api, tenant):
    tenant_objects_build(tenant)
    lists = [
        path
        for path, operations in schema["paths"].items()
        if any(p["name"] == "page" for p in operations.get("get", {}).get("parameters", []))
    ]
    assert len(lists) == 4
    for path in lists:
        parameters = schema["paths"][path]["get"]["parameters"]
        parameter = next(p for p in parameters if p["name"] == "page")

        assert parameter["schema"] == {
            "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["last"]}]
        }, path
        assert admin_api.get(path, {"page": "last"}).status_code == 200
        assert admin_api.get(path, {"page": 1}).status_code == 200
        assert admin_api.get(path, {"page": 0}).status_code == 404
