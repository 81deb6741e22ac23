"""USD amounts: integer nano-dollars for counters, what a sum of costs says when some
requests were unpriced, and how amounts are written for people."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

# Counters count nano-dollars (1e-9 USD), and a period total stays far below
# 2**53 (Lua numbers) up to $9 million; the pico-dollars of costs finer than
# that are kept beside (usd_to_nano_and_pico).
NANO_PER_USD = 10**9
_NANO = Decimal(NANO_PER_USD)
_PICO = Decimal(10**12)


def usd_to_nano(amount: Decimal | None, *, round_up: bool = False) -> int:
    if not amount:
        return 0
    rounding = ROUND_CEILING if round_up else ROUND_HALF_UP
    return int((Decimal(amount) * _NANO).to_integral_value(rounding=rounding))


def usd_to_nano_and_pico(amount: Decimal | None) -> tuple[int, int]:
    """A cost as whole nano-dollars and the pico-dollars left over (0-999).

    Stored costs have 12 decimals (pico-dollars): a price with more than three
    decimals per million tokens ($0.0375) gives costs finer than a nano-dollar,
    which counters keep apart so that their sum stays exact. Rounded to 12
    decimals as the database stores the cost (PostgreSQL rounds a half away
    from zero), so that a counter rebuilt from CallLog finds the same sum.
    """
    if not amount:
        return 0, 0
    pico = int((Decimal(amount) * _PICO).to_integral_value(rounding=ROUND_HALF_UP))
    return divmod(pico, 1000)


def nano_to_usd(nano: int) -> Decimal:
    return Decimal(nano) / _NANO


def priced_cost(
    cost: Decimal | None, *, priced: int | None, unpriced: int | None
) -> Decimal | None:
    """What a sum of requests' costs says: the cost of the priced ones, exact ($0
    when they cost nothing), or None when none was priced and some were not (the
    cost is unknown, not $0).

    `priced` counts the requests with a known cost, $0 included; `unpriced`
    those whose model has no known price, which `cost` leaves out.
    """
    if unpriced and not priced:
        return None
    return Decimal(cost) if cost is not None else Decimal(0)


def usd_format(amount: Decimal | None) -> str:
    """$12.34 from a dollar up; below, six decimals at most ($0.70, $0.000321).

    An amount that six decimals would show as $0.00 (a short embedding call)
    is written exactly, never as free.
    """
    if amount is None:
        return "unpriced"
    amount = Decimal(amount)
    if abs(amount) >= 1:
        return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"
    micros = amount.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    if amount and not micros:
        return usd_format_exact(amount)
    text = f"{micros:f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"${whole}.{decimals.ljust(2, '0')}"


def usd_format_brief(amount: Decimal | None) -> str:
    """Cents, for figures read at a glance (chart labels, dashboard totals): $0.59, $1,234.50.

    A positive amount below half a cent reads "< $0.01" rather than a misleading $0.00;
    usd_format_exact gives the stored value for a tooltip next to it.
    """
    if amount is None:
        return "unpriced"
    amount = Decimal(amount)
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if amount > 0 and cents == 0:
        return "< $0.01"
    return f"${cents:,}"


def usd_format_exact(amount: Decimal | None) -> str:
    """Every stored decimal, at least cents: $0.591368123456, $2.50."""
    if amount is None:
        return "unpriced"
    amount = Decimal(amount)
    if amount == amount.quantize(Decimal("0.01")):
        return f"${amount.quantize(Decimal('0.01')):,}"
    return f"${amount.normalize():,f}"


def usd_format_beside(amount: Decimal, limit: Decimal) -> str:
    """An amount written next to a limit (a budget's spend, what is left), to compare with it.

    It takes the limit's decimals ($3.457 beside $10.005, $9.00 beside $10), and is
    exact beside a limit under a cent, when those decimals would read $0.00 for a
    positive amount, or when they would round it to or across the limit ($9.996 of $10).
    """
    amount, limit = Decimal(amount), Decimal(limit)
    places = Decimal(1).scaleb(min(-2, limit.normalize().as_tuple().exponent))
    shown = amount.quantize(places, rounding=ROUND_HALF_UP)
    if (
        limit < Decimal("0.01")
        or (amount and not shown)
        or (amount < limit) != (shown < limit)
        or (amount > limit) != (shown > limit)
    ):
        return usd_format_exact(amount)
    text = f"{shown:,f}"
    whole, _, decimals = text.partition(".")
    return f"${whole}.{decimals.rstrip('0').ljust(2, '0')}"
