"""factory_boy factories for every model the tests build."""

from __future__ import annotations

import uuid
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from llm_providers.models import (
    ModelPrice,
    ProviderConfig,
    ServiceKey,
    Tenant,
    TenantMembership,
    UserToken,
)
from llm_providers.provider_types import ProviderType
from overrides.models import RoutingFallback, RoutingOverride
from usage.models import AlertDelivery, Budget, CallLog, CostAlert, DailyUsage


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", "pw-test-123")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")


class TenantMembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TenantMembership

    user = factory.SubFactory(UserFactory)
    tenant = factory.SubFactory(TenantFactory)
    role = TenantMembership.Role.ADMIN


class ProviderConfigFactory(factory.django.DjangoModelFactory):
    """A Fake provider config by default; pass provider_type and api_key for others."""

    class Meta:
        model = ProviderConfig
        skip_postgeneration_save = True

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"provider-{n}")
    provider_type = ProviderType.FAKE
    default_model = "fake-small"
    options = factory.LazyFunction(dict)

    @factory.post_generation
    def api_key(obj, create, extracted, **kwargs):
        if extracted:
            obj.set_api_key(extracted)
            if create:
                obj.save()


class ServiceKeyFactory(factory.django.DjangoModelFactory):
    """A service key; its secret is on the instance as `secret` (tests only)."""

    class Meta:
        model = ServiceKey
        skip_postgeneration_save = True

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"service-{n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        service_key, secret = model_class.objects.create_key(**kwargs)
        service_key.secret = secret
        return service_key


class ModelPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice

    tenant = None
    provider_type = ProviderType.FAKE
    model = "fake-small"
    input_per_mtok = "1.000000"
    output_per_mtok = "2.000000"
    effective_from = factory.Faker("date_between", start_date="-400d", end_date="-365d")


class RoutingOverrideFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoutingOverride

    tenant = factory.SubFactory(TenantFactory)
    provider_config = factory.SubFactory(
        ProviderConfigFactory, tenant=factory.SelfAttribute("..tenant")
    )
    customer_id = factory.Sequence(lambda n: f"customer-{n}")
    service_name = ""
    model = ""


class RoutingFallbackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoutingFallback

    override = factory.SubFactory(RoutingOverrideFactory)
    provider_config = factory.SubFactory(
        ProviderConfigFactory, tenant=factory.SelfAttribute("..override.tenant")
    )
    position = factory.Sequence(lambda n: n)
    model = ""


# --- API: tokens ---------------------------------------------------------------


class UserTokenFactory(factory.django.DjangoModelFactory):
    """A person's API token; the token itself is on the instance as `secret` (tests only)."""

    class Meta:
        model = UserToken
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"script-{n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        user_token, secret = model_class.objects.create_key(**kwargs)
        user_token.secret = secret
        return user_token


class CallLogFactory(factory.django.DjangoModelFactory):
    """A successful, priced call on the tenant's Fake provider config."""

    class Meta:
        model = CallLog

    tenant = factory.SubFactory(TenantFactory)
    provider_config = factory.SubFactory(
        ProviderConfigFactory, tenant=factory.SelfAttribute("..tenant")
    )
    provider_type = ProviderType.FAKE
    request_id = factory.LazyFunction(uuid.uuid4)
    attempt = 1
    model_requested = "fake-small"
    model_answered = factory.SelfAttribute("model_requested")
    customer_id = "acme"
    service_name = "summarizer"
    route_rule = "default"
    status = CallLog.Status.OK
    input_tokens = 100
    output_tokens = 50
    cost_usd = Decimal("0.000200000000")
    price_source = CallLog.PriceSource.OVERRIDE
    latency_ms = 120
    created_at = factory.LazyFunction(timezone.now)


class BudgetFactory(factory.django.DjangoModelFactory):
    """A tenant-wide monthly alert budget of $10 alerting at 50/80/100 %."""

    class Meta:
        model = Budget

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"budget-{n}")
    period = Budget.Period.MONTHLY
    limit_usd = Decimal("10.0000")
    action = Budget.Action.ALERT
    alert_percentages = factory.LazyFunction(lambda: [50, 80, 100])
    alert_emails = "finance@example.com"


class DailyUsageFactory(factory.django.DjangoModelFactory):
    """One day of a tenant's usage on its Fake provider config: 10 requests, $0.002."""

    class Meta:
        model = DailyUsage

    tenant = factory.SubFactory(TenantFactory)
    day = factory.LazyFunction(lambda: timezone.now().date())
    provider_config = factory.SubFactory(
        ProviderConfigFactory, tenant=factory.SelfAttribute("..tenant")
    )
    provider_type = ProviderType.FAKE
    model = "fake-small"
    service_name = "summarizer"
    customer_id = "acme"
    request_count = 10
    error_count = 0
    blocked_count = 0
    unpriced_count = 0
    # Every request that did not fail, was not refused and was not unpriced has a cost.
    priced_count = factory.LazyAttribute(
        lambda row: row.request_count - row.error_count - row.blocked_count - row.unpriced_count
    )
    input_tokens = 1000
    output_tokens = 500
    cost_usd = Decimal("0.002000000000")
    latency_ms_sum = 1200


class CostAlertFactory(factory.django.DjangoModelFactory):
    """A budget alert at 80 % of its budget's limit."""

    class Meta:
        model = CostAlert

    tenant = factory.SubFactory(TenantFactory)
    kind = CostAlert.Kind.BUDGET
    budget = factory.SubFactory(BudgetFactory, tenant=factory.SelfAttribute("..tenant"))
    subject_key = factory.LazyAttribute(lambda o: f"budget:{o.budget.pk if o.budget else ''}")
    period_key = "2026-03"
    percent = 80
    spend_usd = Decimal("8.000000000000")
    limit_usd = Decimal("10.0000")
    message = factory.LazyAttribute(
        lambda o: f"Budget {o.budget.name} reached 80 %." if o.budget else "Usage alert."
    )


class AlertDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AlertDelivery

    alert = factory.SubFactory(CostAlertFactory)
    channel = AlertDelivery.Channel.EMAIL
    target = "finance@example.com"
    target_label = "finance@example.com"
