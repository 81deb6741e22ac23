"""Reads of usage: CallLog grouped per day, budget spend, the dashboard's and the API's reports."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import NamedTuple

from django.conf import settings
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    Count,
    DateField,
    DecimalField,
    F,
    Func,
    Max,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate
from django.template.defaultfilters import pluralize
from django.utils import timezone

from llm_providers.adapters.errors import ContentRefused, NotSupported, ProviderBadRequest
from llm_providers.exceptions import CALL_INTERRUPTED_CODE
from llm_providers.models import ProviderConfig, Tenant

from .models import AggregationState, Budget, CallLog, CostAlert, DailyUsage
from .money import priced_cost
from .periods import Period, local_date, period_containing, utc_window_for_days, zone

ZERO = Decimal(0)

# Where each DailyUsage column comes from in `call_log_daily_groups` (its SELECT aliases).
DAILY_GROUP_SOURCES = {
    "tenant_id": "tenant_id",
    "day": "k_day",
    "provider_config_id": "provider_config_id",
    "provider_type": "provider_type",
    "model": "k_model",
    "service_name": "service_name",
    "customer_id": "customer_id",
    **{name: f"v_{name}" for name in DailyUsage.VALUE_FIELDS},
}


def _sum(field_name: str):
    return Coalesce(Sum(field_name), Value(0))


@dataclass(frozen=True, slots=True)
class DayWindow:
    """Local days first_day..last_day of the tenants of one time zone (or of `tenant_ids`)."""

    timezone_name: str
    first_day: date
    last_day: date
    tenant_ids: tuple | None = None

    def utc_range(self) -> tuple[datetime, datetime]:
        return utc_window_for_days(self.first_day, self.last_day, self.timezone_name)

    def call_log_filter(self) -> Q:
        start, end = self.utc_range()
        condition = Q(
            tenant__timezone=self.timezone_name, created_at__gte=start, created_at__lt=end
        )
        if self.tenant_ids is not None:
            condition &= Q(tenant_id__in=list(self.tenant_ids))
        return condition


class TenantLocalDate(Func):
    """PostgreSQL: the date of `created_at` in each row's tenant time zone."""

    arg_joiner = " AT TIME ZONE "
    template = "(%(expressions)s)::date"
    output_field = DateField()


def call_log_daily_groups(*, windows: Sequence[DayWindow]) -> QuerySet:
    """CallLog grouped like DailyUsage over `windows`; column aliases as DAILY_GROUP_SOURCES.

    With one time zone the day is computed for that zone (any database); with
    several (PostgreSQL only) each row's day follows its tenant's zone, so one
    scan covers every zone.
    """
    zones = {w.timezone_name for w in windows}
    condition = Q()
    for window in windows:
        condition |= window.call_log_filter()
    if len(zones) == 1:
        day = TruncDate("created_at", tzinfo=zone(next(iter(zones))))
    else:
        day = TenantLocalDate(F("created_at"), F("tenant__timezone"))
    # The model that answered; a blocked or failed call only has the one asked for.
    model = Case(When(model_answered="", then=F("model_requested")), default=F("model_answered"))
    status = CallLog.Status
    return (
        CallLog.objects.filter(condition)
        .order_by()
        .annotate(k_day=day, k_model=model)
        .values(
            "tenant_id",
            "k_day",
            "provider_config_id",
            "provider_type",
            "k_model",
            "service_name",
            "customer_id",
        )
        .annotate(
            v_request_count=Count("pk"),
            v_error_count=Count("pk", filter=Q(status=status.ERROR)),
            v_blocked_count=Count("pk", filter=Q(status=status.BLOCKED)),
            v_cached_count=Count("pk", filter=Q(status=status.CACHED)),
            v_unpriced_count=Count(
                "pk",
                filter=Q(cost_usd__isnull=True, price_source=CallLog.PriceSource.UNKNOWN),
            ),
            # COUNT(cost_usd): the rows with a cost, $0 included (cache hits, free models).
            v_priced_count=Count("cost_usd"),
            v_estimated_count=Count("pk", filter=Q(usage_estimated=True)),
            v_input_tokens=_sum("input_tokens"),
            v_output_tokens=_sum("output_tokens"),
            v_cache_read_tokens=_sum("cache_read_tokens"),
            v_cache_write_tokens=_sum("cache_write_tokens"),
            v_reasoning_tokens=_sum("reasoning_tokens"),
            v_cost_usd=Coalesce(
                Sum("cost_usd"),
                Value(ZERO),
                output_field=DecimalField(max_digits=24, decimal_places=12),
            ),
            v_latency_ms_sum=_sum("latency_ms"),
        )
    )


def tenant_timezones() -> list[str]:
    """Every time zone some tenant counts its days in."""
    return sorted(set(Tenant.objects.order_by().values_list("timezone", flat=True)))


# --- budgets -------------------------------------------------------------------


def budget_scope_filter(budget: Budget) -> Q:
    """The rows (CallLog or DailyUsage) a budget counts, apart from tenant and time."""
    condition = Q()
    if budget.provider_config_id:
        condition &= Q(provider_config_id=budget.provider_config_id)
    if budget.service_name:
        condition &= Q(service_name=budget.service_name)
    if budget.customer_id:
        condition &= Q(customer_id=budget.customer_id)
    return condition


class BudgetPeriodUsage(NamedTuple):
    """A budget's settled spend in a period, and the requests in its scope left out of
    it because their model has no known price."""

    spend_usd: Decimal
    unpriced_requests: int


def budget_period_usage(*, budget: Budget, period: Period) -> BudgetPeriodUsage:
    """Settled spend of a budget in a period, from DailyUsage (as of the last aggregation)."""
    sums = (
        DailyUsage.objects.filter(
            tenant_id=budget.tenant_id, day__gte=period.first_day, day__lte=period.last_day
        )
        .filter(budget_scope_filter(budget))
        .aggregate(spend=Sum("cost_usd"), unpriced=Sum("unpriced_count"))
    )
    return BudgetPeriodUsage(
        spend_usd=sums["spend"] or ZERO, unpriced_requests=sums["unpriced"] or 0
    )


def budget_list_active(*, tenant: Tenant | None = None) -> QuerySet[Budget]:
    budgets = Budget.objects.filter(is_active=True, tenant__is_active=True)
    if tenant is not None:
        budgets = budgets.filter(tenant=tenant)
    return budgets.select_related("tenant", "provider_config")


# --- dashboard -----------------------------------------------------------------


@dataclass
class BudgetStatus:
    budget: Budget
    period: Period
    spend_usd: Decimal
    percent: float
    # Requests in the budget's scope and period whose model has no known price: not in the spend.
    unpriced_requests: int = 0

    @property
    def over(self) -> bool:
        return self.spend_usd >= self.budget.limit_usd

    @property
    def percent_reached(self) -> int:
        """Whole percent of the limit reached, as budget alerts count it: 99.96 % is 99."""
        return int(self.spend_usd * 100 // self.budget.limit_usd)


def percent_text(ratio, *, above=None) -> str:
    """`ratio` as a percentage of up to four decimals, written with as few as
    read true: 2.5%, and 20.5% (not 20%) when it must read above 20%."""
    exact = Decimal(str(ratio)) * 100
    for places in range(5):
        shown = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)
        if shown == exact or (above is not None and shown > Decimal(str(above)) * 100):
            break
    text = f"{shown:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


@dataclass
class ErrorRate:
    provider_config_id: object
    provider_label: str
    total: int
    errors: int

    @property
    def rate(self) -> float:
        return self.errors / self.total if self.total else 0.0

    @property
    def percent(self) -> str:
        """The rate as the error-rate alert writes it: never rounded up to the threshold."""
        return percent_text(self.rate, above=settings.USAGE_ERROR_RATE_THRESHOLD)


@dataclass
class Dashboard:
    tenant: Tenant
    first_day: date
    last_day: date
    # (day or label, cost, requests, unpriced requests): the cost is that of the
    # priced requests ($0 included), None when there are unpriced requests and
    # none priced (unknown, not $0); the unpriced ones are never in it.
    daily: list[tuple[date, Decimal | None, int, int]]
    total_cost: Decimal | None
    total_unpriced: int
    # Every attempt; of them, the failed ones, those refused before a provider
    # (budget or rate limit) and the response-cache hits.
    total_requests: int
    total_errors: int
    total_blocked: int
    total_cached: int
    by_provider: list[tuple[str, Decimal | None, int, int]]
    by_model: list[tuple[str, Decimal | None, int, int]]
    by_service: list[tuple[str, Decimal | None, int, int]]
    by_customer: list[tuple[str, Decimal | None, int, int]]
    budgets: list[BudgetStatus]
    alerts: list[CostAlert]
    unpriced: list[tuple[str, str, int]]
    error_rates: list[ErrorRate] = field(default_factory=list)
    error_rate_threshold: float = 0.0
    error_rate_window_minutes: int = 0
    last_aggregated_at: datetime | None = None


# 10 rows per breakdown, then one for the rest: the dashboard shows where the money goes,
# not a report.
_TOP = 10


def _provider_group_type() -> Case:
    """The type part of a per-provider-config group key: one group per config whatever
    types it had (a config can be switched to another type), per type for calls
    without a config."""
    return Case(
        When(provider_config_id__isnull=True, then=F("provider_type")),
        default=Value(""),
        output_field=CharField(),
    )


def _provider_label(provider_config_id, provider_type: str, names: dict) -> str:
    """The config's name; "(deleted) <type>" for a config deleted since, whether its
    rows still carry its id (not recomputed since) or already none (every call is
    logged with its config, and a deleted config's logs lose it)."""
    if provider_config_id is not None and provider_config_id in names:
        return names[provider_config_id]
    return f"(deleted) {provider_type}".strip()


# Errors the provider answered because of the caller's request (bad request,
# context too long, refused content, unsupported operation): the provider
# works, so they do not count towards its error rate.
CALLER_ERROR_CODES = tuple(
    {
        cls.code
        for base in (ProviderBadRequest, ContentRefused, NotSupported)
        for cls in (base, *base.__subclasses__())
    }
)


_NOT_PROVIDER_ERRORS = (*CALLER_ERROR_CODES, CALL_INTERRUPTED_CODE)


def provider_error_rates(
    *, now: datetime, tenant: Tenant | None = None
) -> list[tuple[object, object, int, int]]:
    """(tenant_id, provider_config_id, attempts, errors) over the error-rate window.

    Errors caused by the caller's request (CALLER_ERROR_CODES) and calls cut off
    on our side (a worker shutting down) count as attempts, not errors.
    """
    window = timedelta(minutes=settings.USAGE_ERROR_RATE_WINDOW_MINUTES)
    logs = CallLog.objects.filter(
        created_at__gte=now - window,
        created_at__lt=now,
        status__in=[CallLog.Status.OK, CallLog.Status.ERROR],
        provider_config__isnull=False,
    )
    if tenant is not None:
        logs = logs.filter(tenant=tenant)
    rows = (
        logs.order_by()
        .values("tenant_id", "provider_config_id")
        .annotate(
            total=Count("pk"),
            errors=Count(
                "pk",
                filter=Q(status=CallLog.Status.ERROR) & ~Q(error_code__in=_NOT_PROVIDER_ERRORS),
            ),
        )
    )
    return [(r["tenant_id"], r["provider_config_id"], r["total"], r["errors"]) for r in rows]


# What the dashboard sums of DailyUsage per day and per group.
_DASHBOARD_SUMS = {
    "cost": Sum("cost_usd"),
    "requests": Sum("request_count"),
    "priced": Sum("priced_count"),
    "unpriced": Sum("unpriced_count"),
}


def _spend_row(label, row: dict) -> tuple:
    """(label, cost, requests, unpriced requests) of summed DailyUsage, the cost as in the API."""
    cost = priced_cost(row["cost"], priced=row["priced"], unpriced=row["unpriced"])
    return (label, cost, row["requests"] or 0, row["unpriced"] or 0)


def _breakdown(
    rows: list[tuple[str, dict]], totals: dict, others: int
) -> list[tuple[str, Decimal | None, int, int]]:
    """A breakdown's listed rows, then one row for the `others` groups not listed,
    so that the rows add up to the totals."""
    listed = [_spend_row(label, r) for label, r in rows]
    if others:
        rest = {
            key: (totals[key] or 0) - sum(r[key] or 0 for _, r in rows) for key in _DASHBOARD_SUMS
        }
        listed.append(_spend_row(f"({others} other{pluralize(others)})", rest))
    return listed


def usage_dashboard(*, tenant: Tenant, now: datetime | None = None, days: int = 30) -> Dashboard:
    """Everything the tenant's usage dashboard shows, from DailyUsage (+ a short CallLog window)."""
    now = now or timezone.now()
    last_day = local_date(now, zone(tenant.timezone))
    first_day = last_day - timedelta(days=days - 1)
    usage = DailyUsage.objects.filter(tenant=tenant, day__gte=first_day, day__lte=last_day)

    per_day = {
        row["day"]: _spend_row(row["day"], row)
        for row in usage.order_by().values("day").annotate(**_DASHBOARD_SUMS)
    }
    daily = [
        per_day.get(day, (day, ZERO, 0, 0))
        for day in (first_day + timedelta(days=i) for i in range(days))
    ]
    totals = usage.aggregate(
        **_DASHBOARD_SUMS,
        errors=Sum("error_count"),
        blocked=Sum("blocked_count"),
        cached=Sum("cached_count"),
    )
    names = dict(ProviderConfig.objects.filter(tenant=tenant).values_list("pk", "name"))

    def top(label, *fields: str) -> list[tuple[str, Decimal | None, int, int]]:
        groups = usage.order_by().values(*fields)
        found = list(groups.annotate(**_DASHBOARD_SUMS).order_by("-cost", "-requests")[: _TOP + 1])
        rows = [(label(r), r) for r in found[:_TOP]]
        others = groups.distinct().count() - _TOP if len(found) > _TOP else 0
        return _breakdown(rows, totals, others)

    # Every group, then merged per label: a deleted config's days recomputed
    # since (no config any more) and the older ones (its id) are one row.
    per_provider: dict[str, dict] = {}
    for r in (
        usage.annotate(k_type=_provider_group_type())
        .order_by()
        .values("provider_config_id", "k_type")
        .annotate(**_DASHBOARD_SUMS, type=Max("provider_type"))
    ):
        label = _provider_label(r["provider_config_id"], r["type"], names)
        merged = per_provider.setdefault(label, dict.fromkeys(_DASHBOARD_SUMS, 0))
        for key in merged:
            merged[key] += r[key] or 0
    providers = sorted(
        per_provider.items(), key=lambda item: (-item[1]["cost"], -item[1]["requests"], item[0])
    )
    by_provider = _breakdown(providers[:_TOP], totals, max(len(providers) - _TOP, 0))
    by_model = top(lambda r: r["model"] or "(none)", "model")
    by_service = top(lambda r: r["service_name"] or "(no service)", "service_name")
    by_customer = top(lambda r: r["customer_id"] or "(no customer)", "customer_id")

    budgets = []
    for budget in budget_list_active(tenant=tenant):
        period = period_containing(budget.period, now, tenant.timezone)
        spend, unpriced = budget_period_usage(budget=budget, period=period)
        percent = float(spend / budget.limit_usd * 100) if budget.limit_usd else 0.0
        budgets.append(
            BudgetStatus(
                budget=budget,
                period=period,
                spend_usd=spend,
                percent=percent,
                unpriced_requests=unpriced,
            )
        )

    alerts = list(
        CostAlert.objects.filter(tenant=tenant)
        .select_related("budget")
        .prefetch_related("deliveries")
        .order_by("-created_at", "-id")[:_TOP]
    )
    # Per provider as in the breakdown (one line per config, a deleted one's merged).
    unpriced_per: dict[tuple[str, str], int] = defaultdict(int)
    for r in (
        usage.filter(unpriced_count__gt=0)
        .annotate(k_type=_provider_group_type())
        .order_by()
        .values("provider_config_id", "k_type", "model")
        .annotate(n=Sum("unpriced_count"), type=Max("provider_type"))
    ):
        label = _provider_label(r["provider_config_id"], r["type"], names)
        unpriced_per[label, r["model"] or "(none)"] += r["n"]
    unpriced = [
        (label, model, n)
        for (label, model), n in sorted(unpriced_per.items(), key=lambda item: (-item[1], item[0]))
    ]
    threshold = settings.USAGE_ERROR_RATE_THRESHOLD
    # The providers the error-rate alert would report: enough attempts, and above the threshold.
    minimum = settings.USAGE_ERROR_RATE_MIN_REQUESTS
    error_rates = [
        ErrorRate(
            provider_config_id=config_id,
            provider_label=_provider_label(config_id, "", names),
            total=total,
            errors=errors,
        )
        for _, config_id, total, errors in provider_error_rates(now=now, tenant=tenant)
        if errors and total >= minimum and errors / total > threshold
    ]
    state = AggregationState.objects.filter(name="daily_usage").first()
    return Dashboard(
        tenant=tenant,
        first_day=first_day,
        last_day=last_day,
        daily=daily,
        total_cost=priced_cost(
            totals["cost"], priced=totals["priced"], unpriced=totals["unpriced"]
        ),
        total_unpriced=totals["unpriced"] or 0,
        total_requests=totals["requests"] or 0,
        total_errors=totals["errors"] or 0,
        total_blocked=totals["blocked"] or 0,
        total_cached=totals["cached"] or 0,
        by_provider=by_provider,
        by_model=by_model,
        by_service=by_service,
        by_customer=by_customer,
        budgets=budgets,
        alerts=alerts,
        unpriced=unpriced,
        error_rates=error_rates,
        error_rate_threshold=threshold,
        error_rate_window_minutes=settings.USAGE_ERROR_RATE_WINDOW_MINUTES,
        last_aggregated_at=state.last_run_at if state else None,
    )


# --- usage reports (the API) ---------------------------------------------------

# What a usage report sums, per DailyUsage column (aliases kept apart from the columns).
_REPORT_SUMS = {
    "requests": "request_count",
    "errors": "error_count",
    "blocked": "blocked_count",
    "cached": "cached_count",
    "unpriced_requests": "unpriced_count",
    "priced_requests": "priced_count",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "latency_ms_sum": "latency_ms_sum",
}
_REPORT_COST = "priced_cost_usd"
_REPORT_KEYS = (*_REPORT_SUMS, _REPORT_COST)

# The groups a usage report can break down by, and the DailyUsage columns of each
# (k_provider_type: see _provider_group_type).
USAGE_GROUPINGS = {
    "provider": ("provider_config_id", "k_provider_type"),
    "model": ("model",),
    "service": ("service_name",),
    "customer": ("customer_id",),
}


def _report_aggregates() -> dict:
    sums = {f"r_{alias}": _sum(column) for alias, column in _REPORT_SUMS.items()}
    sums[f"r_{_REPORT_COST}"] = Coalesce(
        Sum("cost_usd"), Value(ZERO), output_field=DecimalField(max_digits=24, decimal_places=12)
    )
    return sums


class _SumOverGroups(Func):
    """SUM(<aggregate>) OVER (): an aggregate's total over every group of a grouped query,
    on each row, computed before ORDER BY and LIMIT."""

    template = "SUM(%(expressions)s) OVER ()"


def _report_totals_over_groups() -> dict:
    totals = {}
    for name, aggregate in _report_aggregates().items():
        output = (
            DecimalField(max_digits=24, decimal_places=12)
            if name == f"r_{_REPORT_COST}"
            else BigIntegerField()
        )
        totals[f"t{name}"] = _SumOverGroups(aggregate, output_field=output)
    return totals


def _raw_totals_over_groups(row: dict) -> dict:
    totals = {key: row[f"tr_{key}"] for key in _REPORT_KEYS}
    # PostgreSQL sums integers into numerics: back to whole numbers.
    return {key: (value if key == _REPORT_COST else int(value)) for key, value in totals.items()}


def _raw(row: dict) -> dict:
    return {key: row[f"r_{key}"] for key in _REPORT_KEYS}


def _raw_zero() -> dict:
    return {key: (ZERO if key == _REPORT_COST else 0) for key in _REPORT_KEYS}


def _raw_total(rows: Sequence[dict]) -> dict:
    total = _raw_zero()
    for row in rows:
        for key in _REPORT_KEYS:
            total[key] += row[key]
    return total


# Summed to compute figures, not shown themselves.
_REPORT_HIDDEN = ("priced_requests", "latency_ms_sum")


def usage_figures(raw: dict) -> dict:
    """What a report shows of summed DailyUsage values.

    `cost_usd` is the exact cost of the priced requests, $0 included (cache
    hits, free models); `unpriced_requests` says how many requests it leaves
    out because their model has no known price. It is None when there are
    unpriced requests and none priced: the cost is unknown, not $0.
    """
    figures = {key: raw[key] for key in _REPORT_SUMS if key not in _REPORT_HIDDEN}
    figures["cost_usd"] = priced_cost(
        raw[_REPORT_COST], priced=raw["priced_requests"], unpriced=raw["unpriced_requests"]
    )
    requests = raw["requests"]
    figures["average_latency_ms"] = raw["latency_ms_sum"] // requests if requests else 0
    return figures


def _report_rows(
    *, tenant: Tenant, first_day: date, last_day: date, provider_config_id=None
) -> QuerySet[DailyUsage]:
    """The tenant's DailyUsage of local days first_day..last_day (tenant and day lead the index)."""
    rows = DailyUsage.objects.filter(tenant=tenant, day__gte=first_day, day__lte=last_day)
    if provider_config_id is not None:
        rows = rows.filter(provider_config_id=provider_config_id)
    return rows.order_by()


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Totals of a window, and (when asked for) its groups or days, each as `usage_figures`."""

    first_day: date
    last_day: date
    timezone_name: str
    totals: dict
    groups: list[dict] = field(default_factory=list)
    has_more: bool = False


def usage_summary(*, tenant: Tenant, first_day: date, last_day: date) -> UsageReport:
    """Totals of the tenant's usage over local days first_day..last_day."""
    row = _report_rows(tenant=tenant, first_day=first_day, last_day=last_day).aggregate(
        **_report_aggregates()
    )
    return UsageReport(
        first_day=first_day,
        last_day=last_day,
        timezone_name=tenant.timezone,
        totals=usage_figures(_raw(row)),
    )


def usage_by_group(
    *,
    tenant: Tenant,
    first_day: date,
    last_day: date,
    group: str,
    limit: int | None = None,
) -> UsageReport:
    """Usage over local days first_day..last_day per provider config, model, service or
    customer (`group`, a key of USAGE_GROUPINGS), most expensive first, then most requests.

    With `limit`, only the first `limit` groups are listed (`has_more` says
    whether there were others); totals always cover every group.
    """
    columns = USAGE_GROUPINGS[group]
    rows = _report_rows(tenant=tenant, first_day=first_day, last_day=last_day)
    labels = {}
    if group == "provider":
        rows = rows.annotate(k_provider_type=_provider_group_type())
        labels["provider_type"] = Max("provider_type")
    grouped = (
        rows.values(*columns)
        .annotate(**_report_aggregates(), **labels)
        .order_by(f"-r_{_REPORT_COST}", "-r_requests", *columns)
    )
    if limit is None:
        found = list(grouped)
        raw_rows = [_raw(row) for row in found]
        totals = _raw_total(raw_rows)
        has_more = False
    else:
        # The totals of every group come with the first groups: one scan, not two.
        found = list(grouped.annotate(**_report_totals_over_groups())[: limit + 1])
        has_more = len(found) > limit
        found = found[:limit]
        raw_rows = [_raw(row) for row in found]
        totals = _raw_totals_over_groups(found[0]) if found else _raw_zero()
    configs = {}
    if group == "provider":
        ids = {row["provider_config_id"] for row in found} - {None}
        configs = {
            pk: (name, provider_type)
            for pk, name, provider_type in ProviderConfig.objects.filter(
                tenant=tenant, pk__in=ids
            ).values_list("pk", "name", "provider_type")
        }
    groups = []
    for row, raw in zip(found, raw_rows, strict=True):
        if group == "provider":
            # A config's current type; a deleted one's from its usage.
            name, provider_type = configs.get(
                row["provider_config_id"], (None, row["provider_type"])
            )
            item = {
                "provider_config_id": row["provider_config_id"],
                "provider_name": name,
                "provider_type": provider_type,
            }
        else:
            item = {column: row[column] for column in columns}
        groups.append({**item, **usage_figures(raw)})
    return UsageReport(
        first_day=first_day,
        last_day=last_day,
        timezone_name=tenant.timezone,
        totals=usage_figures(totals),
        groups=groups,
        has_more=has_more,
    )


def _every_day(first_day: date, last_day: date, per_day: dict) -> list[dict]:
    """One figure set per day first_day..last_day, in order; days missing from `per_day`
    (raw sums by day) are zeros."""
    days = []
    for offset in range((last_day - first_day).days + 1):
        day = first_day + timedelta(days=offset)
        days.append({"day": day, **usage_figures(per_day.get(day) or _raw_zero())})
    return days


def usage_daily(*, tenant: Tenant, first_day: date, last_day: date) -> UsageReport:
    """One group per local day first_day..last_day, in order; days without usage are zeros."""
    per_day = {
        row["day"]: _raw(row)
        for row in _report_rows(tenant=tenant, first_day=first_day, last_day=last_day)
        .values("day")
        .annotate(**_report_aggregates())
    }
    return UsageReport(
        first_day=first_day,
        last_day=last_day,
        timezone_name=tenant.timezone,
        totals=usage_figures(_raw_total(list(per_day.values()))),
        groups=_every_day(first_day, last_day, per_day),
    )


@dataclass(frozen=True, slots=True)
class ProviderConfigUsageReport:
    """A provider config's usage over a window: totals, per model and per day."""

    provider_config: ProviderConfig
    first_day: date
    last_day: date
    timezone_name: str
    totals: dict
    models: list[dict]
    days: list[dict]


def usage_of_provider_config(
    *, tenant: Tenant, provider_config: ProviderConfig, first_day: date, last_day: date
) -> ProviderConfigUsageReport:
    """Usage of one of the tenant's provider configs over local days first_day..last_day:
    models most expensive first, every day in order (zeros included).

    One grouped read (per day and model), split here into models and days.
    """
    found = (
        _report_rows(
            tenant=tenant,
            first_day=first_day,
            last_day=last_day,
            provider_config_id=provider_config.pk,
        )
        .values("day", "model")
        .annotate(**_report_aggregates())
    )
    by_model: dict[str, list[dict]] = defaultdict(list)
    by_day: dict[date, list[dict]] = defaultdict(list)
    for row in found:
        raw = _raw(row)
        by_model[row["model"]].append(raw)
        by_day[row["day"]].append(raw)
    model_totals = sorted(
        ((model, _raw_total(raws)) for model, raws in by_model.items()),
        key=lambda item: (-item[1][_REPORT_COST], -item[1]["requests"], item[0]),
    )
    return ProviderConfigUsageReport(
        provider_config=provider_config,
        first_day=first_day,
        last_day=last_day,
        timezone_name=tenant.timezone,
        totals=usage_figures(_raw_total([raw for _, raw in model_totals])),
        models=[{"model": model, **usage_figures(raw)} for model, raw in model_totals],
        days=_every_day(
            first_day, last_day, {day: _raw_total(raws) for day, raws in by_day.items()}
        ),
    )


# --- budgets and alerts (the API) ----------------------------------------------


def budget_list(*, tenant: Tenant) -> QuerySet[Budget]:
    return Budget.objects.filter(tenant=tenant).order_by("name", "id")


def cost_alert_list(
    *, tenant: Tenant, kind: str | None = None, budget_id: int | None = None
) -> QuerySet[CostAlert]:
    """The tenant's alerts with their deliveries, newest first."""
    alerts = CostAlert.objects.filter(tenant=tenant)
    if kind is not None:
        alerts = alerts.filter(kind=kind)
    if budget_id is not None:
        alerts = alerts.filter(budget_id=budget_id)
    return alerts.prefetch_related("deliveries").order_by("-created_at", "-id")
