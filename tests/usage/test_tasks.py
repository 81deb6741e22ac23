"""Celery tasks: eager runs, retention, and a real worker process on the Redis broker."""

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.db import connection, connections
from django.db.models import Sum
from django.utils import timezone

from config.celery import app as celery_app
from llm_providers.models import Tenant
from tests.factories import (
    BudgetFactory,
    CallLogFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    TenantFactory,
)
from usage.aggregation import daily_usage_recompute
from usage.budget import budget_reserve
from usage.models import (
    AlertDelivery,
    Budget,
    BudgetCounter,
    BudgetHold,
    CallLog,
    CostAlert,
    DailyUsage,
)
from usage.retention import call_logs_purge
from usage.tasks import aggregate_daily_usage, purge_call_logs

BASE_DIR = Path(django_settings.BASE_DIR)


@pytest.mark.django_db
def test_aggregate_task_writes_daily_usage_then_checks_alerts():
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50])
    CallLogFactory(
        tenant=tenant, cost_usd=Decimal("6"), created_at=timezone.now() - dt.timedelta(minutes=1)
    )

    aggregate_daily_usage.delay()

    assert DailyUsage.objects.get(tenant=tenant).cost_usd == Decimal("6")
    assert CostAlert.objects.get(tenant=tenant).percent == 50


def _per_local_day(zone_name):
    zone = ZoneInfo(zone_name)
    per_day = Counter(log.created_at.astimezone(zone).date() for log in CallLog.objects.all())
    return dict(per_day)


def _stored_per_day():
    return dict(DailyUsage.objects.values_list("day").annotate(n=Sum("request_count")))


@pytest.mark.postgres
@pytest.mark.django_db
def test_aggregate_task_recounts_a_new_time_zone_whose_queued_recompute_never_ran(
    settings, django_capture_on_commit_callbacks
):
    # given 60 hourly calls aggregated in New York days
    settings.USAGE_AGGREGATION_LOOKBACK_MINUTES = 60
    tenant = TenantFactory(timezone="America/New_York")
    config = ProviderConfigFactory(tenant=tenant)
    now = timezone.now()
    for hour in range(60):
        CallLogFactory(
            tenant=tenant, provider_config=config, created_at=now - dt.timedelta(hours=hour)
        )
    aggregate_daily_usage.delay()

    # when the zone changes while the broker is down: the recompute queued
    # on commit is never sent
    with django_capture_on_commit_callbacks(execute=False):
        tenant.timezone = "Asia/Tokyo"
        tenant.save()
    aggregate_daily_usage.delay()

    # then the next aggregation counts every day in Tokyo days, each hour once
    assert _stored_per_day() == _per_local_day("Asia/Tokyo")
    assert DailyUsage.objects.aggregate(n=Sum("request_count"))["n"] == 60


@pytest.mark.django_db
def test_purge_deletes_expired_call_logs_in_batches_and_keeps_daily_usage(settings):
    # given five logs older than the 90-day retention, aggregated back then, and one recent
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 90
    now = timezone.now()
    old = now - dt.timedelta(days=100)
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    for _ in range(5):
        CallLogFactory(tenant=tenant, provider_config=config, created_at=old)
    recent = CallLogFactory(tenant=tenant, provider_config=config, created_at=now)
    daily_usage_recompute(first_day=old.date(), last_day=old.date(), now=old + dt.timedelta(days=1))

    # when
    result = call_logs_purge(now=now, batch_size=2)

    # then
    assert result.call_logs == 5
    assert list(CallLog.objects.values_list("pk", flat=True)) == [recent.pk]
    assert list(DailyUsage.objects.values_list("day", "request_count")) == [(old.date(), 5)]


@pytest.mark.django_db
def test_purge_task_drops_lapsed_budget_holds(settings):
    settings.USAGE_BUDGET_BACKEND = "database"
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 0
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant)
    budget_reserve(
        tenant=tenant,
        provider_config_id=None,
        service_name="s",
        customer_id="c",
        amount_usd=Decimal("1"),
        request_id="r-1",
    )
    assert BudgetHold.objects.count() == 1

    purge_call_logs.delay()

    assert BudgetHold.objects.count() == 0
    assert BudgetCounter.objects.count() == 1


def _database_url() -> str:
    db = connection.settings_dict
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def celery_worker_process():
    """A real `celery -A config worker` on the configured Redis broker and the test database."""
    celery_app.control.purge()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    log = open(BASE_DIR / "var" / "test-celery-worker.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        yield process
    finally:
        celery_app.conf.task_always_eager = eager
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for(condition, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def _var_dir():
    (BASE_DIR / "var").mkdir(exist_ok=True)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_worker_process_writes_daily_usage_and_delivers_an_alert(_var_dir, celery_worker_process):
    # given committed call logs over half of a budget
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, alert_percentages=[50], alert_emails="finance@example.com")
    CallLogFactory(
        tenant=tenant, cost_usd=Decimal("7.5"), created_at=timezone.now() - dt.timedelta(minutes=1)
    )

    # when the aggregation task is sent to the broker
    aggregate_daily_usage.delay()

    # then the worker rolls the logs up, checks thresholds and delivers the alert
    assert _wait_for(lambda: DailyUsage.objects.filter(tenant=tenant).exists()), (
        BASE_DIR / "var" / "test-celery-worker.log"
    ).read_text()[-3000:]
    assert DailyUsage.objects.get(tenant=tenant).cost_usd == Decimal("7.5")
    assert _wait_for(
        lambda: AlertDelivery.objects.filter(
            alert__tenant=tenant, delivered_at__isnull=False
        ).exists()
    ), (BASE_DIR / "var" / "test-celery-worker.log").read_text()[-3000:]
    alert = CostAlert.objects.get(tenant=tenant)
    assert (alert.percent, alert.spend_usd) == (50, Decimal("7.5"))
    assert celery_worker_process.poll() is None


class _CountingReceiver:
    """A loopback webhook receiver that fails its first `failures` requests, then accepts."""

    def __init__(self, httpserver, failures):
        self.failures = failures
        self.received = 0
        self.accepted = []
        self.lock = threading.Lock()
        httpserver.expect_request("/hooks/pipeline", method="POST").respond_with_handler(
            self.handle
        )
        self.url = httpserver.url_for("/hooks/pipeline")

    def handle(self, request):
        from werkzeug import Response

        with self.lock:
            self.received += 1
            if self.received <= self.failures:
                return Response("down", status=503)
            self.accepted.append(json.loads(request.data)["alert"]["id"])
        return Response("ok", status=200)


def _expected_daily_usage(tenant):
    """DailyUsage of the tenant as its CallLog rows say, in its current time zone."""
    tz = ZoneInfo(tenant.timezone)
    status = CallLog.Status
    rows: dict[tuple, list] = {}
    for log in CallLog.objects.filter(tenant=tenant):
        key = (
            log.created_at.astimezone(tz).date(), log.provider_config_id, log.provider_type,
            log.model_answered or log.model_requested, log.service_name, log.customer_id,
        )  # fmt: skip
        increments = (
            1, log.status == status.ERROR, log.status == status.BLOCKED,
            log.status == status.CACHED,
            log.cost_usd is None and log.price_source == CallLog.PriceSource.UNKNOWN,
            log.cost_usd is not None, log.usage_estimated, log.input_tokens, log.output_tokens,
            log.cache_read_tokens,
            log.cache_write_tokens, log.reasoning_tokens, log.cost_usd or Decimal(0),
            log.latency_ms,
        )  # fmt: skip
        values = rows.setdefault(key, [0] * len(increments))
        for index, increment in enumerate(increments):
            values[index] += increment
    return {key: tuple(values) for key, values in rows.items()}


def _stored_daily_usage(tenant):
    return {
        (row.day, row.provider_config_id, row.provider_type, row.model, row.service_name,
         row.customer_id): tuple(getattr(row, name) for name in DailyUsage.VALUE_FIELDS)
        for row in DailyUsage.objects.filter(tenant=tenant)
    }  # fmt: skip


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_busy_tenants_with_aggregation_alerts_and_a_zone_change_keep_every_count_exact(
    settings, httpserver, allow_private_urls
):
    from llm_providers.completion import complete, stream
    from usage.aggregation import daily_usage_recompute_recent, daily_usage_recount_pending
    from usage.alerts import alert_deliveries_send_due, alerts_check
    from usage.bookkeeping import bookkeeping_flush, bookkeeping_submit
    from usage.budget import BudgetExceeded
    from usage.periods import period_containing
    from usage.selectors import budget_scope_filter

    # given two tenants in Tokyo and UTC, each with a Fake provider that fails
    # its first calls and a backup, at $1,000 / $2,000 per million tokens
    # ($0.014 a call; "fake-large" has no price), with budgets alerting by email
    # and through a webhook that fails its first three requests; a blocking
    # budget refuses one customer's calls past $0.10
    settings.CALL_LOG_ASYNC = True
    settings.USAGE_ALERT_RETRY_BASE_SECONDS = 0
    receiver = _CountingReceiver(httpserver, failures=3)
    ModelPriceFactory(model="fake-small", input_per_mtok="1000", output_per_mtok="2000")
    tokyo = TenantFactory(slug="tokyo-co", timezone="Asia/Tokyo")
    utc = TenantFactory(slug="utc-co", timezone="UTC")
    budgets = []
    for tenant in (tokyo, utc):
        ProviderConfigFactory(
            tenant=tenant,
            name="main",
            is_default=True,
            priority=1,
            options={"latency_ms": 20, "fail_first": 3},
        )
        ProviderConfigFactory(tenant=tenant, name="backup", priority=2, options={"latency_ms": 5})
        budgets += [
            BudgetFactory(
                tenant=tenant, name=f"{tenant.slug}-cap", period=Budget.Period.DAILY,
                customer_id="customer-0", action=Budget.Action.BLOCK,
                limit_usd=Decimal("0.1"), webhook_url=receiver.url,
            ),
            BudgetFactory(
                tenant=tenant, name=f"{tenant.slug}-daily", period=Budget.Period.DAILY,
                limit_usd=Decimal("0.3"), webhook_url=receiver.url,
            ),
            BudgetFactory(
                tenant=tenant, name=f"{tenant.slug}-monthly", limit_usd=Decimal("0.9"),
                webhook_url=receiver.url,
            ),
        ]  # fmt: skip
    errors = []
    calls_made = []
    third_made = threading.Event()
    calls_done = threading.Event()

    def guarded(work):
        def run():
            try:
                work()
            except Exception as exc:  # any error fails the test below
                errors.append(exc)
            finally:
                connection.close()

        return threading.Thread(target=run)

    def caller(index):
        tenant = (tokyo, utc)[index % 2]
        for step in range(6):
            kwargs = {
                "tenant": tenant,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 10,
                "customer_id": f"customer-{index % 3}",
                "service_name": ("chat", "search")[step % 2],
                "model": "fake-large" if step == 5 else None,
            }
            try:
                if step % 2:
                    assert "".join(stream(**kwargs)) == "Echo: hi"
                else:
                    assert complete(**kwargs).content == "Echo: hi"
            except BudgetExceeded:
                assert kwargs["customer_id"] == "customer-0"
            calls_made.append(index)
            if len(calls_made) >= 24:
                third_made.set()

    def repeatedly(work):
        def loop():
            while not calls_done.is_set():
                work()
                time.sleep(0.01)

        return loop

    def aggregate():
        daily_usage_recompute_recent()
        today = timezone.now().date()
        daily_usage_recompute(
            first_day=today - dt.timedelta(days=1), last_day=today + dt.timedelta(days=1)
        )

    def move_zone():
        # Once a third of the calls are made; the recount is queued on commit.
        third_made.wait(timeout=30)
        moved = Tenant.objects.get(pk=utc.pk)
        moved.timezone = "America/New_York"
        moved.save()

    callers = [guarded(lambda i=i: caller(i)) for i in range(12)]
    others = [
        guarded(repeatedly(work))
        for work in (aggregate, aggregate, alerts_check, alerts_check, alert_deliveries_send_due)
    ] + [guarded(move_zone)]

    # when twelve callers, two aggregations, two checks, the sender and a change
    # of zone all run at once, and then everything still due is done
    for thread in [*callers, *others]:
        thread.start()
    for thread in callers:
        thread.join(timeout=60)
    calls_done.set()
    for thread in others:
        thread.join(timeout=60)
    assert bookkeeping_flush(timeout=30)
    # The writer thread's own connections close, so the test database can be dropped.
    bookkeeping_submit(connections.close_all, label="close connections")
    assert bookkeeping_flush(timeout=10)
    daily_usage_recompute_recent()
    daily_usage_recount_pending()
    alerts_check()
    now = timezone.now()
    while AlertDelivery.objects.filter(next_attempt_at__isnull=False).exists():
        now += dt.timedelta(hours=2)
        alert_deliveries_send_due(now=now)
    utc.refresh_from_db()

    # then no thread failed, and every call was logged
    assert errors == []
    assert len(calls_made) == 72
    assert utc.timezone == "America/New_York"
    logs = CallLog.objects.all()
    assert logs.filter(status="error").exists() and logs.filter(status="blocked").exists()
    assert logs.filter(cost_usd__isnull=True, price_source="unknown").exists()

    # DailyUsage is CallLog exactly, per tenant and local day of its current zone
    for tenant in (tokyo, utc):
        assert _stored_daily_usage(tenant) == _expected_daily_usage(tenant), tenant.slug
    assert not DailyUsage.objects.exclude(tenant__in=[tokyo, utc]).exists()

    # a second run changes nothing
    stored = set(DailyUsage.objects.values_list("pk", "updated_at", *DailyUsage.VALUE_FIELDS))
    daily_usage_recompute_recent()
    daily_usage_recount_pending()
    today = timezone.now().date()
    daily_usage_recompute(
        first_day=today - dt.timedelta(days=2), last_day=today + dt.timedelta(days=2)
    )
    assert (
        set(DailyUsage.objects.values_list("pk", "updated_at", *DailyUsage.VALUE_FIELDS)) == stored
    )

    # each percent the CallLog spend crossed in the current period alerted once, no other
    for budget in budgets:
        budget.refresh_from_db()
        period = period_containing(budget.period, timezone.now(), budget.tenant.timezone)
        spend = (
            logs.filter(
                tenant=budget.tenant, created_at__gte=period.start, created_at__lt=period.end
            )
            .filter(budget_scope_filter(budget))
            .aggregate(total=Sum("cost_usd"))["total"]
        )
        crossed = [p for p in budget.alert_percentages if spend * 100 >= budget.limit_usd * p]
        refused = logs.filter(
            budget_scope_filter(budget),
            tenant=budget.tenant,
            created_at__gte=period.start,
            created_at__lt=period.end,
            error_code="budget_exceeded",
        )
        if budget.is_blocking and refused.exists():
            crossed = sorted({*crossed, 100})  # it refuses calls: its 100 % alert says so
        alerted = CostAlert.objects.filter(budget=budget, period_key=period.key)
        assert sorted(alerted.values_list("percent", flat=True)) == crossed, (budget.name, spend)

    # every delivery went out exactly once per recipient, its failures counted
    deliveries = AlertDelivery.objects.all()
    assert deliveries.filter(delivered_at__isnull=True).count() == 0
    webhooks = deliveries.filter(channel=AlertDelivery.Channel.WEBHOOK)
    assert sorted(receiver.accepted) == sorted(webhooks.values_list("alert_id", flat=True))
    assert receiver.received == sum(webhooks.values_list("attempts", flat=True))
    assert receiver.received == len(receiver.accepted) + 3
    emails = deliveries.filter(channel=AlertDelivery.Channel.EMAIL)
    assert len(mail.outbox) == emails.count() == webhooks.count()
    assert set(emails.values_list("attempts", flat=True)) == {1}
