"""Data migrations of usage run against the state they were written for."""

from __future__ import annotations

import datetime as dt
import importlib
from decimal import Decimal

import pytest
from django.apps import apps

from tests.factories import BudgetFactory, CallLogFactory, TenantFactory
from usage.aggregation import daily_usage_recompute
from usage.alerts import budget_thresholds_check
from usage.models import CostAlert

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


def _migrate():
    migration = importlib.import_module("usage.migrations.0007_cost_alert_once_per_limit")
    # A data step: it changes rows through the models and no schema, so it
    # needs no schema editor (SQLite opens none inside a test's transaction).
    migration.budget_alert_limits_fill(apps, None)


def test_budget_alert_stored_without_its_limit_takes_its_budgets_and_does_not_alert_again():
    # given a $10 budget whose 50 % alert of this month was stored without a limit,
    # and an unpriced-usage alert, which has none
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, alert_percentages=[50])
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6"), created_at=NOW - dt.timedelta(minutes=5))
    daily_usage_recompute(first_day=NOW.date(), last_day=NOW.date(), now=NOW)
    (alert,) = budget_thresholds_check(now=NOW)
    CostAlert.objects.filter(pk=alert.pk).update(limit_usd=None)
    unpriced = CostAlert.objects.create(
        tenant=tenant,
        kind=CostAlert.Kind.UNPRICED,
        subject_key="x/openai/gpt-x",
        period_key="2026-06",
        message="unpriced",
    )

    # when
    _migrate()

    # then the budget alert counts as the one of $10, which does not fire again
    alert.refresh_from_db()
    unpriced.refresh_from_db()
    assert alert.limit_usd == Decimal("10")
    assert unpriced.limit_usd is None
    assert budget_thresholds_check(now=NOW + dt.timedelta(minutes=5)) == []
    assert list(CostAlert.objects.filter(budget=budget).values_list("percent", "limit_usd")) == [
        (50, Decimal("10"))
    ]
