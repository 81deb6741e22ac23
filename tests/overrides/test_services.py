"""Override writes: validation of targets and fallbacks, all-or-nothing saves."""

import pytest
from django.core.exceptions import ValidationError

from overrides.models import RoutingOverride
from overrides.services import routing_override_create, routing_override_update
from tests.factories import ProviderConfigFactory, TenantFactory
from tests.unstorable_text import UNSTORABLE_TEXT

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant():
    return TenantFactory()


def test_routing_override_create_saves_fallbacks_in_order(tenant):
    primary = ProviderConfigFactory(tenant=tenant)
    first = ProviderConfigFactory(tenant=tenant)
    second = ProviderConfigFactory(tenant=tenant)

    override = routing_override_create(
        tenant=tenant,
        provider_config=primary,
        customer_id="acme",
        fallbacks=[(first, "fake-large"), (second, "")],
    )

    rows = list(override.fallbacks.values_list("provider_config_id", "model", "position"))
    assert rows == [(first.pk, "fake-large", 0), (second.pk, "", 1)]


def test_routing_override_create_refuses_other_tenants_provider(tenant):
    foreign = ProviderConfigFactory()

    with pytest.raises(ValidationError) as raised:
        routing_override_create(tenant=tenant, provider_config=foreign, customer_id="acme")

    assert raised.value.message_dict["provider_config"] == [
        "Choose a provider config of the same tenant."
    ]
    assert not RoutingOverride.objects.exists()


def test_routing_override_create_refuses_other_tenants_fallback_and_saves_nothing(tenant):
    primary = ProviderConfigFactory(tenant=tenant)
    foreign = ProviderConfigFactory()

    with pytest.raises(ValidationError) as raised:
        routing_override_create(
            tenant=tenant, provider_config=primary, customer_id="acme", fallbacks=[(foreign, "")]
        )

    assert "Fallback 1: Choose a provider config of the same tenant." in raised.value.messages
    assert not RoutingOverride.objects.exists()


def test_routing_override_create_refuses_model_outside_allowed_list(tenant):
    config = ProviderConfigFactory(tenant=tenant, allowed_models=["fake-small"])

    with pytest.raises(ValidationError) as raised:
        routing_override_create(
            tenant=tenant, provider_config=config, service_name="search", model="fake-large"
        )

    assert "not among the allowed models" in raised.value.message_dict["model"][0]


def test_routing_override_create_refuses_empty_scope(tenant):
    config = ProviderConfigFactory(tenant=tenant)

    with pytest.raises(ValidationError) as raised:
        routing_override_create(tenant=tenant, provider_config=config)

    assert "needs a customer, a service or both" in " ".join(raised.value.messages)


def test_routing_override_create_refuses_duplicate_scope(tenant):
    config = ProviderConfigFactory(tenant=tenant)
    routing_override_create(tenant=tenant, provider_config=config, customer_id="acme")

    with pytest.raises(ValidationError) as raised:
        routing_override_create(tenant=tenant, provider_config=config, customer_id="acme")

    assert raised.value.messages == [
        "An override for this customer and service already exists in this tenant."
    ]


def test_routing_override_create_refuses_same_fallback_twice(tenant):
    primary = ProviderConfigFactory(tenant=tenant)
    backup = ProviderConfigFactory(tenant=tenant)

    with pytest.raises(ValidationError) as raised:
        routing_override_create(
            tenant=tenant,
            provider_config=primary,
            customer_id="acme",
            fallbacks=[(backup, ""), (backup, "")],
        )

    assert "is listed twice" in raised.value.messages[0]


def test_routing_override_create_refuses_its_own_target_as_a_fallback(tenant):
    primary = ProviderConfigFactory(tenant=tenant, name="main", default_model="m-1")

    with pytest.raises(ValidationError) as raised:
        routing_override_create(
            tenant=tenant, provider_config=primary, customer_id="acme", fallbacks=[(primary, "")]
        )

    assert raised.value.messages == [
        "Fallback 1: “main” / “default model” is the override's own target, not a fallback."
    ]
    assert not RoutingOverride.objects.exists()


def test_routing_override_fallback_of_the_same_config_with_another_model_is_kept(tenant):
    primary = ProviderConfigFactory(tenant=tenant, default_model="m-1")

    override = routing_override_create(
        tenant=tenant, provider_config=primary, customer_id="acme", fallbacks=[(primary, "m-2")]
    )

    assert list(override.fallbacks.values_list("model", flat=True)) == ["m-2"]


def test_routing_override_update_refuses_a_new_target_that_is_its_fallback(tenant):
    primary = ProviderConfigFactory(tenant=tenant)
    backup = ProviderConfigFactory(tenant=tenant, name="backup")
    override = routing_override_create(
        tenant=tenant, provider_config=primary, customer_id="acme", fallbacks=[(backup, "")]
    )

    with pytest.raises(ValidationError) as raised:
        routing_override_update(override=override, data={"provider_config": backup})

    assert "is the override's own target" in raised.value.messages[0]


def test_routing_override_update_replaces_fallbacks(tenant):
    primary = ProviderConfigFactory(tenant=tenant)
    old = ProviderConfigFactory(tenant=tenant)
    new = ProviderConfigFactory(tenant=tenant)
    override = routing_override_create(
        tenant=tenant, provider_config=primary, customer_id="acme", fallbacks=[(old, "")]
    )

    routing_override_update(override=override, data={"model": "fake-large"}, fallbacks=[(new, "")])

    override.refresh_from_db()
    assert override.model == "fake-large"
    assert list(override.fallbacks.values_list("provider_config_id", flat=True)) == [new.pk]


def test_routing_override_update_refuses_unknown_field(tenant):
    config = ProviderConfigFactory(tenant=tenant)
    override = routing_override_create(tenant=tenant, provider_config=config, customer_id="a")

    with pytest.raises(ValidationError) as raised:
        routing_override_update(override=override, data={"tenant": TenantFactory()})

    assert raised.value.messages == ["Unknown override field: tenant."]


def test_routing_override_update_deactivates_override_whose_provider_was_retired(tenant):
    # given an override whose provider config (and a fallback's) was deactivated
    # and whose fallback model the config no longer allows
    primary = ProviderConfigFactory(tenant=tenant, name="retired")
    backup = ProviderConfigFactory(tenant=tenant, name="narrowed")
    override = routing_override_create(
        tenant=tenant, provider_config=primary, customer_id="acme", fallbacks=[(backup, "")]
    )
    primary.is_active = False
    primary.save()
    backup.allowed_models = ["fake-large"]
    backup.save()

    # when the override is switched off, its fallbacks given again
    routing_override_update(
        override=override, data={"is_active": False, "note": "retired"}, fallbacks=[(backup, "")]
    )

    # then it is saved
    override.refresh_from_db()
    assert (override.is_active, override.note) == (False, "retired")
    assert list(override.fallbacks.values_list("provider_config_id", flat=True)) == [backup.pk]


def test_routing_override_update_switched_on_again_checks_its_stored_fallbacks(tenant):
    # given an override switched off, whose fallback's config was narrowed meanwhile
    primary = ProviderConfigFactory(tenant=tenant, name="primary")
    backup = ProviderConfigFactory(tenant=tenant, name="narrowed")
    override = routing_override_create(
        tenant=tenant,
        provider_config=primary,
        customer_id="acme",
        fallbacks=[(backup, "fake-small")],
        is_active=False,
    )
    backup.allowed_models = ["fake-large"]
    backup.save()

    # when it is switched on again, its fallbacks not given
    with pytest.raises(ValidationError) as raised:
        routing_override_update(override=override, data={"is_active": True})

    # then it is refused as new fallbacks would be, and stays off
    assert raised.value.message_dict == {
        "fallbacks": ["Fallback 1: The model “fake-small” is not allowed on “narrowed”."]
    }
    override.refresh_from_db()
    assert override.is_active is False


def test_routing_override_update_refuses_to_keep_active_override_on_retired_provider(tenant):
    primary = ProviderConfigFactory(tenant=tenant, name="retired")
    override = routing_override_create(tenant=tenant, provider_config=primary, customer_id="acme")
    primary.is_active = False
    primary.save()

    with pytest.raises(ValidationError) as raised:
        routing_override_update(override=override, data={"note": "still here"})

    assert raised.value.message_dict == {
        "provider_config": [
            "The provider config “retired” is inactive: choose an active one, or deactivate "
            "this override."
        ]
    }
    override.refresh_from_db()
    assert override.note == ""


def test_routing_override_create_stores_the_scope_trimmed_as_calls_carry_it(tenant):
    config = ProviderConfigFactory(tenant=tenant)

    override = routing_override_create(
        tenant=tenant, provider_config=config, service_name="summarizer\n", model="fake-large"
    )

    assert RoutingOverride.objects.get(pk=override.pk).service_name == "summarizer"


def test_routing_override_create_refuses_a_service_name_no_call_can_carry(tenant):
    config = ProviderConfigFactory(tenant=tenant)

    with pytest.raises(ValidationError) as raised:
        routing_override_create(
            tenant=tenant, provider_config=config, service_name="summa\trizer", model="fake-large"
        )

    assert raised.value.message_dict == {
        "service_name": [
            "service_name must not contain control characters. Calls that carry one are "
            "refused, so this override would never match."
        ]
    }


def test_routing_override_create_reports_an_overlong_customer_id_once(tenant):
    config = ProviderConfigFactory(tenant=tenant)

    with pytest.raises(ValidationError) as raised:
        routing_override_create(tenant=tenant, provider_config=config, customer_id="a" * 201)

    assert raised.value.message_dict == {
        "customer_id": ["Ensure this value has at most 200 characters (it has 201)."]
    }


@pytest.mark.parametrize("field", ["customer_id", "service_name", "model", "note"])
@UNSTORABLE_TEXT
def test_routing_override_create_refuses_text_postgresql_cannot_store(
    tenant, field, value, message
):
    # A Python caller's value the database would refuse (or, for NULL, report
    # as another conflict) is a ValidationError on its field, as the API's is.
    config = ProviderConfigFactory(tenant=tenant)
    arguments = {"customer_id": "acme", "service_name": "chat", field: value}

    with pytest.raises(ValidationError) as raised:
        routing_override_create(tenant=tenant, provider_config=config, **arguments)

    assert raised.value.message_dict == {field: [message]}
    assert not RoutingOverride.objects.exists()


def test_routing_override_create_refuses_a_fallback_model_postgresql_cannot_store(tenant):
    primary = ProviderConfigFactory(tenant=tenant)
    fallback = ProviderConfigFactory(tenant=tenant)

    with pytest.raises(ValidationError) as raised:
        routing_override_create(
            tenant=tenant,
            provider_config=primary,
            customer_id="acme",
            fallbacks=[(fallback, "fake\x00large")],
        )

    assert raised.value.messages == ["Fallback 1: Must not contain NUL characters."]
    assert not RoutingOverride.objects.exists()
