"""Server-side SVG charts for the usage dashboard: no JavaScript, no CDN, every label escaped.

Labels show amounts in cents and tooltips the exact amounts. Each shape carries a
class the dashboard's style sheet colours from the admin's theme variables (dark
mode included); the fill attributes are the light-theme fallback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from django.template.defaultfilters import pluralize
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from .money import usd_format_brief, usd_format_exact

_BAR = "#417690"  # the admin's own blue
_OVER = "#ba2121"  # the admin's error red
_TRACK = "#e8e8e8"
# A generous width of one character of a 10-unit label (digits are 5.6 in the usual fonts).
_LABEL_CHAR_W = 6
_MIN_BAR_H = 2.0


def _n(value: float) -> str:
    """SVG coordinates with one decimal (format_html escapes arguments to text first)."""
    return f"{value:.1f}"


def _labelled_days(count: int) -> set[int]:
    """The indexes of the days whose date is written under the chart: every 5th
    (more apart beyond 30 days, so at most 7 labels) and the last, a label too
    close before the last left out. Labels keep their size on any width, so
    they must stay apart in percent of it."""
    step = max(5, math.ceil(count / 6))
    last = count - 1
    return {i for i in range(0, count, step) if i == 0 or last - i >= step / 2} | {last}


def _figures(cost: Decimal | None, requests: int, unpriced: int) -> str:
    """A tooltip's exact cost and requests, naming the unpriced ones a cost leaves out:
    "$0.50 (10 requests, 2 unpriced: not in the cost)"."""
    text = f"{usd_format_exact(cost)} ({requests} request{pluralize(requests)}"
    if unpriced and cost is not None:
        text += f", {unpriced} unpriced: not in the cost"
    return text + ")"


def daily_cost_chart(
    days: Sequence[tuple[date, Decimal | None, int, int]], *, height: int = 220
) -> SafeString:
    """Columns of cost per day (day, cost, requests, unpriced requests); each column's
    tooltip gives the day, cost and requests, and the unpriced ones the cost leaves out.

    A cost of None (unpriced usage, nothing priced) draws no column and says "unpriced".
    A period without a call is a sentence, as in spend_bars, not an empty plot;
    one whose calls cost nothing labels its axis "$0" once.

    The chart takes the width the page gives it: columns and day labels sit at
    percentages of the plot, lengths in pixels, and with no viewBox nothing is
    scaled, so labels keep their size on a narrow window. The axis labels are
    drawn in the padding left of the plot.
    """
    if not any(requests for _, _, requests, _ in days):
        return format_html('<p class="usage-empty">{}</p>', "No usage in this period.")
    peak = max((cost or Decimal(0) for _, cost, _, _ in days), default=Decimal(0)) or Decimal(1)
    peak_label = usd_format_brief(peak) if any(cost for _, cost, _, _ in days) else ""
    # The axis labels end 6 px left of the plot: room for the widest, whatever
    # the amount ($12,345,678.90 would otherwise start outside the picture).
    left = max(64, _LABEL_CHAR_W * len(peak_label) + 12)
    bottom, top = 24, 12
    plot_h = height - bottom - top
    slot = 100 / max(len(days), 1)
    columns = []
    for index, (day, cost, requests, unpriced) in enumerate(days):
        bar_h = float((cost or Decimal(0)) / peak) * plot_h
        if cost:
            # A day with any cost stands clear of the axis line (1 px thick,
            # centred on the plot's bottom), however small next to the peak.
            bar_h = max(bar_h, _MIN_BAR_H)
        columns.append(
            format_html(
                '<rect class="usage-bar" x="{}%" y="{}" width="{}%" height="{}" fill="{}">'
                "<title>{}: {}</title></rect>",
                _n(index * slot + slot * 0.15),
                _n(top + plot_h - bar_h),
                _n(slot * 0.7),
                _n(bar_h),
                _BAR,
                day.isoformat(),
                _figures(cost, requests, unpriced),
            )
        )
    labelled = _labelled_days(len(days))
    labels = format_html_join(
        "",
        '<text x="{}%" y="{}" font-size="10" text-anchor="middle">{}</text>',
        (
            (_n(index * slot + slot / 2), height - 8, day.strftime("%m-%d"))
            for index, (day, _, _, _) in enumerate(days)
            if index in labelled
        ),
    )
    peak_text = (
        format_html(
            '<text x="-6" y="{}" font-size="10" text-anchor="end">{}</text>', top + 8, peak_label
        )
        if peak_label
        else ""
    )
    axis = format_html(
        '{}<text x="-6" y="{}" font-size="10" text-anchor="end">$0</text>'
        '<line class="usage-axis" x1="0" y1="{}" x2="100%" y2="{}" stroke="#999"/>',
        peak_text,
        top + plot_h,
        top + plot_h,
        top + plot_h,
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart usage-daily" role="img" '
        'width="100%" height="{}" style="box-sizing: border-box; overflow: visible; '
        'padding-left: {}px; padding-right: 8px"><title>Daily cost, {} to {}</title>{}{}{}</svg>',
        height,
        left,
        days[0][0].isoformat() if days else "",
        days[-1][0].isoformat() if days else "",
        axis,
        mark_safe("".join(columns)),  # each column built by format_html
        labels,
    )


def spend_bars(
    rows: Sequence[tuple[str, Decimal | None, int, int]], *, width: int = 360
) -> SafeString:
    """Horizontal bars of spend per label (provider, model, service or customer): rows of
    (label, cost, requests, unpriced requests), tooltips as the daily chart's."""
    if not rows:
        return format_html('<p class="usage-empty">{}</p>', "No usage in this period.")
    row_h, label_w, value_w = 22, 130, 80
    peak = max((cost or Decimal(0) for _, cost, _, _ in rows), default=Decimal(0)) or Decimal(1)
    track_w = width - label_w - value_w
    parts = []
    for index, (label, cost, requests, unpriced) in enumerate(rows):
        y = index * row_h
        bar_w = float((cost or Decimal(0)) / peak) * track_w
        short = label if len(label) <= 20 else f"{label[:19]}…"
        parts.append(
            format_html(
                "<g><title>{}: {}</title>"
                '<text x="0" y="{}" font-size="11">{}</text>'
                '<rect class="usage-bar" x="{}" y="{}" width="{}" height="14" fill="{}"/>'
                '<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text></g>',
                label,
                _figures(cost, requests, unpriced),
                y + 15,
                short,
                label_w,
                y + 4,
                _n(max(bar_w, 1.0)),
                _BAR,
                width,
                y + 15,
                usd_format_brief(cost),
            )
        )
    height = row_h * len(rows)
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart usage-bars" '
        'viewBox="0 0 {} {}" width="{}" height="{}">{}</svg>',
        width,
        height,
        width,
        height,
        mark_safe("".join(parts)),  # each row built by format_html
    )


def budget_gauge(percent: float) -> SafeString:
    """A bar filled to `percent` of a budget's limit; red once at or over 100 %.

    Its units are percent of the limit, stretched to the width of its table
    cell (the dashboard's style sheet bounds it), so it never runs out of a
    narrow card. Its title gives the whole percent reached (rounded down, as
    budget alerts count): a budget at 99.6 % does not read 100 % while under its limit.
    """
    filled = min(max(percent, 0.0), 100.0)
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="usage-gauge" viewBox="0 0 100 14" '
        'preserveAspectRatio="none" width="100%" height="14"><title>{}% of the limit</title>'
        '<rect class="usage-track" width="100" height="14" fill="{}"/>'
        '<rect class="{}" width="{}" height="14" fill="{}"/>'
        "</svg>",
        math.floor(percent),
        _TRACK,
        "usage-over" if percent >= 100 else "usage-bar",
        _n(filled),
        _OVER if percent >= 100 else _BAR,
    )
