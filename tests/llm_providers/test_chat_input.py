"""Checks on what a call carries, shared by complete(), the API and the admin."""

import pytest

from llm_providers.chat_input import InvalidRequest, parameters_validate, scope_validate
from llm_providers.completion import complete
from tests.factories import ProviderConfigFactory, RoutingOverrideFactory, TenantFactory
from usage.models import CallLog


def test_scope_validate_trims_spaces_as_the_api_and_the_admin_do():
    assert scope_validate(customer_id=" acme\u00a0", service_name="chat ") == ("acme", "chat")


def test_scope_validate_counts_length_after_trimming():
    assert scope_validate(customer_id=" " * 10 + "a" * 200, service_name="") == ("a" * 200, "")
    with pytest.raises(InvalidRequest, match="customer_id is longer than 200 characters."):
        scope_validate(customer_id="a" * 201, service_name="")


def test_scope_validate_refuses_half_of_a_surrogate_pair():
    with pytest.raises(InvalidRequest) as refused:
        scope_validate(customer_id="acme", service_name="chat\ud83d")

    assert (refused.value.field, refused.value.message) == (
        "service_name",
        "service_name must be valid Unicode text: it holds half of a surrogate pair.",
    )


@pytest.mark.parametrize("timeout", [0, -1, 600.5, True])
def test_parameters_validate_refuses_a_timeout_outside_its_range_saying_which(timeout):
    with pytest.raises(InvalidRequest) as refused:
        parameters_validate(
            max_tokens=None, temperature=None, top_p=None, stop=None, timeout=timeout
        )

    assert (refused.value.field, refused.value.message) == (
        "timeout",
        "timeout must be a number of seconds greater than 0 and at most 600.",
    )


@pytest.mark.parametrize("timeout", [0.001, 600])
def test_parameters_validate_accepts_a_timeout_at_the_edges_of_its_range(timeout):
    assert (
        parameters_validate(
            max_tokens=None, temperature=None, top_p=None, stop=None, timeout=timeout
        )
        is None
    )


@pytest.mark.django_db
def test_complete_for_a_customer_id_holding_half_an_emoji_is_refused_before_routing():
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, name="default", is_default=True)

    with pytest.raises(InvalidRequest, match="customer_id must be valid Unicode text"):
        complete(tenant=tenant, messages=[{"role": "user", "content": "hi"}], customer_id="\ud83d")

    assert not CallLog.objects.exists()


@pytest.mark.django_db
def test_complete_for_a_customer_id_with_spaces_takes_its_override_and_logs_it_trimmed():
    # given an override for customer "acme", saved through a form that trims
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, name="default", is_default=True)
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme", model="fake-small")

    # when a program passes the id with a trailing space
    result = complete(
        tenant=tenant, messages=[{"role": "user", "content": "hi"}], customer_id="acme "
    )

    # then the override routes the call, and the row names the customer as stored
    log = CallLog.objects.get(request_id=result.request_id)
    assert (log.provider_config_id, log.route_rule) == (override.provider_config_id, "customer")
    assert log.customer_id == "acme"
