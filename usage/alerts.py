"""Cost alerts: budget thresholds, provider error rates and unpriced usage, and their delivery.

Checks run after each aggregation. An alert is one CostAlert row, unique per
(budget, period, percent, limit) or (subject, period): a rerun, or two checks at
once, cannot create it twice. Creating it creates one AlertDelivery per
channel (an email to the recipients, one per webhook), queued once the row is
committed. A failed delivery is retried with exponential backoff by the
periodic `alert_deliveries_send_due`; its attempts, last error and next
attempt are kept. An email that went out while the mail server refused some
recipients for now (4xx) is sent to them alone by a new delivery.

Budget alerts go to the budget's recipients. Error-rate and unpriced-usage
alerts go to every recipient of the tenant's active budgets or, when there
are none, to the tenant's admins.
"""

from __future__ import annotations

import logging
import smtplib
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Max, Min, Q, Sum, Value, When
from django.db.models.functions import TruncMonth
from django.template.defaultfilters import pluralize
from django.template.loader import render_to_string
from django.utils import timezone

from config.settings.consistency import ALERT_DELIVERY_MARGIN_SECONDS
from llm_providers.encryption import UnreadableSecret
from llm_providers.models import ProviderConfig, Tenant, TenantMembership

from .aggregation import call_logs_purged_before, earliest_recomputable_day
from .budget import BudgetExceeded, budget_refusal_prefix
from .locking import exclusive_transaction, rows_key_share
from .mail import EmailTimedOut, Refused, email_send
from .models import (
    AggregationState,
    AlertDelivery,
    Budget,
    CallLog,
    CostAlert,
    DailyUsage,
    DailyUsageRecount,
    email_list_parse,
)
from .money import usd_format_beside, usd_format_exact
from .periods import period_containing, utc_window_for_days, zone
from .selectors import (
    budget_list_active,
    budget_period_usage,
    budget_scope_filter,
    percent_text,
    provider_error_rates,
)
from .webhooks import WebhookFailed, webhook_label, webhook_post

logger = logging.getLogger(__name__)

# A claimed delivery is left alone at least this long, and always longer
# than its send may take (see _claim_seconds).
_CLAIM_SECONDS = 120
# Beyond the send's own time limit: rendering, recording the outcome, and
# resolving a webhook's host. CELERY_TASK_TIME_LIMIT leaves a task at least
# this much more than the longer time limit (config/settings/consistency.py).
_CLAIM_MARGIN_SECONDS = ALERT_DELIVERY_MARGIN_SECONDS
# What an attempt reads until it records its outcome: if its worker is killed
# mid-send, the attempt stays counted with this error once its claim expires.
_NO_OUTCOME = AlertDelivery.NO_OUTCOME
# Deliveries handled per periodic run; the rest wait for the next run.
_DUE_BATCH = 200
# What a delivery's note (its last_error) holds at most.
_NOTE_LENGTH = AlertDelivery._meta.get_field("last_error").max_length


# Any constant identifies the lock; this one spells "alerts".
_ERROR_RATE_LOCK_KEY = 0x616C65727473
_sqlite_lock = threading.Lock()

# Where the unpriced-usage check keeps the time of its previous run.
_UNPRICED_CHECK_STATE = "unpriced_usage_check"
# A recompute stamps the rows it changes with the time it began, and may wait
# for another recompute's lock before its rows become visible: rows stamped up
# to this long before the previous check are read again (an alert that exists
# is not created twice).
_UNPRICED_CHECK_OVERLAP = timedelta(hours=1)


class AlertDeliveryFailed(Exception):
    """One delivery attempt failed; the message says why, without secrets."""


@contextmanager
def _error_rate_alerts_exclusive() -> Iterator[None]:
    """One transaction, and no other error-rate check creating alerts at the same time.

    An error-rate alert's percentage differs between two checks of one window,
    so the unique key (which includes it) does not stop both from creating one.
    """
    with exclusive_transaction(_ERROR_RATE_LOCK_KEY, _sqlite_lock):
        yield


# --- creating alerts -----------------------------------------------------------


def _queue_deliveries(delivery_ids: list[int]) -> None:
    from .tasks import send_alert_delivery

    for delivery_id in delivery_ids:
        send_alert_delivery.delay(delivery_id)


def _alert_create(
    *,
    now: datetime,
    tenant_id,
    kind: str,
    subject_key: str,
    period_key: str,
    message: str,
    emails: list[str],
    webhooks: list[str],
    percent: int = 0,
    budget: Budget | None = None,
    provider_config_id=None,
    spend_usd: Decimal | None = None,
    limit_usd: Decimal | None = None,
) -> CostAlert | None:
    """Create the alert and its deliveries, or nothing if it already exists or
    its tenant is gone.

    What it refers to is locked first (rows_key_share), in the deletes' order:
    a delete of its tenant waits for it and takes it along, or leaves nothing
    to alert; a budget or provider config deleted first leaves the alert
    without it, as deleting one does to the alerts it had.
    """
    try:
        with transaction.atomic():
            if not rows_key_share(Tenant, [tenant_id]):
                return None  # deleted since it was read
            if budget is not None and not rows_key_share(Budget, [budget.pk]):
                budget = None
            if provider_config_id is not None and not rows_key_share(
                ProviderConfig, [provider_config_id]
            ):
                provider_config_id = None
            alert = CostAlert.objects.create(
                tenant_id=tenant_id,
                kind=kind,
                budget=budget,
                provider_config_id=provider_config_id,
                subject_key=subject_key,
                period_key=period_key,
                percent=percent,
                spend_usd=spend_usd,
                limit_usd=limit_usd,
                message=message,
                created_at=now,
            )
            deliveries = []
            if emails:
                joined = ", ".join(emails)
                deliveries.append(
                    AlertDelivery(
                        alert=alert,
                        channel=AlertDelivery.Channel.EMAIL,
                        target=joined,
                        target_label=joined[:300],
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
            deliveries += [
                AlertDelivery(
                    alert=alert,
                    channel=AlertDelivery.Channel.WEBHOOK,
                    target=url,
                    target_label=webhook_label(url),
                    next_attempt_at=now,
                    created_at=now,
                )
                for url in webhooks
            ]
            AlertDelivery.objects.bulk_create(deliveries)
    except IntegrityError:
        return None  # already alerted (perhaps by a concurrent check)
    ids = [d.pk for d in deliveries]
    # robust: a broker that is down must not undo the alert; the periodic run sends it.
    transaction.on_commit(lambda: _queue_deliveries(ids), robust=True)
    return alert


def _tenant_recipients(tenant_id) -> tuple[list[str], list[str]]:
    """Everyone the tenant's active budgets alert, else the tenant's admins."""
    emails: dict[str, None] = {}
    webhooks: dict[str, None] = {}
    for budget in Budget.objects.filter(tenant_id=tenant_id, is_active=True):
        for address in budget.email_list:
            emails.setdefault(address, None)
        if budget.webhook_url_readable:
            webhooks.setdefault(budget.webhook_url_readable, None)
    if not emails and not webhooks:
        admins = TenantMembership.objects.filter(
            tenant_id=tenant_id, role=TenantMembership.Role.ADMIN, user__is_active=True
        ).exclude(user__email="")
        for address in admins.values_list("user__email", flat=True):
            emails.setdefault(address, None)
    return list(emails), list(webhooks)


def _budget_message(budget: Budget, period, percent: int, spend: Decimal) -> str:
    # The limit is written as set: $10.005 must not read $10.01.
    text = (
        f"{budget.tenant.name}: budget “{budget.name}” ({budget.scope_label}, "
        f"{budget.get_period_display().lower()} {period.key}) has reached {percent}% of its "
        f"{usd_format_exact(budget.limit_usd)} limit: "
        f"{usd_format_beside(spend, budget.limit_usd)} spent."
    )
    if budget.is_blocking and percent >= 100:
        text += (
            " Calls that would go over the limit are refused until the period resets "
            f"{_reset_text(period)}."
        )
    return text


def _unpriced_note(unpriced: int) -> str:
    """What a budget alert adds when requests in its scope and period have no known
    price: their cost is not in the spend, which is then less than what was spent."""
    if not unpriced:
        return ""
    return (
        f" {unpriced} request{pluralize(unpriced)} in its scope "
        f"{pluralize(unpriced, 'has,have')} no known price and "
        f"{pluralize(unpriced, 'is,are')} not counted in the spend."
    )


def _reset_text(period) -> str:
    """When the period ends, in the tenant's time zone the period is counted in."""
    end = period.end.astimezone(zone(period.timezone_name))
    return f"at {end:%Y-%m-%d %H:%M} ({period.timezone_name or 'UTC'})"


def _spent_and_left(spend: Decimal, limit: Decimal) -> tuple[str, str]:
    """The spend and what is left of the limit, each written beside the limit.

    Rounded, they could add up to a cent off the limit ($3.455 and $6.545 of
    $10 read "$3.46" and "$6.55"): then both are written exactly.
    """
    left = limit - spend
    spent_text, left_text = usd_format_beside(spend, limit), usd_format_beside(left, limit)
    shown = sum(Decimal(text.lstrip("$").replace(",", "")) for text in (spent_text, left_text))
    if shown != limit:
        return usd_format_exact(spend), usd_format_exact(left)
    return spent_text, left_text


def _budget_refusing_message(budget: Budget, period, spend: Decimal) -> str:
    limit = budget.limit_usd
    spent_text, left_text = _spent_and_left(spend, limit)
    return (
        f"{budget.tenant.name}: budget “{budget.name}” ({budget.scope_label}, "
        f"{budget.get_period_display().lower()} {period.key}) refuses calls: "
        f"{spent_text} of its {usd_format_exact(limit)} limit is spent, "
        f"and calls that could cost more than the {left_text} "
        f"left are refused until the period resets {_reset_text(period)}."
    )


def _budget_refused_calls(budget: Budget, period) -> bool:
    """Whether the blocking budget refused a call in the period at its current limit
    (blocked call logs name it and the limit): calls refused under a lower limit do
    not make a raised one refuse calls.

    Only the days whose DailyUsage counts blocked calls in the budget's scope
    are searched, so a period without any costs one small query.
    """
    scope = budget_scope_filter(budget)
    blocked_days = (
        DailyUsage.objects.filter(
            tenant_id=budget.tenant_id,
            day__gte=period.first_day,
            day__lte=period.last_day,
            blocked_count__gt=0,
        )
        .filter(scope)
        .aggregate(first=Min("day"), last=Max("day"))
    )
    if blocked_days["first"] is None:
        return False
    start, end = utc_window_for_days(
        blocked_days["first"], blocked_days["last"], period.timezone_name
    )
    return (
        CallLog.objects.filter(
            tenant_id=budget.tenant_id,
            created_at__gte=max(start, period.start),
            created_at__lt=min(end, period.end),
            status=CallLog.Status.BLOCKED,
            error_code=BudgetExceeded.code,
            error_message__startswith=budget_refusal_prefix(
                budget.name, budget.period, budget.limit_usd
            ),
        )
        .filter(scope)
        .exists()
    )


def budget_thresholds_check(*, now: datetime) -> list[CostAlert]:
    """Alert once for each alert percentage of its limit a budget's period spend has
    crossed; a limit changed mid-period alerts again for its own percentages.

    The current period is checked, and the previous one while the aggregation
    lookback still reaches into it (late logs can push it over).
    """
    lookback = timedelta(minutes=settings.USAGE_AGGREGATION_LOOKBACK_MINUTES)
    created = []
    for budget in budget_list_active():
        # One budget that cannot be checked must not stop the others' alerts.
        try:
            created += _budget_thresholds_check(budget=budget, now=now, lookback=lookback)
        except Exception as exc:  # noqa: BLE001 - reported, the loop goes on
            logger.error(
                "budget %s could not be checked for alerts: %s", budget.pk, type(exc).__name__
            )
    return created


def _budget_thresholds_check(*, budget: Budget, now: datetime, lookback) -> list[CostAlert]:
    created: list[CostAlert] = []
    percentages = sorted(set(budget.alert_percentages or []))
    if not percentages:
        return created
    tz_name = budget.tenant.timezone
    periods = {
        p.key: p
        for p in (
            period_containing(budget.period, now - lookback, tz_name),
            period_containing(budget.period, now, tz_name),
        )
    }
    spends = [
        (period, *budget_period_usage(budget=budget, period=period)) for period in periods.values()
    ]
    # Read after the spend: a change of zone that the spend may already count
    # in part is stored with its request, removed once every day is recounted.
    if DailyUsageRecount.objects.filter(tenant_id=budget.tenant_id).exists():
        # Until the recount is done the tenant's days are counted in two zones,
        # some hours twice; the recount's own check follows it.
        return created
    for period, spend, unpriced in spends:
        crossed = [p for p in percentages if spend * 100 >= budget.limit_usd * p]
        # A blocking budget refuses a call whose worst case does not fit, so it
        # can refuse every call from, say, 95 % on: its 100 % alert says so then.
        may_refuse = budget.is_blocking and 100 in percentages and 100 not in crossed
        if not crossed and not may_refuse:
            continue
        # A percentage is of the limit: after the limit changes, those crossed at
        # the new one alert (once), as for a fresh budget.
        existing = set(
            CostAlert.objects.filter(
                budget=budget, period_key=period.key, limit_usd=budget.limit_usd
            ).values_list("percent", flat=True)
        )
        refusing = may_refuse and 100 not in existing and _budget_refused_calls(budget, period)
        if refusing:
            crossed.append(100)
        for percent in crossed:
            if percent in existing:
                continue
            if refusing and percent == 100:
                message = _budget_refusing_message(budget, period, spend)
            else:
                message = _budget_message(budget, period, percent, spend)
            message += _unpriced_note(unpriced)
            alert = _alert_create(
                now=now,
                tenant_id=budget.tenant_id,
                kind=CostAlert.Kind.BUDGET,
                subject_key=str(budget.pk),
                period_key=period.key,
                percent=percent,
                budget=budget,
                provider_config_id=budget.provider_config_id,
                spend_usd=spend,
                limit_usd=budget.limit_usd,
                message=message,
                emails=budget.email_list,
                webhooks=[budget.webhook_url_readable] if budget.webhook_url_readable else [],
            )
            if alert is not None:
                created.append(alert)
    return created


def error_rates_check(*, now: datetime) -> list[CostAlert]:
    """Alert once per window when a provider config fails more than the allowed share."""
    threshold = settings.USAGE_ERROR_RATE_THRESHOLD
    minimum = settings.USAGE_ERROR_RATE_MIN_REQUESTS
    minutes = settings.USAGE_ERROR_RATE_WINDOW_MINUTES
    failing = [
        row
        for row in provider_error_rates(now=now)
        if row[2] >= minimum and row[3] / row[2] > threshold
    ]
    if not failing:
        return []
    window = minutes * 60
    bucket = datetime.fromtimestamp(now.timestamp() // window * window, tz=UTC)
    period_key = bucket.strftime("%Y-%m-%dT%H:%MZ")
    tenants = Tenant.objects.in_bulk({row[0] for row in failing})
    configs = ProviderConfig.objects.in_bulk({row[1] for row in failing})
    created = []
    with _error_rate_alerts_exclusive():
        for tenant_id, config_id, total, errors in failing:
            if tenant_id not in tenants:
                continue  # deleted since its calls were counted
            alert = _error_rate_alert_create(
                now=now,
                tenant=tenants[tenant_id],
                config_id=config_id,
                config=configs.get(config_id),
                total=total,
                errors=errors,
                period_key=period_key,
            )
            if alert is not None:
                created.append(alert)
    return created


def _error_rate_alert_create(
    *, now: datetime, tenant: Tenant, config_id, config, total: int, errors: int, period_key: str
) -> CostAlert | None:
    threshold = settings.USAGE_ERROR_RATE_THRESHOLD
    minutes = settings.USAGE_ERROR_RATE_WINDOW_MINUTES
    subject_key = str(config_id)
    if CostAlert.objects.filter(
        tenant_id=tenant.pk,
        kind=CostAlert.Kind.ERROR_RATE,
        subject_key=subject_key,
        period_key=period_key,
    ).exists():
        return None
    name = config.name if config else str(config_id)
    emails, webhooks = _tenant_recipients(tenant.pk)
    return _alert_create(
        now=now,
        tenant_id=tenant.pk,
        kind=CostAlert.Kind.ERROR_RATE,
        subject_key=subject_key,
        period_key=period_key,
        provider_config_id=config_id if config else None,
        # Rounded down: 249 failures of 250 are not "100%".
        percent=errors * 100 // total,
        message=(
            f"{tenant.name}: provider “{name}” failed {errors} of {total} "
            f"calls ({percent_text(Decimal(errors) / total, above=threshold)}) in "
            f"{'the last minute' if minutes == 1 else f'the last {minutes} minutes'}, "
            f"above the {percent_text(threshold)} alert threshold."
        ),
        emails=emails,
        webhooks=webhooks,
    )


def unpriced_usage_check(*, now: datetime) -> list[CostAlert]:
    """Alert once per month for each model used without a known price (cost unknown, not $0).

    It reads the unpriced usage of the recent days, and of any older day whose
    DailyUsage changed since the previous check (a call log that arrived late,
    a recompute): an unpriced request of any day still recomputable alerts for
    its month, unless that month's alert for the model exists already.
    """
    lookback = timedelta(minutes=settings.USAGE_AGGREGATION_LOOKBACK_MINUTES)
    # UTC dates one day wide on either side cover every tenant's local day.
    since = (now - lookback).astimezone(UTC).date() - timedelta(days=1)
    state = AggregationState.objects.filter(name=_UNPRICED_CHECK_STATE).first()
    previous = state.last_run_at if state and state.last_run_at else now
    changed = Q(day__gte=since) | Q(updated_at__gte=min(previous, now) - _UNPRICED_CHECK_OVERLAP)
    rows = DailyUsage.objects.filter(changed, unpriced_count__gt=0)
    earliest = earliest_recomputable_day(
        timezone_name="UTC", now=now, purged_before=call_logs_purged_before()
    )
    if earliest is not None:
        # Older days are never recomputed, so they gain nothing (and the index is on the day).
        rows = rows.filter(day__gte=earliest - timedelta(days=1))
    # Per month: on the first days of a month the window also holds the end of
    # the previous one, whose alert must not stand in for the new month's.
    rows = (
        rows.annotate(month=TruncMonth("day"))
        .order_by()
        # The names come with the rows: only tenants and configs with unpriced
        # usage are read, and a tenant deleted since its usage was written is
        # left out by the join.
        .values(
            "tenant_id",
            "tenant__name",
            "provider_config_id",
            "provider_config__name",
            "provider_type",
            "model",
            "month",
        )
        .annotate(requests=Sum("unpriced_count"), first_day=Min("day"))
        .order_by("month")
    )
    created = []
    for row in rows:
        tenant_id, config_id, config_name = (
            row["tenant_id"],
            row["provider_config_id"],
            row["provider_config__name"],
        )
        month = row["first_day"].strftime("%Y-%m")
        # Fits the column whole (a config id, a provider type and a model as long as
        # DailyUsage keeps them), so the lookup below and the row agree.
        subject_key = f"{config_id or '-'}/{row['provider_type']}/{row['model']}"
        if CostAlert.objects.filter(
            tenant_id=tenant_id,
            kind=CostAlert.Kind.UNPRICED,
            subject_key=subject_key,
            period_key=month,
        ).exists():
            continue
        provider = config_name or row["provider_type"] or "unknown"
        emails, webhooks = _tenant_recipients(tenant_id)
        alert = _alert_create(
            now=now,
            tenant_id=tenant_id,
            kind=CostAlert.Kind.UNPRICED,
            subject_key=subject_key,
            period_key=month,
            # None when the config was deleted since (DailyUsage keeps its id).
            provider_config_id=config_id if config_name is not None else None,
            message=(
                f"{row['tenant__name']}: {row['requests']} request{pluralize(row['requests'])} to "
                f"model “{row['model']}” on “{provider}” since {row['first_day']} "
                f"{pluralize(row['requests'], 'has,have')} no known price, so "
                f"{pluralize(row['requests'], 'its,their')} cost is unknown: costs shown leave "
                f"{pluralize(row['requests'], 'it,them')} out (counted as unpriced, not as $0), "
                "and so do budgets. Add a model price for it."
            ),
            emails=emails,
            webhooks=webhooks,
        )
        if alert is not None:
            created.append(alert)
    if state is None:
        AggregationState.objects.get_or_create(
            name=_UNPRICED_CHECK_STATE, defaults={"last_run_at": now}
        )
    else:
        AggregationState.objects.filter(
            Q(last_run_at__isnull=True) | Q(last_run_at__lt=now), name=_UNPRICED_CHECK_STATE
        ).update(last_run_at=now)
    return created


def alerts_check(*, now: datetime | None = None) -> list[CostAlert]:
    """Every check that follows an aggregation; returns the alerts created."""
    now = now or timezone.now()
    return [
        *budget_thresholds_check(now=now),
        *error_rates_check(now=now),
        *unpriced_usage_check(now=now),
    ]


# --- delivering alerts ---------------------------------------------------------


def _slack_text(text: str) -> str:
    """`text` as Slack reads it literally: "&", "<" and ">" would otherwise start
    entities, links and mentions (a budget or model named "<!channel>" pings everyone)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _decimal_text(amount: Decimal | None) -> str | None:
    """A stored amount as a plain decimal string: str() writes a zero, or an amount
    under a millionth, in exponent form ("0E-12"), which receivers do not read as money."""
    return None if amount is None else f"{amount:f}"


def _payload(alert: CostAlert) -> dict:
    # `text` is for Slack; other receivers read `alert`, whose message is as written.
    return {
        "text": _slack_text(alert.message),
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "message": alert.message,
            "tenant": alert.tenant.slug,
            "budget": alert.budget.name if alert.budget else None,
            "period": alert.period_key,
            "percent": alert.percent,
            "spend_usd": _decimal_text(alert.spend_usd),
            "limit_usd": _decimal_text(alert.limit_usd),
            "created_at": alert.created_at.isoformat(),
        },
    }


def _email_context(alert: CostAlert) -> dict:
    """The email's period and time in the tenant's time zone, the one budgets count in."""
    tz_name = alert.tenant.timezone or "UTC"
    period = alert.period_key
    if alert.kind == CostAlert.Kind.BUDGET:
        # A budget's period key is a tenant-local day (2026-06-15) or month (2026-06).
        kind = "daily" if len(period) == len("2026-06-15") else "monthly"
        period = f"{period} ({kind}, {tz_name})"
    raised_at = alert.created_at.astimezone(zone(tz_name))
    return {
        "alert": alert,
        "period": period,
        "raised_at": f"{raised_at:%Y-%m-%d %H:%M} ({tz_name})",
    }


def _email_subject(alert: CostAlert) -> str:
    """What the alert is about, so that alerts fired together read apart in a mailbox."""
    if alert.kind == CostAlert.Kind.BUDGET and alert.budget is not None:
        name = f"budget “{alert.budget.name}”"
        below = (
            alert.spend_usd is not None and alert.limit_usd and alert.spend_usd < alert.limit_usd
        )
        if alert.percent >= 100 and below:
            return f"{name} refuses calls"
        return f"{name} reached {alert.percent}%"
    if alert.kind == CostAlert.Kind.ERROR_RATE and alert.provider_config is not None:
        name = f"provider “{alert.provider_config.name}”"
        if alert.percent >= 100:
            return f"{name} failed every call"
        # The percentage is rounded down: the rate is at least that.
        return f"{name} failed at least {alert.percent}% of calls"
    if alert.kind == CostAlert.Kind.UNPRICED:
        # The subject key is "<provider config>/<provider type>/<model>".
        model = alert.subject_key.split("/", 2)[-1]
        return f"unpriced usage of model “{model}”"
    return alert.get_kind_display().lower()


def _webhook_target(delivery: AlertDelivery) -> str:
    """Where a webhook delivery posts: a budget alert's to the budget's webhook URL as
    it is now, so that one corrected (or revoked and replaced) after the alert fired
    takes the alerts not yet delivered; the others (tenant-wide, or whose budget was
    deleted) to the URL they were created with."""
    budget = delivery.alert.budget
    if delivery.alert.kind != CostAlert.Kind.BUDGET or budget is None:
        return delivery.target
    if budget.webhook_unreadable:
        raise AlertDeliveryFailed(
            "The budget's webhook URL cannot be decrypted with the configured "
            "SECRET_KEY/SALT_KEY: enter it again."
        )
    url = budget.webhook_url_readable
    if not url:
        raise AlertDeliveryFailed(
            "Not sent: the budget no longer has a webhook URL. Set one on the budget to send it."
        )
    if url != delivery.target:
        AlertDelivery.objects.filter(pk=delivery.pk).update(
            target=url, target_label=webhook_label(url)
        )
    return url


# What a delivery sent again to recipients refused for now records until it is attempted.
_SEND_AGAIN_NOTE = (
    "Waiting to send again: the mail server refused these recipients for now "
    "(4xx) when the alert was first sent."
)


class _Sent(NamedTuple):
    """A send that went out: a note when it went out with a reservation (recipients
    refused), and the recipients refused for now (4xx), to send it to again."""

    note: str = ""
    send_again: tuple[str, ...] = ()


def _refused_for_now(code: int) -> bool:
    """A 4xx reply ("try again later": greylisting, a full queue); 5xx refuses for good."""
    return 400 <= code < 500


def _refused_note(refused: Refused, recipients: int) -> str:
    """What a delivery records when the mail server refused some of its recipients."""
    listed = "; ".join(
        f"{address} ({' '.join([str(code), *reply.split()])})"
        for address, (code, reply) in sorted(refused.items())
    )
    note = (
        f"Delivered, but the mail server refused {len(refused)} of {recipients} "
        f"recipient{'' if recipients == 1 else 's'}: {listed}."
    )
    again = ""
    if any(_refused_for_now(code) for code, _ in refused.values()):
        again = " Those refused for now (4xx) get it in a new delivery."
    if len(note) + len(again) > _NOTE_LENGTH:
        note = note[: _NOTE_LENGTH - len(again) - 1] + "…"
    return note + again


def _send(delivery: AlertDelivery) -> _Sent:
    """Send one delivery; say whether it went out with a reservation (recipients refused)."""
    alert = delivery.alert
    if delivery.channel == AlertDelivery.Channel.WEBHOOK:
        url = _webhook_target(delivery)
        if isinstance(url, UnreadableSecret):
            raise AlertDeliveryFailed(
                "The delivery target cannot be decrypted with the configured SECRET_KEY/SALT_KEY."
            )
        try:
            webhook_post(url, _payload(alert))
        except WebhookFailed as exc:
            raise AlertDeliveryFailed(str(exc)) from None
        return _Sent()
    if isinstance(delivery.target, UnreadableSecret):
        raise AlertDeliveryFailed(
            "The delivery target cannot be decrypted with the configured SECRET_KEY/SALT_KEY."
        )
    if not settings.ALERT_EMAIL_CONFIGURED:
        raise AlertDeliveryFailed(
            "Email not sent: EMAIL_URL is not set, so there is no mail server to send "
            "through (see docs/OPERATIONS.md)."
        )
    subject = f"[LLM usage] {alert.tenant.name}: {_email_subject(alert)}"
    # A header is one line: a line break in a name would refuse every attempt.
    subject = " ".join(subject.split())
    body = render_to_string("usage/alert_email.txt", _email_context(alert))
    recipients = email_list_parse(delivery.target)
    # A budget's recipients were listed together on the budget; the other
    # alerts go to every budget's recipients (say, each customer's contact),
    # who must not learn one another's addresses.
    shared = alert.kind == CostAlert.Kind.BUDGET
    message = EmailMessage(
        subject,
        body,
        settings.DEFAULT_FROM_EMAIL,
        to=recipients if shared else [],
        bcc=[] if shared else recipients,
    )
    seconds = settings.USAGE_ALERT_EMAIL_TIMEOUT_SECONDS
    try:
        refused = email_send(message, seconds=seconds)
    except EmailTimedOut:
        raise AlertDeliveryFailed(
            f"Email not sent: the mail server did not finish within {seconds:g} s."
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise AlertDeliveryFailed(f"Email not sent: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any other failure is a failed attempt
        raise AlertDeliveryFailed(f"Email not sent: {type(exc).__name__}.") from None
    if not refused:
        return _Sent()
    # The others have it: sending again would send it to them twice. Only
    # those refused for now are sent it again, by a delivery of their own.
    note = _refused_note(refused, len(recipients))
    logger.warning("Alert %s email: %s", alert.pk, note)
    send_again = tuple(
        address
        for address in recipients
        if address in refused and _refused_for_now(refused[address][0])
    )
    return _Sent(note=note, send_again=send_again)


def _attempt_seconds() -> float:
    """The longest one attempt may take: its send, then recording its outcome."""
    longest = max(
        settings.USAGE_ALERT_EMAIL_TIMEOUT_SECONDS, settings.USAGE_ALERT_WEBHOOK_TIMEOUT_SECONDS
    )
    return longest + _CLAIM_MARGIN_SECONDS


def _claim_seconds() -> float:
    """How long a claim lasts: past the longest a send may take, so no second worker
    sends while the first one still may."""
    return max(_CLAIM_SECONDS, _attempt_seconds())


def _backoff_seconds(attempts: int) -> int:
    base = settings.USAGE_ALERT_RETRY_BASE_SECONDS
    return min(base * 2 ** max(attempts - 1, 0), settings.USAGE_ALERT_RETRY_MAX_SECONDS)


def alert_delivery_attempt(
    *, delivery_id: int, now: datetime | None = None
) -> AlertDelivery | None:
    """Try one delivery if it is due; record the outcome. None when not due, already
    done, or deleted (with its tenant) before its outcome was recorded.

    The delivery is claimed with a conditional UPDATE first, so two workers
    never send the same alert twice at once. The claim counts the attempt and
    records that it has no outcome yet: an attempt whose worker was killed
    stays counted once its claim expires, and the last one allowed gives the
    delivery up rather than sending it again.

    A worker that stalls past its claim may find the delivery taken over by a
    later attempt (or a retry) when it records its outcome: its failure is then
    not recorded, the newer state stands; its send went out all the same, so it
    is recorded unless the delivery was recorded delivered already.
    """
    now = now or timezone.now()
    max_attempts = settings.USAGE_ALERT_MAX_ATTEMPTS
    due = AlertDelivery.objects.filter(
        pk=delivery_id,
        delivered_at__isnull=True,
        next_attempt_at__isnull=False,
        next_attempt_at__lte=now,
    )
    # The claim runs from the moment it is taken, not from the start of a batch
    # that may have taken longer than the claim itself.
    claim = uuid.uuid4()
    claimed = due.filter(attempts__lt=max_attempts).update(
        next_attempt_at=timezone.now() + timedelta(seconds=_claim_seconds()),
        attempts=F("attempts") + 1,
        last_error=_NO_OUTCOME,
        claim=claim,
    )
    if not claimed:
        # Due with no attempt left: the last one never recorded its outcome.
        if due.filter(attempts__gte=max_attempts).update(next_attempt_at=None):
            logger.warning("Alert delivery %s gave up: %s", delivery_id, _NO_OUTCOME)
        return None
    delivery = (
        AlertDelivery.objects.select_related(
            "alert__tenant", "alert__budget", "alert__provider_config"
        )
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:
        return None  # its tenant (and so its alert) was deleted since it was claimed
    attempts = delivery.attempts
    try:
        try:
            sent = _send(delivery)
        except AlertDeliveryFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or a bad template fails the attempt
            # Only the type and where: the message may quote the target (a secret).
            logger.error(
                "Alert %s %s delivery failed unexpectedly: %s\n%s",
                delivery.alert_id,
                delivery.channel,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            raise AlertDeliveryFailed(
                f"Not sent: the delivery failed unexpectedly ({type(exc).__name__})."
            ) from None
    except AlertDeliveryFailed as exc:
        gave_up = attempts >= settings.USAGE_ALERT_MAX_ATTEMPTS
        next_attempt_at = None if gave_up else now + timedelta(seconds=_backoff_seconds(attempts))
        recorded = AlertDelivery.objects.filter(
            pk=delivery_id, claim=claim, delivered_at__isnull=True
        ).update(last_error=str(exc)[:500], next_attempt_at=next_attempt_at, claim=None)
        if not recorded:
            # Stalled past its claim: the newer state stands (or its tenant is gone).
            outcome = ", not recorded: a later attempt or a retry took the delivery over"
        else:
            outcome = ", giving up" if gave_up else ""
        logger.warning(
            "Alert %s %s delivery failed (attempt %s%s): %s",
            delivery.alert_id,
            delivery.channel,
            attempts,
            outcome,
            exc,
        )
    else:
        _delivered_record(delivery, sent=sent, now=now)
    # None if its tenant was deleted during the send.
    return AlertDelivery.objects.filter(pk=delivery_id).first()


def _delivered_record(delivery: AlertDelivery, *, sent: _Sent, now) -> None:
    """Mark the delivery delivered and, in the same transaction, create the one that
    sends the alert again to the recipients refused for now, due after the backoff.

    That one goes only to them, so no one who got the alert gets it twice; each
    such delivery has fewer recipients than the one it came from.

    The send went out, so it is recorded also when a later attempt has claimed
    the delivery since (this one stalled past its claim): that attempt's
    outcome is then not recorded. A delivery recorded delivered already keeps
    its record; its attempts, all counted by their claims, are left as they are.
    """
    with transaction.atomic():
        recorded = AlertDelivery.objects.filter(pk=delivery.pk, delivered_at__isnull=True).update(
            last_error=sent.note,
            next_attempt_at=None,
            delivered_at=timezone.now(),
            claim=None,
        )
        if not recorded:
            if AlertDelivery.objects.filter(pk=delivery.pk).exists():
                logger.warning(
                    "Alert %s %s delivery sent again by an attempt whose claim had expired",
                    delivery.alert_id,
                    delivery.channel,
                )
            return  # delivered already, or its tenant was deleted during the send
        if not sent.send_again:
            return
        joined = ", ".join(sent.send_again)
        again = AlertDelivery.objects.create(
            alert_id=delivery.alert_id,
            channel=AlertDelivery.Channel.EMAIL,
            target=joined,
            target_label=joined[:300],
            last_error=_SEND_AGAIN_NOTE,
            next_attempt_at=now + timedelta(seconds=_backoff_seconds(1)),
            created_at=now,
        )
    logger.warning(
        "Alert %s email: sent again to %s recipient(s) refused for now by delivery %s",
        delivery.alert_id,
        len(sent.send_again),
        again.pk,
    )


def alert_deliveries_send_due(*, now: datetime | None = None) -> int:
    """Attempt every delivery that is due (new or waiting for a retry); return how many went out.

    One run sends them one after the other, and starts no attempt that might
    not end (sent and recorded) before CELERY_TASK_TIME_LIMIT kills the task:
    killed mid-send, an attempt would stay counted without its outcome. The
    deliveries left wait for the next run. The first always starts: the
    settings keep the limit above one attempt's time (config/settings/
    consistency.py), so every run sends at least one, even at that bound.
    """
    stop_starting = time.monotonic() + settings.CELERY_TASK_TIME_LIMIT - _attempt_seconds()
    now = now or timezone.now()
    due = list(
        AlertDelivery.objects.filter(
            delivered_at__isnull=True, next_attempt_at__isnull=False, next_attempt_at__lte=now
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:_DUE_BATCH]
    )
    delivered = 0
    for index, delivery_id in enumerate(due):
        if index and time.monotonic() > stop_starting:
            logger.info(
                "Alert deliveries: %s left for the next run, as one more might not end "
                "within CELERY_TASK_TIME_LIMIT (%s s)",
                len(due) - index,
                settings.CELERY_TASK_TIME_LIMIT,
            )
            break
        delivery = alert_delivery_attempt(delivery_id=delivery_id, now=now)
        if delivery is not None and delivery.delivered_at:
            delivered += 1
    return delivered


class DeliveriesRetried(NamedTuple):
    """What a retry did: deliveries made due now, and those left alone because a
    worker is sending them at this moment."""

    queued: int
    sending: int


def _being_sent(now: datetime) -> Q:
    """Deliveries a worker is sending: claimed, no outcome recorded, claim not expired.

    A claim whose time has passed is a worker that stopped mid-send.
    """
    return Q(last_error=_NO_OUTCOME, next_attempt_at__gt=now)


def alert_deliveries_retry(*, alerts) -> DeliveriesRetried:
    """Make every undelivered delivery of `alerts` due now, except those a worker is
    sending at this moment (left to finish, their claim untouched). Those that gave up
    start a new series of USAGE_ALERT_MAX_ATTEMPTS attempts (their last error is kept).
    """
    ids = list(
        AlertDelivery.objects.filter(alert__in=alerts, delivered_at__isnull=True)
        .order_by()
        .values_list("pk", flat=True)
    )
    if not ids:
        return DeliveriesRetried(queued=0, sending=0)
    now = timezone.now()
    # One conditional UPDATE on the delivery table alone, so that PostgreSQL checks
    # its conditions again on a row a worker's claim (or another retry) has just
    # changed: a claim taken meanwhile is left alone, never overwritten and sent twice.
    # (A condition on the alert would turn it into "pk IN (subquery)", checked
    # against the rows as they were when the statement began.)
    queued = (
        AlertDelivery.objects.filter(pk__in=ids, delivered_at__isnull=True)
        .exclude(_being_sent(now))
        .update(
            # Given up: out of attempts, including a last one whose worker stopped.
            attempts=Case(
                When(
                    Q(next_attempt_at__isnull=True)
                    | Q(attempts__gte=settings.USAGE_ALERT_MAX_ATTEMPTS),
                    then=Value(0),
                ),
                default=F("attempts"),
                output_field=AlertDelivery._meta.get_field("attempts"),
            ),
            next_attempt_at=now,
            # A worker stalled past an expired claim records no failure over the retry.
            claim=None,
        )
    )
    sending = AlertDelivery.objects.filter(
        _being_sent(now), pk__in=ids, delivered_at__isnull=True
    ).count()
    if queued:
        # A delivery claimed since the UPDATE is not sent again: the claim is conditional.
        transaction.on_commit(lambda: _queue_deliveries(ids), robust=True)
    return DeliveriesRetried(queued=queued, sending=sending)
