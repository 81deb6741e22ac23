"""A tenant's change of time zone: budgets, alerts, aggregation and reports after it."""

import datetime as dt
import threading
import uuid
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from llm_providers.models import Tenant, TenantMembership
from tests.factories import BudgetFactory, CallLogFactory, ProviderConfigFactory, TenantFactory
from usage.budget import BudgetExceeded, budget_reserve, budget_settle
from usage.models import Budget, CallLog, CostAlert, DailyUsage, DailyUsageRecount
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


def _tenant_form(tenant, **changes):
    return {
        "name": tenant.name,
        "slug": tenant.slug,
        "is_active": "on",
        "timezone": tenant.timezone,
        "response_cache_ttl_seconds": str(tenant.response_cache_ttl_seconds),
        **changes,
    }


def _calls_over_four_days(tenant, now):
    """A call every five hours over four days, each of its own cost; one provider config."""
    config = ProviderConfigFactory(tenant=tenant)
    for index in range(20):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            cost_usd=Decimal(index + 1) / 1000,
            created_at=now - dt.timedelta(hours=5 * index),
        )


def _logged_by_day(tenant, zone_name):
    """(requests, cost) per local day of `zone_name`, straight from CallLog."""
    days = {}
    for moment, cost in CallLog.objects.filter(tenant=tenant).values_list("created_at", "cost_usd"):
        day = moment.astimezone(ZoneInfo(zone_name)).date()
        requests, total = days.get(day, (0, Decimal(0)))
        days[day] = (requests + 1, total + cost)
    return days


@pytest.mark.django_db
def test_reports_after_a_zone_change_in_the_admin_count_the_new_zones_days(
    admin_client, django_capture_on_commit_callbacks
):
    from tests.api.fixtures import token_client
    from tests.factories import TenantMembershipFactory, UserFactory
    from usage.aggregation import daily_usage_recompute
    from usage.selectors import usage_dashboard

    # given a UTC tenant's calls over four days, aggregated in UTC
    now = timezone.now()
    tenant = TenantFactory(slug="acme", timezone="UTC")
    _calls_over_four_days(tenant, now)
    daily_usage_recompute(
        first_day=now.date() - dt.timedelta(days=5), last_day=now.date(), tenant=tenant
    )

    # when an admin moves the tenant to Tokyo
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:llm_providers_tenant_change", args=[tenant.pk]),
            _tenant_form(tenant, timezone="Asia/Tokyo"),
        )
    assert response.status_code == 302

    # then every report counts the call logs by Tokyo's days
    logged = _logged_by_day(tenant, "Asia/Tokyo")
    today = now.astimezone(ZoneInfo("Asia/Tokyo")).date()
    window = [today - dt.timedelta(days=offset) for offset in range(6, -1, -1)]
    expected = [(str(day), *logged.get(day, (0, Decimal(0)))) for day in window]
    assert sum(requests for _, requests, _ in expected) == 20
    api = token_client(
        TenantMembershipFactory(
            tenant=tenant, user=UserFactory(), role=TenantMembership.Role.VIEWER
        ).user
    )
    by_days = api.get("/api/v1/usage/daily/", {"days": 7}).json()
    by_range = api.get(
        "/api/v1/usage/daily/", {"start": str(window[0]), "end": str(window[-1])}
    ).json()
    for body in (by_days, by_range):
        assert body["timezone"] == "Asia/Tokyo"
        assert [(d["day"], d["requests"], Decimal(d["cost_usd"])) for d in body["days"]] == (
            expected
        )
    summary = api.get("/api/v1/usage/summary/", {"days": 2}).json()
    assert (summary["totals"]["requests"], Decimal(summary["totals"]["cost_usd"])) == (
        sum(r for _, r, _ in expected[-2:]),
        sum(c for _, _, c in expected[-2:]),
    )
    dashboard = usage_dashboard(tenant=Tenant.objects.get(pk=tenant.pk), days=7)
    assert [(str(day), requests, cost) for day, cost, requests, _ in dashboard.daily] == expected
    # and DailyUsage holds exactly those days, nothing of the UTC ones
    stored = {
        row["day"]: (row["requests"], row["cost"])
        for row in DailyUsage.objects.filter(tenant=tenant)
        .values("day")
        .annotate(requests=Sum("request_count"), cost=Sum("cost_usd"))
    }
    assert stored == logged


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus", "asia/tokyo", "posix/Asia/Tokyo", "Asia/../Asia/Tokyo", "", "x" * 65],
)
def test_unknown_time_zone_in_the_admin_is_refused_and_nothing_changes(admin_client, name):
    # given a UTC tenant with a day of usage counted
    now = timezone.now()
    tenant = TenantFactory(timezone="UTC")
    CallLogFactory(tenant=tenant, created_at=now)
    BudgetFactory(tenant=tenant)
    from usage.aggregation import daily_usage_recompute

    daily_usage_recompute(first_day=now.date(), last_day=now.date(), tenant=tenant)
    before = list(DailyUsage.objects.values_list("day", "request_count", "cost_usd"))

    # when an admin enters a zone name that is not one
    response = admin_client.post(
        reverse("admin:llm_providers_tenant_change", args=[tenant.pk]),
        _tenant_form(tenant, timezone=name),
    )

    # then the form says so, and the tenant and its usage are as they were
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["timezone"]
    if not name:
        assert errors == ["This field is required."]
    elif len(name) > 64:
        assert errors == ["Ensure this value has at most 64 characters (it has 65)."]
    else:
        assert errors == [f"“{name}” is not a known time zone, e.g. UTC or Europe/Paris."]
    assert Tenant.objects.get(pk=tenant.pk).timezone == "UTC"
    assert not DailyUsageRecount.objects.exists()
    assert list(DailyUsage.objects.values_list("day", "request_count", "cost_usd")) == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_zone_change_during_a_periodic_aggregation_ends_with_the_new_zones_days(settings, workers):
    from usage import aggregation
    from usage.aggregation import daily_usage_recompute, daily_usage_recompute_recent

    # given two UTC tenants' calls over four days, aggregated in UTC
    settings.USAGE_AGGREGATION_WORKERS = workers
    now = timezone.now()
    moved, stays = TenantFactory(timezone="UTC"), TenantFactory(timezone="UTC")
    for tenant in (moved, stays):
        _calls_over_four_days(tenant, now)
    daily_usage_recompute(first_day=now.date() - dt.timedelta(days=5), last_day=now.date())
    windows_read, zone_changed = threading.Event(), threading.Event()
    errors = []
    recompute = aggregation._recompute

    def recompute_once_the_zone_changed(**kwargs):
        # The aggregation has read the tenants' zones under its lock.
        windows_read.set()
        assert zone_changed.wait(timeout=30)
        return recompute(**kwargs)

    def periodic_aggregation():
        try:
            with mock.patch.object(aggregation, "_recompute", recompute_once_the_zone_changed):
                daily_usage_recompute_recent(now=now)
        except Exception as exc:  # any error fails the test below
            errors.append(exc)
        finally:
            connection.close()

    # when one tenant moves to UTC-12 while a periodic aggregation runs: the
    # change commits after the aggregation read the zones, and its recount
    # (queued on commit, run at once) waits for the aggregation's lock
    worker = threading.Thread(target=periodic_aggregation)
    worker.start()
    assert windows_read.wait(timeout=30)
    with transaction.atomic():
        transaction.on_commit(zone_changed.set)
        tenant = Tenant.objects.get(pk=moved.pk)
        tenant.timezone = _WEST
        tenant.save()
    worker.join(timeout=60)
    assert errors == []

    # then each tenant's DailyUsage is its call logs by the days of its zone
    # now, and another aggregation finds nothing to change
    def stored(tenant):
        return {
            row["day"]: (row["requests"], row["cost"])
            for row in DailyUsage.objects.filter(tenant=tenant)
            .values("day")
            .annotate(requests=Sum("request_count"), cost=Sum("cost_usd"))
        }

    assert stored(moved) == _logged_by_day(moved, _WEST)
    assert stored(stays) == _logged_by_day(stays, "UTC")
    assert not DailyUsageRecount.objects.exists()
    again = daily_usage_recompute_recent(now=now + dt.timedelta(seconds=1))
    assert (again.written, again.removed) == (0, 0)
    assert stored(moved) == _logged_by_day(moved, _WEST)


@pytest.mark.django_db
def test_budget_alert_is_once_per_calendar_period_across_zone_changes(settings):
    from usage.aggregation import daily_usage_recompute_recent, daily_usage_recount_pending
    from usage.alerts import budget_thresholds_check

    def check(now):
        daily_usage_recompute_recent(now=now)
        daily_usage_recount_pending(now=now)
        return [(a.period_key, a.percent) for a in budget_thresholds_check(now=now)]

    # given a UTC tenant's $10 daily budget alerting at 50 % and 100 %, which
    # alerted at 50 % for June 15 with $6 spent at 09:00 UTC
    settings.USAGE_AGGREGATION_LOOKBACK_MINUTES = 120
    tenant = TenantFactory(timezone="UTC")
    BudgetFactory(
        tenant=tenant,
        period=Budget.Period.DAILY,
        limit_usd=Decimal("10"),
        alert_percentages=[50, 100],
    )
    ten = dt.datetime(2026, 6, 15, 10, 0, tzinfo=dt.UTC)
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6"), created_at=ten - dt.timedelta(hours=1))
    assert check(ten) == [("2026-06-15", 50)]

    # when it moves to Paris, where it is June 15 too, with the same $6 in the day
    tenant.timezone = "Europe/Paris"
    tenant.save()
    # then June 15 has alerted at 50 % already
    assert check(ten) == []

    # when it moves on to Kiritimati (UTC+14), where June 16 began at 10:00 UTC,
    # and $5 more is spent at 10:30 UTC
    tenant.timezone = "Pacific/Kiritimati"
    tenant.save()
    eleven = ten + dt.timedelta(hours=1)
    CallLogFactory(tenant=tenant, cost_usd=Decimal("5"), created_at=ten + dt.timedelta(minutes=30))

    # then June 16 is a period of its own and alerts at 50 %; June 15, still
    # within the lookback and holding the first $6 there, does not alert again
    assert check(eleven) == [("2026-06-16", 50)]
    assert list(
        CostAlert.objects.order_by("pk").values_list("period_key", "percent", "spend_usd")
    ) == [("2026-06-15", 50, Decimal("6")), ("2026-06-16", 50, Decimal("5"))]
