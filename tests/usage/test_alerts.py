"""Alerts: thresholds once per budget, period, percent and limit; error rate; unpriced; delivery."""

import datetime as dt
import json
import smtplib
import threading
import time
import types
import uuid
from decimal import Decimal

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.settings.consistency import RULED, settings_conflicts
from llm_providers.models import Tenant, TenantMembership
from tests.factories import (
    BudgetFactory,
    CallLogFactory,
    ProviderConfigFactory,
    TenantFactory,
    TenantMembershipFactory,
    UserFactory,
)
from tests.threads import thread_run, thread_start
from tests.upstreams.server import LoopbackUpstream, Reply
from tests.usage.tenant_delete_race import tenant_deleted_while
from usage.aggregation import (
    daily_usage_recompute,
    daily_usage_recompute_recent,
    daily_usage_recount_pending,
)
from usage.alerts import (
    DeliveriesRetried,
    alert_deliveries_retry,
    alert_deliveries_send_due,
    alert_delivery_attempt,
    alerts_check,
    budget_thresholds_check,
    error_rates_check,
    unpriced_usage_check,
)
from usage.budget import BudgetExceeded, budget_reserve
from usage.models import AlertDelivery, Budget, CallLog, CostAlert, DailyUsage
from usage.selectors import provider_error_rates
from usage.services import budget_update

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


def _aggregate(now=NOW):
    daily_usage_recompute(
        first_day=now.date() - dt.timedelta(days=1),
        last_day=now.date() + dt.timedelta(days=1),
        now=now,
    )


def _spend(tenant, amount, **kwargs):
    return CallLogFactory(
        tenant=tenant,
        cost_usd=Decimal(amount),
        created_at=kwargs.pop("created_at", NOW - dt.timedelta(minutes=5)),
        **kwargs,
    )


@pytest.mark.django_db
def test_threshold_check_creates_one_alert_per_crossed_percent():
    # given a $10 monthly budget with $8.50 spent this month
    tenant = TenantFactory(name="Acme")
    budget = BudgetFactory(tenant=tenant, name="Monthly", alert_percentages=[50, 80, 100])
    _spend(tenant, "8.50")
    _aggregate()

    # when
    created = budget_thresholds_check(now=NOW)

    # then 50 % and 80 % fire, 100 % does not
    assert sorted(a.percent for a in created) == [50, 80]
    alert = CostAlert.objects.get(budget=budget, percent=80)
    assert alert.period_key == "2026-06"
    assert alert.spend_usd == Decimal("8.5")
    assert alert.message == (
        "Acme: budget “Monthly” (whole tenant, monthly 2026-06) has reached 80% of its "
        "$10.00 limit: $8.50 spent."
    )
    assert list(alert.deliveries.values_list("channel", "target_label")) == [
        ("email", "finance@example.com")
    ]


@pytest.mark.django_db
def test_threshold_alert_says_how_many_requests_in_its_scope_are_unpriced_and_not_counted():
    # given a $10 budget of the "chat" service with $5 spent, beside two calls of
    # the service to a model with no known price, and one of another service
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, name="Chat", service_name="chat", alert_percentages=[50])
    _spend(tenant, "5.00", service_name="chat")
    for service in ("chat", "chat", "search"):
        _spend(tenant, "0", service_name=service, model_requested="mystery-7b")
    CallLog.objects.filter(model_requested="mystery-7b").update(
        cost_usd=None, price_source=CallLog.PriceSource.UNKNOWN
    )
    _aggregate()

    # when
    (alert,) = budget_thresholds_check(now=NOW)

    # then the spend is the priced calls', and the alert says it leaves two out
    assert alert.spend_usd == Decimal("5")
    assert alert.message == (
        "Acme: budget “Chat” (service chat, monthly 2026-06) has reached 50% of its $10.00 "
        "limit: $5.00 spent. 2 requests in its scope have no known price and are not "
        "counted in the spend."
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("limit", "spent", "percent", "shown"),
    [
        # $9.996 of $10 is below the limit: it does not read "$10.00 spent"
        ("10", "9.996", 80, "has reached 80% of its $10.00 limit: $9.996 spent."),
        # a limit set to the tenth of a cent is written as set
        ("10.005", "9", 80, "has reached 80% of its $10.005 limit: $9.00 spent."),
    ],
)
def test_threshold_alert_writes_limit_as_set_and_spend_never_rounded_up_to_it(
    limit, spent, percent, shown
):
    tenant = TenantFactory(name="Acme")
    BudgetFactory(
        tenant=tenant, name="Monthly", limit_usd=Decimal(limit), alert_percentages=[percent, 100]
    )
    _spend(tenant, spent)
    _aggregate()

    (alert,) = budget_thresholds_check(now=NOW)

    assert alert.message == (f"Acme: budget “Monthly” (whole tenant, monthly 2026-06) {shown}")


@pytest.mark.django_db
def test_threshold_check_alerts_a_budget_whose_stored_webhook_url_cannot_be_parsed():
    # given a budget stored with a webhook URL today's checks refuse, and an email
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, name="Legacy", alert_emails="ops@example.com")
    Budget.objects.filter(pk=budget.pk).update(webhook_url="https://93.184.216.34:abc/hook")
    _spend(tenant, "9")
    _aggregate()

    # when
    created = budget_thresholds_check(now=NOW)

    # then it alerts like any other: the email goes, the webhook delivery says what is wrong
    assert {(a.budget_id, a.percent) for a in created} == {(budget.pk, 50), (budget.pk, 80)}
    labels = set(
        AlertDelivery.objects.filter(alert__budget=budget).values_list("channel", "target_label")
    )
    assert labels == {("email", "ops@example.com"), ("webhook", "invalid URL — enter it again")}


@pytest.mark.django_db
def test_threshold_check_creates_nothing_when_run_again():
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant)
    _spend(tenant, "9.00")
    _aggregate()
    first = alerts_check(now=NOW)

    second = alerts_check(now=NOW + dt.timedelta(minutes=5))

    assert len(first) == 2
    assert second == []
    assert CostAlert.objects.count() == 2
    assert AlertDelivery.objects.count() == 2


@pytest.mark.django_db
def test_threshold_alert_says_calls_are_refused_when_blocking_budget_is_spent():
    tenant = TenantFactory(name="Acme")
    BudgetFactory(
        tenant=tenant,
        name="Cap",
        action=Budget.Action.BLOCK,
        period=Budget.Period.DAILY,
        alert_percentages=[100],
        limit_usd=Decimal("1"),
    )
    _spend(tenant, "1.20")
    _aggregate()

    (alert,) = budget_thresholds_check(now=NOW)

    assert alert.message == (
        "Acme: budget “Cap” (whole tenant, daily 2026-06-15) has reached 100% of its $1.00 "
        "limit: $1.20 spent. Calls that would go over the limit are refused until the "
        "period resets at 2026-06-16 00:00 (UTC)."
    )


@pytest.mark.django_db
def test_blocking_alert_and_its_email_name_the_tenant_time_zone_and_when_the_period_resets(
    django_capture_on_commit_callbacks,
):
    # given a daily blocking budget of a tenant in Berlin (UTC+2 in June), spent past its limit
    tenant = TenantFactory(name="Acme", timezone="Europe/Berlin")
    BudgetFactory(
        tenant=tenant,
        name="Cap",
        action=Budget.Action.BLOCK,
        period=Budget.Period.DAILY,
        alert_percentages=[100],
        limit_usd=Decimal("1"),
        alert_emails="ops@example.com",
    )
    _spend(tenant, "1.20")
    _aggregate()

    with django_capture_on_commit_callbacks(execute=True):
        (alert,) = budget_thresholds_check(now=NOW)

    # then the message says when calls go through again, in the tenant's zone
    assert alert.message.endswith(
        "Calls that would go over the limit are refused until the period resets "
        "at 2026-06-16 00:00 (Europe/Berlin)."
    )
    # and the email dates the period and the alert in that zone, not as UTC
    (message,) = mail.outbox
    assert "Period: 2026-06-15 (daily, Europe/Berlin)\n" in message.body
    assert "Raised at: 2026-06-15 14:00 (Europe/Berlin)\n" in message.body


def _daily_cap_refused_a_call(tenant, *, now, limit: str, spent: str, amount: str) -> None:
    """A daily blocking budget "Cap" with `spent` of `limit` spent, which refused
    a call that could have cost `amount`, logged as blocked; then rolled up."""
    BudgetFactory(
        tenant=tenant,
        name="Cap",
        action=Budget.Action.BLOCK,
        period=Budget.Period.DAILY,
        limit_usd=Decimal(limit),
    )
    _spend(tenant, spent, created_at=now - dt.timedelta(minutes=1))
    with pytest.raises(BudgetExceeded) as refused:
        budget_reserve(
            tenant=tenant,
            provider_config_id=None,
            service_name="summarizer",
            customer_id="acme",
            amount_usd=Decimal(amount),
            request_id=uuid.uuid4(),
        )
    CallLogFactory(
        tenant=tenant,
        status=CallLog.Status.BLOCKED,
        error_code=refused.value.code,
        error_message=refused.value.message,
        cost_usd=Decimal(0),
        created_at=now,
    )
    _aggregate(now)


@pytest.mark.django_db
def test_threshold_check_alerts_100_percent_when_blocking_budget_refused_a_call_below_it(
    counters,
):
    # given a $1 daily blocking budget at 95 %, which refused a call that
    # could have cost $0.10 (every call from here on is refused)
    now = timezone.now()
    tenant = TenantFactory(name="Acme")
    _daily_cap_refused_a_call(tenant, now=now, limit="1", spent="0.95", amount="0.10")

    # when
    created = budget_thresholds_check(now=now)

    # then besides 50 % and 80 %, the 100 % alert says calls are being refused
    assert sorted(a.percent for a in created) == [50, 80, 100]
    alert = CostAlert.objects.get(percent=100)
    assert alert.spend_usd == Decimal("0.95")
    assert alert.message == (
        f"Acme: budget “Cap” (whole tenant, daily {now.date()}) refuses calls: $0.95 of "
        "its $1.00 limit is spent, and calls that could cost more than the $0.05 left are "
        f"refused until the period resets at {now.date() + dt.timedelta(days=1)} 00:00 (UTC)."
    )
    assert budget_thresholds_check(now=now + dt.timedelta(minutes=5)) == []


@pytest.mark.django_db
def test_refusing_alert_writes_spend_and_what_is_left_so_they_add_up_to_the_limit():
    # given a $10 daily blocking budget with $3.455 spent, which refused a $7 call:
    # rounded to cents, $3.455 spent and $6.545 left would read $3.46 and $6.55
    now = timezone.now()
    tenant = TenantFactory(name="Acme")
    _daily_cap_refused_a_call(tenant, now=now, limit="10", spent="3.455", amount="7")

    # when
    budget_thresholds_check(now=now)

    # then both amounts are written exactly, and add up to the limit
    alert = CostAlert.objects.get(percent=100)
    assert alert.message == (
        f"Acme: budget “Cap” (whole tenant, daily {now.date()}) refuses calls: $3.455 of "
        "its $10.00 limit is spent, and calls that could cost more than the $6.545 left are "
        f"refused until the period resets at {now.date() + dt.timedelta(days=1)} 00:00 (UTC)."
    )


@pytest.mark.django_db
def test_threshold_check_alerts_previous_period_when_a_late_log_pushes_it_over():
    # given yesterday's daily budget just under 50 %, and a late log of 23:50 yesterday
    now = dt.datetime(2026, 6, 16, 0, 30, tzinfo=dt.UTC)
    tenant = TenantFactory()
    BudgetFactory(
        tenant=tenant, period=Budget.Period.DAILY, limit_usd=Decimal("1"), alert_percentages=[50]
    )
    _spend(tenant, "0.40", created_at=now - dt.timedelta(hours=3))
    _spend(tenant, "0.20", created_at=now - dt.timedelta(minutes=40))
    _aggregate(now)

    (alert,) = budget_thresholds_check(now=now)

    assert alert.period_key == "2026-06-15"
    assert alert.spend_usd == Decimal("0.6")


@pytest.mark.django_db
def test_threshold_check_waits_for_the_recount_of_a_tenant_that_changed_time_zone():
    # given a UTC tenant with $6 of a $10 monthly budget spent at 02:00 UTC on
    # June 15 (22:00 on June 14 in New York), aggregated and alerted at 50 %
    now = dt.datetime(2026, 6, 15, 3, 0, tzinfo=dt.UTC)
    tenant = TenantFactory(timezone="UTC")
    BudgetFactory(tenant=tenant, alert_percentages=[50, 80, 100])
    _spend(tenant, "6.00", created_at=now - dt.timedelta(hours=1))
    daily_usage_recompute_recent(now=now)
    assert [a.percent for a in budget_thresholds_check(now=now)] == [50]

    # when the tenant moves to New York and an aggregation of the recent days
    # runs before the recount of its days: June 14 is counted in the new zone
    # beside June 15 of the old one, $12 in all
    tenant.timezone = "America/New_York"
    tenant.save()
    daily_usage_recompute_recent(now=now)
    assert DailyUsage.objects.filter(tenant=tenant).aggregate(total=Sum("cost_usd")) == {
        "total": Decimal("12")
    }
    during = budget_thresholds_check(now=now)
    daily_usage_recount_pending(now=now)
    after = budget_thresholds_check(now=now)

    # then no alert counts the $6 twice, before the recount or after it
    assert (during, after) == ([], [])
    assert list(CostAlert.objects.values_list("percent", "spend_usd")) == [(50, Decimal("6"))]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_threshold_checks_create_each_alert_once():
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50, 80, 100])
    _spend(tenant, "12.00")
    _aggregate()
    barrier = threading.Barrier(6)
    errors = []

    def check():
        barrier.wait()
        try:
            budget_thresholds_check(now=NOW)
        except Exception as exc:  # any error fails the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=check) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(CostAlert.objects.values_list("percent", flat=True)) == [50, 80, 100]
    assert AlertDelivery.objects.count() == 3


def _limit_set(budget, limit: str) -> None:
    budget_update(budget=budget, data={"limit_usd": Decimal(limit)})


def _budget_alerts(budget) -> list[tuple[int, Decimal]]:
    return sorted(
        CostAlert.objects.filter(budget=budget).values_list("percent", "limit_usd"),
        key=lambda row: (row[1], row[0]),
    )


@pytest.mark.django_db
def test_threshold_check_alerts_a_percentage_again_at_a_raised_limit():
    # given a $10 monthly budget that alerted at 50 % and 80 % with $8.50 spent
    tenant = TenantFactory(name="Acme")
    budget = BudgetFactory(tenant=tenant, name="Monthly", alert_percentages=[50, 80, 100])
    _spend(tenant, "8.50")
    _aggregate()
    assert sorted(a.percent for a in budget_thresholds_check(now=NOW)) == [50, 80]

    # when the limit is raised to $20 ($8.50 is 42.5 % of it), then $8 more is spent
    _limit_set(budget, "20")
    raised = budget_thresholds_check(now=NOW + dt.timedelta(minutes=1))
    _spend(tenant, "8.00", created_at=NOW)
    _aggregate(NOW + dt.timedelta(minutes=5))
    later = NOW + dt.timedelta(minutes=10)
    created = budget_thresholds_check(now=later)

    # then nothing alerts at the raised limit until its own 50 % and 80 % are crossed
    assert raised == []
    assert sorted(a.percent for a in created) == [50, 80]
    alert = CostAlert.objects.get(budget=budget, percent=80, limit_usd=Decimal("20"))
    assert alert.period_key == "2026-06"
    assert alert.spend_usd == Decimal("16.5")
    assert alert.message == (
        "Acme: budget “Monthly” (whole tenant, monthly 2026-06) has reached 80% of its "
        "$20.00 limit: $16.50 spent."
    )
    assert list(alert.deliveries.values_list("channel", "target_label")) == [
        ("email", "finance@example.com")
    ]
    # and each percentage alerted once per limit, with one delivery each
    assert _budget_alerts(budget) == [
        (50, Decimal("10")),
        (80, Decimal("10")),
        (50, Decimal("20")),
        (80, Decimal("20")),
    ]
    assert AlertDelivery.objects.filter(alert__budget=budget).count() == 4
    assert budget_thresholds_check(now=later + dt.timedelta(minutes=5)) == []


@pytest.mark.django_db
def test_threshold_check_alerts_every_percentage_crossed_at_a_lowered_limit_once():
    # given a $20 monthly budget that alerted at 50 % with $12 spent
    tenant = TenantFactory(name="Acme")
    budget = BudgetFactory(
        tenant=tenant, name="Monthly", limit_usd=Decimal("20"), alert_percentages=[50, 80, 100]
    )
    _spend(tenant, "12.00")
    _aggregate()
    assert [a.percent for a in budget_thresholds_check(now=NOW)] == [50]

    # when the limit is lowered to $10: $12 is 120 % of it
    _limit_set(budget, "10")
    created = budget_thresholds_check(now=NOW + dt.timedelta(minutes=1))
    again = budget_thresholds_check(now=NOW + dt.timedelta(minutes=2))

    # then 50 %, 80 % and 100 % of the new limit alert, as for a fresh budget, once
    assert sorted(a.percent for a in created) == [50, 80, 100]
    assert again == []
    assert CostAlert.objects.get(budget=budget, percent=100).message == (
        "Acme: budget “Monthly” (whole tenant, monthly 2026-06) has reached 100% of its "
        "$10.00 limit: $12.00 spent."
    )
    assert _budget_alerts(budget) == [
        (50, Decimal("10")),
        (80, Decimal("10")),
        (100, Decimal("10")),
        (50, Decimal("20")),
    ]


@pytest.mark.django_db
def test_threshold_check_does_not_alert_again_when_a_limit_is_set_back_to_one_that_alerted():
    # given a $10 budget that alerted at 50 % and 80 %, then raised to $20
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, alert_percentages=[50, 80, 100])
    _spend(tenant, "8.50")
    _aggregate()
    budget_thresholds_check(now=NOW)
    _limit_set(budget, "20")
    assert budget_thresholds_check(now=NOW + dt.timedelta(minutes=1)) == []

    # when it is set back to $10 (written with more places than before)
    _limit_set(budget, "10.0000")
    created = budget_thresholds_check(now=NOW + dt.timedelta(minutes=2))

    # then its percentages at $10 have alerted already
    assert created == []
    assert _budget_alerts(budget) == [(50, Decimal("10")), (80, Decimal("10"))]
    assert AlertDelivery.objects.filter(alert__budget=budget).count() == 2


@pytest.mark.django_db
def test_refusing_alert_is_not_raised_at_a_raised_limit_for_calls_refused_under_the_old_one(
    counters,
):
    # given a $1 daily blocking budget at 95 % that refused a call and alerted
    # at 100 % that calls are refused
    now = timezone.now()
    tenant = TenantFactory(name="Acme")
    _daily_cap_refused_a_call(tenant, now=now, limit="1", spent="0.95", amount="0.10")
    assert sorted(a.percent for a in budget_thresholds_check(now=now)) == [50, 80, 100]

    # when its limit is raised to $2: $0.95 is 47.5 % of it, and nothing is refused
    _limit_set(Budget.objects.get(tenant=tenant), "2")
    created = budget_thresholds_check(now=now + dt.timedelta(minutes=1))

    # then no alert says calls are refused at $2
    assert created == []
    assert list(CostAlert.objects.filter(percent=100).values_list("limit_usd", flat=True)) == [
        Decimal("1")
    ]


@pytest.mark.django_db
def test_refusing_alert_is_raised_again_when_a_raised_limit_refuses_a_call(
    counters, django_capture_on_commit_callbacks
):
    # given a $1 daily blocking budget that refused a call at 95 % and alerted
    now = timezone.now()
    tenant = TenantFactory(name="Acme")
    _daily_cap_refused_a_call(tenant, now=now, limit="1", spent="0.95", amount="0.10")
    budget_thresholds_check(now=now)
    budget = Budget.objects.get(tenant=tenant)

    # when the limit is raised to $1.50 and the budget refuses a $0.60 call
    with django_capture_on_commit_callbacks(execute=True):
        _limit_set(budget, "1.50")
    with pytest.raises(BudgetExceeded) as refused:
        budget_reserve(
            tenant=tenant,
            provider_config_id=None,
            service_name="summarizer",
            customer_id="acme",
            amount_usd=Decimal("0.60"),
            request_id=uuid.uuid4(),
        )
    later = now + dt.timedelta(seconds=1)
    CallLogFactory(
        tenant=tenant,
        status=CallLog.Status.BLOCKED,
        error_code=refused.value.code,
        error_message=refused.value.message,
        cost_usd=Decimal(0),
        created_at=later,
    )
    _aggregate(later)
    created = budget_thresholds_check(now=later)

    # then $0.95 crossed 50 % of $1.50, and the 100 % alert at $1.50 says calls
    # are refused, with what is left of $1.50
    assert [(a.percent, a.limit_usd) for a in created] == [
        (50, Decimal("1.5")),
        (100, Decimal("1.5")),
    ]
    assert created[1].message == (
        f"Acme: budget “Cap” (whole tenant, daily {now.date()}) refuses calls: $0.95 of "
        "its $1.50 limit is spent, and calls that could cost more than the $0.55 left are "
        f"refused until the period resets at {now.date() + dt.timedelta(days=1)} 00:00 (UTC)."
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_threshold_checks_after_a_limit_change_create_each_alert_once():
    # given a $10 budget that alerted at 50 %, 80 % and 100 % with $12 spent
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, alert_percentages=[50, 80, 100])
    _spend(tenant, "12.00")
    _aggregate()
    budget_thresholds_check(now=NOW)
    # when its limit is raised to $15 ($12 is 80 % of it) and six checks run at once
    _limit_set(budget, "15")
    barrier = threading.Barrier(6)
    errors = []

    def check():
        barrier.wait()
        try:
            budget_thresholds_check(now=NOW + dt.timedelta(minutes=1))
        except Exception as exc:  # any error fails the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=check) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then 50 % and 80 % of $15 alerted once each, beside those of $10
    assert errors == []
    assert _budget_alerts(budget) == [
        (50, Decimal("10")),
        (80, Decimal("10")),
        (100, Decimal("10")),
        (50, Decimal("15")),
        (80, Decimal("15")),
    ]
    assert AlertDelivery.objects.count() == 5


@pytest.mark.django_db
def test_new_alert_is_emailed_once_committed(django_capture_on_commit_callbacks):
    tenant = TenantFactory(name="Acme")
    BudgetFactory(
        tenant=tenant,
        name="Monthly",
        alert_percentages=[50],
        alert_emails="a@example.com, b@example.com",
    )
    _spend(tenant, "6.00")
    _aggregate()

    with django_capture_on_commit_callbacks(execute=True):
        (alert,) = budget_thresholds_check(now=NOW)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["a@example.com", "b@example.com"]
    assert message.subject == "[LLM usage] Acme: budget “Monthly” reached 50%"
    assert alert.message in message.body
    delivery = alert.deliveries.get()
    assert (delivery.state, delivery.attempts) == ("delivered", 1)


@pytest.mark.django_db
def test_alert_email_fails_and_is_retried_while_no_mail_server_is_configured(settings):
    # given production settings without EMAIL_URL
    settings.ALERT_EMAIL_CONFIGURED = False
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails="ops@example.com")
    _spend(tenant, "6.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    delivery = alert.deliveries.get()

    # when the delivery is attempted
    failed = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    # then nothing was sent and the attempt is a failure naming the setting, not "delivered"
    assert mail.outbox == []
    assert (failed.state, failed.attempts) == ("retrying", 1)
    assert failed.last_error == (
        "Email not sent: EMAIL_URL is not set, so there is no mail server to send "
        "through (see docs/OPERATIONS.md)."
    )

    # when EMAIL_URL is set and the retry comes due
    settings.ALERT_EMAIL_CONFIGURED = True
    retried = alert_delivery_attempt(delivery_id=delivery.pk, now=failed.next_attempt_at)

    # then the alert is emailed
    assert (retried.state, retried.attempts) == ("delivered", 2)
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]


@pytest.mark.django_db
def test_alert_email_subject_is_one_line_when_the_tenant_name_is_not(
    django_capture_on_commit_callbacks,
):
    # given a tenant and a budget whose names hold line breaks (a header must not)
    tenant = TenantFactory(name="Acme\r\nBcc: someone@example.com")
    BudgetFactory(
        tenant=tenant,
        name="Cap\nCc: x@example.com",
        alert_percentages=[50],
        alert_emails="a@example.com",
    )
    _spend(tenant, "6.00")
    _aggregate()

    with django_capture_on_commit_callbacks(execute=True):
        (alert,) = budget_thresholds_check(now=NOW)

    (message,) = mail.outbox
    assert message.subject == (
        "[LLM usage] Acme Bcc: someone@example.com: budget “Cap Cc: x@example.com” reached 50%"
    )
    assert message.to == ["a@example.com"]
    assert message.cc == []
    assert message.bcc == []
    assert alert.deliveries.get().state == "delivered"


@pytest.mark.django_db
def test_alert_email_subjects_say_which_budget_and_percentage_or_provider(
    django_capture_on_commit_callbacks, settings
):
    # given a budget whose spend crossed 50 % and 80 % at once, and a failing provider
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 10
    tenant = TenantFactory(name="Acme")
    BudgetFactory(
        tenant=tenant, name="Monthly", alert_percentages=[50, 80], alert_emails="a@example.com"
    )
    _spend(tenant, "9.00")
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    CallLogFactory.create_batch(
        10,
        tenant=tenant,
        provider_config=config,
        status=CallLog.Status.ERROR,
        cost_usd=Decimal(0),
        created_at=NOW - dt.timedelta(minutes=2),
    )
    _aggregate()

    with django_capture_on_commit_callbacks(execute=True):
        alerts_check(now=NOW)

    # then each email's subject tells them apart
    assert sorted(m.subject for m in mail.outbox) == [
        "[LLM usage] Acme: budget “Monthly” reached 50%",
        "[LLM usage] Acme: budget “Monthly” reached 80%",
        "[LLM usage] Acme: provider “openai-main” failed every call",
    ]


@pytest.mark.django_db
def test_tenant_wide_alert_email_does_not_show_one_budgets_recipients_to_another(
    django_capture_on_commit_callbacks, settings
):
    # given two budgets, each alerting a different customer's contact
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 10
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, customer_id="a", alert_percentages=[], alert_emails="x@a.test")
    BudgetFactory(tenant=tenant, customer_id="b", alert_percentages=[], alert_emails="y@b.test")
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    CallLogFactory.create_batch(
        10,
        tenant=tenant,
        provider_config=config,
        status=CallLog.Status.ERROR,
        created_at=NOW - dt.timedelta(minutes=2),
    )

    # when the provider's error-rate alert, sent to every budget's recipients, goes out
    with django_capture_on_commit_callbacks(execute=True):
        (alert,) = error_rates_check(now=NOW)

    # then both get it, and neither sees the other's address
    (message,) = mail.outbox
    assert sorted(message.recipients()) == ["x@a.test", "y@b.test"]
    headers = message.message().as_string().split("\n\n", 1)[0]
    assert "x@a.test" not in headers and "y@b.test" not in headers
    assert alert.deliveries.get().state == "delivered"


class _FlakyReceiver:
    """A loopback webhook receiver that fails a given number of times, then accepts."""

    def __init__(self, httpserver, failures):
        self.bodies = []
        self.failures = failures
        httpserver.expect_request("/hooks/T000/secret-path", method="POST").respond_with_handler(
            self.handle
        )
        self.url = httpserver.url_for("/hooks/T000/secret-path")

    def handle(self, request):
        from werkzeug import Response

        self.bodies.append(json.loads(request.data))
        if len(self.bodies) <= self.failures:
            return Response("down", status=503)
        return Response("ok", status=200)


@pytest.mark.django_db
def test_webhook_delivery_is_retried_with_backoff_after_receiver_failed(
    httpserver, allow_private_urls
):
    # given a budget alert to a receiver that fails once
    receiver = _FlakyReceiver(httpserver, failures=1)
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails="", webhook_url=receiver.url)
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    delivery = alert.deliveries.get()

    # when the first attempt fails
    failed = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    # then the failure is kept and a retry is scheduled a minute later
    host = f"http://localhost:{httpserver.port}/…"
    assert failed.state == "retrying"
    assert failed.attempts == 1
    assert failed.last_error == f"{host} answered HTTP 503."
    assert "secret-path" not in failed.last_error
    assert failed.next_attempt_at == NOW + dt.timedelta(seconds=60)
    assert failed.target_label == host

    # when the retry run comes before and after the backoff
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(seconds=30)) == 0
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(seconds=61)) == 1

    # then the second attempt delivered the Slack-compatible payload
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("delivered", 2, "")
    assert len(receiver.bodies) == 2
    assert receiver.bodies[-1]["text"] == alert.message
    assert receiver.bodies[-1]["alert"]["percent"] == 50
    assert receiver.bodies[-1]["alert"]["tenant"] == tenant.slug


@pytest.mark.django_db
def test_failed_attempt_clears_its_claim_and_the_retry_delivers_the_alert_once(
    httpserver, allow_private_urls, monkeypatch
):
    # given a budget alert to a webhook receiver that fails once, then accepts
    receiver = _FlakyReceiver(httpserver, failures=1)
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails="", webhook_url=receiver.url)
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    delivery = alert.deliveries.get()
    # and the claim token each attempt holds in the database while it sends
    import usage.alerts

    send, claims = usage.alerts._send, []

    def send_recording_the_claim(sending):
        claims.append(AlertDelivery.objects.values_list("claim", flat=True).get(pk=sending.pk))
        return send(sending)

    monkeypatch.setattr(usage.alerts, "_send", send_recording_the_claim)

    # when the first attempt fails
    failed = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    # then it recorded its failure under its own claim, then cleared the token:
    # the delivery waits for its retry held by no attempt
    (first_claim,) = claims
    assert isinstance(first_claim, uuid.UUID)
    assert (failed.state, failed.attempts, failed.claim) == ("retrying", 1, None)
    assert failed.last_error.endswith("answered HTTP 503.")
    assert failed.next_attempt_at == NOW + dt.timedelta(seconds=60)
    assert not AlertDelivery.objects.filter(claim=first_claim).exists()

    # when the periodic run comes before the backoff, after it, and later again
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(seconds=30)) == 0
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(seconds=61)) == 1
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(hours=1)) == 0

    # then the retry sent it under a claim of its own, once, and cleared that one too
    assert len(claims) == 2 and claims[1] not in (None, first_claim)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("delivered", 2, "")
    assert delivery.claim is None
    assert [body["alert"]["id"] for body in receiver.bodies] == [alert.pk, alert.pk]
    # and an admin's retry finds nothing left to send
    assert alert_deliveries_retry(alerts=CostAlert.objects.filter(pk=alert.pk)) == (
        DeliveriesRetried(queued=0, sending=0)
    )
    assert alert_deliveries_send_due(now=timezone.now()) == 0
    assert len(receiver.bodies) == 2


@pytest.mark.django_db
def test_webhook_text_escapes_what_slack_would_read_as_markup(httpserver, allow_private_urls):
    # given a budget whose tenant and name hold "&", "<" and ">"
    receiver = _FlakyReceiver(httpserver, failures=0)
    tenant = TenantFactory(name="R&D")
    BudgetFactory(
        tenant=tenant,
        name="<!channel> <https://example.com|cap>",
        alert_percentages=[50],
        alert_emails="",
        webhook_url=receiver.url,
    )
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)

    # when the alert is delivered
    delivered = alert_delivery_attempt(delivery_id=alert.deliveries.get().pk, now=NOW)

    # then Slack shows the names as written: no @channel ping, no link
    assert delivered.state == "delivered"
    assert receiver.bodies[0]["text"] == (
        "R&amp;D: budget “&lt;!channel&gt; &lt;https://example.com|cap&gt;” (whole tenant, "
        "monthly 2026-06) has reached 50% of its $10.00 limit: $5.00 spent."
    )
    assert receiver.bodies[0]["alert"]["budget"] == "<!channel> <https://example.com|cap>"


@pytest.mark.django_db
def test_webhook_payload_gives_json_receivers_the_message_as_written(
    httpserver, allow_private_urls
):
    # given an unpriced-usage alert about a model whose name holds Slack markup
    receiver = _FlakyReceiver(httpserver, failures=0)
    tenant = TenantFactory(name="R&D")
    BudgetFactory(tenant=tenant, alert_percentages=[], alert_emails="", webhook_url=receiver.url)
    config = ProviderConfigFactory(tenant=tenant, name="local")
    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        model_requested="<!here> & co",
        cost_usd=None,
        price_source=CallLog.PriceSource.UNKNOWN,
        created_at=NOW - dt.timedelta(minutes=10),
    )
    _aggregate()
    (alert,) = unpriced_usage_check(now=NOW)

    # when it is delivered
    delivered = alert_delivery_attempt(delivery_id=alert.deliveries.get().pk, now=NOW)

    # then Slack's `text` is escaped, and the alert's message is there as written
    assert delivered.state == "delivered"
    (body,) = receiver.bodies
    assert body["text"].startswith("R&amp;D: 1 request to model “&lt;!here&gt; &amp; co”")
    assert body["alert"]["message"] == alert.message
    assert body["alert"]["message"].startswith("R&D: 1 request to model “<!here> & co”")
    assert (body["alert"]["kind"], body["alert"]["budget"]) == ("unpriced", None)


@pytest.mark.django_db
def test_webhook_payload_writes_a_zero_spend_as_a_plain_decimal(httpserver, allow_private_urls):
    # given a $1 daily blocking budget with nothing spent, which refused a call that
    # could have cost $2: its 100 % alert says it refuses calls, at a spend of $0
    receiver = _FlakyReceiver(httpserver, failures=0)
    now = timezone.now()
    tenant = TenantFactory(name="Acme")
    _daily_cap_refused_a_call(tenant, now=now, limit="1", spent="0", amount="2")
    budget = Budget.objects.get(tenant=tenant)
    budget.alert_emails = ""
    budget.webhook_url = receiver.url
    budget.save()
    (alert,) = budget_thresholds_check(now=now)
    assert (alert.percent, alert.spend_usd) == (100, Decimal(0))

    # when it is delivered
    delivered = alert_delivery_attempt(delivery_id=alert.deliveries.get().pk, now=now)

    # then the amounts are decimal strings a receiver can read, never "0E-12"
    assert delivered.state == "delivered"
    (body,) = receiver.bodies
    assert (body["alert"]["spend_usd"], body["alert"]["limit_usd"]) == (
        "0.000000000000",
        "1.0000",
    )
    assert Decimal(body["alert"]["spend_usd"]) == 0


@pytest.mark.django_db
def test_email_and_webhook_of_one_alert_are_retried_apart_and_never_resend_each_other(
    httpserver, allow_private_urls, settings, monkeypatch
):
    # given a budget alerting by email and by a webhook whose receiver is down once
    receiver = _FlakyReceiver(httpserver, failures=1)
    tenant = TenantFactory()
    BudgetFactory(
        tenant=tenant,
        alert_percentages=[50],
        alert_emails="ops@example.com",
        webhook_url=receiver.url,
    )
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    email = alert.deliveries.get(channel=AlertDelivery.Channel.EMAIL)
    webhook = alert.deliveries.get(channel=AlertDelivery.Channel.WEBHOOK)

    # when the first run sends both: the email goes, the webhook fails
    assert alert_deliveries_send_due(now=NOW) == 1
    assert len(mail.outbox) == 1
    webhook.refresh_from_db()
    assert (webhook.state, webhook.attempts) == ("retrying", 1)

    # and the worker sending the webhook again stops right after the receiver took it
    import usage.alerts

    recorded = usage.alerts._delivered_record

    def stopped(delivery, **kwargs):
        raise SystemExit(1)

    monkeypatch.setattr(usage.alerts, "_delivered_record", stopped)
    retry_at = webhook.next_attempt_at
    with pytest.raises(SystemExit):
        alert_deliveries_send_due(now=retry_at)
    monkeypatch.setattr(usage.alerts, "_delivered_record", recorded)

    # then the attempt stays counted and claimed, and the email is not sent again
    webhook.refresh_from_db()
    assert webhook.attempts == 2
    assert webhook.last_error == AlertDelivery.NO_OUTCOME
    assert alert_deliveries_send_due(now=retry_at) == 0
    assert len(receiver.bodies) == 2
    assert len(mail.outbox) == 1

    # and once the claim expires the webhook alone is sent again (at least once:
    # the receiver can tell the repeat by the alert's id)
    assert alert_deliveries_send_due(now=webhook.next_attempt_at) == 1
    assert [body["alert"]["id"] for body in receiver.bodies] == [alert.pk] * 3
    webhook.refresh_from_db()
    email.refresh_from_db()
    assert (webhook.state, webhook.attempts, webhook.last_error) == ("delivered", 3, "")
    assert (email.state, email.attempts, email.last_error) == ("delivered", 1, "")
    assert len(mail.outbox) == 1

    # and an admin's retry of the alert sends neither again
    retried = alert_deliveries_retry(alerts=CostAlert.objects.filter(pk=alert.pk))
    assert retried == DeliveriesRetried(queued=0, sending=0)
    assert alert_deliveries_send_due(now=timezone.now()) == 0
    assert (len(receiver.bodies), len(mail.outbox)) == (3, 1)


@pytest.mark.django_db
def test_webhook_delivery_gives_up_after_max_attempts_until_retried_in_the_admin(
    httpserver, allow_private_urls, settings
):
    # given a webhook receiver that fails three times
    settings.USAGE_ALERT_MAX_ATTEMPTS = 2
    receiver = _FlakyReceiver(httpserver, failures=3)
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails="", webhook_url=receiver.url)
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    delivery = alert.deliveries.get()

    # when both attempts fail, the delivery gives up and keeps its error
    alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)
    final = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW + dt.timedelta(hours=1))

    assert (final.state, final.attempts, final.next_attempt_at) == ("failed", 2, None)
    assert final.last_error.endswith("answered HTTP 503.")
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(days=1)) == 0
    assert len(receiver.bodies) == 2

    # when an admin retries it and the receiver fails once more, it is retried
    # later rather than given up, and delivered
    assert alert_deliveries_retry(
        alerts=CostAlert.objects.filter(pk=alert.pk)
    ) == DeliveriesRetried(queued=1, sending=0)
    third = alert_delivery_attempt(delivery_id=delivery.pk, now=timezone.now())
    assert (third.state, third.attempts) == ("retrying", 1)
    fourth = alert_delivery_attempt(delivery_id=delivery.pk, now=third.next_attempt_at)
    assert (fourth.state, fourth.attempts) == ("delivered", 2)
    assert len(receiver.bodies) == 4


@pytest.mark.django_db
def test_webhook_delivery_refused_when_url_points_at_loopback(httpserver):
    # the budget was saved while private URLs were allowed; they no longer are
    tenant = TenantFactory()
    BudgetFactory(
        tenant=tenant,
        alert_percentages=[50],
        alert_emails="",
        webhook_url=httpserver.url_for("/hook").replace("localhost", "127.0.0.1"),
    )
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)

    result = alert_delivery_attempt(delivery_id=alert.deliveries.get().pk, now=NOW)

    assert result.state == "retrying"
    assert result.last_error.startswith(
        "The webhook URL points at a loopback address (127.0.0.1); webhook URLs must be public"
    )
    assert httpserver.log == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_one_alert_at_once_send_it_once(httpserver, allow_private_urls):
    # given a webhook delivery and a receiver that takes a moment to answer
    posts = []

    def slow(request):

        from werkzeug import Response

        posts.append(request.data)
        time.sleep(0.3)
        return Response("ok", status=200)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(slow)
    tenant = TenantFactory()
    BudgetFactory(
        tenant=tenant,
        alert_percentages=[50],
        alert_emails="",
        webhook_url=httpserver.url_for("/hook"),
    )
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    # (committed at once here, so the alert went out on commit: make it due again)
    alert.deliveries.update(delivered_at=None, attempts=0, next_attempt_at=NOW)
    posts.clear()
    delivery = alert.deliveries.get()
    barrier = threading.Barrier(4)
    outcomes = []

    def deliver():
        barrier.wait()
        try:
            outcomes.append(alert_delivery_attempt(delivery_id=delivery.pk, now=NOW))
        finally:
            connection.close()

    # when four workers attempt it at the same moment
    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then one sent it, the others found it claimed
    assert len(posts) == 1
    assert sorted(o.state for o in outcomes if o is not None) == ["delivered"]
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("delivered", 1)


@pytest.mark.django_db
def test_delivery_is_skipped_when_already_delivered():
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50])
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    delivery = alert.deliveries.get()
    alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    again = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW + dt.timedelta(hours=1))

    assert again is None
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_error_rate_alert_fires_once_per_window_when_provider_fails_often(settings):
    settings.USAGE_ERROR_RATE_THRESHOLD = 0.2
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 10
    tenant = TenantFactory(name="Acme")
    TenantMembershipFactory(tenant=tenant, user=UserFactory(email="ops@example.com"))
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    for index in range(10):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            status=CallLog.Status.ERROR if index < 3 else CallLog.Status.OK,
            created_at=NOW - dt.timedelta(minutes=2),
        )

    first = error_rates_check(now=NOW)
    second = error_rates_check(now=NOW + dt.timedelta(minutes=1))

    assert len(first) == 1 and second == []
    alert = first[0]
    assert alert.kind == CostAlert.Kind.ERROR_RATE
    assert alert.provider_config == config
    assert alert.percent == 30
    assert alert.message == (
        "Acme: provider “openai-main” failed 3 of 10 calls (30%) in the last 15 minutes, "
        "above the 20% alert threshold."
    )
    # No budget names recipients, so the tenant's admins are told.
    assert alert.deliveries.get().target_label == "ops@example.com"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("threshold", "errors", "total", "shown"),
    [
        # a threshold with a fraction of a percent is written as set, not rounded away
        (0.025, 3, 100, "failed 3 of 100 calls (3%) in the last 15 minutes, above the 2.5%"),
        # a rate just above the threshold is not written as the threshold itself
        (0.2, 41, 200, "failed 41 of 200 calls (20.5%) in the last 15 minutes, above the 20%"),
        (0.2, 2001, 10000, "calls (20.01%) in the last 15 minutes, above the 20%"),
        (0.5, 249, 250, "failed 249 of 250 calls (99%) in the last 15 minutes, above the 50%"),
    ],
)
def test_error_rate_alert_writes_rate_and_threshold_so_the_rate_reads_above_it(
    settings, threshold, errors, total, shown
):
    settings.USAGE_ERROR_RATE_THRESHOLD = threshold
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 10
    tenant = TenantFactory(name="Acme")
    TenantMembershipFactory(tenant=tenant, user=UserFactory(email="ops@example.com"))
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    CallLogFactory.create_batch(
        errors,
        tenant=tenant,
        provider_config=config,
        status=CallLog.Status.ERROR,
        created_at=NOW - dt.timedelta(minutes=2),
    )
    CallLogFactory.create_batch(
        total - errors,
        tenant=tenant,
        provider_config=config,
        status=CallLog.Status.OK,
        created_at=NOW - dt.timedelta(minutes=2),
    )

    (alert,) = error_rates_check(now=NOW)

    assert shown in alert.message
    assert alert.message.endswith(" alert threshold.")


@pytest.mark.django_db
def test_error_rate_alert_of_a_rate_just_under_all_says_at_least_not_every(
    settings, django_capture_on_commit_callbacks
):
    # given a one-minute window in which 249 of 250 calls failed
    settings.USAGE_ERROR_RATE_WINDOW_MINUTES = 1
    tenant = TenantFactory(name="Acme")
    TenantMembershipFactory(tenant=tenant, user=UserFactory(email="ops@example.com"))
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    for status, count in ((CallLog.Status.ERROR, 249), (CallLog.Status.OK, 1)):
        CallLogFactory.create_batch(
            count, tenant=tenant, provider_config=config, status=status,
            created_at=NOW - dt.timedelta(seconds=30),
        )  # fmt: skip

    with django_capture_on_commit_callbacks(execute=True):
        (alert,) = error_rates_check(now=NOW)

    # then nothing reads 100%: the percentage is rounded down, the subject says "at least"
    assert alert.percent == 99
    assert "failed 249 of 250 calls (99%) in the last minute, above" in alert.message
    assert [m.subject for m in mail.outbox] == [
        "[LLM usage] Acme: provider “openai-main” failed at least 99% of calls"
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_error_rate_checks_alert_once_per_window(settings):
    # given a provider failing about half its calls, spread over the window
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 5
    tenant = TenantFactory()
    TenantMembershipFactory(tenant=tenant, user=UserFactory(email="ops@example.com"))
    config = ProviderConfigFactory(tenant=tenant)
    for minutes in range(1, 15):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            status=CallLog.Status.ERROR if minutes % 2 else CallLog.Status.OK,
            created_at=NOW - dt.timedelta(minutes=minutes, seconds=30),
        )
    barrier = threading.Barrier(6)
    errors = []

    def check(offset_minutes):
        barrier.wait()
        try:
            # each sees a slightly different share of errors, in the same window
            error_rates_check(now=NOW + dt.timedelta(minutes=offset_minutes))
        except Exception as exc:  # any error fails the test below
            errors.append(exc)
        finally:
            connection.close()

    # when six checks run at once
    threads = [threading.Thread(target=check, args=(offset,)) for offset in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then the window has one alert, told once
    assert errors == []
    assert list(CostAlert.objects.values_list("period_key", flat=True)) == ["2026-06-15T12:00Z"]
    assert AlertDelivery.objects.count() == 1


@pytest.mark.django_db
def test_error_rate_does_not_alert_below_minimum_requests(settings):
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 20
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    for _ in range(5):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            status=CallLog.Status.ERROR,
            created_at=NOW - dt.timedelta(minutes=1),
        )

    assert error_rates_check(now=NOW) == []


@pytest.mark.django_db
def test_error_rate_does_not_count_errors_caused_by_the_callers_requests(settings):
    # given a provider that answers every request, 12 of 20 with the caller's fault
    settings.USAGE_ERROR_RATE_THRESHOLD = 0.2
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 10
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    codes = ["context_too_long", "provider_bad_request", "content_refused"] * 4
    for code in codes:
        CallLogFactory(
            tenant=tenant, provider_config=config, status=CallLog.Status.ERROR, error_code=code,
            created_at=NOW - dt.timedelta(minutes=1),
        )  # fmt: skip
    for _ in range(8):
        CallLogFactory(
            tenant=tenant, provider_config=config, created_at=NOW - dt.timedelta(minutes=1)
        )

    # then it is not failing; one timeout in 21 attempts (5%) stays under the threshold
    assert error_rates_check(now=NOW) == []
    CallLogFactory(
        tenant=tenant, provider_config=config, status=CallLog.Status.ERROR,
        error_code="provider_timeout", created_at=NOW - dt.timedelta(minutes=1),
    )  # fmt: skip
    assert error_rates_check(now=NOW) == []
    assert provider_error_rates(now=NOW, tenant=tenant) == [(tenant.pk, config.pk, 21, 1)]


@pytest.mark.django_db
def test_error_rate_does_not_count_calls_interrupted_on_our_side(settings):
    # given a deploy that cut off 15 of 20 calls mid-flight (worker shutdown)
    settings.USAGE_ERROR_RATE_THRESHOLD = 0.2
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 10
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    for _ in range(15):
        CallLogFactory(
            tenant=tenant, provider_config=config, status=CallLog.Status.ERROR,
            error_code="interrupted", created_at=NOW - dt.timedelta(minutes=1),
        )  # fmt: skip
    for _ in range(5):
        CallLogFactory(
            tenant=tenant, provider_config=config, created_at=NOW - dt.timedelta(minutes=1)
        )

    # then the provider is not reported as failing
    assert provider_error_rates(now=NOW, tenant=tenant) == [(tenant.pk, config.pk, 20, 0)]
    assert error_rates_check(now=NOW) == []


@pytest.mark.django_db
def test_unpriced_usage_alerts_once_per_model_and_month():
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[], alert_emails="finance@example.com")
    config = ProviderConfigFactory(tenant=tenant, name="local-llm")
    for _ in range(3):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            model_requested="mystery-7b",
            cost_usd=None,
            price_source=CallLog.PriceSource.UNKNOWN,
            created_at=NOW - dt.timedelta(minutes=10),
        )
    _aggregate()

    first = unpriced_usage_check(now=NOW)
    second = unpriced_usage_check(now=NOW + dt.timedelta(hours=1))

    assert second == []
    (alert,) = first
    assert alert.kind == CostAlert.Kind.UNPRICED
    assert alert.period_key == "2026-06"
    assert alert.message == (
        "Acme: 3 requests to model “mystery-7b” on “local-llm” since 2026-06-15 have no "
        "known price, so their cost is unknown: costs shown leave them out (counted as "
        "unpriced, not as $0), and so do budgets. Add a model price for it."
    )
    assert alert.deliveries.get().target_label == "finance@example.com"


@pytest.mark.django_db
def test_unpriced_usage_of_the_longest_model_names_alerts_once_per_model():
    # given unpriced calls to two models whose names are as long as a call log keeps
    # (200 characters) and differ only in their last one, on the longest provider type
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[], alert_emails="finance@example.com")
    config = ProviderConfigFactory(
        tenant=tenant, name="gateway", provider_type="openai_compatible", api_key="sk-test-1234"
    )
    models = ["m" * 199 + "a", "m" * 199 + "b"]
    for model in models:
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            provider_type="openai_compatible",
            model_requested=model,
            cost_usd=None,
            price_source=CallLog.PriceSource.UNKNOWN,
            created_at=NOW - dt.timedelta(minutes=10),
        )
    _aggregate()

    # when the check runs, and again
    first = unpriced_usage_check(now=NOW)
    second = unpriced_usage_check(now=NOW + dt.timedelta(hours=1))

    # then each model has its alert, under its whole name, found again by the rerun
    assert second == []
    assert sorted(alert.subject_key for alert in first) == [
        f"{config.pk}/openai_compatible/{model}" for model in models
    ]
    assert CostAlert.objects.filter(tenant=tenant, kind=CostAlert.Kind.UNPRICED).count() == 2


def test_unpriced_usage_subject_key_column_holds_the_longest_key():
    # "<config id>/<provider type>/<model>" as long as DailyUsage can hold them: a key
    # cut to the column would not be found again, and two models sharing its start
    # would share one alert.
    longest = (
        len(str(uuid.UUID(int=0)))
        + 1
        + DailyUsage._meta.get_field("provider_type").max_length
        + 1
        + DailyUsage._meta.get_field("model").max_length
    )

    assert longest == 270
    assert CostAlert._meta.get_field("subject_key").max_length >= longest


@pytest.mark.django_db
def test_unpriced_usage_of_a_new_month_alerts_on_its_first_day():
    # given unpriced calls on June 30, already alerted for June, and more on July 1
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[], alert_emails="finance@example.com")
    config = ProviderConfigFactory(tenant=tenant, name="local-llm")
    june_30 = dt.datetime(2026, 6, 30, 20, 0, tzinfo=dt.UTC)
    july_1 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)

    def unpriced_call(moment):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            model_requested="mystery-7b",
            cost_usd=None,
            price_source=CallLog.PriceSource.UNKNOWN,
            created_at=moment,
        )

    unpriced_call(june_30)
    _aggregate(now=june_30)
    (june,) = unpriced_usage_check(now=june_30 + dt.timedelta(minutes=5))
    unpriced_call(july_1)
    unpriced_call(july_1)
    _aggregate(now=july_1)

    # when the checks run on July 1
    created = unpriced_usage_check(now=july_1 + dt.timedelta(minutes=5))

    # then July has its own alert, counting July's requests only
    assert june.period_key == "2026-06"
    (july,) = created
    assert july.period_key == "2026-07"
    assert july.message.startswith(
        "Acme: 2 requests to model “mystery-7b” on “local-llm” since 2026-07-01 have no"
    )
    assert june.message.startswith(
        "Acme: 1 request to model “mystery-7b” on “local-llm” since 2026-06-30 has no known "
        "price, so its cost is unknown"
    )


@pytest.mark.django_db
def test_budget_clean_refuses_private_webhook_bad_emails_and_percentages():
    tenant = TenantFactory()
    budget = Budget(
        tenant=tenant,
        name="b",
        limit_usd=Decimal("5"),
        alert_percentages=[50, "80"],
        alert_emails="ok@example.com, not-an-email",
        webhook_url="http://127.0.0.1:9000/hook",
    )

    with pytest.raises(ValidationError) as caught:
        budget.full_clean()

    errors = caught.value.message_dict
    assert errors["alert_percentages"] == [
        "Alert percentages must be whole numbers between 1 and 1000, e.g. 50, 80, 100."
    ]
    assert errors["alert_emails"] == ["Not valid email addresses: not-an-email."]
    assert errors["webhook_url"][0].startswith(
        "The webhook URL points at a loopback address (127.0.0.1)"
    )


@pytest.mark.django_db
def test_budget_webhook_url_is_stored_encrypted():
    budget = BudgetFactory(webhook_url="https://hooks.example.com/services/T0/B0/secret")

    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_url FROM usage_budget WHERE id = %s", [budget.pk])
        (stored,) = cursor.fetchone()

    assert "secret" not in stored
    assert Budget.objects.get(pk=budget.pk).webhook_url.endswith("/B0/secret")


@pytest.mark.django_db
def test_operational_alert_has_no_delivery_when_tenant_has_only_viewers():
    tenant = TenantFactory()
    TenantMembershipFactory(
        tenant=tenant,
        user=UserFactory(email="viewer@example.com"),
        role=TenantMembership.Role.VIEWER,
    )
    config = ProviderConfigFactory(tenant=tenant)
    for _ in range(25):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            status=CallLog.Status.ERROR,
            created_at=NOW - dt.timedelta(minutes=1),
        )

    (alert,) = error_rates_check(now=NOW)

    assert alert.deliveries.count() == 0


@pytest.mark.django_db
def test_unpriced_usage_check_skips_usage_of_a_tenant_deleted_since_it_was_read():
    # given unpriced usage of a tenant and rows of one deleted meanwhile (DailyUsage
    # keeps no database foreign key, so a delete racing the read leaves them for a moment)
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[], alert_emails="finance@example.com")
    CallLogFactory(
        tenant=tenant,
        model_requested="mystery-7b",
        cost_usd=None,
        price_source=CallLog.PriceSource.UNKNOWN,
        created_at=NOW - dt.timedelta(minutes=10),
    )
    _aggregate()
    gone = DailyUsage.objects.get()
    gone.pk, gone.tenant_id = None, uuid.uuid4()
    gone.save()

    # when / then: the living tenant is alerted, the vanished one skipped
    (alert,) = unpriced_usage_check(now=NOW)
    assert alert.tenant == tenant


@pytest.mark.django_db
def test_error_rate_check_skips_a_tenant_deleted_between_its_two_reads(settings, monkeypatch):
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 2
    kept, gone = TenantFactory(name="Kept"), TenantFactory(name="Gone")
    for tenant in (kept, gone):
        config = ProviderConfigFactory(tenant=tenant)
        for _ in range(2):
            CallLogFactory(
                tenant=tenant,
                provider_config=config,
                status=CallLog.Status.ERROR,
                created_at=NOW - dt.timedelta(minutes=2),
            )
    in_bulk = type(Tenant.objects).in_bulk

    def in_bulk_after_the_delete(manager, ids=None, **kwargs):
        return {k: v for k, v in in_bulk(manager, ids, **kwargs).items() if k != gone.pk}

    monkeypatch.setattr(type(Tenant.objects), "in_bulk", in_bulk_after_the_delete)

    (alert,) = error_rates_check(now=NOW)
    assert alert.tenant == kept


def _email_delivery(emails="ops@example.com", **budget):
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails=emails, **budget)
    _spend(tenant, "6.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    return alert.deliveries.get()


@pytest.mark.django_db
def test_delivery_that_fails_outside_the_send_is_counted_retried_and_given_up(settings, tmp_path):
    # given an email template that no longer renders (a bad override)
    settings.USAGE_ALERT_MAX_ATTEMPTS = 2
    (tmp_path / "usage").mkdir()
    (tmp_path / "usage" / "alert_email.txt").write_text("{{ alert.message|no_such_filter }}")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    delivery = _email_delivery()

    # when the delivery is attempted
    failed = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    # then the attempt is counted, says why, and is retried after the backoff
    assert mail.outbox == []
    assert (failed.state, failed.attempts) == ("retrying", 1)
    assert failed.last_error == "Not sent: the delivery failed unexpectedly (TemplateSyntaxError)."
    assert failed.next_attempt_at == NOW + dt.timedelta(seconds=60)

    # when the retry fails the same way, the delivery gives up
    final = alert_delivery_attempt(delivery_id=delivery.pk, now=failed.next_attempt_at)
    assert (final.state, final.attempts, final.next_attempt_at) == ("failed", 2, None)
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(days=1)) == 0


class DyingEmailBackend:
    """An email backend whose worker is stopped mid-send (nothing after it runs)."""

    def __init__(self, **kwargs):
        """Takes the backend options Django passes, and needs none."""

    def send_messages(self, messages):
        raise SystemExit(1)


@pytest.mark.django_db
def test_attempt_of_a_worker_stopped_mid_send_counts_once_its_claim_expires(settings):
    # given one attempt allowed and a worker that stops while sending
    settings.USAGE_ALERT_MAX_ATTEMPTS = 2
    settings.EMAIL_BACKEND = "tests.usage.test_alerts.DyingEmailBackend"
    delivery = _email_delivery()
    with pytest.raises(SystemExit):
        alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    # then the attempt is counted and says it recorded no outcome
    delivery.refresh_from_db()
    assert delivery.attempts == 1
    assert delivery.last_error == (
        "No outcome recorded: the attempt is still running or the worker stopped "
        "during it (see the worker's log)."
    )
    # and it is left alone while claimed, then attempted again
    assert alert_delivery_attempt(delivery_id=delivery.pk, now=NOW) is None
    later = delivery.next_attempt_at
    with pytest.raises(SystemExit):
        alert_delivery_attempt(delivery_id=delivery.pk, now=later)
    delivery.refresh_from_db()
    assert delivery.attempts == 2

    # when the last attempt's claim expires, the delivery is given up, not sent again
    assert alert_deliveries_send_due(now=delivery.next_attempt_at) == 0
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("failed", 2)
    assert delivery.last_error.startswith("No outcome recorded")

    # and an admin's retry starts a new series that can deliver it
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    alert_deliveries_retry(alerts=CostAlert.objects.filter(pk=delivery.alert_id))
    retried = alert_delivery_attempt(delivery_id=delivery.pk, now=timezone.now())
    assert (retried.state, retried.attempts) == ("delivered", 1)


class _StallingSmtpServer:
    """A loopback SMTP server that greets, then answers EHLO one line at a time for ever."""

    def __init__(self):
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        with client:
            try:
                client.sendall(b"220 stalling ESMTP\r\n")
                client.recv(1024)
                while not self.stop.wait(0.1):
                    client.sendall(b"250-still thinking\r\n")
            except OSError:
                return

    def close(self):
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def stalling_smtp():
    server = _StallingSmtpServer()
    yield server
    server.close()


@pytest.mark.django_db
def test_email_send_is_stopped_at_its_deadline_when_the_mail_server_stalls(settings, stalling_smtp):
    # given a mail server that answers every few moments, never finishing
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = stalling_smtp.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_TIMEOUT = 5
    settings.USAGE_ALERT_EMAIL_TIMEOUT_SECONDS = 1
    delivery = _email_delivery()

    # when the delivery is attempted
    started = dt.datetime.now(dt.UTC)
    failed = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)
    took = (dt.datetime.now(dt.UTC) - started).total_seconds()

    # then the send is given up at its deadline (each read came within EMAIL_TIMEOUT)
    assert took < 3
    assert (failed.state, failed.attempts) == ("retrying", 1)
    assert failed.last_error == "Email not sent: the mail server did not finish within 1 s."


@pytest.mark.django_db
def test_alert_email_refused_for_one_recipient_is_delivered_and_names_who_did_not_get_it(
    smtp_refusing_gone,
):
    # given a budget alert for three addresses, one of which the mail server refuses
    delivery = _email_delivery(emails="ops@example.com, gone@example.com, cfo@example.com")

    # when the delivery is attempted
    delivered = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    # then the other two got the alert ...
    [(recipients, text)] = smtp_refusing_gone.messages
    assert recipients == ["ops@example.com", "cfo@example.com"]
    assert "has reached 50%" in text
    # ... the delivery is done, saying who did not get it and why
    assert (delivered.state, delivered.attempts, delivered.next_attempt_at) == (
        "delivered",
        1,
        None,
    )
    assert delivered.last_error == (
        "Delivered, but the mail server refused 1 of 3 recipients: gone@example.com "
        "(550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown)."
    )
    # ... and it is not sent again to those who got it
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(days=1)) == 0
    assert smtp_refusing_gone.sessions == 1


@pytest.mark.django_db
def test_alert_email_refused_for_now_for_one_recipient_is_sent_to_them_again_later(
    settings, smtp_refusing_gone
):
    # given a budget alert for four addresses: the mail server refuses
    # busy@example.com for now (450) and gone@example.com for good (550)
    settings.USAGE_ALERT_RETRY_BASE_SECONDS = 60
    delivery = _email_delivery(
        emails="ops@example.com, busy@example.com, gone@example.com, cfo@example.com"
    )

    # when the delivery is attempted
    delivered = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    # then the two others got the alert, and the delivery is done, saying who did not
    [(recipients, _)] = smtp_refusing_gone.messages
    assert recipients == ["ops@example.com", "cfo@example.com"]
    assert (delivered.state, delivered.attempts) == ("delivered", 1)
    assert delivered.last_error == (
        "Delivered, but the mail server refused 2 of 4 recipients: busy@example.com "
        "(450 4.2.0 <busy@example.com>: Recipient address rejected: Greylisted, try again "
        "later); gone@example.com (550 5.1.1 <gone@example.com>: Recipient address "
        "rejected: User unknown). Those refused for now (4xx) get it in a new delivery."
    )
    # ... and a new delivery of the alert, to busy@example.com alone, waits for its backoff
    retry = AlertDelivery.objects.exclude(pk=delivery.pk).get()
    assert (retry.alert_id, retry.channel, retry.target, retry.target_label) == (
        delivery.alert_id,
        "email",
        "busy@example.com",
        "busy@example.com",
    )
    assert (retry.state, retry.attempts, retry.next_attempt_at) == (
        "retrying",
        0,
        NOW + dt.timedelta(seconds=60),
    )
    assert retry.last_error == (
        "Waiting to send again: the mail server refused these recipients for now "
        "(4xx) when the alert was first sent."
    )
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(seconds=59)) == 0
    assert len(smtp_refusing_gone.messages) == 1

    # when its retry comes due
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(seconds=60)) == 1

    # then busy@example.com got it once, and no one else got it again
    assert [r for r, _ in smtp_refusing_gone.messages] == [
        ["ops@example.com", "cfo@example.com"],
        ["busy@example.com"],
    ]
    retry.refresh_from_db()
    assert (retry.state, retry.attempts, retry.last_error) == ("delivered", 1, "")
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(days=1)) == 0
    assert AlertDelivery.objects.count() == 2
    assert smtp_refusing_gone.sessions == 2


@pytest.mark.django_db
def test_alert_email_to_recipients_all_accepted_is_delivered_with_no_note(smtp_refusing_gone):
    delivery = _email_delivery(emails="ops@example.com, cfo@example.com")

    delivered = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    [(recipients, _)] = smtp_refusing_gone.messages
    assert recipients == ["ops@example.com", "cfo@example.com"]
    assert (delivered.state, delivered.last_error) == ("delivered", "")


@pytest.mark.django_db
def test_alert_email_refused_for_every_recipient_is_retried(smtp_refusing_gone):
    delivery = _email_delivery(emails="gone@example.com")

    failed = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    assert smtp_refusing_gone.messages == []
    assert (failed.state, failed.attempts) == ("retrying", 1)
    assert failed.last_error.startswith("Email not sent: SMTPRecipientsRefused:")


class ClaimRecordingBackend:
    """An email backend that records how long the delivery being sent is claimed."""

    claims = []

    def __init__(self, **kwargs):
        """Takes the backend options Django passes, and needs none."""

    def send_messages(self, messages):
        delivery = AlertDelivery.objects.get()
        type(self).claims.append(delivery.next_attempt_at - timezone.now())
        return len(messages)


@pytest.mark.django_db
def test_delivery_is_claimed_for_longer_than_its_send_may_take(settings):
    settings.EMAIL_BACKEND = "tests.usage.test_alerts.ClaimRecordingBackend"
    settings.USAGE_ALERT_EMAIL_TIMEOUT_SECONDS = 300
    ClaimRecordingBackend.claims.clear()
    delivery = _email_delivery()

    delivered = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    assert delivered.state == "delivered"
    (claim,) = ClaimRecordingBackend.claims
    assert claim > dt.timedelta(seconds=300)


class _HoldingReceiver:
    """A threaded loopback webhook receiver that holds every answer until released."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.arrived = threading.Event()
        self.release = threading.Event()
        upstream.set_default(self._answer)
        self.url = f"{upstream.url}/hooks/T000/secret-path"

    def _answer(self, request):
        self.arrived.set()
        self.release.wait(10)
        return Reply(status=200, body=b"ok")

    @property
    def posts(self):
        return [r for r in self.upstream.requests if r.method == "POST"]


@pytest.fixture
def holding_receiver():
    with LoopbackUpstream() as upstream:
        receiver = _HoldingReceiver(upstream)
        yield receiver
        receiver.release.set()


def _webhook_delivery_due(receiver):
    """A budget alert's webhook delivery, not yet attempted, due now."""
    receiver.release.set()
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails="", webhook_url=receiver.url)
    _spend(tenant, "5.00", created_at=timezone.now())
    _aggregate(now=timezone.now())
    (alert,) = budget_thresholds_check(now=timezone.now())
    # (committed at once here, so the alert went out on commit: make it due again)
    alert.deliveries.update(delivered_at=None, attempts=0, last_error="", next_attempt_at=NOW)
    receiver.upstream.requests.clear()
    receiver.arrived.clear()
    receiver.release.clear()
    return alert.deliveries.get()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_retries_of_a_delivery_being_sent_do_not_send_it_again(
    holding_receiver, allow_private_urls
):
    # given a webhook delivery a worker is sending, its receiver not yet answering
    delivery = _webhook_delivery_due(holding_receiver)
    alerts = CostAlert.objects.filter(pk=delivery.alert_id)
    outcomes = {}

    def run(name, work):
        try:
            outcomes[name] = work()
        finally:
            connection.close()

    worker = threading.Thread(
        target=run, args=("worker", lambda: alert_delivery_attempt(delivery_id=delivery.pk))
    )
    worker.start()
    assert holding_receiver.arrived.wait(5)

    # when two admins retry it and the periodic run comes, all at the same moment
    barrier = threading.Barrier(3)

    def at_once(work):
        def go():
            barrier.wait()
            return work()

        return go

    others = [
        threading.Thread(
            target=run, args=(f"retry{i}", at_once(lambda: alert_deliveries_retry(alerts=alerts)))
        )
        for i in range(2)
    ] + [threading.Thread(target=run, args=("beat", at_once(lambda: alert_deliveries_send_due())))]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(3)
    holding_receiver.release.set()
    for thread in [worker, *others]:
        thread.join(10)

    # then the receiver got one POST, and each retry said the delivery is being sent
    assert len(holding_receiver.posts) == 1
    assert outcomes["retry0"] == outcomes["retry1"] == DeliveriesRetried(queued=0, sending=1)
    assert outcomes["beat"] == 0
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("delivered", 1, "")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_queued_send_its_broker_redelivery_and_the_periodic_run_at_once_send_each_channel_once(
    holding_receiver, allow_private_urls
):
    # given an alert by email and webhook, whose queued sends a worker runs while the
    # broker hands one of them out again and the periodic run comes, all at once
    from usage.tasks import send_alert_delivery, send_due_alert_deliveries

    webhook = _webhook_delivery_due(holding_receiver)
    Budget.objects.filter(pk=webhook.alert.budget_id).update(alert_emails="ops@example.com")
    email = AlertDelivery.objects.create(
        alert=webhook.alert,
        channel=AlertDelivery.Channel.EMAIL,
        target="ops@example.com",
        target_label="ops@example.com",
        next_attempt_at=NOW,
        created_at=NOW,
    )
    mail.outbox.clear()
    barrier = threading.Barrier(4)
    states = []

    def run(task, *args):
        def go():
            try:
                barrier.wait()
                states.append(task.apply(args=args).state)
            finally:
                connection.close()

        return threading.Thread(target=go)

    threads = [
        run(send_alert_delivery, webhook.pk),
        run(send_alert_delivery, webhook.pk),
        run(send_alert_delivery, email.pk),
        run(send_due_alert_deliveries),
    ]
    for thread in threads:
        thread.start()
    # (the receiver holds the POST that went out while the others run)
    assert holding_receiver.arrived.wait(5)
    for thread in threads:
        thread.join(3)
    holding_receiver.release.set()
    for thread in threads:
        thread.join(10)

    # then every task ran to its end, the receiver got one POST and the recipients
    # one email, both recorded once
    assert states == ["SUCCESS"] * 4
    assert len(holding_receiver.posts) == 1
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]
    webhook.refresh_from_db()
    email.refresh_from_db()
    assert (webhook.state, webhook.attempts, webhook.last_error) == ("delivered", 1, "")
    assert (email.state, email.attempts, email.last_error) == ("delivered", 1, "")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_a_failed_delivery_send_it_once(holding_receiver, allow_private_urls):
    # given a webhook delivery that gave up
    delivery = _webhook_delivery_due(holding_receiver)
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=None, attempts=24, last_error="down"
    )
    holding_receiver.release.set()
    alerts = CostAlert.objects.filter(pk=delivery.alert_id)
    barrier = threading.Barrier(4)
    outcomes = []

    def retry():
        barrier.wait()
        try:
            outcomes.append(alert_deliveries_retry(alerts=alerts))
        finally:
            connection.close()

    def beat():
        barrier.wait()
        try:
            alert_deliveries_send_due()
        finally:
            connection.close()

    # when three admins retry it while the periodic run comes
    threads = [threading.Thread(target=retry) for _ in range(3)] + [threading.Thread(target=beat)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)

    # then it is sent once
    assert len(holding_receiver.posts) == 1
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("delivered", 1)
    assert sum(o.queued for o in outcomes) >= 1


@pytest.mark.django_db
def test_retry_leaves_a_delivery_being_sent_alone_and_retries_it_once_its_claim_expired(
    settings, django_capture_on_commit_callbacks
):
    # given an email delivery whose worker stopped mid-send, its claim still running
    settings.EMAIL_BACKEND = "tests.usage.test_alerts.DyingEmailBackend"
    delivery = _email_delivery()
    with pytest.raises(SystemExit):
        alert_delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    claimed_until = delivery.next_attempt_at
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    alerts = CostAlert.objects.filter(pk=delivery.alert_id)

    # when an admin retries it, the claim is left as it is and nothing is sent
    with django_capture_on_commit_callbacks(execute=True):
        assert alert_deliveries_retry(alerts=alerts) == DeliveriesRetried(queued=0, sending=1)
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.next_attempt_at) == (1, claimed_until)
    assert delivery.state == "sending"
    assert mail.outbox == []

    # when the claim has expired (the worker is gone), it is retrying, and a retry sends it
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )
    delivery.refresh_from_db()
    assert delivery.state == "retrying"
    with django_capture_on_commit_callbacks(execute=True):
        assert alert_deliveries_retry(alerts=alerts) == DeliveriesRetried(queued=1, sending=0)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("delivered", 2)
    assert len(mail.outbox) == 1


class TenantDeletingBackend:
    """An email backend during whose send the tenant named "Doomed" is deleted."""

    sent = []

    def __init__(self, **kwargs):
        """Takes the backend options Django passes, and needs none."""

    def send_messages(self, messages):
        Tenant.objects.filter(name="Doomed").delete()
        type(self).sent.extend(messages)
        return len(messages)


@pytest.mark.django_db
def test_periodic_run_goes_on_when_a_tenant_is_deleted_while_its_alert_is_sent(settings):
    # given two tenants' alert emails due, the first of whose tenant is deleted mid-send
    settings.EMAIL_BACKEND = "tests.usage.test_alerts.TenantDeletingBackend"
    TenantDeletingBackend.sent.clear()
    doomed = TenantFactory(name="Doomed")
    other = TenantFactory(name="Other")
    for tenant in (doomed, other):
        BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails="ops@example.com")
        _spend(tenant, "6.00")
    _aggregate()
    budget_thresholds_check(now=NOW)
    AlertDelivery.objects.filter(alert__tenant=doomed).update(
        next_attempt_at=NOW - dt.timedelta(minutes=1)
    )

    # when the periodic run sends them
    delivered = alert_deliveries_send_due(now=NOW)

    # then the other tenant's alert went out and is recorded, in the same run
    assert [m.subject.split(":")[0] for m in TenantDeletingBackend.sent] == [
        "[LLM usage] Doomed",
        "[LLM usage] Other",
    ]
    assert delivered == 1
    assert not AlertDelivery.objects.filter(alert__tenant_id=doomed.pk).exists()
    assert AlertDelivery.objects.get(alert__tenant=other).state == "delivered"


class SlowBackend:
    """An email backend whose mail server takes 1.2 s to take each message, on
    the clock the periodic run reads (`clock`, see slow_mail), not the machine's."""

    sent = []
    clock = [0.0]

    def __init__(self, **kwargs):
        """Takes the backend options Django passes, and needs none."""

    def send_messages(self, messages):
        type(self).clock[0] += 1.2
        type(self).sent.extend(messages)
        return len(messages)


@pytest.fixture
def slow_mail(settings, monkeypatch):
    """Alert emails sent through SlowBackend, whose clock the periodic run reads."""
    settings.EMAIL_BACKEND = "tests.usage.test_alerts.SlowBackend"
    SlowBackend.sent.clear()
    SlowBackend.clock[0] = 1000.0

    def monotonic():
        # Time passes between two readings, however fast the code between them.
        SlowBackend.clock[0] += 0.001
        return SlowBackend.clock[0]

    monkeypatch.setattr("usage.alerts.time", types.SimpleNamespace(monotonic=monotonic))
    return SlowBackend


def _tenants_alerting(*names):
    for name in names:
        tenant = TenantFactory(name=name)
        BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails="ops@example.com")
        _spend(tenant, "6.00")
    _aggregate()
    budget_thresholds_check(now=NOW)


@pytest.mark.django_db
def test_periodic_run_starts_no_delivery_that_might_outlast_the_task_time_limit(
    settings, slow_mail
):
    # given three tenants' alert emails due, each taking 1.2 s to send, and a task
    # time limit that leaves 2 s to start attempts in: an attempt may take the
    # email's 2 s and a minute to record its outcome, 62 of the limit's 64 s
    settings.USAGE_ALERT_EMAIL_TIMEOUT_SECONDS = 2.0
    settings.USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS = 1.0
    settings.CELERY_TASK_TIME_LIMIT = 64
    _tenants_alerting("First", "Second", "Third")

    # when the periodic run sends them
    delivered = alert_deliveries_send_due(now=NOW)

    # then it sent two (at 0 and 1.2 s), and left the third (2.4 s), unclaimed
    # and unattempted, to the next run
    assert delivered == 2
    assert len(slow_mail.sent) == 2
    left = AlertDelivery.objects.get(delivered_at__isnull=True)
    assert (left.attempts, left.next_attempt_at is not None, left.claim) == (0, True, None)
    assert alert_deliveries_send_due(now=NOW + dt.timedelta(minutes=1)) == 1
    assert len(slow_mail.sent) == 3


@pytest.mark.django_db
def test_periodic_run_sends_one_delivery_at_the_least_time_limit_the_settings_accept(
    settings, slow_mail
):
    # given the least task time limit the settings accept beside the default
    # timeouts (an email's 60 s and a minute), which leaves no time to start a
    # second attempt in, and two tenants' alert emails due
    settings.USAGE_ALERT_EMAIL_TIMEOUT_SECONDS = 60.0
    settings.USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS = 5.0
    settings.CELERY_TASK_TIME_LIMIT = 120
    assert settings_conflicts({name: getattr(settings, name) for name in RULED}) == []
    _tenants_alerting("First", "Second")

    # when the periodic run sends them, twice
    first = alert_deliveries_send_due(now=NOW)
    second = alert_deliveries_send_due(now=NOW + dt.timedelta(minutes=1))

    # then each run sent one: the first attempt of a run always starts
    assert (first, second) == (1, 1)
    assert len(slow_mail.sent) == 2
    assert not AlertDelivery.objects.filter(delivered_at__isnull=True).exists()


@pytest.mark.django_db
def test_budget_alert_webhook_goes_to_the_url_the_budget_has_when_it_is_sent(
    httpserver, allow_private_urls, raw_column
):
    # given a budget alert whose webhook failed because the URL was wrong
    httpserver.expect_request("/hooks/old", method="POST").respond_with_data("gone", status=404)
    httpserver.expect_request("/hooks/new", method="POST").respond_with_data("ok", status=200)
    tenant = TenantFactory()
    budget = BudgetFactory(
        tenant=tenant,
        alert_percentages=[50],
        alert_emails="",
        webhook_url=httpserver.url_for("/hooks/old"),
    )
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    delivery = alert.deliveries.get()
    failed = alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)
    assert failed.last_error.endswith("answered HTTP 404.")

    # when the budget's URL is corrected before the retry
    budget.webhook_url = httpserver.url_for("/hooks/new")
    budget.save()
    retried = alert_delivery_attempt(delivery_id=delivery.pk, now=failed.next_attempt_at)

    # then the retry posts to the corrected URL, and the delivery records it
    assert retried.state == "delivered"
    assert [r.path for r, _ in httpserver.log] == ["/hooks/old", "/hooks/new"]
    assert retried.target == httpserver.url_for("/hooks/new")
    assert "/hooks/" not in raw_column(retried, "target")


@pytest.mark.django_db
def test_budget_alert_webhook_is_not_sent_once_the_budget_has_no_webhook(
    httpserver, allow_private_urls
):
    # given a budget alert not yet sent, whose budget's webhook was then removed
    httpserver.expect_request("/hooks/old", method="POST").respond_with_data("ok", status=200)
    tenant = TenantFactory()
    budget = BudgetFactory(
        tenant=tenant,
        alert_percentages=[50],
        alert_emails="",
        webhook_url=httpserver.url_for("/hooks/old"),
    )
    _spend(tenant, "5.00")
    _aggregate()
    (alert,) = budget_thresholds_check(now=NOW)
    budget.webhook_url = ""
    budget.save()

    # when it is attempted
    result = alert_delivery_attempt(delivery_id=alert.deliveries.get().pk, now=NOW)

    # then nothing is posted, and the delivery says why
    assert httpserver.log == []
    assert result.state == "retrying"
    assert result.last_error == (
        "Not sent: the budget no longer has a webhook URL. Set one on the budget to send it."
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("bulk", [False, True], ids=["one", "bulk"])
def test_budget_alert_racing_its_tenants_delete_leaves_the_delete_whole(bulk):
    # given a tenant over half its budget, and another tenant over half its own
    gone, kept = TenantFactory(name="Gone"), TenantFactory(name="Kept")
    BudgetFactory(tenant=gone, alert_percentages=[50])
    kept_budget = BudgetFactory(tenant=kept, alert_percentages=[50])
    _spend(gone, "6.00")
    _spend(kept, "6.00")
    _aggregate()

    # when the alert check runs while a superuser deletes the first tenant
    outcome = tenant_deleted_while(gone, lambda: budget_thresholds_check(now=NOW), bulk=bulk)

    # then the delete succeeds and takes everything of the tenant ...
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert outcome["deleted"]
    assert not Tenant.objects.filter(pk=gone.pk).exists()
    assert not CostAlert.objects.filter(tenant_id=gone.pk).exists()
    # ... and the other tenant is alerted
    assert "work_error" not in outcome, outcome.get("work_error")
    assert [(a.budget_id, a.percent) for a in CostAlert.objects.all()] == [(kept_budget.pk, 50)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_error_rate_alert_racing_its_tenants_delete_leaves_the_delete_whole(settings):
    # given two tenants whose providers fail often
    settings.USAGE_ERROR_RATE_THRESHOLD = 0.2
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 2
    gone, kept = TenantFactory(name="Gone"), TenantFactory(name="Kept")
    for tenant in (gone, kept):
        TenantMembershipFactory(tenant=tenant, user=UserFactory())
        CallLogFactory.create_batch(
            3,
            tenant=tenant,
            provider_config=ProviderConfigFactory(tenant=tenant),
            status=CallLog.Status.ERROR,
            created_at=NOW - dt.timedelta(minutes=1),
        )

    # when the error-rate check runs while a superuser deletes the first tenant
    outcome = tenant_deleted_while(gone, lambda: error_rates_check(now=NOW), bulk=False)

    # then the delete succeeds, and the other tenant's alert is not lost with it
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert not Tenant.objects.filter(pk=gone.pk).exists()
    assert "work_error" not in outcome, outcome.get("work_error")
    assert [a.tenant_id for a in outcome["result"]] == [kept.pk]
    assert [a.tenant_id for a in CostAlert.objects.all()] == [kept.pk]


class ScriptedEmailBackend:
    """An email backend whose sends do, in turn, what `script` says: each step runs
    while its send is under way, then the email goes out, or the step raises and
    the send fails."""

    script = []
    sent = []

    def __init__(self, **kwargs):
        """Takes the backend options Django passes, and needs none."""

    def send_messages(self, messages):
        step = type(self).script.pop(0)
        step()
        type(self).sent.extend(messages)
        return len(messages)


def _send_fails(reason):
    def step():
        raise smtplib.SMTPServerDisconnected(reason)

    return step


def _send_goes_out():
    return None


def _scripted_email_delivery(settings, script):
    """An email delivery due at NOW, whose sends follow `script`."""
    delivery = _email_delivery()
    # (committed at once here, so the alert went out on commit: make it due again)
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        delivered_at=None, attempts=0, last_error="", next_attempt_at=NOW
    )
    settings.EMAIL_BACKEND = "tests.usage.test_alerts.ScriptedEmailBackend"
    ScriptedEmailBackend.sent.clear()
    ScriptedEmailBackend.script[:] = script
    return delivery


# The second worker comes an hour later: the first one's claim has long expired.
_LATER = dt.timedelta(hours=1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first", ["sent", "failed"])
@pytest.mark.parametrize("second", ["sent", "failed"])
def test_worker_stalled_past_its_claim_never_overwrites_the_outcome_of_the_attempt_after_it(
    settings, first, second
):
    # given an email delivery whose first worker stalls mid-send past its claim,
    # while a second worker attempts it, on its own connection, and records its outcome
    later = timezone.now() + _LATER
    second_recorded = {}

    def second_worker():
        thread_run(lambda: alert_delivery_attempt(delivery_id=delivery.pk, now=later))
        second_recorded.update(AlertDelivery.objects.filter(pk=delivery.pk).values().get())
        if first == "failed":
            _send_fails("first worker: connection lost")()

    delivery = _scripted_email_delivery(
        settings,
        [
            second_worker,
            _send_fails("second worker: connection lost") if second == "failed" else _send_goes_out,
        ],
    )

    # when the first worker wakes up and records its outcome, after the second's
    alert_delivery_attempt(delivery_id=delivery.pk, now=NOW)

    # then the second attempt's outcome stands; a send of the first that went out is
    # recorded only on a delivery not recorded delivered yet, and no attempt is uncounted
    delivery.refresh_from_db()
    assert len(ScriptedEmailBackend.sent) == [first, second].count("sent")
    final = (
        delivery.attempts,
        delivery.last_error,
        delivery.next_attempt_at,
        delivery.delivered_at is not None,
    )
    if second == "sent":
        assert final == (2, "", None, True)
        assert delivery.delivered_at == second_recorded["delivered_at"]
    elif first == "sent":
        assert final == (2, "", None, True)
    else:
        assert final == (
            2,
            "Email not sent: SMTPServerDisconnected: second worker: connection lost",
            later + dt.timedelta(seconds=120),
            False,
        )
        assert delivery.state == "retrying"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_stalled_workers_send_recorded_meanwhile_is_not_undone_by_the_attempt_after_it(settings):
    # given an email delivery whose first worker stalls mid-send past its claim,
    # and a second worker that claims it meanwhile
    first_sending, first_goes_on = threading.Event(), threading.Event()

    def first_send():
        first_sending.set()
        assert first_goes_on.wait(10)

    def second_send():
        # when the first worker's send goes out and is recorded while the second sends ...
        first_goes_on.set()
        first.join(10)
        assert not first.is_alive()
        # ... and the second worker's send then fails
        raise smtplib.SMTPServerDisconnected("second worker: connection lost")

    delivery = _scripted_email_delivery(settings, [first_send, second_send])
    first = thread_start(lambda: alert_delivery_attempt(delivery_id=delivery.pk, now=NOW))
    assert first_sending.wait(10)
    alert_delivery_attempt(delivery_id=delivery.pk, now=timezone.now() + _LATER)

    # then the delivery stays delivered, by the first worker's send, both attempts counted
    assert first.failures == []
    delivery.refresh_from_db()
    assert len(ScriptedEmailBackend.sent) == 1
    assert (delivery.state, delivery.attempts, delivery.last_error, delivery.next_attempt_at) == (
        "delivered",
        2,
        "",
        None,
    )


def _unpriced_call(tenant, config, created_at, model="mystery-7b"):
    return CallLogFactory(
        tenant=tenant,
        provider_config=config,
        model_requested=model,
        cost_usd=None,
        price_source=CallLog.PriceSource.UNKNOWN,
        created_at=created_at,
    )


@pytest.mark.django_db
def test_unpriced_usage_of_a_late_log_for_an_older_day_alerts_once():
    # given a checked aggregation, then a call log arriving late for a day five days back
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[], alert_emails="finance@example.com")
    config = ProviderConfigFactory(tenant=tenant, name="local-llm")
    CallLogFactory(tenant=tenant, provider_config=config, created_at=NOW - dt.timedelta(minutes=5))
    daily_usage_recompute_recent(now=NOW)
    assert unpriced_usage_check(now=NOW) == []
    _unpriced_call(tenant, config, dt.datetime(2026, 6, 10, 9, 0, tzinfo=dt.UTC))
    later = NOW + dt.timedelta(minutes=5)
    daily_usage_recompute_recent(now=later)

    # when the check follows the aggregation, and runs again
    created = unpriced_usage_check(now=later + dt.timedelta(seconds=30))
    rerun = unpriced_usage_check(now=later + dt.timedelta(minutes=5))

    # then the older day's unpriced request is alerted once, for its month
    (alert,) = created
    assert rerun == []
    assert (alert.period_key, alert.subject_key) == ("2026-06", f"{config.pk}/fake/mystery-7b")
    assert alert.message.startswith(
        "Acme: 1 request to model “mystery-7b” on “local-llm” since 2026-06-10 has no known "
        "price, so its cost is unknown"
    )
    assert CostAlert.objects.filter(tenant=tenant, kind=CostAlert.Kind.UNPRICED).count() == 1


@pytest.mark.django_db
def test_unpriced_usage_of_a_late_log_for_an_alerted_model_and_month_does_not_alert_again():
    # given unpriced usage alerted this month, then a late log of the same model days back
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[], alert_emails="finance@example.com")
    config = ProviderConfigFactory(tenant=tenant, name="local-llm")
    _unpriced_call(tenant, config, NOW - dt.timedelta(minutes=5))
    daily_usage_recompute_recent(now=NOW)
    (first,) = unpriced_usage_check(now=NOW)
    _unpriced_call(tenant, config, dt.datetime(2026, 6, 3, 9, 0, tzinfo=dt.UTC))
    later = NOW + dt.timedelta(minutes=5)
    daily_usage_recompute_recent(now=later)

    # when / then: the month's alert for the model stands for it
    assert unpriced_usage_check(now=later) == []
    assert list(CostAlert.objects.filter(kind=CostAlert.Kind.UNPRICED)) == [first]


def _unpriced_check_queries(idle_tenants):
    """The queries of one check that alerts one tenant, beside `idle_tenants` without
    unpriced usage (each with a provider config and priced usage)."""
    for index in range(idle_tenants):
        idle = TenantFactory(name=f"Idle {index}")
        CallLogFactory(
            tenant=idle,
            provider_config=ProviderConfigFactory(tenant=idle),
            created_at=NOW - dt.timedelta(minutes=10),
        )
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, alert_percentages=[], alert_emails="finance@example.com")
    _unpriced_call(
        tenant,
        ProviderConfigFactory(tenant=tenant, name="local-llm"),
        NOW - dt.timedelta(minutes=10),
    )
    _aggregate()
    with CaptureQueriesContext(connection) as queries:
        (alert,) = unpriced_usage_check(now=NOW)
    assert alert.tenant == tenant
    return [query["sql"] for query in queries]


@pytest.mark.django_db
def test_unpriced_usage_check_reads_only_tenants_and_configs_with_unpriced_usage():
    # given 40 tenants with provider configs and priced usage, and one with unpriced usage
    sql = _unpriced_check_queries(idle_tenants=40)

    # then no query reads every tenant or every provider config
    tables = ('"llm_providers_tenant"', '"llm_providers_providerconfig"')
    unfiltered = [s for s in sql if any(f"FROM {t}" in s for t in tables) and "WHERE" not in s]
    assert unfiltered == []


@pytest.mark.django_db
@pytest.mark.parametrize("idle_tenants", [1, 40])
def test_unpriced_usage_check_queries_do_not_grow_with_tenants_without_unpriced_usage(
    idle_tenants,
):
    # the check's state and the retention horizon, the usage read (names joined), its
    # existing alert, the recipients, the alert and its delivery (with their locks
    # and savepoint), and the check's state written: as many for 1 idle tenant as for 40
    assert len(_unpriced_check_queries(idle_tenants=idle_tenants)) == 15
