"""Two writers of one budget: an API update does not put back a webhook URL saved meanwhile."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import Client
from django.urls import reverse

from tests.api.fixtures import token_client
from tests.factories import BudgetFactory, TenantFactory, TenantMembershipFactory, UserFactory
from tests.threads import thread_run
from usage.admin import BudgetAdminForm
from usage.api import views as usage_api_views
from usage.models import Budget
from usage.services import budget_update

OLD_URL = "http://127.0.0.1:8123/hooks/stored-before-token"
NEW_URL = "http://127.0.0.1:8123/hooks/entered-meanwhile-token"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_api_limit_change_does_not_revert_a_webhook_url_saved_meanwhile(
    allow_private_urls, monkeypatch
):
    # given a budget with a webhook URL, and an API request changing its limit
    tenant = TenantFactory()
    admin = UserFactory()
    TenantMembershipFactory(user=admin, tenant=tenant, role="admin")
    budget = BudgetFactory(tenant=tenant, name="monthly", webhook_url=OLD_URL)
    api = token_client(admin, tenant=tenant)

    def url_saved_meanwhile():
        def save():
            with transaction.atomic():
                budget_update(
                    budget=Budget.objects.get(pk=budget.pk), data={"webhook_url": NEW_URL}
                )

        thread_run(save)

    # when a new webhook URL is saved after the request read the budget
    pending = [url_saved_meanwhile]

    def updating(**kwargs):
        if pending:
            pending.pop()()
        return budget_update(**kwargs)

    monkeypatch.setattr(usage_api_views, "budget_update", updating)
    answer = api.patch(f"/api/v1/budgets/{budget.pk}", {"limit_usd": "55"}, format="json")

    # then the budget has both the new limit and the new URL
    assert answer.status_code == 200, answer.content
    stored = Budget.objects.get(pk=budget.pk)
    assert (stored.limit_usd, stored.webhook_url, stored.name) == (
        Decimal("55.0000"),
        NEW_URL,
        "monthly",
    )


@pytest.mark.django_db(transaction=True)
def test_update_of_a_budget_deleted_meanwhile_is_refused():
    budget = BudgetFactory()
    stale = Budget.objects.get(pk=budget.pk)
    Budget.objects.filter(pk=budget.pk).delete()

    with pytest.raises(ValidationError) as refused:
        budget_update(budget=stale, data={"limit_usd": Decimal("5")})
    assert refused.value.messages == ["This budget was deleted meanwhile."]
    assert Budget.objects.filter(pk=budget.pk).exists() is False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_admin_save_with_empty_webhook_does_not_revert_a_url_saved_meanwhile(
    allow_private_urls, monkeypatch
):
    # given a budget with a webhook URL, and its admin change form sent with the URL empty
    tenant = TenantFactory()
    admin = UserFactory()
    TenantMembershipFactory(user=admin, tenant=tenant, role="admin")
    budget = BudgetFactory(tenant=tenant, name="Cap", webhook_url=OLD_URL)
    browser = Client()
    browser.force_login(admin)
    form = {
        "tenant": str(tenant.pk),
        "name": "Cap",
        "is_active": "on",
        "period": "daily",
        "limit_usd": "6.00",
        "action": "alert",
        "provider_config": "",
        "service_name": "",
        "customer_id": "",
        "alert_percentages": "50, 80, 100",
        "alert_emails": "finance@example.com",
        "webhook_url": "",
    }

    # when a new URL is saved through the API after the admin read and checked the form
    real_clean = BudgetAdminForm.clean
    pending = [lambda: thread_run(lambda: _url_saved(budget))]

    def cleaning(self):
        data = real_clean(self)
        if pending:
            pending.pop()()
        return data

    monkeypatch.setattr(BudgetAdminForm, "clean", cleaning)
    answer = browser.post(reverse("admin:usage_budget_change", args=[budget.pk]), form)

    # then the budget keeps the new URL, with the limit the admin set
    assert answer.status_code == 302
    stored = Budget.objects.get(pk=budget.pk)
    assert (stored.limit_usd, stored.webhook_url) == (Decimal("6.0000"), NEW_URL)


def _url_saved(budget) -> None:
    with transaction.atomic():
        budget_update(budget=Budget.objects.get(pk=budget.pk), data={"webhook_url": NEW_URL})
