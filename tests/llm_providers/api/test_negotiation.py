"""Content negotiation: a format the endpoint does not answer in is 406 in the error
shape, never "not found"; completions answer JSON instead."""

from __future__ import annotations

import pytest
import yaml

from tests.factories import ProviderConfigFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/providers/", "/api/v1/usage/summary/", "/api/v1/calls/"])
def test_unknown_format_answers_406_naming_the_formats_there_are(admin_api, path):
    response = admin_api.get(path, {"format": "xml"})

    assert response.status_code == 406
    assert response.json() == {
        "error": {
            "code": "not_acceptable",
            "message": "Unknown format “xml”: the formats this endpoint answers in are json, api.",
            "fields": {},
            "extra": {},
        }
    }


def test_unknown_format_of_an_object_answers_406_not_404(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant)

    response = admin_api.get(f"/api/v1/providers/{config.pk}/", {"format": "csv"})

    assert response.status_code == 406
    assert response.json()["error"]["code"] == "not_acceptable"


def test_known_formats_still_answer(admin_api):
    as_json = admin_api.get("/api/v1/usage/summary/", {"format": "json"})
    as_page = admin_api.get("/api/v1/usage/summary/", {"format": "api"})

    assert (as_json.status_code, as_json["Content-Type"]) == (200, "application/json")
    assert as_json.json()["timezone"] == "UTC"
    assert (as_page.status_code, as_page["Content-Type"]) == (200, "text/html; charset=utf-8")


def test_public_health_answers_406_to_an_accept_it_cannot_satisfy(anonymous_api):
    response = anonymous_api.get("/api/v1/health/", HTTP_ACCEPT="application/xml")

    assert response.status_code == 406
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == {
        "code": "not_acceptable",
        "message": "Could not satisfy the request Accept header.",
        "fields": {},
        "extra": {},
    }


def test_completion_answers_json_whatever_format_is_asked(admin_api):
    response = admin_api.post(
        "/api/v1/completions/?format=xml", {}, format="json", HTTP_ACCEPT="text/event-stream"
    )

    assert (response.status_code, response["Content-Type"]) == (400, "application/json")
    assert response.json()["error"]["fields"] == {"messages": ["This field is required."]}


def test_schema_answers_406_naming_its_formats_to_an_unknown_format(anonymous_api):
    response = anonymous_api.get("/api/schema/", {"format": "xml"})

    assert response.status_code == 406
    assert yaml.safe_load(response.content)["error"] == {
        "code": "not_acceptable",
        "message": "Unknown format “xml”: the formats this endpoint answers in are yaml, json.",
        "fields": {},
        "extra": {},
    }
