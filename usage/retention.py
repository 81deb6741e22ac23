"""Retention: call logs older than USAGE_CALL_LOG_RETENTION_DAYS are deleted; DailyUsage stays."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from .aggregation import call_logs_purge_horizon_raise
from .models import BudgetCounter, BudgetHold, CallLog

# 5,000 rows per DELETE: short transactions that never hold a large table lock.
_BATCH = 5_000
# Database budget counters are kept two days after their period, for late settles.
_COUNTER_KEEP = timedelta(days=2)


@dataclass
class PurgeResult:
    call_logs: int = 0
    budget_counters: int = 0
    budget_holds: int = 0


def call_logs_purge(*, now: datetime | None = None, batch_size: int = _BATCH) -> PurgeResult:
    """Delete expired call logs in batches, and budget counters and holds no longer needed.

    The aggregation never recomputes days older than the retention, so their
    DailyUsage rows are kept.
    """
    now = now or timezone.now()
    result = PurgeResult()
    days = settings.USAGE_CALL_LOG_RETENTION_DAYS
    if days:
        cutoff = now - timedelta(days=days)
        call_logs_purge_horizon_raise(before=cutoff)
        while True:
            batch = list(
                CallLog.objects.filter(created_at__lt=cutoff)
                .order_by()
                .values_list("pk", flat=True)[:batch_size]
            )
            if not batch:
                break
            deleted, _ = CallLog.objects.filter(pk__in=batch).delete()
            result.call_logs += deleted
    result.budget_holds, _ = BudgetHold.objects.filter(expires_at__lt=now).delete()
    result.budget_counters, _ = BudgetCounter.objects.filter(
        period_end__lt=now - _COUNTER_KEEP
    ).delete()
    return result
