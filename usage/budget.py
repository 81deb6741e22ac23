"""The budget gate: reserve a call's worst-case cost atomically, settle or release it after.

The completion service calls `budget_reserve` before calling a provider,
`budget_settle` with the real cost afterwards, and `budget_release` when the
call failed. A period's spend is the settled CallLog cost of the period (in
the tenant's time zone) plus the outstanding, unexpired reservations. A
*block* budget refuses a reservation that would take spend over its limit;
an *alert* budget never refuses.

Budget definitions are cached in the process under the tenant's config
version, so a tenant without budgets pays a dict lookup. Counters live in
Redis (one Lua script call per reservation) or, without Redis, in database
rows locked while reserving (`usage.budget_counters`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.utils import timezone

from llm_providers.config_cache import config_local_cache, config_version
from llm_providers.exceptions import ApplicationError

from .budget_counters import BudgetBackendError, Refusal, counters_backend
from .models import Budget
from .money import usd_format, usd_format_beside, usd_format_exact, usd_to_nano
from .periods import Period, period_containing, zone

logger = logging.getLogger(__name__)


class BudgetExceeded(ApplicationError):
    """A blocking budget has no room for this call; nothing was sent to a provider."""

    code = "budget_exceeded"
    http_status = 429


class BudgetUnavailable(ApplicationError):
    """The budget counters cannot be reached, so a blocking budget cannot be enforced."""

    code = "budget_unavailable"
    http_status = 503


@dataclass(frozen=True, slots=True)
class BudgetDefinition:
    """What the gate needs of a Budget, cached per config version."""

    id: int
    name: str
    tenant_id: UUID
    timezone_name: str
    period: str
    limit_usd: Decimal
    limit_nano: int
    blocking: bool
    provider_config_id: str
    service_name: str
    customer_id: str
    # Identifies what the counters count (scope, period kind, time zone): an
    # edit of the limit, action, name or recipients keeps the running counters
    # and their reservations; a new scope starts counters afresh from CallLog.
    definition: str

    def applies(self, provider_config_id: str, service_name: str, customer_id: str) -> bool:
        return (
            (not self.provider_config_id or self.provider_config_id == provider_config_id)
            and (not self.service_name or self.service_name == service_name)
            and (not self.customer_id or self.customer_id == customer_id)
        )


@dataclass(frozen=True, slots=True)
class ReservationEntry:
    budget: BudgetDefinition
    period: Period


@dataclass(frozen=True, slots=True)
class BudgetReservation:
    """Opaque to callers; falsy when no budget applied (settle and release then do nothing)."""

    reservation_id: str = ""
    backend: str = ""
    entries: tuple[ReservationEntry, ...] = ()
    amount_usd: Decimal = Decimal(0)
    amount_nano: int = 0

    def __bool__(self) -> bool:
        return bool(self.entries)


_EMPTY = BudgetReservation()
# Amounts in a refusal's details carry the places of stored costs, whichever
# counter store (nano-dollars or database) computed them.
_EXTRA_PLACES = Decimal("1e-12")


# --- definitions ---------------------------------------------------------------


def _counted_scope(budget: Budget) -> str:
    """A short fingerprint of what a budget's counters count (and of the budget
    itself: a database restored or recreated may give another budget its id)."""
    counted = "\x1f".join(
        [
            f"{budget.created_at.timestamp():.6f}",
            budget.period,
            budget.tenant.timezone,
            str(budget.provider_config_id or ""),
            budget.service_name,
            budget.customer_id,
        ]
    )
    return hashlib.sha256(counted.encode()).hexdigest()[:16]


def budget_definition_of(budget: Budget) -> BudgetDefinition:
    return BudgetDefinition(
        id=budget.pk,
        name=budget.name,
        tenant_id=budget.tenant_id,
        timezone_name=budget.tenant.timezone,
        period=budget.period,
        limit_usd=budget.limit_usd,
        limit_nano=usd_to_nano(budget.limit_usd),
        blocking=budget.is_blocking,
        provider_config_id=str(budget.provider_config_id) if budget.provider_config_id else "",
        service_name=budget.service_name,
        customer_id=budget.customer_id,
        definition=_counted_scope(budget),
    )


def _definitions_load(tenant_id) -> tuple[BudgetDefinition, ...]:
    budgets = Budget.objects.filter(
        tenant_id=tenant_id, is_active=True, tenant__is_active=True
    ).select_related("tenant")
    return tuple(budget_definition_of(b) for b in budgets.order_by("pk"))


def budget_definitions(*, tenant_id, version: str) -> tuple[BudgetDefinition, ...]:
    """The tenant's active budgets, from the in-process cache under its config version."""
    return config_local_cache.get_or_compute(
        ("budgets", str(tenant_id), version), lambda: _definitions_load(tenant_id)
    )


# Current period per (kind, time zone): recomputed only when it has ended.
_periods: dict[tuple[str, str], Period] = {}


def _current_period(kind: str, timezone_name: str, now: datetime) -> Period:
    period = _periods.get((kind, timezone_name))
    if period is None or not period.contains(now):
        period = period_containing(kind, now, timezone_name)
        _periods[(kind, timezone_name)] = period
    return period


# --- errors --------------------------------------------------------------------


def budget_refusal_prefix(name: str, period: str, limit_usd: Decimal) -> str:
    """How the message of a refusal by budget `name` at `limit_usd` begins: blocked
    call logs keep that message, and the alert checks find a budget's refusals at
    its current limit by it."""
    return f"Budget “{name}” ({period}, limit {usd_format_exact(limit_usd)}) "


def _refusal_amounts(spend: Decimal, amount: Decimal, limit: Decimal) -> tuple[str, str]:
    """The spend (beside the limit) and the call's worst case, as a refusal writes them.

    Rounded, they could add up to no more than the limit ($5.004 and $4.997 of
    $10 read "$5.00" and "$5.00"), making the refusal look wrong: then both
    are written exactly.
    """
    spend_text, amount_text = usd_format_beside(spend, limit), usd_format(amount)
    if (
        spend + amount
        > limit
        >= sum(Decimal(text.lstrip("$").replace(",", "")) for text in (spend_text, amount_text))
    ):
        return usd_format_exact(spend), usd_format_exact(amount)
    return spend_text, amount_text


def _exceeded(refusal: Refusal, amount_usd: Decimal, now: datetime) -> BudgetExceeded:
    budget, period = refusal.entry.budget, refusal.entry.period
    spend_text, amount_text = _refusal_amounts(refusal.spend_usd, amount_usd, budget.limit_usd)
    resets_local = period.end.astimezone(zone(budget.timezone_name))
    retry_after = max(1, math.ceil((period.end - now).total_seconds()))
    message = (
        f"{budget_refusal_prefix(budget.name, budget.period, budget.limit_usd)}"
        f"refuses this call: {spend_text} is already spent or reserved "
        f"this period and the call may cost up to {amount_text}. The budget resets "
        f"at {resets_local:%Y-%m-%d %H:%M} {budget.timezone_name} ({period.end.isoformat()})."
    )
    return BudgetExceeded(
        message,
        extra={
            "budget_id": budget.id,
            "budget_name": budget.name,
            "spend_usd": f"{refusal.spend_usd.quantize(_EXTRA_PLACES):f}",
            "limit_usd": str(budget.limit_usd),
            "resets_at": period.end.isoformat(),
            "retry_after_seconds": retry_after,
        },
    )


# --- the seam ------------------------------------------------------------------


def budget_reserve(
    *,
    tenant,
    provider_config_id,
    service_name: str,
    customer_id: str,
    amount_usd: Decimal,
    request_id,
    version: str | None = None,
) -> BudgetReservation:
    """Atomically reserve amount_usd against every active budget that applies.

    Raises BudgetExceeded when a *blocking* budget would go over its limit
    (alert-only budgets never refuse), and BudgetUnavailable when a blocking
    budget applies but its counters cannot be reached. `version` is the
    tenant's config version (llm_providers.config_cache.config_version).
    """
    if version is None:
        version = config_version(tenant.pk)
    definitions = budget_definitions(tenant_id=tenant.pk, version=version)
    if not definitions:
        return _EMPTY
    config_id = str(provider_config_id) if provider_config_id else ""
    applicable = [d for d in definitions if d.applies(config_id, service_name, customer_id)]
    if not applicable:
        return _EMPTY

    now = timezone.now()
    backend = counters_backend()
    amount_usd = Decimal(amount_usd or 0)
    reservation = BudgetReservation(
        reservation_id=f"{request_id}.{uuid.uuid4().hex[:8]}",
        backend=backend.name,
        entries=tuple(
            ReservationEntry(budget=d, period=_current_period(d.period, d.timezone_name, now))
            for d in applicable
        ),
        amount_usd=amount_usd,
        amount_nano=usd_to_nano(amount_usd, round_up=True),
    )
    try:
        refusal = backend.reserve(reservation=reservation, now=now)
    except BudgetBackendError as exc:
        blocking = [e.budget.name for e in reservation.entries if e.budget.blocking]
        if blocking:
            raise BudgetUnavailable(
                f"Budget counters are unavailable ({exc}); calls under the blocking budget "
                f"“{blocking[0]}” are refused until they are back.",
                extra={"budget_names": blocking},
            ) from exc
        logger.warning("Budget counters unavailable, alert-only budgets not counted: %s", exc)
        return _EMPTY
    if refusal is not None:
        raise _exceeded(refusal, amount_usd, now)
    return reservation


def budget_settle(*, reservation: BudgetReservation, cost_usd: Decimal | None) -> None:
    """Replace the reserved amount by the real cost (None: unpriced, counts 0).

    Raises BudgetBackendError when the counters cannot be reached. A settlement
    may be sent again, as the after-call writer does (usage.bookkeeping): its
    cost counts once, even if the first one landed and only its reply was lost,
    or the reservation lapsed meanwhile.
    """
    if not reservation:
        return
    counters_backend(reservation.backend).settle(reservation=reservation, cost_usd=cost_usd)


def budget_counters_forget(*, budget: Budget) -> None:
    """Drop the live counters of what `budget` counts now; the next call rebuilds them.

    Counters left behind while the budget was switched off, or counted another
    scope or time zone, were not settled into meanwhile: they miss that spend.
    """
    definition = budget_definition_of(budget)
    period = period_containing(definition.period, timezone.now(), definition.timezone_name)
    try:
        counters_backend().forget(definition=definition, period=period)
    except BudgetBackendError as exc:
        # The Redis counter is trusted for USAGE_BUDGET_COUNTER_REBUILD_SECONDS at most.
        logger.warning("Budget counters of budget %s not dropped: %s", budget.pk, exc)


def budget_release(*, reservation: BudgetReservation) -> None:
    """The call failed: give the reservation back."""
    budget_settle(reservation=reservation, cost_usd=None)
