"""The API's JSON parser: bodies nested too deep to decode answer 400 in the one error shape."""

from __future__ import annotations

import pytest

from usage.models import Budget

pytestmark = pytest.mark.django_db

BUDGETS = "/api/v1/budgets/"


def test_body_nested_too_deep_to_decode_answers_400_parse_error(admin_api, tenant):
    body = "[" * 100_000 + "]" * 100_000

    response = admin_api.post(BUDGETS, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "parse_error",
            "message": "JSON parse error - the document is nested too deeply.",
            "fields": {},
            "extra": {},
        }
    }
    assert not Budget.objects.exists()


def test_malformed_body_still_answers_400_parse_error(admin_api, tenant):
    response = admin_api.post(BUDGETS, '{"name": ', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert response.json()["error"]["message"].startswith("JSON parse error - ")
