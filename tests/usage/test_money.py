"""USD amounts: nano-dollar counters and how amounts are written for people."""

from decimal import Decimal

import pytest

from tests.factories import CallLogFactory
from usage.money import (
    nano_to_usd,
    usd_format,
    usd_format_beside,
    usd_format_brief,
    usd_format_exact,
    usd_to_nano,
    usd_to_nano_and_pico,
)


def test_usd_to_nano_rounds_reservations_up_and_costs_to_nearest():
    assert usd_to_nano(Decimal("0.0000000001"), round_up=True) == 1
    assert usd_to_nano(Decimal("0.0000000004")) == 0
    assert usd_to_nano(Decimal("12.345678901")) == 12_345_678_901
    assert usd_to_nano(None) == 0


def test_nano_to_usd_is_exact():
    assert nano_to_usd(12_345_678_901) == Decimal("12.345678901")


def test_usd_format_keeps_up_to_six_decimals_below_a_dollar():
    assert usd_format(Decimal("1234.5")) == "$1,234.50"
    assert usd_format(Decimal("0.000321456")) == "$0.000321"
    assert usd_format(Decimal("0.700000000000")) == "$0.70"
    assert usd_format(Decimal("0.0423")) == "$0.0423"
    assert usd_format(Decimal("0")) == "$0.00"
    assert usd_format(None) == "unpriced"


def test_usd_format_never_shows_a_non_zero_amount_as_zero():
    # A short embedding's cost, in a budget refusal ("the call may cost up to ...")
    assert usd_format(Decimal("0.000000200000")) == "$0.0000002"
    assert usd_format(Decimal("0.000000000001")) == "$0.000000000001"
    assert usd_format(Decimal("0.0000005")) == "$0.000001"


def test_usd_format_brief_rounds_to_cents_and_never_shows_spend_as_zero():
    assert usd_format_brief(Decimal("0.591368123456")) == "$0.59"
    assert usd_format_brief(Decimal("1234.5")) == "$1,234.50"
    assert usd_format_brief(Decimal("0.001319")) == "< $0.01"
    assert usd_format_brief(Decimal("0")) == "$0.00"
    assert usd_format_brief(None) == "unpriced"


def test_usd_format_exact_keeps_every_stored_decimal():
    assert usd_format_exact(Decimal("0.591368123456")) == "$0.591368123456"
    assert usd_format_exact(Decimal("0.361226000000")) == "$0.361226"
    assert usd_format_exact(Decimal("12345.678901234567")) == "$12,345.678901234567"
    assert usd_format_exact(Decimal("2.900000000000")) == "$2.90"
    assert usd_format_exact(None) == "unpriced"


def test_usd_format_beside_writes_an_amount_to_compare_with_a_sub_cent_limit_exactly():
    # 34 % of a $0.0001 limit is not "< $0.01"
    assert usd_format_beside(Decimal("0.000034"), Decimal("0.0001")) == "$0.000034"
    assert usd_format_beside(Decimal("0.0012345"), Decimal("0.005")) == "$0.0012345"
    assert usd_format_beside(Decimal("0"), Decimal("0.0001")) == "$0.00"


def test_usd_format_beside_writes_an_amount_to_the_limits_decimals():
    assert usd_format_beside(Decimal("3.456"), Decimal("10")) == "$3.46"
    assert usd_format_beside(Decimal("1234.5"), Decimal("5000")) == "$1,234.50"
    assert usd_format_beside(Decimal("3.4567"), Decimal("10.005")) == "$3.457"
    assert usd_format_beside(Decimal("9"), Decimal("10.005")) == "$9.00"


def test_usd_format_beside_never_rounds_an_amount_to_free_or_across_the_limit():
    assert usd_format_beside(Decimal("0.003"), Decimal("1")) == "$0.003"
    assert usd_format_beside(Decimal("9.996"), Decimal("10")) == "$9.996"
    assert usd_format_beside(Decimal("10.004"), Decimal("10")) == "$10.004"
    assert usd_format_beside(Decimal("10"), Decimal("10")) == "$10.00"


@pytest.mark.postgres
@pytest.mark.django_db
def test_usd_to_nano_and_pico_rounds_a_half_pico_as_call_logs_store_it():
    # given a cost half-way between two pico-dollars, stored in a call log
    half = Decimal("0.0000000000025")
    log = CallLogFactory(cost_usd=half)
    log.refresh_from_db()

    # then the counter's share of it is what the row keeps (PostgreSQL rounds
    # a half away from zero): 3 pico-dollars, not the even 2
    assert log.cost_usd == Decimal("0.000000000003")
    assert usd_to_nano_and_pico(half) == usd_to_nano_and_pico(log.cost_usd) == (0, 3)
