"""Every integer the API reads, in a body or a query: one sent as text is ASCII digits,
a minus sign before them at most; JSON numbers are taken as DRF takes them."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pytest
from rest_framework import serializers

import llm_providers.api.serializers
import overrides.api.serializers
import usage.api.serializers
from llm_providers.api.serializers import PlainIntegerField
from llm_providers.models import ProviderConfig
from tests.api.endpoints import TenantObjects, tenant_objects_build
from usage.models import Budget

pytestmark = pytest.mark.django_db

INVALID = ["A valid integer is required."]
WHOLE_PAGE_SIZE = ["A whole number from 1 to 200 is required."]
# Text int() takes that is not plain digits: an underscore, a sign, a space, another script.
NOT_PLAIN = ["1_000", "+5", " 7", "٥"]


@dataclass(frozen=True)
class IntegerInput:
    method: str
    path: str
    name: str
    success: int
    # The message of "-5": the field's lower bound.
    below_minimum: list[str]
    body: dict | None = None
    # Where the field's messages are in the error's fields (an item of a list).
    item: str | None = None
    # Reads back the value stored, when the request stores one.
    stored: object = None

    def send(self, client, objects: TenantObjects, value):
        path = self.path.format(provider=objects.provider.pk, budget=objects.budget.pk)
        if self.body is None:
            return client.get(path, {self.name: value})
        sent = [value] if self.item is not None else value
        return getattr(client, self.method)(path, {**self.body, self.name: sent}, format="json")

    def messages(self, response) -> list[str]:
        messages = response.json()["error"]["fields"][self.name]
        return messages if self.item is None else messages[self.item]

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path} {self.name}"


def _minimum(bound: int) -> list[str]:
    return [f"Ensure this value is greater than or equal to {bound}."]


def _provider(objects: TenantObjects, name: str):
    return getattr(ProviderConfig.objects.get(pk=objects.provider.pk), name)


BODY_INPUTS = [
    IntegerInput(
        "post",
        "/api/v1/providers/",
        "priority",
        201,
        _minimum(0),
        body={"name": "brand-new", "provider_type": "fake", "default_model": "fake-small"},
        stored=lambda o: (
            ProviderConfig.objects.get(tenant=o.provider.tenant, name="brand-new").priority
        ),
    ),
    IntegerInput(
        "patch",
        "/api/v1/providers/{provider}/",
        "priority",
        200,
        _minimum(0),
        body={},
        stored=lambda o: _provider(o, "priority"),
    ),
    IntegerInput(
        "patch",
        "/api/v1/providers/{provider}/",
        "rpm_limit",
        200,
        _minimum(1),
        body={},
        stored=lambda o: _provider(o, "rpm_limit"),
    ),
    IntegerInput(
        "patch",
        "/api/v1/providers/{provider}/",
        "tpm_limit",
        200,
        _minimum(1),
        body={},
        stored=lambda o: _provider(o, "tpm_limit"),
    ),
    IntegerInput(
        "post",
        "/api/v1/completions/",
        "max_tokens",
        200,
        _minimum(1),
        body={"messages": [{"role": "user", "content": "hello"}]},
    ),
    IntegerInput(
        "patch",
        "/api/v1/budgets/{budget}/",
        "alert_percentages",
        200,
        _minimum(1),
        body={},
        item="0",
        stored=lambda o: Budget.objects.get(pk=o.budget.pk).alert_percentages,
    ),
]

QUERY_INPUTS = [
    *(
        IntegerInput("get", path, "days", 200, _minimum(1))
        for path in [
            "/api/v1/usage/summary/",
            "/api/v1/usage/by-provider/",
            "/api/v1/usage/by-model/",
            "/api/v1/usage/by-service/",
            "/api/v1/usage/by-customer/",
            "/api/v1/usage/daily/",
            "/api/v1/providers/{provider}/usage/",
        ]
    ),
    IntegerInput("get", "/api/v1/usage/by-customer/", "limit", 200, _minimum(1)),
    IntegerInput("get", "/api/v1/alerts/", "budget", 200, _minimum(1)),
    *(
        IntegerInput("get", path, "page_size", 200, WHOLE_PAGE_SIZE)
        for path in ["/api/v1/calls/", "/api/v1/alerts/", "/api/v1/providers/"]
    ),
]

INPUTS = BODY_INPUTS + QUERY_INPUTS


@pytest.mark.parametrize("sent", NOT_PLAIN)
@pytest.mark.parametrize("field", INPUTS, ids=str)
def test_integer_text_that_is_not_plain_digits_is_refused(field, sent, admin_api, tenant):
    objects = tenant_objects_build(tenant)

    response = field.send(admin_api, objects, sent)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    expected = WHOLE_PAGE_SIZE if field.name == "page_size" else INVALID
    assert field.messages(response) == expected


@pytest.mark.parametrize("field", INPUTS, ids=str)
def test_negative_integer_text_is_refused_by_the_lower_bound(field, admin_api, tenant):
    objects = tenant_objects_build(tenant)

    response = field.send(admin_api, objects, "-5")

    assert response.status_code == 400, response.content
    assert field.messages(response) == field.below_minimum


@pytest.mark.parametrize("sent", ["7", 7])
@pytest.mark.parametrize("field", INPUTS, ids=str)
def test_plain_integer_text_and_number_are_taken(field, sent, admin_api, tenant):
    objects = tenant_objects_build(tenant)

    response = field.send(admin_api, objects, sent)

    assert response.status_code == field.success, response.content
    if field.stored is not None:
        assert field.stored(objects) == ([7] if field.item is not None else 7)


@pytest.mark.parametrize(("sent", "taken"), [(5.0, True), (5.5, False), (True, False)])
@pytest.mark.parametrize("field", BODY_INPUTS, ids=str)
def test_json_numbers_are_taken_when_whole(field, sent, taken, admin_api, tenant):
    objects = tenant_objects_build(tenant)

    response = field.send(admin_api, objects, sent)

    if taken:
        assert response.status_code == field.success, response.content
        if field.stored is not None:
            assert field.stored(objects) == ([5] if field.item is not None else 5)
    else:
        assert response.status_code == 400, response.content
        assert field.messages(response) == INVALID


# Each would be page 1 as int() reads it.
@pytest.mark.parametrize("page", ["0_1", "+1", " 1", "١"])
def test_page_number_that_is_not_plain_digits_is_not_found(page, admin_api, tenant):
    tenant_objects_build(tenant)

    response = admin_api.get("/api/v1/providers/", {"page": page})

    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("page", ["1", "last"])
def test_page_number_in_digits_or_last_is_taken(page, admin_api, tenant):
    tenant_objects_build(tenant)

    response = admin_api.get("/api/v1/providers/", {"page": page, "page_size": 200})

    assert response.status_code == 200, response.content
    stored = ProviderConfig.objects.filter(tenant=tenant).values_list("pk", flat=True)
    assert sorted(row["id"] for row in response.json()["results"]) == sorted(
        str(pk) for pk in stored
    )


def _integer_fields(field, path: str):
    """(path, field) of every integer field within a serializer field, nested ones included."""
    if isinstance(field, serializers.IntegerField):
        yield path, field
    if isinstance(field, serializers.BaseSerializer):
        inner = field.child if isinstance(field, serializers.ListSerializer) else field
        for name, child in inner.fields.items():
            yield from _integer_fields(child, f"{path}.{name}")
    elif getattr(field, "child", None) is not None:
        yield from _integer_fields(field.child, f"{path}[]")


def _api_serializers():
    for module in (llm_providers.api.serializers, overrides.api.serializers, usage.api.serializers):
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, serializers.Serializer)
                and value.__module__ == module.__name__
                # The base of model serializers, which names no model.
                and (not issubclass(value, serializers.ModelSerializer) or hasattr(value, "Meta"))
            ):
                yield f"{module.__name__}.{name}", value


API_SERIALIZERS = dict(_api_serializers())


@pytest.mark.parametrize("name", API_SERIALIZERS)
def test_every_integer_field_of_the_api_is_plain(name):
    fields = list(_integer_fields(API_SERIALIZERS[name](), name))

    assert [path for path, field in fields if not isinstance(field, PlainIntegerField)] == []
