"""Deletes of provider configs and budgets racing the rows written for them.

Each delete is held between its collection of the rows referring to what it
deletes and its commit while the other work writes such a row: the delete
must not fail at its commit, and the written row must not be lost where its
foreign key keeps it (SET_NULL).
"""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.db.models.signals import pre_delete
from django.utils import timezone

from llm_providers.models import ProviderConfig, Tenant
from llm_providers.services import provider_config_delete
from tests.factories import (
    BudgetFactory,
    CallLogFactory,
    ProviderConfigFactory,
    TenantFactory,
    TenantMembershipFactory,
    UserFactory,
)
from tests.usage.tenant_delete_race import deleted_while, tenant_deleted_while
from usage.aggregation import daily_usage_recompute
from usage.alerts import budget_thresholds_check, error_rates_check
from usage.budget import budget_reserve, budget_settle
from usage.call_logs import call_log_record
from usage.models import Budget, BudgetCounter, BudgetHold, CallLog, CostAlert

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
CONFIG_DELETE = 'DELETE FROM "llm_providers_providerconfig"'
BUDGET_DELETE = 'DELETE FROM "usage_budget"'


def _config_deleter(config, path):
    def delete():
        if path == "service":
            return provider_config_delete(provider_config=ProviderConfig.objects.get(pk=config.pk))
        if path == "bulk":
            return ProviderConfig.objects.filter(pk=config.pk).delete()[0] > 0
        ProviderConfig.objects.get(pk=config.pk).delete()
        return True

    return delete


def _budget_deleter(budget, path):
    def delete():
        if path == "bulk":
            return Budget.objects.filter(pk=budget.pk).delete()[0] > 0
        if path == "tenant":
            Tenant.objects.get(pk=budget.tenant_id).delete()
            return True
        Budget.objects.get(pk=budget.pk).delete()
        return True

    return delete


@pytest.mark.parametrize("path", ["service", "model", "bulk"])
def test_call_log_written_while_its_provider_config_is_deleted_keeps_its_row(path):
    # given a provider config nothing refers to yet, whose call is ending
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    request_id = uuid.uuid4()

    def log_the_call():
        return call_log_record(
            tenant_id=tenant.pk,
            request_id=request_id,
            attempt=1,
            status="ok",
            created_at=timezone.now(),
            provider_config_id=config.pk,
            cost_usd=Decimal("0.25"),
        )

    # when the call's log row is written while the config is deleted, once
    # the delete has set its call logs' config to NULL
    outcome = deleted_while(_config_deleter(config, path), log_the_call, hold_before=CONFIG_DELETE)

    # then the delete succeeds and the row is kept, without its config
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert outcome["deleted"] is True
    assert not ProviderConfig.objects.filter(pk=config.pk).exists()
    assert "work_error" not in outcome, outcome.get("work_error")
    log = CallLog.objects.get(pk=outcome["result"])
    assert (log.tenant_id, log.request_id, log.provider_config_id, log.cost_usd) == (
        tenant.pk,
        request_id,
        None,
        Decimal("0.25"),
    )


def test_error_rate_alert_written_while_its_provider_config_is_deleted_keeps_the_alert(settings):
    # given a provider config failing often
    settings.USAGE_ERROR_RATE_THRESHOLD = 0.2
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 2
    tenant = TenantFactory()
    TenantMembershipFactory(tenant=tenant, user=UserFactory(email="ops@example.com"))
    config = ProviderConfigFactory(tenant=tenant, name="Flaky")
    CallLogFactory.create_batch(
        3,
        tenant=tenant,
        provider_config=config,
        status=CallLog.Status.ERROR,
        created_at=NOW - dt.timedelta(minutes=1),
    )

    # when the error-rate check runs while the config is deleted
    outcome = deleted_while(
        _config_deleter(config, "model"),
        lambda: error_rates_check(now=NOW),
        hold_before=CONFIG_DELETE,
    )

    # then the delete succeeds, and the alert is kept without its config
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert not ProviderConfig.objects.filter(pk=config.pk).exists()
    assert "work_error" not in outcome, outcome.get("work_error")
    alert = CostAlert.objects.get()
    assert (alert.tenant_id, alert.kind, alert.subject_key, alert.provider_config_id) == (
        tenant.pk,
        CostAlert.Kind.ERROR_RATE,
        str(config.pk),
        None,
    )
    assert list(CallLog.objects.values_list("provider_config_id", flat=True)) == [None] * 3


@pytest.mark.parametrize("path", ["model", "bulk"])
def test_budget_alert_written_while_its_budget_is_deleted_keeps_the_alert(path):
    # given a budget over half spent
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, limit_usd=Decimal("10"), alert_percentages=[50])
    CallLogFactory(
        tenant=tenant, cost_usd=Decimal("6.00"), created_at=NOW - dt.timedelta(minutes=5)
    )
    daily_usage_recompute(first_day=NOW.date(), last_day=NOW.date(), now=NOW)

    # when the threshold check runs while the budget is deleted
    outcome = deleted_while(
        _budget_deleter(budget, path),
        lambda: budget_thresholds_check(now=NOW),
        hold_before=BUDGET_DELETE,
    )

    # then the delete succeeds, and the alert is kept without its budget
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert "work_error" not in outcome, outcome.get("work_error")
    alert = CostAlert.objects.get()
    assert (alert.tenant_id, alert.kind, alert.percent, alert.budget_id) == (
        tenant.pk,
        CostAlert.Kind.BUDGET,
        50,
        None,
    )


def _reserve(tenant, amount):
    return budget_reserve(
        tenant=tenant,
        provider_config_id=None,
        service_name="",
        customer_id="",
        amount_usd=Decimal(amount),
        request_id=uuid.uuid4(),
    )


@pytest.mark.parametrize("path", ["model", "bulk", "tenant"])
def test_database_counter_reserving_while_its_budget_is_deleted_leaves_the_delete_whole(
    settings, path
):
    # given a blocking budget counted in the database, and another budget kept
    settings.USAGE_BUDGET_BACKEND = "database"
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, limit_usd=Decimal("1"), action=Budget.Action.BLOCK)
    kept = BudgetFactory(limit_usd=Decimal("1"), action=Budget.Action.BLOCK)
    assert _reserve(kept.tenant, "0.10")

    # when a call reserves against it while it (or its tenant) is deleted
    outcome = deleted_while(
        _budget_deleter(budget, path), lambda: _reserve(tenant, "0.40"), hold_before=BUDGET_DELETE
    )

    # then the delete succeeds and takes the budget's counters; the call,
    # gated by nothing left, goes through
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert "work_error" not in outcome, outcome.get("work_error")
    assert outcome["result"].entries[0].budget.id == budget.pk
    assert list(BudgetCounter.objects.values_list("budget_id", flat=True)) == [kept.pk]
    assert list(BudgetHold.objects.values_list("amount_usd", flat=True)) == [Decimal("0.10")]


@pytest.mark.parametrize("path", ["model", "tenant"])
def test_database_counter_settling_while_its_budget_is_deleted_leaves_the_delete_whole(
    settings, path
):
    # given a call holding $0.40 of a budget counted in the database
    settings.USAGE_BUDGET_BACKEND = "database"
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, limit_usd=Decimal("1"), action=Budget.Action.BLOCK)
    reservation = _reserve(tenant, "0.40")
    assert BudgetHold.objects.count() == 1

    # when it settles while the budget is deleted, between the delete of the
    # counter's holds and of the counter
    outcome = deleted_while(
        _budget_deleter(budget, path),
        lambda: budget_settle(reservation=reservation, cost_usd=Decimal("0.30")),
        hold_before='DELETE FROM "usage_budgetcounter"',
    )

    # then the delete succeeds and takes the counter; the settlement has nothing to count into
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert "work_error" not in outcome, outcome.get("work_error")
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert not BudgetCounter.objects.exists()
    assert not BudgetHold.objects.exists()


@pytest.mark.parametrize("bulk", [False, True], ids=["one", "bulk"])
def test_call_log_with_its_config_written_while_its_tenant_is_deleted_leaves_the_delete_whole(
    bulk,
):
    # given a tenant whose call to one of its configs ends while it is deleted
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)

    def log_the_call():
        return call_log_record(
            tenant_id=tenant.pk,
            request_id=uuid.uuid4(),
            attempt=1,
            status="ok",
            created_at=timezone.now(),
            provider_config_id=config.pk,
        )

    # when the row is written once the delete has locked the tenant
    outcome = tenant_deleted_while(tenant, log_the_call, bulk=bulk, hold_on=(pre_delete, Tenant))

    # then the delete succeeds and the row of a tenant that no longer exists is refused
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert "IntegrityError" in type(outcome.get("work_error")).__name__
    assert not CallLog.objects.exists()
