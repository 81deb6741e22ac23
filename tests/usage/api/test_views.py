"""Call log endpoints: filters, cursor pagination newest first, exact costs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.factories import CallLogFactory, ProviderConfigFactory

pytestmark = pytest.mark.django_db

CALLS = "/api/v1/calls/"
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _ids(response) -> list[int]:
    return [c["id"] for c in response.json()["results"]]


def test_call_list_shows_exact_cost_and_tokens(admin_api, tenant):
    log = CallLogFactory(
        tenant=tenant, cost_usd=Decimal("0.000123456789"), input_tokens=1234, output_tokens=56
    )

    response = admin_api.get(CALLS)

    assert response.status_code == 200
    [item] = response.json()["results"]
    assert item["id"] == log.pk
    assert item["cost_usd"] == "0.000123456789"
    assert (item["input_tokens"], item["output_tokens"]) == (1234, 56)
    assert item["provider_config"] == str(log.provider_config_id)
    assert item["request_id"] == str(log.request_id)


def test_call_list_shows_null_cost_when_model_unpriced(admin_api, tenant):
    CallLogFactory(tenant=tenant, cost_usd=None, price_source="unknown")

    [item] = admin_api.get(CALLS).json()["results"]

    assert (item["cost_usd"], item["price_source"]) == (None, "unknown")


def test_call_list_pages_newest_first_by_cursor_when_timestamps_tie(admin_api, tenant):
    older = CallLogFactory(tenant=tenant, created_at=NOON - timedelta(hours=1))
    tied = [CallLogFactory(tenant=tenant, created_at=NOON) for _ in range(3)]

    first = admin_api.get(CALLS, {"page_size": 2})
    second = admin_api.get(first.json()["next"])

    expected = [t.pk for t in sorted(tied, key=lambda log: -log.pk)] + [older.pk]
    assert _ids(first) + _ids(second) == expected
    assert first.json()["previous"] is None
    assert second.json()["next"] is None


def test_call_list_answers_404_when_cursor_invalid(admin_api, tenant):
    response = admin_api.get(CALLS, {"cursor": "garbage"})

    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "Invalid cursor",
        "fields": {},
        "extra": {},
    }


@pytest.mark.parametrize(
    ("field", "matching", "other"),
    [
        ("status", {"status": "error"}, {"status": "ok"}),
        ("service_name", {"service_name": "summarizer"}, {"service_name": "chat"}),
        ("customer_id", {"customer_id": "acme-corp"}, {"customer_id": "initech"}),
    ],
)
def test_call_list_filters_by_field(admin_api, tenant, field, matching, other):
    wanted = CallLogFactory(tenant=tenant, **matching)
    CallLogFactory(tenant=tenant, **other)

    response = admin_api.get(CALLS, {field: matching[field]})

    assert _ids(response) == [wanted.pk]


def test_call_list_filters_by_provider_config(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant)
    wanted = CallLogFactory(tenant=tenant, provider_config=config)
    CallLogFactory(tenant=tenant)

    response = admin_api.get(CALLS, {"provider_config": str(config.pk)})

    assert _ids(response) == [wanted.pk]


def test_call_list_filters_by_model_requested_or_answered(admin_api, tenant):
    requested = CallLogFactory(tenant=tenant, model_requested="gpt-4o", model_answered="x")
    answered = CallLogFactory(tenant=tenant, model_requested="y", model_answered="gpt-4o")
    CallLogFactory(tenant=tenant, model_requested="claude", model_answered="claude")

    response = admin_api.get(CALLS, {"model": "gpt-4o"})

    assert sorted(_ids(response)) == sorted([requested.pk, answered.pk])


def test_call_list_filters_attempts_of_one_request(admin_api, tenant):
    request_id = uuid.uuid4()
    first = CallLogFactory(tenant=tenant, request_id=request_id, attempt=1, status="error")
    second = CallLogFactory(tenant=tenant, request_id=request_id, attempt=2)
    CallLogFactory(tenant=tenant)

    response = admin_api.get(CALLS, {"request_id": str(request_id)})

    assert sorted(_ids(response)) == [first.pk, second.pk]


def test_call_list_filters_by_half_open_time_range(admin_api, tenant):
    CallLogFactory(tenant=tenant, created_at=NOON - timedelta(seconds=1))
    at_start = CallLogFactory(tenant=tenant, created_at=NOON)
    inside = CallLogFactory(tenant=tenant, created_at=NOON + timedelta(minutes=30))
    CallLogFactory(tenant=tenant, created_at=NOON + timedelta(hours=1))

    response = admin_api.get(
        CALLS,
        {"created_after": "2026-03-01T12:00:00Z", "created_before": "2026-03-01T13:00:00Z"},
    )

    assert _ids(response) == [inside.pk, at_start.pk]


def test_call_list_answers_400_when_range_inverted(admin_api, tenant):
    response = admin_api.get(
        CALLS,
        {"created_after": "2026-03-02T00:00:00Z", "created_before": "2026-03-01T00:00:00Z"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "created_before": ["Must be later than created_after."]
    }


def test_call_list_answers_400_naming_each_bad_filter(admin_api, tenant):
    response = admin_api.get(CALLS, {"status": "exploded", "request_id": "nope"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "status": ['"exploded" is not a valid choice.'],
        "request_id": ["Must be a valid UUID."],
    }


def test_call_retrieve_answers_one_call(service_api, tenant):
    log = CallLogFactory(tenant=tenant, error_code="provider_timeout", status="error")

    response = service_api.get(f"{CALLS}{log.pk}/")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["error_code"]) == (
        "error",
        "provider_timeout",
    )
