"""Budget writes: validated as a whole (every bad field at once), webhook URLs checked."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from tests.factories import BudgetFactory, ProviderConfigFactory, TenantFactory
from tests.unstorable_text import UNSTORABLE_TEXT
from usage.models import Budget
from usage.services import budget_create, budget_delete, budget_update

pytestmark = pytest.mark.django_db

WEBHOOK = "https://93.184.215.14/hooks/T0001/B0001/secret-token"


def test_budget_create_saves_an_encrypted_webhook(tenant, raw_column):
    budget = budget_create(tenant=tenant, name="cap", limit_usd=Decimal("5"), webhook_url=WEBHOOK)

    stored = Budget.objects.get(pk=budget.pk)
    assert (stored.name, stored.limit_usd, stored.webhook_url) == ("cap", Decimal("5"), WEBHOOK)
    assert "secret-token" not in raw_column(stored, "webhook_url")


def test_budget_create_reports_every_bad_field_at_once(tenant):
    BudgetFactory(tenant=tenant, name="cap")

    with pytest.raises(ValidationError) as raised:
        budget_create(
            tenant=tenant, name="cap", limit_usd=Decimal("0"), alert_percentages=[0],
            alert_emails="nobody", webhook_url="http://127.0.0.1/hook",
        )  # fmt: skip

    assert sorted(raised.value.message_dict) == [
        "alert_emails",
        "alert_percentages",
        "limit_usd",
        "name",
        "webhook_url",
    ]
    assert raised.value.message_dict["name"] == [
        "A budget named “cap” already exists in this tenant."
    ]
    assert Budget.objects.count() == 1


def test_budget_create_refuses_provider_config_of_another_tenant(tenant, other_tenant):
    foreign = ProviderConfigFactory(tenant=other_tenant)

    with pytest.raises(ValidationError) as raised:
        budget_create(tenant=tenant, name="cap", limit_usd=Decimal("1"), provider_config=foreign)

    assert raised.value.message_dict == {
        "provider_config": ["This provider config belongs to another tenant."]
    }


def test_budget_update_does_not_check_an_unchanged_webhook_again(tenant):
    # Stored while private URLs were allowed; editing the limit must not trip on it.
    budget = BudgetFactory(tenant=tenant, webhook_url="http://127.0.0.1:9/hook")
    budget = Budget.objects.get(pk=budget.pk)

    budget_update(budget=budget, data={"limit_usd": Decimal("20")})

    assert Budget.objects.get(pk=budget.pk).limit_usd == Decimal("20")


def test_budget_update_refuses_unknown_fields(tenant):
    budget = BudgetFactory(tenant=tenant)

    with pytest.raises(ValidationError) as raised:
        budget_update(budget=budget, data={"colour": "red", "tenant": TenantFactory()})

    assert raised.value.messages == ["Unknown budget fields: colour, tenant."]


def test_budget_delete_removes_the_budget(tenant):
    budget = BudgetFactory(tenant=tenant)

    budget_delete(budget=budget)

    assert not Budget.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["name", "customer_id", "service_name", "alert_emails"])
@UNSTORABLE_TEXT
def test_budget_create_refuses_text_postgresql_cannot_store(field, value, message):
    # A Python caller's value the database would refuse is a ValidationError
    # on its field, not a DataError (or, for NULL, a misleading name conflict).
    tenant = TenantFactory()
    arguments = {"name": "monthly", field: value}

    with pytest.raises(ValidationError) as raised:
        budget_create(tenant=tenant, limit_usd=Decimal("10"), **arguments)

    assert raised.value.message_dict == {field: [message]}
    assert not Budget.objects.exists()
