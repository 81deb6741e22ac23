"""The API's JSON parser: bodies nested too deep to decode answer 400 in the one error shape."""

from __future__ import annotations

from decimal import Decimal

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


@pytest.mark.parametrize("number", ["1e309", "-1e400"])
def test_number_too_large_for_a_float_answers_400_parse_error(admin_api, tenant, number):
    body = '{"name": "Monthly", "limit_usd": "10", "alert_percentages": [50, ' + number + "]}"

    response = admin_api.post(BUDGETS, body, content_type="application/json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "parse_error"
    assert error["message"] == (
        f"JSON parse error - Number out of range: {number} is too large for a 64-bit float"
    )
    assert not Budget.objects.exists()


def test_nan_and_infinity_literals_still_answer_400_parse_error(admin_api, tenant):
    response = admin_api.post(BUDGETS, '{"name": NaN}', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_ordinary_floats_still_parse(admin_api, tenant):
    body = '{"name": "Monthly", "limit_usd": 12.5, "alert_percentages": [50, 80]}'

    response = admin_api.post(BUDGETS, body, content_type="application/json")

    assert response.status_code == 201, response.json()
    assert Budget.objects.get().limit_usd == Decimal("12.5")
