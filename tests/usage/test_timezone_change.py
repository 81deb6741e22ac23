"""A tenant's change of time zone: budgets, alerts, aggregation and reports after it."""

import datetime as dt
import threading
import uuid
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.db.models import Sum

from tests.factories import BudgetFactory, CallLogFactory, TenantFactory
from usage.budget import BudgetExceeded, budget_reserve, budget_settle
from usage.models import Budget, CallLog, CostAlert, DailyUsage
from usage.periods import DAILY, MONTHLY, period_containing

# New Year's Day, 05:00 UTC: in UTC-12 it is still 31 December, 17:00, so the
# zone change moves both the day and the month of the budgets' periods.
_NOW = dt.datetime(2027, 1, 1, 5, 0, tzinfo=dt.UTC)
_WEST = "Etc/GMT+12"


def _at(moment):
    return mock.patch("django.utils.timezone.now", return_value=moment)


def _reserve(tenant, amount):
    return budget_reserve(
        tenant=tenant,
        provider_config_id=None,
        service_name="summarizer",
        customer_id="acme",
        amount_usd=Decimal(amount),
        request_id=uuid.uuid4(),
    )


def _call(tenant, cost, moment):
    """A call gated, logged and settled at `moment`, as the completion service makes it."""
    with _at(moment):
        reservation = _reserve(tenant, cost)
        CallLogFactory(
            tenant=tenant,
            service_name="summarizer",
            customer_id="acme",
            cost_usd=Decimal(cost),
            created_at=moment,
        )
        budget_settle(reservation=reservation, cost_usd=Decimal(cost))


def _logged_in(tenant, kind, moment):
    period = period_containing(kind, moment, tenant.timezone)
    return CallLog.objects.filter(
        tenant=tenant, created_at__gte=period.start, created_at__lt=period.end
    ).aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)


def _refused_spend(tenant, amount, moment) -> Decimal:
    with _at(moment), pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, amount)
    return Decimal(caught.value.extra["spend_usd"]), caught.value.extra["budget_name"]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [DAILY, MONTHLY])
def test_budget_after_a_zone_change_counts_the_new_zones_period_exactly(counters, kind):
    # given a UTC tenant with a blocking $10 budget, $1.25 spent on 31 December
    # in the afternoon (UTC), and $2.50 on 1 January at 01:00, both counted live
    tenant = TenantFactory(timezone="UTC")
    BudgetFactory(
        tenant=tenant,
        name="Cap",
        period=kind,
        limit_usd=Decimal("10.00"),
        action=Budget.Action.BLOCK,
    )
    CallLogFactory(
        tenant=tenant,
        service_name="summarizer",
        customer_id="acme",
        cost_usd=Decimal("1.25"),
        created_at=dt.datetime(2026, 12, 31, 14, 0, tzinfo=dt.UTC),
    )
    _call(tenant, "2.50", _NOW - dt.timedelta(hours=4))
    assert _refused_spend(tenant, "7.51", _NOW) == (Decimal("2.5"), "Cap")

    # when the tenant moves to UTC-12, where it is still 31 December (17:00),
    # and spends $0.75 more
    tenant.timezone = _WEST
    tenant.save()
    _call(tenant, "0.75", _NOW + dt.timedelta(minutes=1))
    later = _NOW + dt.timedelta(minutes=2)

    # then the budget counts that day (or December) of the new zone: the three
    # calls, $4.50, neither the UTC period's $3.25 nor more
    assert _logged_in(tenant, kind, later) == Decimal("4.5")
    assert _refused_spend(tenant, "5.500000000001", later) == (Decimal("4.5"), "Cap")
    # and a call whose worst case fills the limit exactly is let through, the
    # next one refused with that reservation counted
    with _at(later):
        assert _reserve(tenant, "5.50")
    assert _refused_spend(tenant, "0.000000001", later) == (Decimal("10"), "Cap")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_zone_change_saved_outside_a_transaction_is_never_seen_without_its_recount():
    from usage import aggregation
    from usage.aggregation import daily_usage_recompute_recent, daily_usage_recount_pending
    from usage.alerts import budget_thresholds_check

    # given a UTC tenant with $6 of a $10 monthly budget spent at 02:00 UTC on
    # June 15 (22:00 on June 14 in New York), aggregated and alerted at 50 %
    now = dt.datetime(2026, 6, 15, 3, 0, tzinfo=dt.UTC)
    tenant = TenantFactory(timezone="UTC")
    BudgetFactory(tenant=tenant, alert_percentages=[50, 80, 100])
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6.00"), created_at=now - dt.timedelta(hours=1))
    daily_usage_recompute_recent(now=now)
    assert [a.percent for a in budget_thresholds_check(now=now)] == [50]
    seen = {}

    def aggregate_and_check():
        # The periodic aggregation and its alert check, on a connection of their own.
        try:
            daily_usage_recompute_recent(now=now)
            seen["alerts"] = [a.percent for a in budget_thresholds_check(now=now)]
        finally:
            connection.close()

    recount_request = aggregation.daily_usage_recount_request

    def request_while_others_run(**kwargs):
        worker = threading.Thread(target=aggregate_and_check)
        worker.start()
        worker.join(timeout=30)
        recount_request(**kwargs)

    # when the tenant moves to New York by a save outside any transaction, and
    # the aggregation and its check run before the change's recount request is
    # stored
    tenant.timezone = "America/New_York"
    with mock.patch.object(aggregation, "daily_usage_recount_request", request_while_others_run):
        tenant.save()
    daily_usage_recount_pending(now=now)

    # then the check saw either the old zone or the new one with its recount
    # pending: no alert counts the $6 twice
    assert seen == {"alerts": []}
    assert budget_thresholds_check(now=now) == []
    assert list(CostAlert.objects.values_list("percent", "spend_usd")) == [(50, Decimal("6"))]
    assert DailyUsage.objects.filter(tenant=tenant).aggregate(total=Sum("cost_usd")) == {
        "total": Decimal("6")
    }
