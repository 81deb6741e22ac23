"""Server-side SVG charts: one column per day, labels escaped."""

import datetime as dt
import re
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from usage.charts import budget_gauge, daily_cost_chart, spend_bars


def test_daily_cost_chart_draws_one_column_per_day_with_its_cost():
    days = [(dt.date(2026, 6, 1) + dt.timedelta(days=i), Decimal(i) / 10, i, 0) for i in range(30)]

    svg = str(daily_cost_chart(days))

    assert svg.count("<rect") == 30
    assert "<title>2026-06-30: $2.90 (29 requests)</title>" in svg
    assert "<title>Daily cost, 2026-06-01 to 2026-06-30</title>" in svg


def test_spend_bars_escape_labels_that_carry_markup():
    svg = str(spend_bars([("<script>alert(1)</script>", Decimal("2.5"), 3, 0)]))

    assert "<script>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "$2.50" in svg


def test_budget_gauge_fills_the_width_its_cell_gives_it():
    gauge = str(budget_gauge(34.0))

    # Its own units are percent of the limit, stretched to the cell's width
    # (at most 200 px by the dashboard's style sheet), never wider than it.
    assert 'viewBox="0 0 100 14" preserveAspectRatio="none" width="100%" height="14"' in gauge
    assert '<rect class="usage-bar" width="34.0" height="14"' in gauge


def test_budget_gauge_turns_red_at_the_limit():
    assert "#ba2121" in str(budget_gauge(100.0))
    assert "#ba2121" not in str(budget_gauge(99.0))


def test_daily_cost_chart_labels_the_peak_in_cents_and_tooltips_the_exact_cost():
    days = [
        (dt.date(2026, 6, 1), Decimal("0.591368123456"), 12, 0),
        (dt.date(2026, 6, 2), None, 1, 1),
    ]

    svg = str(daily_cost_chart(days))

    assert ">$0.59</text>" in svg
    assert "$0.591368<" not in svg
    assert "<title>2026-06-01: $0.591368123456 (12 requests)</title>" in svg
    assert "<title>2026-06-02: unpriced (1 request)</title>" in svg


def test_spend_bars_label_in_cents_and_tooltip_the_exact_spend():
    rows = [("support-bot", Decimal("0.361226"), 4, 0), ("batch", Decimal("0.0004"), 1, 0)]

    svg = str(spend_bars(rows))

    assert ">$0.36</text>" in svg and ">&lt; $0.01</text>" in svg
    assert "<title>support-bot: $0.361226 (4 requests)</title>" in svg
    assert "<title>batch: $0.0004 (1 request)</title>" in svg


def test_chart_shapes_carry_classes_the_dark_theme_recolours():
    bars = str(spend_bars([("a", Decimal("1"), 1, 0)]))
    gauge = str(budget_gauge(40.0))
    over = str(budget_gauge(120.0))
    daily = str(daily_cost_chart([(dt.date(2026, 6, 1), Decimal("1"), 1, 0)]))

    assert 'class="usage-bar"' in bars and 'class="usage-bar"' in daily
    assert 'class="usage-axis"' in daily
    assert 'class="usage-track"' in gauge and 'class="usage-bar"' in gauge
    assert 'class="usage-over"' in over


def test_daily_cost_chart_keeps_a_peak_of_millions_inside_the_picture():
    days = [
        (dt.date(2026, 6, 1), Decimal("12345678.9"), 3, 0),
        (dt.date(2026, 6, 2), Decimal(0), 0, 0),
    ]

    svg = str(daily_cost_chart(days))

    [label] = re.findall(r'<text x="-6" y="20" [^>]*text-anchor="end">([^<]+)</text>', svg)
    assert label == "$12,345,678.90"
    # Right-aligned 6 px left of the plot, in the padding left of it (5.6 px a
    # character at size 10): it starts inside the picture.
    padding = int(re.search(r"padding-left: (\d+)px", svg).group(1))
    assert padding - 6 - 5.6 * len(label) >= 0


def test_daily_cost_chart_stretches_its_columns_but_never_its_labels():
    days = [(dt.date(2026, 6, 1) + dt.timedelta(days=i), Decimal(i), i, 0) for i in range(30)]

    svg = str(daily_cost_chart(days))

    # Columns and day labels are placed in percent of the width the page gives
    # the chart; with no viewBox nothing is scaled, so labels keep 10 px on a
    # narrow window.
    assert "viewBox" not in svg
    assert re.match(r'<svg [^>]*class="usage-chart usage-daily"[^>]*width="100%" height="220"', svg)
    assert '<rect class="usage-bar" x="97.2%" y="12.0" width="2.3%" height="184.0"' in svg
    assert '<text x="1.7%" y="212" font-size="10" text-anchor="middle">06-01</text>' in svg
    assert '<line class="usage-axis" x1="0" y1="196" x2="100%" y2="196"' in svg


def test_daily_cost_chart_shows_a_tiny_day_above_the_axis_next_to_a_large_one():
    days = [
        (dt.date(2026, 6, 1), Decimal("500"), 9, 0),
        (dt.date(2026, 6, 2), Decimal("0.01"), 1, 0),
    ]

    svg = str(daily_cost_chart(days))

    axis_y = float(re.search(r'<line class="usage-axis" x1="\d+" y1="([\d.]+)"', svg).group(1))
    tiny = re.search(r'<rect class="usage-bar" [^>]*y="([\d.]+)" width="[\d.]+%" height="([\d.]+)"'
                     r'[^>]*><title>2026-06-02', svg)  # fmt: skip
    top, height = float(tiny.group(1)), float(tiny.group(2))
    assert top + height == axis_y
    # The axis line covers half a unit above axis_y: the column must rise clear of it.
    assert top < axis_y - 1


@pytest.mark.parametrize("count", [1, 2, 7, 27, 30, 31, 90, 365])
def test_daily_cost_chart_day_labels_stay_apart_however_many_days(count):
    first = dt.date(2026, 1, 1)
    days = [(first + dt.timedelta(days=i), Decimal(i % 7), i + 1, 0) for i in range(count)]

    svg = ET.fromstring(str(daily_cost_chart(days)))

    # the day labels: the first day, the last, and none crowding another (a
    # 5-character label needs about 30 px: 8 % of a 400 px plot)
    ns = "{http://www.w3.org/2000/svg}"
    labels = [t for t in svg.iter(f"{ns}text") if t.get("text-anchor") == "middle"]
    assert labels[0].text == first.strftime("%m-%d")
    assert labels[-1].text == days[-1][0].strftime("%m-%d")
    xs = [float(t.get("x").rstrip("%")) for t in labels]
    assert all(b - a >= 8 for a, b in zip(xs, xs[1:], strict=False)), xs
    assert len(svg.findall(f"{ns}rect")) == count


def test_daily_cost_chart_of_a_period_without_calls_says_so_instead_of_an_empty_plot():
    days = [(dt.date(2026, 6, 1) + dt.timedelta(days=i), Decimal(0), 0, 0) for i in range(30)]

    html = str(daily_cost_chart(days))

    assert html == '<p class="usage-empty">No usage in this period.</p>'


def test_daily_cost_chart_of_free_calls_labels_its_axis_zero_once():
    # given calls that cost nothing (a free model) on one day
    days = [(dt.date(2026, 6, 1), Decimal(0), 0, 0), (dt.date(2026, 6, 2), Decimal(0), 3, 0)]

    svg = str(daily_cost_chart(days))

    # then the day keeps its tooltip, and the axis reads $0 alone, not "$0.00" above "$0"
    assert "<title>2026-06-02: $0.00 (3 requests)</title>" in svg
    axis_labels = re.findall(r'text-anchor="end">([^<]*)</text>', svg)
    assert axis_labels == ["$0"]


def test_tooltips_name_the_unpriced_requests_a_known_cost_leaves_out():
    # given a day and a model whose priced requests cost $0 beside unpriced ones,
    # and a day and a model of unpriced requests alone
    days = [(dt.date(2026, 6, 1), Decimal(0), 4, 2), (dt.date(2026, 6, 2), None, 3, 2)]
    rows = [("local-7b", Decimal("0.25"), 3, 1), ("mystery-7b", None, 2, 2)]

    daily, bars = str(daily_cost_chart(days)), str(spend_bars(rows))

    # then the known cost is written, with the unpriced requests it leaves out
    assert "<title>2026-06-01: $0.00 (4 requests, 2 unpriced: not in the cost)</title>" in daily
    assert "<title>2026-06-02: unpriced (3 requests)</title>" in daily
    assert "<title>local-7b: $0.25 (3 requests, 1 unpriced: not in the cost)</title>" in bars
    assert "<title>mystery-7b: unpriced (2 requests)</title>" in bars
