"""Route resolution: precedence, fallbacks, inactive targets, the no-route error, caching."""

import pytest

from llm_providers.services import provider_config_update
from overrides.routing import NoRouteError, Rule, route_resolve
from tests.factories import (
    ProviderConfigFactory,
    RoutingFallbackFactory,
    RoutingOverrideFactory,
    TenantFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant():
    return TenantFactory()


@pytest.fixture
def default_config(tenant):
    return ProviderConfigFactory(tenant=tenant, name="default", is_default=True, priority=10)


def _override(tenant, customer="", service="", model="fake-large"):
    config = ProviderConfigFactory(tenant=tenant, name=f"for-{customer}-{service}")
    return RoutingOverrideFactory(
        tenant=tenant,
        provider_config=config,
        customer_id=customer,
        service_name=service,
        model=model,
    )


def test_route_resolve_prefers_customer_and_service_when_all_rules_match(tenant, default_config):
    # given
    both = _override(tenant, customer="acme", service="summarizer")
    _override(tenant, customer="acme")
    _override(tenant, service="summarizer")
    # when
    route = route_resolve(tenant=tenant, customer_id="acme", service_name="summarizer")
    # then
    assert route.rule == Rule.CUSTOMER_SERVICE
    assert route.override_id == both.pk
    assert route.primary.provider_config == both.provider_config
    assert route.primary.model == "fake-large"


def test_route_resolve_prefers_customer_over_service(tenant, default_config):
    customer = _override(tenant, customer="acme")
    _override(tenant, service="summarizer")

    route = route_resolve(tenant=tenant, customer_id="acme", service_name="summarizer")

    assert route.rule == Rule.CUSTOMER
    assert route.override_id == customer.pk


def test_route_resolve_uses_service_override_for_other_customers(tenant, default_config):
    _override(tenant, customer="acme")
    service = _override(tenant, service="summarizer")

    route = route_resolve(tenant=tenant, customer_id="globex", service_name="summarizer")

    assert route.rule == Rule.SERVICE
    assert route.override_id == service.pk


def test_route_resolve_falls_to_tenant_default_when_nothing_matches(tenant, default_config):
    acme = _override(tenant, customer="acme")
    backup = ProviderConfigFactory(tenant=tenant, name="backup", priority=20)

    route = route_resolve(tenant=tenant, customer_id="globex", service_name="other")

    # The default first, then every other active config by priority.
    assert route.rule == Rule.DEFAULT
    assert [t.provider_config for t in route.targets] == [
        default_config,
        backup,
        acme.provider_config,
    ]
    assert route.primary.model == "fake-small"


def test_route_resolve_leaves_configs_without_default_model_out_of_default_route(
    tenant, default_config
):
    ProviderConfigFactory(tenant=tenant, name="no-model", default_model="", priority=1)

    route = route_resolve(tenant=tenant)

    assert [t.provider_config for t in route.targets] == [default_config]


def test_route_resolve_orders_override_fallbacks_by_position(tenant, default_config):
    override = _override(tenant, customer="acme")
    second = RoutingFallbackFactory(override=override, position=2, model="fake-small")
    first = RoutingFallbackFactory(override=override, position=1, model="fake-large")

    route = route_resolve(tenant=tenant, customer_id="acme")

    assert [t.provider_config for t in route.fallbacks] == [
        first.provider_config,
        second.provider_config,
    ]


def test_route_resolve_skips_override_whose_provider_is_inactive(tenant, default_config):
    override = _override(tenant, customer="acme")
    override.provider_config.is_active = False
    override.provider_config.save()

    route = route_resolve(tenant=tenant, customer_id="acme")

    assert route.rule == Rule.DEFAULT


def test_route_resolve_ignores_other_tenants_overrides(tenant, default_config):
    other = TenantFactory()
    _override(other, customer="acme")

    route = route_resolve(tenant=tenant, customer_id="acme")

    assert route.rule == Rule.DEFAULT
    assert route.primary.provider_config.tenant == tenant


def test_route_resolve_raises_clear_error_without_default(tenant):
    with pytest.raises(NoRouteError) as raised:
        route_resolve(tenant=tenant, customer_id="acme", service_name="summarizer")

    assert "acme" in raised.value.message
    assert "no active default provider config" in raised.value.message
    assert raised.value.http_status == 422


def test_route_resolve_sees_new_override_after_cached_lookup(tenant, default_config):
    # given a cached default route
    assert route_resolve(tenant=tenant, customer_id="acme").rule == Rule.DEFAULT
    # when an override is added
    override = _override(tenant, customer="acme")
    # then the next lookup uses it
    route = route_resolve(tenant=tenant, customer_id="acme")
    assert route.override_id == override.pk


def test_route_resolve_sees_changed_default_model_after_cached_lookup(tenant, default_config):
    assert route_resolve(tenant=tenant).primary.model == "fake-small"

    default_config.default_model = "fake-large"
    default_config.save()

    assert route_resolve(tenant=tenant).primary.model == "fake-large"


def test_route_explain_names_rule_and_target(tenant, default_config):
    route = route_resolve(tenant=tenant)

    assert route.explain() == "default / fake-small, chosen by the tenant's default provider config"


def test_route_resolve_skips_override_whose_model_is_no_longer_allowed(tenant, default_config):
    # given an override to a model its config allowed when it was saved
    config = ProviderConfigFactory(tenant=tenant, allowed_models=["fake-small", "fake-large"])
    RoutingOverrideFactory(
        tenant=tenant, provider_config=config, customer_id="acme", model="fake-large"
    )
    assert route_resolve(tenant=tenant, customer_id="acme").primary.model == "fake-large"
    # when the config's allowed models no longer include it
    provider_config_update(provider_config=config, data={"allowed_models": ["fake-small"]})
    # then calls are not sent to the disallowed model
    route = route_resolve(tenant=tenant, customer_id="acme")
    assert route.rule == Rule.DEFAULT
    assert "fake-large" not in [t.model for t in route.targets if t.provider_config == config]


def test_route_resolve_skips_fallback_whose_model_is_no_longer_allowed(tenant, default_config):
    override = _override(tenant, customer="acme")
    backup = ProviderConfigFactory(tenant=tenant, allowed_models=["fake-small", "fake-large"])
    RoutingFallbackFactory(override=override, provider_config=backup, model="fake-large")
    assert [t.model for t in route_resolve(tenant=tenant, customer_id="acme").fallbacks] == [
        "fake-large"
    ]

    provider_config_update(provider_config=backup, data={"allowed_models": ["fake-small"]})

    route = route_resolve(tenant=tenant, customer_id="acme")
    assert route.override_id == override.pk
    assert route.fallbacks == ()


def test_route_resolve_never_reaches_another_tenants_config():
    # given a fallback row naming another tenant's config (written around validation)
    override = RoutingOverrideFactory(customer_id="acme")
    foreign = ProviderConfigFactory()
    RoutingFallbackFactory(override=override, provider_config=foreign)

    route = route_resolve(tenant=override.tenant, customer_id="acme")

    assert [t.provider_config for t in route.targets] == [override.provider_config]


def test_route_resolve_refuses_inactive_tenant(tenant, default_config):
    tenant.is_active = False
    tenant.save()

    with pytest.raises(NoRouteError) as raised:
        route_resolve(tenant=tenant, customer_id="acme")

    assert raised.value.message == f"The tenant “{tenant.slug}” is inactive: its calls are refused."
    assert raised.value.extra == {"customer_id": "acme", "service_name": ""}
