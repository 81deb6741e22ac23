"""Server-side SVG charts: one column per day, labels escaped."""

import datetime as dt
from decimal import Decimal

from usage.charts import budget_gauge, daily_cost_chart, spend_bars


def test_daily_cost_chart_draws_one_column_per_day_with_its_cost():
    days = [(dt.date(2026, 6, 1) + dt.timedelta(days=i), Decimal(i) / 10, i) for i in range(30)]

    svg = str(daily_cost_chart(days))

    assert svg.count("<rect") == 30
    assert "<title>2026-06-30: $2.90 (29 requests)</title>" in svg
    assert "<title>Daily cost, 2026-06-01 to 2026-06-30</title>" in svg


def test_spend_bars_escape_labels_that_carry_markup():
    svg = str(spend_bars([("<script>alert(1)</script>", Decimal("2.5"), 3)]))

    assert "<script>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "$2.50" in svg


def test_budget_gauge_turns_red_at_the_limit():
    assert "#ba2121" in str(budget_gauge(100.0))
    assert "#ba2121" not in str(budget_gauge(99.0))
