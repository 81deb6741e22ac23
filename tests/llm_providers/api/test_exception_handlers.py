"""One error shape: every kind of error maps to its status, code, fields and headers."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404
from rest_framework import exceptions

from llm_providers.adapters.errors import (
    ProviderAuthenticationError,
    ProviderRateLimited,
    ProviderTimeout,
    UpstreamUnavailable,
)
from llm_providers.api.exception_handlers import api_exception_handler
from llm_providers.chat_input import InvalidRequest
from llm_providers.rate_limiting import RateLimited
from overrides.routing import NoRouteError
from tests.factories import BudgetFactory, TenantFactory
from usage.budget import BudgetExceeded, BudgetUnavailable, budget_reserve


def _handle(exc):
    return api_exception_handler(exc, {})


def test_django_validation_error_with_fields_answers_400_with_message_dict():
    response = _handle(ValidationError({"name": ["Too long."], "__all__": ["Pick a scope."]}))

    assert response.status_code == 400
    assert response.data == {
        "error": {
            "code": "validation_error",
            "message": "Invalid input: name: Too long. Pick a scope.",
            "fields": {"name": ["Too long."], "non_field_errors": ["Pick a scope."]},
            "extra": {},
        }
    }


def test_django_validation_error_without_fields_answers_400_non_field():
    response = _handle(ValidationError("Unknown provider config field(s): color."))

    assert response.status_code == 400
    assert response.data["error"]["fields"] == {
        "non_field_errors": ["Unknown provider config field(s): color."]
    }


def test_drf_validation_error_summarises_first_messages():
    response = _handle(
        exceptions.ValidationError(
            {"a": ["A is bad."], "b": ["B is bad."], "c": ["C is bad."], "d": ["D is bad."]}
        )
    )

    assert response.status_code == 400
    assert response.data["error"]["message"] == (
        "Invalid input: a: A is bad. b: B is bad. c: C is bad. (and 1 more)"
    )


def test_no_route_answers_422_with_its_code_and_extra():
    response = _handle(NoRouteError("No route.", extra={"customer_id": "c"}))

    assert response.status_code == 422
    assert response.data["error"] == {
        "code": "no_route",
        "message": "No route.",
        "fields": {},
        "extra": {"customer_id": "c"},
    }


def test_budget_exceeded_answers_429_with_retry_after_from_extra():
    response = _handle(
        BudgetExceeded("Monthly budget reached.", extra={"retry_after_seconds": 3600.2})
    )

    assert response.status_code == 429
    assert response["Retry-After"] == "3601"
    assert response.data["error"]["code"] == "budget_exceeded"
    assert response.data["error"]["extra"] == {"retry_after_seconds": 3601}


def test_rate_limited_answers_429_with_retry_after_rounded_up():
    response = _handle(RateLimited("Slow down.", retry_after=0.2))

    assert response.status_code == 429
    assert response["Retry-After"] == "1"
    assert response.data["error"]["code"] == "rate_limited"
    assert response.data["error"]["extra"] == {"retry_after_seconds": 1}


def test_upstream_rate_limit_answers_429_with_provider_code():
    response = _handle(ProviderRateLimited("Upstream 429.", retry_after=7))

    assert (response.status_code, response["Retry-After"]) == (429, "7")
    assert response.data["error"]["code"] == "provider_rate_limited"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UpstreamUnavailable("Provider down."), 502, "upstream_unavailable"),
        (ProviderAuthenticationError("Key rejected."), 502, "provider_authentication"),
        (ProviderTimeout("Took too long."), 504, "provider_timeout"),
    ],
)
def test_upstream_failures_answer_502_and_timeouts_504(error, status, code):
    response = _handle(error)

    assert (response.status_code, response.data["error"]["code"]) == (status, code)
    assert "Retry-After" not in response


def test_throttled_answers_429_with_retry_after():
    response = _handle(exceptions.Throttled(wait=12.5))

    assert (response.status_code, response["Retry-After"]) == (429, "13")
    assert response.data["error"]["code"] == "throttled"
    assert response.data["error"]["extra"] == {"retry_after_seconds": 13}


def test_django_404_answers_plain_not_found():
    response = _handle(Http404("No ProviderConfig matches the given query."))

    assert response.status_code == 404
    assert response.data["error"]["message"] == "Not found."


def test_method_not_allowed_keeps_drf_code():
    response = _handle(exceptions.MethodNotAllowed("DELETE"))

    assert response.status_code == 405
    assert response.data["error"] == {
        "code": "method_not_allowed",
        "message": 'Method "DELETE" not allowed.',
        "fields": {},
        "extra": {},
    }


def test_unexpected_error_answers_500_without_details(caplog):
    response = _handle(RuntimeError("database password is hunter2"))

    assert response.status_code == 500
    assert response.data["error"]["code"] == "server_error"
    assert "hunter2" not in str(response.data)
    assert "Unexpected error in the API" in caplog.text


def test_invalid_request_answers_validation_error_naming_its_field():
    response = _handle(InvalidRequest("messages[0].role", "messages[0].role must be one of …"))

    assert response.status_code == 400
    assert response.data["error"] == {
        "code": "validation_error",
        "message": "messages[0].role must be one of …",
        "fields": {"messages[0].role": ["messages[0].role must be one of …"]},
        "extra": {"field": "messages[0].role"},
    }


def test_upstream_rate_limit_without_hint_answers_retry_after_one_second():
    response = _handle(ProviderRateLimited("Upstream 429.", retry_after=None))

    assert (response.status_code, response["Retry-After"]) == (429, "1")
    assert response.data["error"]["extra"] == {"retry_after_seconds": 1}


@pytest.mark.django_db
def test_real_budget_refusal_answers_429_budget_exceeded_with_retry_after():
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, name="daily-cap", action="block", period="daily",
                  limit_usd=Decimal("0.0001"))  # fmt: skip
    with pytest.raises(BudgetExceeded) as raised:
        budget_reserve(
            tenant=tenant, provider_config_id=None, service_name="", customer_id="",
            amount_usd=Decimal("0.01"), request_id=uuid.uuid4(),
        )  # fmt: skip

    response = _handle(raised.value)

    assert response.status_code == 429
    error = response.data["error"]
    assert (error["code"], error["extra"]["budget_name"]) == ("budget_exceeded", "daily-cap")
    seconds = error["extra"]["retry_after_seconds"]
    assert response["Retry-After"] == str(seconds)
    assert 1 <= seconds <= 86400


def test_budget_counters_unavailable_answers_503():
    response = _handle(BudgetUnavailable("Budget counters are unavailable (timeout)."))

    assert response.status_code == 503
    assert response.data["error"]["code"] == "budget_unavailable"
