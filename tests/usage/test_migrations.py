"""Data migrations of usage run against the state they were written for."""

from __future__ import annotations

import datetime as dt
import importlib
from decimal import Decimal

import pytest
from django.apps import apps

from tests.factories import (
    BudgetFactory,
    CallLogFactory,
    DailyUsageFactory,
    ProviderConfigFactory,
    TenantFactory,
)
from tests.usage.priced_groups import EXPECTED, priced_groups_log
from usage.aggregation import daily_usage_recompute
from usage.alerts import budget_thresholds_check
from usage.models import CostAlert, DailyUsage

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


def _priced_counts_fill():
    migration = importlib.import_module("usage.migrations.0011_daily_usage_priced_count_fill")
    migration.priced_counts_fill(apps, None)


def test_priced_counts_of_stored_days_come_from_their_figures_and_the_call_logs_kept():
    # given four models' days aggregated (all priced at $0, $0 beside unpriced,
    # priced beside unpriced with a charged failed attempt, unpriced only with
    # one), and two days whose call logs are gone: $0.40 of 3 requests (1 failed,
    # 1 unpriced), and $0.40 of 2 (1 failed, 1 unpriced: the $0.40 is the failure's)
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    priced_groups_log(tenant, config, NOW)
    daily_usage_recompute(first_day=NOW.date() - dt.timedelta(days=1), last_day=NOW.date(), now=NOW)
    for model, requests in (("gone", 3), ("gone-charged", 2)):
        DailyUsageFactory(
            tenant=tenant, provider_config=config, day=dt.date(2025, 1, 10), model=model,
            request_count=requests, error_count=1, unpriced_count=1, cost_usd=Decimal("0.4"),
        )  # fmt: skip
    # stored before the column: no priced count
    DailyUsage.objects.update(priced_count=0)

    # when
    _priced_counts_fill()

    # then each day with its call logs counts its priced requests exactly (a
    # recompute changes nothing), and those without count every request that
    # neither failed nor was unpriced, at least one where the cost is not $0
    assert dict(DailyUsage.objects.values_list("model", "priced_count")) == {
        **{model: expected[4] for model, expected in EXPECTED.items()},
        "gone": 1,
        "gone-charged": 1,
    }
    recomputed = daily_usage_recompute(
        first_day=NOW.date() - dt.timedelta(days=1), last_day=NOW.date(), now=NOW
    )
    assert (recomputed.written, recomputed.removed) == (0, 0)


def test_priced_count_of_a_day_the_purge_cut_in_two_is_never_negative():
    # given a day of two failed attempts charged at an unknown price (each
    # counted as failed and as unpriced), of which the purge kept one call log
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    kept = CallLogFactory(
        tenant=tenant, provider_config=config, model_requested="tuned-x",
        status="error", cost_usd=None, price_source="unknown",
        created_at=dt.datetime(2025, 1, 10, 23, 0, tzinfo=dt.UTC),
    )  # fmt: skip
    DailyUsageFactory(
        tenant=tenant, provider_config=config, provider_type=kept.provider_type,
        day=dt.date(2025, 1, 10), model="tuned-x", service_name=kept.service_name,
        customer_id=kept.customer_id, request_count=2, error_count=2, unpriced_count=2,
        cost_usd=Decimal("0"), priced_count=0,
    )  # fmt: skip

    # when
    _priced_counts_fill()

    # then the row counts no priced request (not minus one), and the fill went through
    assert list(DailyUsage.objects.values_list("model", "priced_count")) == [("tuned-x", 0)]


def test_priced_counts_add_each_groups_charged_failures_in_its_tenants_days(monkeypatch):
    # given a tenant in Tokyo with three groups that have one, one and two
    # charged failed attempts, one of them at 23:30 UTC (the next day in Tokyo),
    # each beside a priced answer, and writes of one group per statement
    migration = importlib.import_module("usage.migrations.0011_daily_usage_priced_count_fill")
    monkeypatch.setattr(migration, "_BATCH", 1)
    tenant = TenantFactory(timezone="Asia/Tokyo")
    config = ProviderConfigFactory(tenant=tenant)
    at = dt.datetime(2026, 6, 14, 23, 30, tzinfo=dt.UTC)
    failures = {"one-a": 1, "one-b": 1, "two": 2}
    for model, count in failures.items():
        CallLogFactory(tenant=tenant, provider_config=config, model_requested=model, created_at=at)
        CallLogFactory.create_batch(
            count, tenant=tenant, provider_config=config, model_requested=model,
            model_answered="", status="error", cost_usd=Decimal("0.01"),
            price_source="override", created_at=at,
        )  # fmt: skip
    daily_usage_recompute(first_day=dt.date(2026, 6, 14), last_day=dt.date(2026, 6, 15), now=NOW)
    exact = dict(DailyUsage.objects.values_list("model", "priced_count"))
    DailyUsage.objects.update(priced_count=0)

    # when
    migration.priced_counts_fill(apps, None)

    # then every group counts its answer and its charged failures, on its Tokyo day
    assert exact == {"one-a": 2, "one-b": 2, "two": 3}
    assert set(DailyUsage.objects.values_list("day", flat=True)) == {dt.date(2026, 6, 15)}
    assert dict(DailyUsage.objects.values_list("model", "priced_count")) == exact
