"""Usage admin: tenant scoping, read-only large tables without full counts, budgets, dashboard."""

import datetime as dt
import re
import uuid
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from llm_providers.models import TenantMembership
from tests.factories import (
    AlertDeliveryFactory,
    BudgetFactory,
    CallLogFactory,
    CostAlertFactory,
    DailyUsageFactory,
    ProviderConfigFactory,
    TenantFactory,
    TenantMembershipFactory,
    UserFactory,
)
from tests.usage.priced_groups import priced_groups_log
from usage.admin import BudgetAdmin
from usage.aggregation import daily_usage_recompute
from usage.alerts import alert_delivery_attempt, alerts_check
from usage.models import AlertDelivery, Budget, CallLog, CostAlert, DailyUsage
from usage.tasks import refresh_tenant_usage


def _member(tenant, role=TenantMembership.Role.ADMIN):
    return TenantMembershipFactory(tenant=tenant, role=role).user


def _aggregate_today():
    today = timezone.now().date()
    daily_usage_recompute(first_day=today - dt.timedelta(days=31), last_day=today)


# --- dashboard -----------------------------------------------------------------


@pytest.mark.django_db
def test_dashboard_shows_costs_budgets_breakdowns_alerts_and_warnings(client, settings):
    # given a tenant with spend on two services, a budget, an alert, unpriced and failing calls
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 4
    tenant = TenantFactory(name="Acme")
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    recent = timezone.now() - dt.timedelta(minutes=1)
    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        service_name="summarizer",
        customer_id="globex",
        model_requested="gpt-4o",
        cost_usd=Decimal("1.25"),
        created_at=recent,
    )
    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        service_name="translator",
        cost_usd=Decimal("0.25"),
        created_at=recent,
    )
    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        model_requested="mystery-7b",
        cost_usd=None,
        price_source=CallLog.PriceSource.UNKNOWN,
        created_at=recent,
    )
    for _ in range(3):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            status=CallLog.Status.ERROR,
            cost_usd=None,
            price_source="none",
            created_at=recent,
        )
    for status in (CallLog.Status.BLOCKED, CallLog.Status.BLOCKED, CallLog.Status.CACHED):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            status=status,
            cost_usd=Decimal(0) if status == CallLog.Status.CACHED else None,
            price_source="none",
            created_at=recent,
        )
    BudgetFactory(
        tenant=tenant, name="Monthly cap", limit_usd=Decimal("10"), alert_percentages=[10]
    )
    _aggregate_today()
    alerts_check()
    client.force_login(_member(tenant))

    # when
    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then
    assert response.status_code == 200
    html = response.content.decode()
    assert '<strong title="$1.50">$1.50</strong> spent' in html
    # Every attempt, and what became of those that got no answer from a provider.
    assert "<strong>9</strong> requests" in html
    assert "<strong>3</strong> errors" in html
    assert "<strong>2</strong> refused (budget or rate limit)" in html
    assert "<strong>1</strong> from the response cache" in html
    assert html.count("<svg") >= 6  # daily chart, four breakdowns, one budget gauge
    assert "cdn" not in html.lower() and '<script src="http' not in html
    assert "Monthly cap" in html and '<span title="$1.50">$1.50</span>' in html
    assert "<td>$10.00</td>" in html
    assert "15%" in html
    assert "openai-main" in html and "summarizer" in html and "translator" in html
    assert "globex" in html and "gpt-4o" in html
    assert "mystery-7b on openai-main: 1 request" in html
    assert "Provider “openai-main” failed 3 of 6 calls" in html
    alert = CostAlert.objects.get(kind=CostAlert.Kind.BUDGET)
    assert alert.message in html
    assert "Email: pending" in html


@pytest.mark.django_db
def test_dashboard_warns_of_no_failing_provider_below_the_alert_minimum(client, settings):
    # given one failed call of two, where an alert needs at least 20 attempts
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 20
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    recent = timezone.now() - dt.timedelta(minutes=1)
    CallLogFactory(tenant=tenant, provider_config=config, created_at=recent)
    CallLogFactory(
        tenant=tenant, provider_config=config, status=CallLog.Status.ERROR, created_at=recent
    )
    client.force_login(_member(tenant))

    # when the dashboard is opened
    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then it says nothing of an error rate the alerts would not report either
    assert response.status_code == 200
    assert "failed 1 of 2 calls" not in response.content.decode()
    assert alerts_check() == []


@pytest.mark.django_db
def test_dashboard_counts_one_request_and_one_error_in_the_singular(client):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, status=CallLog.Status.ERROR, cost_usd=None, price_source="none")
    _aggregate_today()
    client.force_login(_member(tenant))

    html = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk])).content

    text = html.decode()
    assert "<strong>1</strong> request</span>" in text
    assert "<strong>1</strong> error</span>" in text


@pytest.mark.django_db
def test_dashboard_writes_an_error_rate_as_the_alert_does_never_rounded_up(client, settings):
    # given 199 failed calls of 200 in a one-minute window
    settings.USAGE_ERROR_RATE_MIN_REQUESTS = 20
    settings.USAGE_ERROR_RATE_WINDOW_MINUTES = 1
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    recent = timezone.now() - dt.timedelta(seconds=10)
    CallLogFactory(tenant=tenant, provider_config=config, created_at=recent)
    CallLogFactory.create_batch(
        199,
        tenant=tenant,
        provider_config=config,
        status=CallLog.Status.ERROR,
        cost_usd=None,
        price_source="none",
        created_at=recent,
    )
    client.force_login(_member(tenant))

    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then rounded down as the alert writes it, not a rounded 100% that would
    # read as every call failing
    assert "failed 199 of 200 calls in the last minute (99%)" in response.content.decode()


@pytest.mark.django_db
def test_dashboard_of_another_tenant_is_not_found(client):
    mine, theirs = TenantFactory(), TenantFactory(name="Secret Corp")
    client.force_login(_member(mine))

    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[theirs.pk]))

    assert response.status_code == 404
    assert "Secret Corp" not in response.content.decode()


@pytest.mark.django_db
def test_dashboard_index_redirects_a_single_tenant_member_to_its_dashboard(client):
    tenant = TenantFactory()
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    response = client.get(reverse("admin:usage_usagedashboard_changelist"))

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk])


@pytest.mark.django_db
def test_dashboard_index_lists_only_the_users_tenants(client):
    first, second = TenantFactory(name="Alpha"), TenantFactory(name="Beta")
    TenantFactory(name="Gamma")
    user = _member(first)
    TenantMembershipFactory(user=user, tenant=second)
    client.force_login(user)

    response = client.get(reverse("admin:usage_usagedashboard_changelist"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Alpha" in html and "Beta" in html and "Gamma" not in html


@pytest.mark.django_db
def test_dashboard_recompute_button_aggregates_for_tenant_admin(client):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, created_at=timezone.now() - dt.timedelta(minutes=1))
    client.force_login(_member(tenant))

    response = client.post(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    assert response.status_code == 302
    assert DailyUsage.objects.filter(tenant=tenant).count() == 1


@pytest.fixture
def broker_down():
    """Queuing a task fails as Celery fails when its Redis broker refuses connections."""
    refused = KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    with mock.patch.object(refresh_tenant_usage, "delay", side_effect=refused):
        yield


@pytest.mark.django_db
def test_dashboard_recompute_with_the_broker_down_says_so(client, settings, broker_down):
    # given a tenant admin, and no broker to queue the recompute on
    settings.CELERY_TASK_ALWAYS_EAGER = False
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, created_at=timezone.now() - dt.timedelta(minutes=1))
    client.force_login(_member(tenant))
    url = reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk])

    # when the button is pressed
    response = client.post(url, follow=True)

    # then the page comes back with the reason, nothing recomputed
    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "The task queue cannot be reached, so nothing was recomputed; the figures are those "
        "of the last aggregation. Try again once the broker is back."
    ]
    assert DailyUsage.objects.count() == 0


@pytest.mark.django_db
def test_dashboard_rolls_up_recent_call_logs_when_nothing_runs_on_a_schedule(client, settings):
    # given the embedded default: tasks run eagerly, no beat
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant = TenantFactory(timezone="Asia/Tokyo")
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.123400"))
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when a viewer opens the dashboard
    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then today's call is in it
    assert response.status_code == 200
    assert DailyUsage.objects.get(tenant=tenant).cost_usd == Decimal("0.123400")
    html = response.content.decode()
    assert "$0.1234" in html
    assert "Figures include every call until now" in html


@pytest.mark.django_db
def test_dashboard_rolls_up_calls_of_days_before_yesterday_when_nothing_runs_on_a_schedule(
    client, settings
):
    # given the embedded default, and calls made three days ago that no page
    # or recompute has rolled up since
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant = TenantFactory(timezone="Asia/Tokyo")
    three_days_ago = timezone.now() - dt.timedelta(days=3)
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.123400"), created_at=three_days_ago)
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.000100"))
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when the dashboard opens, saying it includes every call until now
    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then those calls are in it too
    html = response.content.decode()
    assert "Figures include every call until now" in html
    day = three_days_ago.astimezone(ZoneInfo("Asia/Tokyo")).date()
    assert DailyUsage.objects.get(tenant=tenant, day=day).cost_usd == Decimal("0.123400")
    assert "$0.1235" in html


@pytest.mark.django_db
def test_dashboard_finishes_a_recount_in_a_new_time_zone_when_nothing_runs_on_a_schedule(
    client, settings, django_capture_on_commit_callbacks
):
    # given the embedded default, and a call three days ago at 23:00 in London
    # counted in London days
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant = TenantFactory(timezone="Europe/London")
    day = timezone.now().astimezone(ZoneInfo("Europe/London")).date() - dt.timedelta(days=3)
    late_evening = dt.datetime.combine(day, dt.time(23), tzinfo=ZoneInfo("Europe/London"))
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.5"), created_at=late_evening)
    daily_usage_recompute(first_day=day, last_day=day, tenant=tenant)
    # and a move to Tokyo whose recount, queued on commit, did not run
    with django_capture_on_commit_callbacks(execute=False):
        tenant.timezone = "Asia/Tokyo"
        tenant.save()
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when the dashboard opens
    client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then the call is on its Tokyo day only (the next morning there)
    assert list(DailyUsage.objects.filter(tenant=tenant).values_list("day", "cost_usd")) == [
        (day + dt.timedelta(days=1), Decimal("0.5"))
    ]


@pytest.mark.django_db
def test_dashboard_checks_alerts_after_its_roll_up_when_nothing_runs_on_a_schedule(
    client, settings
):
    # given the embedded default, and an alert-only $10 budget that today's
    # calls have taken past 50 % and 80 %
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, name="monthly", alert_emails="")
    CallLogFactory(tenant=tenant, cost_usd=Decimal("8.5000"))
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when the dashboard opens, rolling the calls up as the scheduled aggregation would
    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then the alerts that follow an aggregation are there too, on the page and in the list
    assert sorted(CostAlert.objects.filter(tenant=tenant).values_list("percent", flat=True)) == [
        50,
        80,
    ]
    html = response.content.decode()
    assert "No alert yet." not in html
    assert "has reached 80% of its $10" in html


@pytest.mark.django_db
def test_dashboard_leaves_aggregation_to_beat_when_a_worker_runs(client, settings):
    settings.USAGE_ROLL_UP_ON_READ = False
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant)
    client.force_login(_member(tenant))

    client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    assert DailyUsage.objects.count() == 0


@pytest.mark.django_db
def test_dashboard_recompute_is_refused_to_a_viewer(client):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant)
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    response = client.post(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    assert response.status_code == 403
    assert DailyUsage.objects.count() == 0


@pytest.mark.django_db
def test_dashboard_shows_unpriced_usage_as_unknown_cost_not_zero(client):
    # given a tenant whose only usage is a model without a known price
    tenant = TenantFactory(name="Acme")
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        model_requested="mystery-7b",
        cost_usd=None,
        price_source=CallLog.PriceSource.UNKNOWN,
        created_at=timezone.now() - dt.timedelta(minutes=1),
    )
    _aggregate_today()
    client.force_login(_member(tenant))

    # when
    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then its cost is unknown, as in the API, not $0
    html = response.content.decode()
    assert "<strong>cost unknown</strong>" in html
    assert "$0.00 (1 request)" not in html
    assert f"{timezone.now().date()}: unpriced (1 request)" in html
    assert "mystery-7b: unpriced (1 request)" in html


@pytest.mark.django_db
def test_dashboard_budget_percentage_is_the_share_reached_as_alerts_count_it(client):
    # given a budget at 99.96 % of its limit: under it, its 100 % alert not due
    tenant = TenantFactory(name="Acme")
    CallLogFactory(
        tenant=tenant,
        cost_usd=Decimal("9.996"),
        created_at=timezone.now() - dt.timedelta(minutes=1),
    )
    BudgetFactory(tenant=tenant, name="Cap", limit_usd=Decimal("10"), alert_percentages=[100])
    _aggregate_today()
    alerts_check()
    client.force_login(_member(tenant))

    # when
    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then it reads 99 %, not a rounded 100 % next to a bar that is not full
    html = response.content.decode()
    assert not CostAlert.objects.exists()
    assert "<title>99% of the limit</title>" in html and " 99%</td>" in html
    assert "100% of the limit" not in html and " 100%</td>" not in html


@pytest.mark.django_db
def test_dashboard_writes_a_budgets_spend_precisely_enough_to_compare_with_its_limit(client):
    # given $0.000034 spent of a $0.0001 budget, and $9.9961 of one of $10.005
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.000034"))
    BudgetFactory(tenant=tenant, name="Tiny", limit_usd=Decimal("0.0001"), alert_percentages=[])
    other = TenantFactory()
    CallLogFactory(tenant=other, cost_usd=Decimal("9.9961"))
    BudgetFactory(tenant=other, name="Odd", limit_usd=Decimal("10.005"), alert_percentages=[])
    _aggregate_today()
    client.force_login(_member(tenant))
    client_other = type(client)()
    client_other.force_login(_member(other))

    # when
    tiny = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))
    odd = client_other.get(reverse("admin:usage_usagedashboard_tenant", args=[other.pk]))

    # then the spend reads in the limit's terms, and the limit as set
    tiny_html, odd_html = tiny.content.decode(), odd.content.decode()
    assert '<td><span title="$0.000034">$0.000034</span>' in tiny_html
    assert " 34%</td>\n          <td>$0.0001</td>" in tiny_html
    assert '<td><span title="$9.9961">$9.996</span>' in odd_html
    assert " 99%</td>\n          <td>$10.005</td>" in odd_html


@pytest.mark.django_db
def test_budget_list_shows_a_limit_as_set(client):
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, limit_usd=Decimal("10.005"))
    client.force_login(_member(tenant))

    html = client.get(reverse("admin:usage_budget_changelist")).content.decode()

    assert '<td class="field-limit">$10.005</td>' in html


# --- call logs and daily usage ---------------------------------------------------


@pytest.mark.django_db
def test_call_log_list_and_page_show_times_in_utc_as_the_day_filter_counts(client):
    # given a call at 17:51:03 UTC, seen by a member of a tenant in Paris
    tenant = TenantFactory(timezone="Europe/Paris")
    log = CallLogFactory(
        tenant=tenant, created_at=dt.datetime(2026, 11, 22, 17, 51, 3, tzinfo=dt.UTC)
    )
    client.force_login(_member(tenant))

    # when
    listed = client.get(reverse("admin:usage_calllog_changelist")).content.decode()
    page = client.get(reverse("admin:usage_calllog_change", args=[log.pk])).content.decode()

    # then both say the zone, the one the "day (UTC)" filter counts in
    assert '">Time (UTC)</a></div>' in listed
    assert ">2026-11-22 17:51:03 UTC</a>" in listed
    assert "By time (UTC)" in listed and "By day (UTC, YYYY-MM-DD)" in listed
    assert "<label>Time (UTC):</label>" in page
    assert '<div class="readonly">2026-11-22 17:51:03 UTC</div>' in page
    assert "p.m." not in listed and "p.m." not in page


@pytest.mark.django_db
def test_cost_alert_list_and_page_show_times_in_utc(client):
    # given an alert of 09:05 UTC whose email went out at 09:06:30 UTC
    tenant = TenantFactory(timezone="America/New_York")
    alert = CostAlertFactory(
        tenant=tenant, created_at=dt.datetime(2026, 11, 22, 9, 5, tzinfo=dt.UTC)
    )
    AlertDeliveryFactory(
        alert=alert,
        delivered_at=dt.datetime(2026, 11, 22, 9, 6, 30, tzinfo=dt.UTC),
        next_attempt_at=None,
    )
    AlertDeliveryFactory(
        alert=alert,
        target="ops@example.com",
        target_label="ops@example.com",
        next_attempt_at=dt.datetime(2026, 11, 22, 9, 15, tzinfo=dt.UTC),
    )
    client.force_login(_member(tenant))

    # when
    listed = client.get(reverse("admin:usage_costalert_changelist")).content.decode()
    page = client.get(reverse("admin:usage_costalert_change", args=[alert.pk])).content.decode()

    # then
    assert "Time (UTC)</a>" in listed and ">2026-11-22 09:05:00 UTC</a>" in listed
    assert "By time (UTC)" in listed
    assert '<div class="readonly">2026-11-22 09:05:00 UTC</div>' in page
    assert "Next attempt (UTC)" in page and "Delivered (UTC)" in page
    assert "<p>2026-11-22 09:06:30 UTC</p>" in page
    assert "<p>2026-11-22 09:15:00 UTC</p>" in page
    assert "a.m." not in listed and "a.m." not in page


@pytest.mark.django_db
def test_daily_usage_page_shows_its_update_time_in_utc(client):
    # given a day of usage last updated at 22:55:07 UTC, seen by a member of a tenant in Tokyo
    tenant = TenantFactory(timezone="Asia/Tokyo")
    row = DailyUsageFactory(
        tenant=tenant, updated_at=dt.datetime(2026, 11, 22, 22, 55, 7, tzinfo=dt.UTC)
    )
    client.force_login(_member(tenant))

    # when
    page = client.get(reverse("admin:usage_dailyusage_change", args=[row.pk])).content.decode()

    # then the time names its zone, as on the call log and alert pages
    assert "<label>Updated (UTC):</label>" in page
    assert '<div class="readonly">2026-11-22 22:55:07 UTC</div>' in page
    assert "p.m." not in page


@pytest.mark.django_db
def test_call_log_list_shows_only_the_users_tenants(client):
    mine, theirs = TenantFactory(), TenantFactory()
    own = CallLogFactory(tenant=mine, service_name="own-service")
    CallLogFactory(tenant=theirs, service_name="their-service")
    client.force_login(_member(mine, role=TenantMembership.Role.VIEWER))

    response = client.get(reverse("admin:usage_calllog_changelist"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "own-service" in html and "their-service" not in html
    detail = client.get(reverse("admin:usage_calllog_change", args=[own.pk]))
    assert detail.status_code == 200
    other = CallLog.objects.get(tenant=theirs)
    assert client.get(reverse("admin:usage_calllog_change", args=[other.pk])).status_code == 302


@pytest.mark.django_db
def test_daily_usage_list_names_a_deleted_provider_config_as_the_dashboard_does(client):
    # given a day recomputed since its config was deleted, and one counted before
    tenant = TenantFactory()
    gone = ProviderConfigFactory(tenant=tenant, provider_type="fake")
    DailyUsageFactory(tenant=tenant, provider_config=None, provider_type="fake", model="m1")
    DailyUsageFactory(tenant=tenant, provider_config=gone, provider_type="fake", model="m2")
    gone.delete()
    client.force_login(_member(tenant))

    # when
    html = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()

    # then both read as the deleted config they came from
    assert html.count("(deleted) fake") == 2
    assert "(none)" not in html


@pytest.mark.django_db
def test_call_log_list_filters_by_status_service_customer_model_provider_and_day(client):
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    when = dt.datetime(2026, 6, 15, 10, tzinfo=dt.UTC)
    wanted = CallLogFactory(
        tenant=tenant,
        provider_config=config,
        status=CallLog.Status.ERROR,
        service_name="svc-a",
        customer_id="cust-a",
        model_requested="model-a",
        created_at=when,
    )
    CallLogFactory(tenant=tenant, provider_config=config, service_name="svc-a", created_at=when)
    CallLogFactory(tenant=tenant, status=CallLog.Status.ERROR, service_name="svc-b")
    client.force_login(_member(tenant))

    response = client.get(
        reverse("admin:usage_calllog_changelist"),
        {
            "status__exact": "error",
            "service": "svc-a",
            "customer": "cust-a",
            "model": "model-a",
            "provider": str(config.pk),
            "day": "2026-06-15",
        },
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert re.findall(r"/admin/usage/calllog/(\d+)/change/", html) == [str(wanted.pk)]


@pytest.mark.django_db
def test_call_log_day_filter_on_the_last_day_of_the_calendar_lists_nothing_not_an_error(client):
    # given a call log today
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant)
    client.force_login(_member(tenant))

    # when the day filter names 9999-12-31, whose next day does not exist
    response = client.get(reverse("admin:usage_calllog_changelist"), {"day": "9999-12-31"})

    # then the list is shown, empty, rather than a server error
    assert response.status_code == 200
    assert re.findall(r"/admin/usage/calllog/(\d+)/change/", response.content.decode()) == []


def _messages(response):
    return [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
def test_call_log_day_filter_that_is_not_a_day_says_how_to_write_it(client):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant)
    client.force_login(_member(tenant))

    response = client.get(reverse("admin:usage_calllog_changelist"), {"day": "15/06/2026"})

    assert response.status_code == 200
    assert _messages(response) == ["“15/06/2026” is not a day; write it as YYYY-MM-DD."]
    assert re.findall(r"/admin/usage/calllog/(\d+)/change/", response.content.decode()) == []


@pytest.mark.django_db
@pytest.mark.parametrize("parameter", ["status", "status__exact"])
def test_call_log_status_filter_that_is_no_status_says_which_there_are(client, parameter):
    # given a tenant's call log
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant)
    client.force_login(_member(tenant))

    # when the status filter names a status that does not exist
    response = client.get(reverse("admin:usage_calllog_changelist"), {parameter: "bogus"})

    # then the list says so, as it does for a day that is not a day, and lists nothing
    assert response.status_code == 200
    assert _messages(response) == [
        "“bogus” is not a status; choose one of: OK, Error, Blocked, Cached."
    ]
    assert re.findall(r"/admin/usage/calllog/(\d+)/change/", response.content.decode()) == []


@pytest.mark.django_db
def test_call_log_status_filter_with_a_status_lists_its_calls_without_a_message(client):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant)
    failed = CallLogFactory(tenant=tenant, status=CallLog.Status.ERROR)
    client.force_login(_member(tenant))

    response = client.get(reverse("admin:usage_calllog_changelist"), {"status": "error"})

    assert _messages(response) == []
    assert re.findall(r"/admin/usage/calllog/(\d+)/change/", response.content.decode()) == [
        str(failed.pk)
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["not-a-uuid", "other-tenant"])
def test_call_log_provider_filter_that_is_none_of_the_users_configs_says_so(client, value):
    # given a tenant's call log, and another tenant's provider config
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, provider_config=ProviderConfigFactory(tenant=tenant))
    other = ProviderConfigFactory(tenant=TenantFactory())
    value = str(other.pk) if value == "other-tenant" else value
    client.force_login(_member(tenant))

    # when the provider filter names no provider config the user sees
    response = client.get(reverse("admin:usage_calllog_changelist"), {"provider": value})

    # then the list says so and lists nothing (nor the other tenant's calls)
    assert response.status_code == 200
    assert _messages(response) == [
        f"“{value}” is not one of the provider configs listed under “By provider”."
    ]
    assert re.findall(r"/admin/usage/calllog/(\d+)/change/", response.content.decode()) == []


@pytest.mark.django_db
def test_call_log_search_finds_a_request_by_id(client):
    tenant = TenantFactory()
    wanted = CallLogFactory(tenant=tenant)
    CallLogFactory(tenant=tenant)
    client.force_login(_member(tenant))

    response = client.get(reverse("admin:usage_calllog_changelist"), {"q": str(wanted.request_id)})

    assert re.findall(r"/admin/usage/calllog/(\d+)/change/", response.content.decode()) == [
        str(wanted.pk)
    ]


_WANTED_REQUEST = uuid.UUID("1f0c3a7e-4b2d-4e6f-8a1b-2c3d4e5f6a7b")


def _call_log_ids(response) -> list[str]:
    return re.findall(r"/admin/usage/calllog/(\d+)/change/", response.content.decode())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("1f0c", {"wanted", "below", "above"}),
        ("1F0C3A7E", {"wanted", "below", "above"}),
        ("1f0c3a7e-", {"wanted", "below", "above"}),
        ("1f0c3a7e-4b", {"wanted", "below", "above"}),
        ("1f0c3a7e4b2d", {"wanted", "below", "above"}),
        (" 1f0c3a7e-4b2d-4e6f-8a1b-2c3d4e5f6a7 ", {"wanted", "below", "above"}),
        ("1f0c3a7e-4b2d-4e6f-8a1b-2c3d4e5f6a7b", {"wanted"}),
        ("1f0c3a7e4b2d4e6f8a1b2c3d4e5f6a7b", {"wanted"}),
    ],
)
def test_call_log_search_finds_the_requests_whose_id_starts_with_the_term(client, term, expected):
    # given the two attempts of a request, requests whose ids sort right beside
    # its, and requests right outside the shortest prefix searched ("1f0c")
    tenant = TenantFactory()
    ids = {
        "wanted": _WANTED_REQUEST,
        "below": uuid.UUID("1f0c3a7e-4b2d-4e6f-8a1b-2c3d4e5f6a7a"),
        "above": uuid.UUID("1f0c3a7e-4b2d-4e6f-8a1b-2c3d4e5f6a7c"),
        "outside below": uuid.UUID("1f0b" + "f" * 28),
        "outside above": uuid.UUID("1f0d" + "0" * 28),
    }
    rows = {
        label: [CallLogFactory(tenant=tenant, request_id=value)] for label, value in ids.items()
    }
    rows["wanted"].append(CallLogFactory(tenant=tenant, request_id=_WANTED_REQUEST, attempt=2))
    client.force_login(_member(tenant))

    # when the list is searched
    response = client.get(reverse("admin:usage_calllog_changelist"), {"q": term})

    # then it lists every attempt of the requests whose id starts so, and no other
    assert _messages(response) == []
    assert sorted(_call_log_ids(response)) == sorted(
        str(log.pk) for label in expected for log in rows[label]
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "term",
    ["1f0", "1f0c3a7-e", "1f0c3a7e-4b2d-4e6f-8a1b-2c3d4e5f6a7b0", "1f0c3a7g", "summarizer"],
)
def test_call_log_search_for_what_cannot_start_a_request_id_says_what_it_takes(client, term):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, request_id=_WANTED_REQUEST)
    client.force_login(_member(tenant))

    response = client.get(reverse("admin:usage_calllog_changelist"), {"q": term})

    assert _messages(response) == [
        f"“{term}” is not a request id, nor how one starts: a request id is a UUID (32 "
        "hexadecimal digits, with or without dashes), searched by at least its first 4."
    ]
    assert _call_log_ids(response) == []


@pytest.mark.django_db
def test_call_log_search_by_how_an_id_starts_stays_within_the_users_tenants(client):
    tenant, other = TenantFactory(), TenantFactory()
    own = CallLogFactory(tenant=tenant, request_id=_WANTED_REQUEST)
    CallLogFactory(tenant=other, request_id=uuid.UUID("1f0c3a7e" + "0" * 24))
    client.force_login(_member(tenant))

    response = client.get(reverse("admin:usage_calllog_changelist"), {"q": "1f0c3a7e"})

    assert _call_log_ids(response) == [str(own.pk)]


@pytest.mark.django_db
def test_call_log_list_says_how_its_search_and_text_filters_match(client):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant)
    client.force_login(_member(tenant))

    html = client.get(reverse("admin:usage_calllog_changelist")).content.decode()

    assert (
        "Search by request id: the whole id, or how it starts (at least its first 4 "
        "characters, e.g. 1f0c3a7e). Service, customer and model filters match the exact "
        "value." in html
    )
    for name, placeholder in (
        ("service", "exact service name"),
        ("customer", "exact customer id"),
        ("model", "exact model name"),
        ("day", "YYYY-MM-DD"),
    ):
        box = re.search(rf'<input type="text" name="{name}"[^>]*>', html).group(0)
        assert f'placeholder="{placeholder}"' in box


@pytest.mark.django_db
def test_daily_usage_text_filters_say_they_match_the_exact_value(client):
    tenant = TenantFactory()
    DailyUsageFactory(tenant=tenant)
    client.force_login(_member(tenant))

    html = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()

    for name, placeholder in (
        ("service", "exact service name"),
        ("customer", "exact customer id"),
        ("model", "exact model name"),
    ):
        box = re.search(rf'<input type="text" name="{name}"[^>]*>', html).group(0)
        assert f'placeholder="{placeholder}"' in box


@pytest.mark.django_db
def test_call_log_service_filter_matches_the_exact_name_only(client):
    tenant = TenantFactory()
    exact = CallLogFactory(tenant=tenant, service_name="summarizer")
    CallLogFactory(tenant=tenant, service_name="summarizer-v2")
    client.force_login(_member(tenant))

    response = client.get(reverse("admin:usage_calllog_changelist"), {"service": "summarizer"})

    assert _call_log_ids(response) == [str(exact.pk)]


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("who", ["superuser", "tenant admin"])
def test_call_log_search_by_how_an_id_starts_reads_the_request_id_index(client, who):
    # given a table of call logs large enough for PostgreSQL to weigh its plans
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    now = timezone.now()
    CallLog.objects.bulk_create(
        (
            CallLog(
                tenant=tenant,
                provider_config=config,
                request_id=uuid.uuid4(),
                status=CallLog.Status.OK,
                created_at=now - dt.timedelta(seconds=n),
            )
            for n in range(20_000)
        ),
        batch_size=5_000,
    )
    wanted = CallLogFactory(tenant=tenant, provider_config=config, request_id=_WANTED_REQUEST)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE usage_calllog")
    user = UserFactory(is_superuser=True) if who == "superuser" else _member(tenant)
    client.force_login(user)

    # when the list is searched by how the id starts
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:usage_calllog_changelist"), {"q": "1f0c3a7e"})

    # then it finds the request, and its queries (the page and the capped
    # count) read the range of the request id index, not the whole table
    assert _call_log_ids(response) == [str(wanted.pk)]
    searches = [q["sql"] for q in queries.captured_queries if '"request_id" >=' in q["sql"]]
    assert len(searches) == 2
    for sql in searches:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "call_log_unique_request_attempt" in plan, plan
        assert "Seq Scan on usage_calllog" not in plan, plan


@pytest.mark.django_db
def test_call_log_list_counts_at_most_the_cap_and_never_the_whole_table(client, settings):
    settings.USAGE_ADMIN_COUNT_CAP = 5
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    for _ in range(7):
        CallLogFactory(tenant=tenant, provider_config=config)
    client.force_login(_member(tenant))

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:usage_calllog_changelist"))

    html = response.content.decode()
    assert "More than 5 call logs" in html
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 6" in sql for sql in counts)


@pytest.mark.django_db
def test_call_log_change_view_is_read_only_for_tenant_admin(client):
    tenant = TenantFactory()
    log = CallLogFactory(tenant=tenant, service_name="before")
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_calllog_change", args=[log.pk]), {"service_name": "after"}
    )

    assert response.status_code == 403
    log.refresh_from_db()
    assert log.service_name == "before"


@pytest.mark.django_db
def test_provider_filter_offers_only_the_users_provider_configs(client):
    mine, theirs = TenantFactory(), TenantFactory()
    ProviderConfigFactory(tenant=mine, name="mine-config")
    ProviderConfigFactory(tenant=theirs, name="their-config")
    CallLogFactory(tenant=mine)
    client.force_login(_member(mine))

    html = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()

    assert "mine-config" in html and "their-config" not in html


@pytest.mark.django_db
def test_daily_usage_list_shows_only_the_users_tenants(client):
    mine, theirs = TenantFactory(), TenantFactory()
    CallLogFactory(tenant=mine, model_requested="my-model")
    CallLogFactory(tenant=theirs, model_requested="their-model")
    _aggregate_today()
    client.force_login(_member(mine, role=TenantMembership.Role.VIEWER))

    response = client.get(reverse("admin:usage_dailyusage_changelist"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "my-model" in html and "their-model" not in html


@pytest.mark.django_db
def test_daily_usage_list_rolls_up_todays_calls_when_nothing_runs_on_a_schedule(client, settings):
    # given the embedded default (no beat) and a call no page has rolled up yet
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, model_requested="fresh-model", cost_usd=Decimal("0.123400"))
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when the daily usage list is opened before the dashboard ever was
    html = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()

    # then today's row is listed, not "0 daily usage"
    (row,) = re.findall(r"<tr>(?:(?!</?tr>).)*fresh-model(?:(?!</tr>).)*</tr>", html, re.S)
    assert '<td class="field-cost">$0.1234</td>' in row
    assert "0 daily usage" not in html


@pytest.mark.django_db
def test_cost_alert_list_checks_alerts_after_its_roll_up_when_nothing_runs_on_a_schedule(
    client, settings
):
    # given the embedded default and an alert-only $10 budget that today's
    # calls have taken past 50 %, with no page opened since
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant = TenantFactory(name="Acme")
    BudgetFactory(tenant=tenant, name="monthly", alert_emails="")
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6.0000"))
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when the cost alert list is opened
    html = client.get(reverse("admin:usage_costalert_changelist")).content.decode()

    # then the 50 % alert is listed
    assert "has reached 50% of its $10" in html
    assert "0 cost alerts" not in html


@pytest.mark.django_db
def test_daily_usage_list_leaves_aggregation_to_beat_when_a_worker_runs(client, settings):
    settings.USAGE_ROLL_UP_ON_READ = False
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant)
    client.force_login(_member(tenant))

    client.get(reverse("admin:usage_dailyusage_changelist"))
    client.get(reverse("admin:usage_costalert_changelist"))

    assert DailyUsage.objects.count() == 0


@pytest.mark.django_db
def test_daily_usage_list_shows_unpriced_usage_as_unpriced_not_zero_dollars(client):
    # given a day of calls to a model with no known price
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    for _ in range(2):
        CallLogFactory(
            tenant=tenant,
            provider_config=config,
            model_requested="mystery-7b",
            cost_usd=None,
            price_source=CallLog.PriceSource.UNKNOWN,
            created_at=timezone.now(),
        )
    _aggregate_today()
    client.force_login(_member(tenant))

    # when the daily usage list is opened
    html = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()

    # then its cost reads unpriced, as in the call log list and the dashboard
    (row,) = re.findall(r"<tr>(?:(?!</?tr>).)*mystery-7b(?:(?!</tr>).)*</tr>", html, re.S)
    assert '<td class="field-cost">unpriced</td>' in row
    assert "$0.00" not in row


@pytest.mark.django_db
def test_daily_usage_list_and_pages_cost_the_priced_requests_and_count_the_unpriced_apart(client):
    # given four models' days: all priced at $0, $0 beside unpriced, priced
    # beside unpriced, and unpriced only
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    priced_groups_log(tenant, config, timezone.now() - dt.timedelta(minutes=1))
    _aggregate_today()
    client.force_login(_member(tenant))

    # when the daily usage list and each row's page are opened
    html = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()
    rows = {}
    for row in re.findall(r"<tr>(?:(?!</?tr>).)*</tr>", html, re.S):
        model = re.search(r'<td class="field-model">([^<]*)</td>', row)
        if model:
            rows[model.group(1)] = (
                re.search(r'<td class="field-cost">([^<]*)</td>', row).group(1),
                re.search(r'<td class="field-unpriced_count">([^<]*)</td>', row).group(1),
            )
    pages = {
        usage.model: client.get(
            reverse("admin:usage_dailyusage_change", args=[usage.pk])
        ).content.decode()
        for usage in DailyUsage.objects.filter(tenant=tenant)
    }

    # then the cost is the priced requests' ($0 is known, not unknown), unknown
    # only where none was priced, and the unpriced ones are counted beside it
    assert rows == {
        "free": ("$0.00", "0"),
        "zero-and-unpriced": ("$0.00", "2"),
        "paid-and-unpriced": ("$0.000123", "1"),
        "unpriced": ("unpriced", "2"),
    }
    shown = {model: _readonly_values(page) for model, page in pages.items()}
    assert {model: (v["Cost (USD)"], v["Priced count"]) for model, v in shown.items()} == {
        "free": ("$0.00", "3"),
        "zero-and-unpriced": ("$0.00 (2 unpriced requests not included)", "1"),
        "paid-and-unpriced": ("$0.00012345679 (1 unpriced request not included)", "2"),
        "unpriced": ("unpriced", "0"),
    }
    # and so does each page's title
    assert ": $0.00 (2 unpriced requests not included)</h2>" in pages["zero-and-unpriced"]
    assert "service unpriced, customer acme: unpriced</h2>" in pages["unpriced"]


@pytest.mark.django_db
def test_dashboard_costs_the_priced_requests_and_names_the_unpriced_ones_left_out(client):
    # given four models' days: all priced at $0, $0 beside unpriced, priced
    # beside unpriced, and unpriced only (yesterday), and a daily budget
    tenant = TenantFactory(name="Acme")
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    now = timezone.now() - dt.timedelta(minutes=1)
    priced_groups_log(tenant, config, now)
    BudgetFactory(tenant=tenant, name="Daily", period=Budget.Period.DAILY)
    _aggregate_today()
    client.force_login(_member(tenant))

    # when the dashboard is opened
    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    # then the total, the days, the breakdowns and the budget's spend are those of
    # the priced requests, each saying how many unpriced ones it leaves out
    html = response.content.decode()
    assert (
        '<strong title="$0.00012345679">&lt; $0.01</strong> spent on priced requests, '
        "<strong>5</strong> unpriced requests not included"
    ) in html
    today = now.date()
    yesterday = today - dt.timedelta(days=1)
    assert f"<title>{yesterday}: unpriced (3 requests)</title>" in html
    assert (
        f"<title>{today}: $0.00012345679 (10 requests, 3 unpriced: not in the cost)</title>"
    ) in html
    assert "<title>free: $0.00 (3 requests)</title>" in html
    assert "<title>zero-and-unpriced: $0.00 (4 requests, 2 unpriced: not in the cost)</title>" in (
        html
    )
    assert (
        "<title>paid-and-unpriced: $0.00012345679 (3 requests, 1 unpriced: not in the cost)</title>"
    ) in html
    assert "<title>unpriced: unpriced (3 requests)</title>" in html
    assert "(3 unpriced requests not counted)" in html


@pytest.mark.django_db
def test_daily_usage_today_filter_means_today_in_the_tenants_time_zone(client):
    # given a tenant whose local date differs from the UTC date right now
    # (UTC+14 from 10:00 UTC on, UTC-12 before noon UTC), with a row for its
    # local today and one for the UTC date
    now = timezone.now()
    zone_name = "Pacific/Kiritimati" if now.hour >= 10 else "Etc/GMT+12"
    local_today = now.astimezone(ZoneInfo(zone_name)).date()
    tenant = TenantFactory(timezone=zone_name)
    config = ProviderConfigFactory(tenant=tenant)
    DailyUsageFactory(tenant=tenant, provider_config=config, day=local_today, model="local-today")
    DailyUsageFactory(tenant=tenant, provider_config=config, day=now.date(), model="utc-today")
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when the list's day filter offers "Today" and the user follows it
    listing = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()
    (today_link,) = re.findall(r'<a href="(\?day__gte=[^"]+)"[^>]*>Today</a>', listing)
    html = client.get(
        reverse("admin:usage_dailyusage_changelist") + today_link.replace("&amp;", "&")
    ).content.decode()

    # then it shows the tenant's today, the day its rows are counted in
    assert "local-today" in html
    assert "utc-today" not in html


# --- budgets and alerts ----------------------------------------------------------


def _budget_form(tenant, **overrides):
    data = {
        "tenant": str(tenant.pk),
        "name": "Cap",
        "is_active": "on",
        "period": "daily",
        "limit_usd": "5.00",
        "action": "block",
        "provider_config": "",
        "service_name": "",
        "customer_id": "",
        "alert_percentages": "50, 80, 100",
        "alert_emails": "finance@example.com",
        "webhook_url": "",
    }
    data.update(overrides)
    return data


@pytest.mark.django_db
def test_budget_admin_creates_a_budget_with_an_encrypted_webhook(client, allow_private_urls):
    tenant = TenantFactory()
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_budget_add"),
        _budget_form(tenant, webhook_url="http://127.0.0.1:8123/hooks/secret-token"),
    )

    assert response.status_code == 302
    budget = Budget.objects.get()
    assert (budget.limit_usd, budget.action, budget.alert_percentages) == (
        Decimal("5.00"),
        "block",
        [50, 80, 100],
    )
    assert budget.webhook_url == "http://127.0.0.1:8123/hooks/secret-token"
    page = client.get(reverse("admin:usage_budget_change", args=[budget.pk])).content.decode()
    assert "secret-token" not in page
    assert "Set (http://127.0.0.1:8123/…)" in page


@pytest.mark.django_db
def test_budget_admin_error_report_shows_the_posted_webhook_url_as_stars(
    client, allow_private_urls, monkeypatch, error_reports
):
    # given a save that fails with an unexpected error after the webhook URL was posted
    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(BudgetAdmin, "save_model", broken)
    tenant = TenantFactory()
    client.force_login(_member(tenant))

    # when the form is posted
    response = client.post(
        reverse("admin:usage_budget_add"),
        _budget_form(tenant, webhook_url="http://127.0.0.1:8123/hooks/secret-token"),
    )

    # then the error report stars the URL, whose path is the secret
    assert response.status_code == 500
    (text,) = error_reports
    assert "webhook_url = '********************'" in text
    assert "secret-token" not in text


@pytest.mark.django_db
def test_budget_admin_shows_a_stored_webhook_url_that_cannot_be_parsed_without_quoting_it(client):
    # given a budget whose webhook URL was stored before unreadable ports were refused
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant)
    Budget.objects.filter(pk=budget.pk).update(webhook_url="https://93.184.216.34:t0ken/hook")
    client.force_login(_member(tenant))

    # when the admin lists the budgets and opens this one
    listing = client.get(reverse("admin:usage_budget_changelist"))
    change = client.get(reverse("admin:usage_budget_change", args=[budget.pk]))

    # then both pages say the URL must be entered again, and never quote it
    for page in (listing, change):
        assert page.status_code == 200
        assert "invalid URL — enter it again" in page.content.decode()
        assert "t0ken" not in page.content.decode()


@pytest.mark.django_db
def test_budget_admin_offers_to_remove_the_webhook_only_when_one_is_stored(client):
    # given a budget without a webhook and one with
    tenant = TenantFactory()
    bare = BudgetFactory(tenant=tenant, name="bare")
    hooked = BudgetFactory(tenant=tenant, name="hooked")
    Budget.objects.filter(pk=hooked.pk).update(webhook_url="https://hooks.example.com/T0/B0/x")
    client.force_login(_member(tenant))

    # when the add page and both change pages are opened
    pages = {
        "add": client.get(reverse("admin:usage_budget_add")),
        "bare": client.get(reverse("admin:usage_budget_change", args=[bare.pk])),
        "hooked": client.get(reverse("admin:usage_budget_change", args=[hooked.pk])),
    }

    # then only the budget with a webhook offers to remove it
    offers = {name: "Remove the webhook URL" in r.content.decode() for name, r in pages.items()}
    assert offers == {"add": False, "bare": False, "hooked": True}
    assert all('name="webhook_url"' in r.content.decode() for r in pages.values())


@pytest.mark.django_db
def test_budget_page_of_a_viewer_shows_limit_and_percentages_as_typed_not_stored(client):
    # given a budget of $0.50 alerting at 50, 80 and 100 %
    tenant = TenantFactory()
    budget = BudgetFactory(
        tenant=tenant, limit_usd=Decimal("0.50"), alert_percentages=[50, 80, 100]
    )
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when a viewer opens it
    html = client.get(reverse("admin:usage_budget_change", args=[budget.pk])).content.decode()

    # then the limit reads in dollars and the percentages as the form takes them
    readonly = dict(
        re.findall(r"<label>([^<]+):</label>\s*<div class=\"readonly\">([^<]*)</div>", html)
    )
    assert readonly["Limit (USD)"] == "$0.50"
    assert readonly["Alert percentages"] == "50, 80, 100"
    assert "[50, 80, 100]" not in html


@pytest.mark.django_db
def test_budget_admin_keeps_the_webhook_when_the_field_is_left_empty(client):
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, webhook_url="https://hooks.example.com/T/B/secret")
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_budget_change", args=[budget.pk]),
        _budget_form(tenant, name=budget.name, limit_usd="7"),
    )

    assert response.status_code == 302
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("7")
    assert budget.webhook_url == "https://hooks.example.com/T/B/secret"


@pytest.mark.django_db
def test_budget_admin_does_not_echo_the_webhook_url_when_another_field_is_invalid(client):
    # given a tenant admin typing a webhook URL whose path is its secret
    tenant = TenantFactory()
    client.force_login(_member(tenant))

    # when another field of the form is invalid
    response = client.post(
        reverse("admin:usage_budget_add"),
        _budget_form(tenant, limit_usd="", webhook_url="https://93.184.216.34/T0/B0/s3cr3t-t0ken"),
    )

    # then the form comes back with the error, without the URL in the page
    html = response.content.decode()
    assert response.status_code == 200
    assert "This field is required." in html
    assert "s3cr3t-t0ken" not in html
    assert Budget.objects.count() == 0
    # and the emptied URL field asks for it again rather than silently dropping it
    assert response.context["adminform"].form.errors["webhook_url"] == [
        "Enter the URL again: a typed webhook URL is never sent back to the page."
    ]


@pytest.mark.django_db
def test_budget_admin_refuses_a_private_webhook_url_with_a_clear_message(client):
    tenant = TenantFactory()
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_budget_add"),
        _budget_form(tenant, webhook_url="http://10.0.0.5/hook"),
    )

    assert response.status_code == 200
    assert "The webhook URL points at a private address (10.0.0.5)" in response.content.decode()
    assert Budget.objects.count() == 0


@pytest.mark.django_db
def test_budget_admin_refuses_a_customer_no_call_can_carry(client):
    tenant = TenantFactory()
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_budget_add"), _budget_form(tenant, customer_id="acme\x07corp")
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["customer_id"] == [
        "customer_id must not contain control characters. Calls that carry one are refused, "
        "so this budget would never apply."
    ]
    assert Budget.objects.count() == 0


@pytest.mark.django_db
def test_budget_admin_history_names_changed_percentages_as_the_api_does(client):
    tenant = TenantFactory()
    budget = BudgetFactory(
        tenant=tenant, name="Cap", period="daily", limit_usd=Decimal("5"), action="block",
        alert_percentages=[50, 80, 100],
    )  # fmt: skip
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_budget_change", args=[budget.pk]),
        _budget_form(tenant, name="Cap", alert_percentages="50, 90"),
    )

    assert response.status_code == 302
    (entry,) = LogEntry.objects.filter(object_id=str(budget.pk))
    assert entry.get_change_message() == "Changed Alert percentages."


def _options(html: str, field: str) -> list[str]:
    select = re.search(rf'<select name="{field}".*?</select>', html, re.S).group(0)
    return re.findall(r"<option [^>]*>(.*?)</option>", select)


@pytest.mark.django_db
@pytest.mark.parametrize("as_superuser", [False, True])
def test_budget_form_offers_inactive_provider_configs_labelled_so(client, as_superuser):
    # given a tenant with a live and a retired provider config, and a budget on the retired one
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, name="live")
    retired = ProviderConfigFactory(tenant=tenant, name="retired", is_active=False)
    budget = BudgetFactory(tenant=tenant, name="Cap", provider_config=retired)
    user = UserFactory(is_superuser=True) if as_superuser else _member(tenant)
    client.force_login(user)

    # when the add and change pages are opened
    added = client.get(reverse("admin:usage_budget_add")).content.decode()
    changed = client.get(reverse("admin:usage_budget_change", args=[budget.pk])).content.decode()

    # then the retired config is still offered, and said to be inactive
    for page in (added, changed):
        assert _options(page, "provider_config") == [
            "---------",
            "live (Fake (demo and tests))",
            "retired (Fake (demo and tests), inactive)",
        ]
    assert (
        f'<option value="{retired.pk}" selected>retired (Fake (demo and tests), inactive)</option>'
        in changed
    )


@pytest.mark.django_db
def test_budget_admin_refuses_another_tenants_provider_config(client):
    mine, theirs = TenantFactory(), TenantFactory()
    foreign = ProviderConfigFactory(tenant=theirs)
    client.force_login(_member(mine))

    response = client.post(
        reverse("admin:usage_budget_add"), _budget_form(mine, provider_config=str(foreign.pk))
    )

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert Budget.objects.count() == 0


@pytest.mark.django_db
def test_budget_stays_in_its_tenant_when_an_admin_of_two_posts_another(client):
    # given an admin of two tenants and a budget of the first that has alerted
    first, second = TenantFactory(), TenantFactory()
    user = _member(first)
    TenantMembershipFactory(user=user, tenant=second, role=TenantMembership.Role.ADMIN)
    budget = BudgetFactory(tenant=first, name="Cap", limit_usd=Decimal("3"), alert_percentages=[50])
    CallLogFactory(tenant=first, cost_usd=Decimal("2"), created_at=timezone.now())
    _aggregate_today()
    (alert,) = alerts_check()
    client.force_login(user)

    # when the change form is posted naming the second tenant
    response = client.post(
        reverse("admin:usage_budget_change", args=[budget.pk]),
        _budget_form(second, name="Cap", limit_usd="4"),
    )

    # then the edit applies, but the budget (and its alert history) stays where it was
    assert response.status_code == 302
    budget.refresh_from_db()
    assert (budget.tenant_id, budget.limit_usd) == (first.pk, Decimal("4"))
    assert alert.budget.tenant_id == alert.tenant_id == first.pk


@pytest.mark.django_db
def test_budget_renamed_to_a_name_its_tenant_uses_is_refused_with_a_message(client):
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, name="Taken")
    budget = BudgetFactory(tenant=tenant, name="Cap")
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_budget_change", args=[budget.pk]), _budget_form(tenant, name="Taken")
    )

    assert response.status_code == 200
    assert "Budget with this Tenant and Name already exists." in response.content.decode()
    budget.refresh_from_db()
    assert budget.name == "Cap"


@pytest.mark.django_db
def test_budget_admin_hides_other_tenants_budgets(client):
    mine, theirs = TenantFactory(), TenantFactory()
    BudgetFactory(tenant=mine, name="my-budget")
    other = BudgetFactory(tenant=theirs, name="their-budget")
    client.force_login(_member(mine))

    html = client.get(reverse("admin:usage_budget_changelist")).content.decode()

    assert "my-budget" in html and "their-budget" not in html
    assert client.get(reverse("admin:usage_budget_change", args=[other.pk])).status_code == 302


@pytest.mark.django_db
def test_budget_admin_is_read_only_for_a_viewer(client):
    tenant = TenantFactory()
    budget = BudgetFactory(tenant=tenant, limit_usd=Decimal("3"))
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    response = client.post(
        reverse("admin:usage_budget_change", args=[budget.pk]),
        _budget_form(tenant, name=budget.name, limit_usd="999"),
    )

    assert response.status_code == 403
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("3")


@pytest.mark.django_db
def test_budget_page_of_a_viewer_shows_the_webhook_only_masked(client):
    # given a budget whose webhook URL carries its secret in the path
    tenant = TenantFactory()
    budget = BudgetFactory(
        tenant=tenant, webhook_url="https://hooks.example.com/T0/B0/s3cr3t-t0ken"
    )
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when a viewer opens the budget's (read-only) page
    response = client.get(reverse("admin:usage_budget_change", args=[budget.pk]))

    # then the URL is shown as scheme and host only, like in the list
    assert response.status_code == 200
    html = response.content.decode()
    assert "s3cr3t-t0ken" not in html and "/T0/B0" not in html
    assert "https://hooks.example.com/…" in html


@pytest.mark.django_db
def test_alert_retry_action_makes_failed_deliveries_due_again(client):
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50])
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6"), created_at=timezone.now())
    _aggregate_today()
    (alert,) = alerts_check()
    AlertDelivery.objects.update(next_attempt_at=None, attempts=24, last_error="SMTP down")
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_costalert_changelist"),
        {"action": "retry_deliveries", "_selected_action": [alert.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "1 delivery queued for another attempt."
    ]
    delivery = alert.deliveries.get()
    assert delivery.next_attempt_at is not None
    assert delivery.state == "retrying"


@pytest.mark.django_db
def test_alert_retry_action_on_delivered_alerts_says_there_is_nothing_to_retry(client):
    # given an alert whose every delivery has gone out
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50])
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6"), created_at=timezone.now())
    _aggregate_today()
    (alert,) = alerts_check()
    AlertDelivery.objects.update(next_attempt_at=None, delivered_at=timezone.now())
    client.force_login(_member(tenant))

    # when
    response = client.post(
        reverse("admin:usage_costalert_changelist"),
        {"action": "retry_deliveries", "_selected_action": [alert.pk]},
        follow=True,
    )

    # then the page says nothing was queued, as a warning rather than a success
    [message] = list(response.context["messages"])
    assert message.level_tag == "warning"
    assert str(message) == ("Nothing to retry: every delivery of the selected alerts has gone out.")


@pytest.mark.django_db
def test_alert_retry_action_on_a_delivery_being_sent_says_so_and_leaves_it_alone(
    client, settings, mailoutbox, django_capture_on_commit_callbacks
):
    # given an alert email a worker has claimed and is sending (it stops mid-send)
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50])
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6"), created_at=timezone.now())
    _aggregate_today()
    (alert,) = alerts_check()
    delivery = alert.deliveries.get()
    settings.EMAIL_BACKEND = "tests.usage.test_alerts.DyingEmailBackend"
    with pytest.raises(SystemExit):
        alert_delivery_attempt(delivery_id=delivery.pk)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    claimed = AlertDelivery.objects.get(pk=delivery.pk)
    client.force_login(_member(tenant))

    # when an admin retries it
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:usage_costalert_changelist"),
            {"action": "retry_deliveries", "_selected_action": [alert.pk]},
            follow=True,
        )

    # then the page says it is being sent, and nothing is sent again nor the claim changed
    assert response.status_code == 200
    [message] = list(response.context["messages"])
    assert message.level_tag == "warning"
    assert str(message) == (
        "1 delivery is being sent right now, so it was not retried: the outcome shows under "
        "the alert once the attempt ends."
    )
    assert "Email: sending" in response.content.decode()
    assert mailoutbox == []
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.next_attempt_at, delivery.last_error) == (
        claimed.attempts,
        claimed.next_attempt_at,
        claimed.last_error,
    )


@pytest.mark.django_db
def test_alert_retry_action_says_alerts_of_viewed_tenants_were_not_retried(client):
    # given a user who administers one tenant and only views another, whose
    # alert failed to go out
    administered, viewed = TenantFactory(slug="mine"), TenantFactory(slug="theirs")
    BudgetFactory(tenant=viewed, alert_percentages=[50])
    CallLogFactory(tenant=viewed, cost_usd=Decimal("6"), created_at=timezone.now())
    _aggregate_today()
    (alert,) = alerts_check()
    AlertDelivery.objects.update(next_attempt_at=None, attempts=24, last_error="SMTP down")
    user = _member(administered)
    TenantMembershipFactory(user=user, tenant=viewed, role=TenantMembership.Role.VIEWER)
    client.force_login(user)

    # when the user selects that alert and retries
    response = client.post(
        reverse("admin:usage_costalert_changelist"),
        {"action": "retry_deliveries", "_selected_action": [alert.pk]},
        follow=True,
    )

    # then nothing is queued, and the page says why rather than that all went out
    assert alert.deliveries.get().next_attempt_at is None
    assert [str(m) for m in response.context["messages"]] == [
        "1 alert of tenants you only view was not retried."
    ]


@pytest.mark.django_db
def test_budget_admin_reads_percentages_written_with_a_space_before_the_sign(client):
    tenant = TenantFactory()
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_budget_add"), _budget_form(tenant, alert_percentages="50 %, 80 %")
    )

    assert response.status_code == 302
    assert Budget.objects.get(tenant=tenant).alert_percentages == [50, 80]


@pytest.mark.django_db
@pytest.mark.parametrize("written", ["1_000", "50, +80", "٥٠", "50, 8²"])
def test_budget_admin_takes_percentages_in_plain_digits_only(client, written):
    tenant = TenantFactory()
    client.force_login(_member(tenant))

    response = client.post(
        reverse("admin:usage_budget_add"), _budget_form(tenant, alert_percentages=written)
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["alert_percentages"] == [
        "Write whole percentages separated by commas, e.g. 50, 80, 100."
    ]
    assert not Budget.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
def test_alert_list_hides_other_tenants_alerts(client):
    mine, theirs = TenantFactory(), TenantFactory(name="Other Inc")
    for tenant in (mine, theirs):
        BudgetFactory(tenant=tenant, alert_percentages=[50])
        CallLogFactory(tenant=tenant, cost_usd=Decimal("6"), created_at=timezone.now())
    _aggregate_today()
    alerts_check()
    client.force_login(_member(mine, role=TenantMembership.Role.VIEWER))

    html = client.get(reverse("admin:usage_costalert_changelist")).content.decode()

    assert "Other Inc" not in html
    assert html.count("has reached 50%") == 1


@pytest.mark.django_db
def test_alert_list_names_delivery_channels_as_the_dashboard_does(client):
    # given an alert whose email went out and whose webhook is still pending
    alert = CostAlertFactory()
    AlertDeliveryFactory(alert=alert, delivered_at=timezone.now())
    AlertDeliveryFactory(
        alert=alert,
        channel=AlertDelivery.Channel.WEBHOOK,
        target="https://hooks.example.com/x",
        target_label="hooks.example.com",
        next_attempt_at=timezone.now(),
    )
    client.force_login(_member(alert.tenant, role=TenantMembership.Role.VIEWER))

    # when the alert list is opened
    html = client.get(reverse("admin:usage_costalert_changelist")).content.decode()

    # then the deliveries column reads as the dashboard's, not the stored codes
    assert '<td class="field-deliveries_state">Email: delivered, Webhook: pending</td>' in html


@pytest.mark.django_db
def test_alert_list_says_when_an_email_went_out_but_not_to_every_recipient(
    client, settings, smtp_refusing_gone
):
    # given a budget alert emailed through a mail server that refused one of its recipients
    tenant = TenantFactory()
    BudgetFactory(
        tenant=tenant, alert_percentages=[50], alert_emails="ops@example.com, gone@example.com"
    )
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6"), created_at=timezone.now())
    _aggregate_today()
    (alert,) = alerts_check()
    alert_delivery_attempt(delivery_id=alert.deliveries.get().pk)
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when the alert list, the dashboard and the alert are opened
    listed = client.get(reverse("admin:usage_costalert_changelist")).content.decode()
    dashboard = client.get(
        reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk])
    ).content.decode()
    shown = client.get(reverse("admin:usage_costalert_change", args=[alert.pk])).content.decode()

    # then the list and the dashboard say not everyone got it, and the alert names who did not
    assert (
        '<td class="field-deliveries_state">Email: delivered, not to every recipient</td>' in listed
    )
    assert "<td>Email: delivered, not to every recipient</td>" in dashboard
    assert "the mail server refused 1 of 2 recipients: gone@example.com (550 5.1.1" in shown


@pytest.mark.django_db
def test_superuser_sees_every_tenants_dashboard(client):
    tenant = TenantFactory(name="Anyone")
    client.force_login(UserFactory(is_superuser=True))

    response = client.get(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    assert response.status_code == 200
    assert "Usage — Anyone" in response.content.decode()


@pytest.mark.django_db
def test_call_log_list_shows_the_model_answered_or_else_requested(client):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, model_requested="gpt-4o", model_answered="gpt-4o-2024-08-06")
    CallLogFactory(tenant=tenant, model_requested="claude-sonnet", model_answered="")
    client.force_login(_member(tenant))

    html = client.get(reverse("admin:usage_calllog_changelist")).content.decode()

    cells = re.findall(r'<td class="field-model_display">([^<]*)</td>', html)
    assert sorted(cells) == ["claude-sonnet", "gpt-4o-2024-08-06"]
    assert ">Model<" in html and "None#" not in html


@pytest.mark.django_db
def test_call_log_list_tells_an_unknown_cost_from_a_call_with_nothing_to_price(client):
    # given a call to an unpriced model, a call refused by a budget and a failed one
    tenant = TenantFactory()
    CallLogFactory(
        tenant=tenant,
        model_requested="mystery-7b",
        cost_usd=None,
        price_source=CallLog.PriceSource.UNKNOWN,
    )
    for status, model in (
        (CallLog.Status.BLOCKED, "blocked-model"),
        (CallLog.Status.ERROR, "down"),
    ):
        CallLogFactory(
            tenant=tenant,
            status=status,
            model_requested=model,
            input_tokens=0,
            output_tokens=0,
            cost_usd=None,
            price_source="",
        )
    client.force_login(_member(tenant))

    # when the call log list is opened
    html = client.get(reverse("admin:usage_calllog_changelist")).content.decode()

    # then only the unpriced model's call reads "unpriced"
    costs = {
        model: cost
        for model, cost in re.findall(
            r'<td class="field-model_display">([^<]*)</td>.*?<td class="field-cost">([^<]*)</td>',
            html,
            re.S,
        )
    }
    assert costs == {"mystery-7b": "unpriced", "blocked-model": "—", "down": "—"}


@pytest.mark.django_db
def test_call_log_and_daily_usage_lists_show_a_sub_micro_dollar_cost_not_zero(client):
    # given a priced embedding call of 12 tokens at $0.02 per million: $0.00000024
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        input_tokens=12,
        output_tokens=0,
        cost_usd=Decimal("0.000000240000"),
    )
    _aggregate_today()
    client.force_login(_member(tenant))

    # when the call log and daily usage lists are opened
    calls = client.get(reverse("admin:usage_calllog_changelist")).content.decode()
    days = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()

    # then the cost reads its value, not a rounded $0.00
    assert re.findall(r'<td class="field-cost">([^<]*)</td>', calls) == ["$0.00000024"]
    assert re.findall(r'<td class="field-cost">([^<]*)</td>', days) == ["$0.00000024"]


@pytest.mark.django_db
def test_dashboard_rounds_amounts_to_cents_and_keeps_the_exact_ones_in_tooltips(client):
    # given spend that has more decimals than a person reads at a glance
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant, name="openai-main")
    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        service_name="summarizer",
        cost_usd=Decimal("0.591368123456"),
        created_at=timezone.now() - dt.timedelta(minutes=1),
    )
    BudgetFactory(tenant=tenant, name="Tiny", period=Budget.Period.DAILY, limit_usd=Decimal("50"))
    _aggregate_today()
    client.force_login(_member(tenant))

    # when
    html = client.get(
        reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk])
    ).content.decode()

    # then the figures are in cents and the exact amounts are in the titles
    assert '<strong title="$0.591368123456">$0.59</strong> spent' in html
    assert '<span title="$0.591368123456">$0.59</span>' in html
    assert ">$0.59</text>" in html
    assert "<title>summarizer: $0.591368123456 (1 request)</title>" in html
    assert "$0.591368<" not in html


@pytest.mark.django_db
def test_dashboard_charts_and_tables_fit_a_narrow_window_and_follow_the_theme(client):
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, cost_usd=Decimal("1"))
    BudgetFactory(tenant=tenant)
    _aggregate_today()
    client.force_login(_member(tenant))

    html = client.get(
        reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk])
    ).content.decode()

    assert ".usage-bars { max-width: 100%; height: auto; }" in html
    # The daily chart and the gauges take the card's width without scaling their labels.
    assert re.search(
        r'<svg [^>]*class="usage-chart usage-daily"[^>]*width="100%" height="220"', html
    )
    assert (
        ".usage-gauge { display: block; width: 200px; max-width: 100%; min-width: 60px; }" in html
    )
    assert (
        'class="usage-gauge" viewBox="0 0 100 14" preserveAspectRatio="none" width="100%"' in html
    )
    # under the spend: no column of its own to widen the table past the card
    assert re.search(r'<td><span title="\$1\.00">\$1\.00</span><svg [^>]*class="usage-gauge"', html)
    assert html.count('<div class="usage-table">') == 1  # the budgets; no alert yet
    assert ".usage-track { fill: var(--hairline-color, #e8e8e8); }" in html
    assert ".usage-bar { fill: var(--link-fg, #417690); }" in html
    assert 'class="usage-track"' in html


@pytest.mark.django_db
def test_alert_page_title_shortens_a_long_message_at_a_word_not_mid_amount(client):
    # given an alert whose message is longer than a title, with an amount at the cut
    tenant = TenantFactory(name="Demo")
    alert = CostAlert.objects.create(
        tenant=tenant,
        kind=CostAlert.Kind.BUDGET,
        subject_key="budget-1",
        period_key="2026-11",
        percent=100,
        message="Demo: budget “monthly” (whole tenant, monthly 2026-11) has reached 100% of "
        "its $0.0002 limit: $0.000218 spent.",
    )
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when its page opens
    html = client.get(reverse("admin:usage_costalert_change", args=[alert.pk])).content.decode()

    # then the title and breadcrumb end at a whole word, marked as shortened,
    # rather than with a "$" whose amount was cut off
    title = "Demo: budget “monthly” (whole tenant, monthly 2026-11) has reached 100% of its …"
    assert html.count(title) >= 2
    assert "of its $<" not in html and "of its $\n" not in html


# --- large tables: the queries behind a page ----------------------------------


def _changelist_queries(client, url_name, params=None):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(url_name), params or {})
    assert response.status_code == 200
    return response, [q["sql"] for q in queries.captured_queries]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url_name", "params"),
    [
        ("admin:usage_calllog_changelist", {}),
        ("admin:usage_calllog_changelist", {"status__exact": "error"}),
        ("admin:usage_dailyusage_changelist", {"service": "chat"}),
    ],
)
def test_large_table_lists_count_their_rows_in_no_order(client, settings, url_name, params):
    # The capped count asks for any cap+1 matching rows: ordered, it walked the
    # created_at index (or sorted the whole table) to find them, 0.4 s of a
    # sparse filter's page at a million call logs.
    settings.USAGE_ADMIN_COUNT_CAP = 3
    tenant = TenantFactory()
    for _ in range(5):
        CallLogFactory(tenant=tenant, status=CallLog.Status.ERROR, service_name="chat")
    _aggregate_today()
    client.force_login(UserFactory(is_superuser=True))

    _, sql = _changelist_queries(client, url_name, params)

    counts = [q for q in sql if "COUNT(" in q.upper()]
    assert counts and all("LIMIT 4" in q and "ORDER BY" not in q.upper() for q in counts)


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["calllog", "dailyusage"])
def test_large_table_page_joins_nothing_and_reads_related_rows_once(client, model):
    # Joined to tenants and provider configs (their encrypted keys included),
    # every row of the table was widened before the sort that picks the page:
    # 0.44 s for DailyUsage's first page at 441k rows, 0.08 s without the joins.
    tenants = [TenantFactory(name=f"Tenant {i}") for i in range(3)]

    def fill(first, last):
        for i in range(first, last):
            tenant = tenants[i % 3]
            CallLogFactory(
                tenant=tenant,
                provider_config=ProviderConfigFactory(tenant=tenant, name=f"config-{i}"),
                service_name=f"service-{i}",
            )
        _aggregate_today()

    url_name = f"admin:usage_{model}_changelist"
    client.force_login(UserFactory(is_superuser=True))
    fill(0, 3)
    _, few = _changelist_queries(client, url_name)
    fill(3, 12)
    response, many = _changelist_queries(client, url_name)

    html = response.content.decode()
    assert "config-11" in html and "Tenant 2" in html
    assert len(many) == len(few)
    pages = [q for q in many if q.startswith("SELECT") and f'FROM "usage_{model}"' in q]
    assert pages and not [q for q in pages if " JOIN " in q]


@pytest.mark.django_db
def test_call_log_list_sorts_only_by_time(client):
    # Sorting a million call logs by cost or latency read and sorted every row
    # (1.1 s); the creation time has an index.
    tenant = TenantFactory()
    CallLogFactory(tenant=tenant, cost_usd=Decimal("1"))
    client.force_login(UserFactory(is_superuser=True))

    response, sql = _changelist_queries(client, "admin:usage_calllog_changelist", {"o": "9"})

    pages = [q for q in sql if q.startswith('SELECT "usage_calllog"."id", ')]
    assert pages and all('ORDER BY "usage_calllog"."created_at" DESC' in q for q in pages)
    assert "cost_usd" not in " ".join(pages).split("ORDER BY")[-1]
    assert re.findall(
        r'<th scope="col" class="sortable column-(\w+)', response.content.decode()
    ) == ["created_at_utc"]


@pytest.mark.django_db
def test_daily_usage_list_does_not_sort_by_tenant(client):
    # Sorting by tenant joins every row to its tenant to sort by name.
    CallLogFactory()
    _aggregate_today()
    client.force_login(UserFactory(is_superuser=True))

    _, sql = _changelist_queries(client, "admin:usage_dailyusage_changelist", {"o": "1"})

    pages = [q for q in sql if q.startswith('SELECT "usage_dailyusage"."id", ')]
    assert pages and not [q for q in pages if "llm_providers_tenant" in q]


def _readonly_values(html: str) -> dict[str, str]:
    """A read-only page's fields: label → the text shown beside it."""
    return {
        label: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", value)).strip()
        for label, value in re.findall(
            r"<label>([^<]*):</label>\s*<div class=\"readonly\">(.*?)</div>", html, re.S
        )
    }


@pytest.mark.django_db
def test_call_log_and_daily_usage_pages_write_costs_in_dollars_not_as_stored(client):
    # given a priced call, an unpriced one and the day that sums them
    tenant = TenantFactory()
    priced = CallLogFactory(tenant=tenant, cost_usd=Decimal("0.000187500000"))
    unpriced = CallLogFactory(
        tenant=tenant,
        model_requested="mystery-7b",
        cost_usd=None,
        price_source=CallLog.PriceSource.UNKNOWN,
    )
    day = DailyUsageFactory(tenant=tenant, cost_usd=Decimal("0.002250000000"))
    client.force_login(_member(tenant, role=TenantMembership.Role.VIEWER))

    # when their pages are opened
    def page(name, pk):
        return client.get(reverse(f"admin:usage_{name}_change", args=[pk])).content.decode()

    priced_page = page("calllog", priced.pk)
    unpriced_page = page("calllog", unpriced.pk)
    day_page = page("dailyusage", day.pk)

    # then each cost reads in dollars, every stored decimal kept, under a named unit
    assert _readonly_values(priced_page)["Cost (USD)"] == "$0.0001875"
    assert _readonly_values(unpriced_page)["Cost (USD)"] == "unpriced"
    assert _readonly_values(day_page)["Cost (USD)"] == "$0.00225"
    for html in (priced_page, unpriced_page, day_page):
        assert "Cost usd" not in html
    assert "0.000187500000" not in priced_page
    assert "0.002250000000" not in day_page  # the title too


@pytest.mark.django_db
def test_cost_alert_page_writes_spend_limit_and_percent_as_the_budget_page_does(client):
    # given a budget alert at 100 % of a $0.0001 limit, and an unpriced-usage alert
    tenant = TenantFactory()
    alert = CostAlertFactory(
        tenant=tenant,
        percent=100,
        spend_usd=Decimal("0.002261500000"),
        limit_usd=Decimal("0.0001"),
    )
    unpriced = CostAlertFactory(
        tenant=tenant,
        kind=CostAlert.Kind.UNPRICED,
        budget=None,
        subject_key="-/fake/mystery-7b",
        percent=0,
        spend_usd=None,
        limit_usd=None,
    )
    client.force_login(_member(tenant))

    # when
    shown = _readonly_values(
        client.get(reverse("admin:usage_costalert_change", args=[alert.pk])).content.decode()
    )
    unpriced_shown = _readonly_values(
        client.get(reverse("admin:usage_costalert_change", args=[unpriced.pk])).content.decode()
    )

    # then
    assert shown["Spend (USD)"] == "$0.0022615"
    assert shown["Limit (USD)"] == "$0.0001"
    assert shown["Percent"] == "100%"
    assert "Spend usd" not in shown and "Limit usd" not in shown
    assert unpriced_shown["Spend (USD)"] == "—"
    assert unpriced_shown["Limit (USD)"] == "—"
    assert unpriced_shown["Percent"] == "—"


def test_call_log_and_daily_usage_pages_put_units_in_parentheses(client, tenant, tenant_viewer):
    # given a streamed call and its day's row
    log = CallLogFactory(tenant=tenant, latency_ms=812, time_to_first_token_ms=140, streamed=True)
    day = DailyUsageFactory(tenant=tenant, latency_ms_sum=1624, request_count=2)
    client.force_login(tenant_viewer)

    # when the viewer opens both
    call_page = client.get(reverse("admin:usage_calllog_change", args=[log.pk])).content.decode()
    day_page = client.get(reverse("admin:usage_dailyusage_change", args=[day.pk])).content.decode()

    # then each duration names its unit as a unit, not as a word of the name
    assert "<label>Latency (ms):</label>" in call_page
    assert "<label>Time to first token (ms):</label>" in call_page
    assert "<label>Latency sum (ms):</label>" in day_page
    labels = re.findall(r"<label>([^<]*):</label>", call_page + day_page)
    assert [label for label in labels if label.endswith((" ms", " sum"))] == []


def test_daily_usage_page_title_names_service_and_customer_or_says_there_is_none(
    client, tenant, tenant_viewer
):
    # given one day's rows with and without a service and customer
    scoped = DailyUsageFactory(
        tenant=tenant,
        model="fake-small",
        service_name="summarizer",
        customer_id="acme",
        cost_usd=Decimal("0.000018"),
    )
    bare = DailyUsageFactory(
        tenant=tenant,
        model="fake-large",
        service_name="",
        customer_id="",
        cost_usd=Decimal("0.00005"),
    )
    client.force_login(tenant_viewer)

    # when the viewer opens both
    titles = [
        re.search(
            r"<h2>([^<]*)</h2>",
            client.get(reverse("admin:usage_dailyusage_change", args=[row.pk])).content.decode(),
        ).group(1)
        for row in (scoped, bare)
    ]

    # then each title says what the row counts, with no bare "-" standing for "any"
    assert titles == [
        f"{scoped.day} fake-small, service summarizer, customer acme: $0.000018",
        f"{bare.day} fake-large, no service, no customer: $0.00005",
    ]


@pytest.mark.django_db
def test_dashboard_of_a_tenant_without_calls_says_there_is_no_usage_under_daily_cost(client):
    # given a tenant that has made no call
    tenant = TenantFactory()
    client.force_login(_member(tenant))

    # when its admin opens the dashboard
    html = client.get(
        reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk])
    ).content.decode()

    # then the daily cost card says so, as the breakdowns do, rather than an empty plot
    card = re.search(r"<h2>Daily cost</h2>(.*?)</div>", html, re.S).group(1)
    assert card.strip() == '<p class="usage-empty">No usage in this period.</p>'


def test_daily_usage_and_price_dates_read_as_the_titles_and_filters_write_them(
    client, tenant, tenant_viewer
):
    # given a day's row and a price dated from a day
    from tests.factories import ModelPriceFactory

    row = DailyUsageFactory(tenant=tenant, day=dt.date(2026, 11, 3), model="fake-large")
    ModelPriceFactory(tenant=tenant, model="own-model", effective_from=dt.date(2024, 1, 5))
    client.force_login(tenant_viewer)

    # when the viewer opens the daily usage list, the row and the price list
    listed = client.get(reverse("admin:usage_dailyusage_changelist")).content.decode()
    shown = client.get(reverse("admin:usage_dailyusage_change", args=[row.pk])).content.decode()
    prices = client.get(reverse("admin:llm_providers_modelprice_changelist")).content.decode()

    # then each day is written YYYY-MM-DD, as the page's title and the day filter write it
    assert re.search(
        r"<th class=\"field-day[^\"]*\"><a href=\"[^\"]*\">2026-11-03</a></th>", listed
    )
    assert '<div class="readonly">2026-11-03</div>' in shown
    assert '<td class="field-effective_from nowrap">2024-01-05</td>' in prices
    assert "Nov. 3, 2026" not in listed + shown and "Jan. 5, 2024" not in prices
