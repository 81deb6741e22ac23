"""Celery tasks of the usage app: thin (ids or nothing in, one service call), idempotent.

Beat runs `aggregate_daily_usage` every USAGE_AGGREGATION_INTERVAL_SECONDS
(it also finishes a recount of a tenant's days in a new time zone that did
not run to its end), which queues `check_alerts` when it is done;
`send_due_alert_deliveries` retries failed deliveries; `purge_call_logs`
applies retention daily.
"""

from __future__ import annotations

from datetime import date

from celery import shared_task
from django.db import OperationalError

from llm_providers.models import Tenant

from .aggregation import (
    daily_usage_recompute,
    daily_usage_recompute_recent,
    daily_usage_recompute_tenant_history,
    daily_usage_recount_pending,
)
from .alerts import alert_deliveries_send_due, alert_delivery_attempt, alerts_check
from .retention import call_logs_purge

# A database that went away is worth three more tries; any other error is a bug.
_RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "max_retries": 3,
}


@shared_task(name="usage.aggregate_daily_usage", **_RETRY)
def aggregate_daily_usage() -> None:
    daily_usage_recompute_recent()
    # Only after a change of time zone whose own recount did not finish.
    daily_usage_recount_pending()
    check_alerts.delay()


@shared_task(name="usage.check_alerts", **_RETRY)
def check_alerts() -> None:
    alerts_check()


@shared_task(name="usage.refresh_tenant_usage", **_RETRY)
def refresh_tenant_usage(tenant_id: str, first_day: str, last_day: str) -> None:
    """Recompute one tenant's days now (the dashboard's "Recompute" button), then check alerts."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return
    daily_usage_recompute(
        first_day=date.fromisoformat(first_day),
        last_day=date.fromisoformat(last_day),
        tenant=tenant,
    )
    check_alerts.delay()


@shared_task(name="usage.recompute_tenant_history", **_RETRY)
def recompute_tenant_history(tenant_id: str) -> None:
    """Recompute a tenant's usage in its time zone (queued when the zone changes)."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return
    daily_usage_recompute_tenant_history(tenant=tenant)
    check_alerts.delay()


@shared_task(name="usage.send_alert_delivery", **_RETRY)
def send_alert_delivery(delivery_id: int) -> None:
    alert_delivery_attempt(delivery_id=delivery_id)


@shared_task(name="usage.send_due_alert_deliveries", **_RETRY)
def send_due_alert_deliveries() -> None:
    alert_deliveries_send_due()


@shared_task(name="usage.purge_call_logs", **_RETRY)
def purge_call_logs() -> None:
    call_logs_purge()
