"""Celery tasks: eager runs, retention, and a real worker process on the Redis broker."""

import datetime as dt
import os
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from config.celery import app as celery_app
from tests.factories import BudgetFactory, CallLogFactory, ProviderConfigFactory, TenantFactory
from usage.aggregation import daily_usage_recompute
from usage.budget import budget_reserve
from usage.models import AlertDelivery, BudgetCounter, BudgetHold, CallLog, CostAlert, DailyUsage
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
