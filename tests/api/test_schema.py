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
def test_tenant_scoped_operations_document_tenant_selection(schema, path):
    for operation in schema["paths"][path].values():
        parameters = {(p["in"], p["name"]) for p in operation["parameters"]}
        assert {("header", "X-Tenant"), ("query", "tenant")} <= parameters


ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
# What every operation acting for a tenant can answer: bad input or tenant, no or bad
# credentials, a role or tenant refused, an Accept it cannot satisfy, throttled, a bug.
SCOPED = {"400", "401", "403", "406", "429", "500"}
BODY = {"413", "415"}
PROVIDER_CALL = {"422", "429", "500", "502", "503", "504"}
# 404 on an object's path, and on a paginated list (a page that is not one).
OPERATION_ERRORS = {
    "GET /api/v1/providers/": SCOPED | {"404"},
    "POST /api/v1/providers/": SCOPED | BODY,
    "GET /api/v1/providers/{id}/": SCOPED | {"404"},
    "PUT /api/v1/providers/{id}/": SCOPED | BODY | {"404"},
    "PATCH /api/v1/providers/{id}/": SCOPED | BODY | {"404"},
    "DELETE /api/v1/providers/{id}/": SCOPED | {"404"},
    "POST /api/v1/providers/{id}/test/": SCOPED | {"404"},
    "GET /api/v1/providers/{id}/usage/": SCOPED | {"404"},
    "GET /api/v1/overrides/": SCOPED | {"404"},
    "POST /api/v1/overrides/": SCOPED | BODY,
    "GET /api/v1/overrides/{id}/": SCOPED | {"404"},
    "PUT /api/v1/overrides/{id}/": SCOPED | BODY | {"404"},
    "PATCH /api/v1/overrides/{id}/": SCOPED | BODY | {"404"},
    "DELETE /api/v1/overrides/{id}/": SCOPED | {"404"},
    "GET /api/v1/routes/resolve/": SCOPED | {"422"},
    "GET /api/v1/calls/": SCOPED | {"404"},
    "GET /api/v1/calls/{id}/": SCOPED | {"404"},
    "GET /api/v1/service-keys/": SCOPED | {"404"},
    "POST /api/v1/service-keys/": SCOPED | BODY,
    "GET /api/v1/service-keys/{prefix}/": SCOPED | {"404"},
    "POST /api/v1/service-keys/{prefix}/revoke/": SCOPED | {"404"},
    "GET /api/v1/usage/summary/": SCOPED,
    "GET /api/v1/usage/by-provider/": SCOPED,
    "GET /api/v1/usage/by-model/": SCOPED,
    "GET /api/v1/usage/by-service/": SCOPED,
    "GET /api/v1/usage/by-customer/": SCOPED,
    "GET /api/v1/usage/daily/": SCOPED,
    "GET /api/v1/budgets/": SCOPED | {"404"},
    "POST /api/v1/budgets/": SCOPED | BODY,
    "GET /api/v1/budgets/{id}/": SCOPED | {"404"},
    "PUT /api/v1/budgets/{id}/": SCOPED | BODY | {"404"},
    "PATCH /api/v1/budgets/{id}/": SCOPED | BODY | {"404"},
    "DELETE /api/v1/budgets/{id}/": SCOPED | {"404"},
    "GET /api/v1/alerts/": SCOPED | {"404"},
    "GET /api/v1/alerts/{id}/": SCOPED | {"404"},
    # Completions answer JSON whatever the Accept header asks: never 406.
    "POST /api/v1/completions/": (SCOPED - {"406"}) | BODY | PROVIDER_CALL,
    "POST /api/v1/embeddings/": SCOPED | BODY | PROVIDER_CALL,
    # Public and unthrottled: no credentials to refuse, no rate to exceed.
    "GET /api/v1/health/": {"400", "406", "500"},
}


def _operations(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_documents_the_errors_it_can_answer_in_the_error_shape(schema):
    health = schema["paths"]["/api/v1/health/"]["get"]["responses"]
    # The health check's 503 is its own report, not an error.
    assert health.pop("503")["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
    }
    documented = {
        label: {code for code in operation["responses"] if code >= "400"}
        for label, operation in _operations(schema)
    }

    assert documented == OPERATION_ERRORS
    for label, operation in _operations(schema):
        for code in OPERATION_ERRORS[label]:
            response = operation["responses"][code]
            assert (label, code, response["content"]) == (label, code, ERROR_CONTENT)
            assert response["description"], (label, code)


def test_not_found_says_what_is_missing_object_or_page(schema):
    paths = schema["paths"]

    assert paths["/api/v1/budgets/{id}/"]["get"]["responses"]["404"]["description"] == (
        "No such object in this tenant (`not_found`)."
    )
    assert paths["/api/v1/calls/"]["get"]["responses"]["404"]["description"] == (
        "No such page (`not_found`): a page number that is none or past the end, or a "
        "cursor this list did not give out."
    )


def test_authentication_and_throttling_errors_document_their_headers(schema):
    for label, operation in _operations(schema):
        responses = operation["responses"]
        if "401" in responses:
            header = responses["401"]["headers"]["WWW-Authenticate"]
            assert (label, header["required"]) == (label, True)
        if "429" in responses:
            header = responses["429"]["headers"]["Retry-After"]
            assert (label, header["required"], header["schema"]) == (
                label,
                True,
                {"type": "string", "pattern": "^[1-9][0-9]*$"},
            )


def test_schema_description_names_the_answers_no_operation_lists(schema):
    description = schema["info"]["description"]

    assert description.startswith("Provider keys, routing, completions and usage")
    assert "405 `method_not_allowed`, with an `Allow` header" in description
    assert "404 `not_found`" in description


@pytest.fixture
def operation_urls(schema, tenant):
    """Every documented operation as (label, method, URL with ids of the tenant's objects)."""
    objects = tenant_objects_build(tenant)
    ids = {
        "providers": objects.provider.pk,
        "overrides": objects.override.pk,
        "calls": objects.call.pk,
        "budgets": objects.budget.pk,
        "alerts": objects.alert.pk,
    }
    found = []
    for label, _operation in _operations(schema):
        method, path = label.split(" ")
        url = path.format(id=ids.get(path.split("/")[3], ""), prefix=objects.service_key.prefix)
        found.append((label, method, url))
    return found


def test_operations_answer_401_without_credentials_as_documented(
    schema, anonymous_api, operation_urls
):
    answers = {
        label: anonymous_api.generic(method, url, "{}", content_type="application/json")
        for label, method, url in operation_urls
    }

    refused = {label for label, response in answers.items() if response.status_code == 401}
    assert refused == {label for label, errors in OPERATION_ERRORS.items() if "401" in errors}
    for label in refused:
        assert answers[label]["WWW-Authenticate"] == "Token", label
        assert answers[label].json()["error"]["code"] == "not_authenticated", label


def test_operations_answer_406_to_an_accept_they_cannot_satisfy_as_documented(
    admin_api, operation_urls
):
    answers = {
        label: admin_api.generic(
            method, url, "{}", content_type="application/json", HTTP_ACCEPT="application/xml"
        )
        for label, method, url in operation_urls
    }

    refused = {label for label, response in answers.items() if response.status_code == 406}
    assert refused == {label for label, errors in OPERATION_ERRORS.items() if "406" in errors}
    for label in refused:
        assert answers[label]["Content-Type"] == "application/json", label
        assert answers[label].json()["error"]["code"] == "not_acceptable", label
    # Completions answer in JSON instead: here, what the empty body lacks.
    completion = answers["POST /api/v1/completions/"]
    assert (completion.status_code, completion["Content-Type"]) == (400, "application/json")
    assert completion.json()["error"]["fields"] == {"messages": ["This field is required."]}


def test_operations_answer_429_with_retry_after_as_documented(admin_api, operation_urls, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "user": "0/min",
        },
    }
    answers = {
        label: admin_api.generic(method, url, "{}", content_type="application/json")
        for label, method, url in operation_urls
    }

    refused = {label for label, response in answers.items() if response.status_code == 429}
    assert refused == {label for label, errors in OPERATION_ERRORS.items() if "429" in errors}
    for label in refused:
        assert answers[label]["Retry-After"] == "60", label
        assert answers[label].json()["error"]["code"] == "throttled", label


def test_lists_answer_404_to_a_page_that_is_none_as_documented(schema, admin_api, operation_urls):
    lists = [
        (label, url)
        for label, method, url in operation_urls
        if method == "GET" and "404" in OPERATION_ERRORS[label] and "{" not in label
    ]

    assert len(lists) == 6
    for label, url in lists:
        parameters = {p["name"] for p in schema["paths"][url]["get"]["parameters"]}
        page = {"page": 99} if "page" in parameters else {"cursor": "no-cursor"}

        response = admin_api.get(url, page)

        assert (label, response.status_code) == (label, 404)
        assert response.json()["error"]["code"] == "not_found"


def test_health_answers_400_to_too_many_query_parameters_as_documented(anonymous_api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 3
    query = "&".join(f"x{n}=1" for n in range(4))

    response = anonymous_api.get(f"/api/v1/health/?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


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
