"""Usage report figures: unpriced usage is unknown cost, never $0; the dashboard's breakdowns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tests.factories import DailyUsageFactory, ProviderConfigFactory, TenantFactory
from usage.selectors import usage_dashboard, usage_figures


def _raw(**values) -> dict:
    raw = {
        "requests": 0,
        "errors": 0,
        "blocked": 0,
        "cached": 0,
        "unpriced_requests": 0,
        "priced_requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "latency_ms_sum": 0,
        "priced_cost_usd": Decimal(0),
    }
    return {**raw, **values}


def test_figures_cost_is_none_when_only_unpriced_usage():
    figures = usage_figures(_raw(requests=3, unpriced_requests=3))

    assert (figures["cost_usd"], figures["unpriced_requests"]) == (None, 3)


def test_figures_cost_counts_priced_part_when_some_unpriced():
    figures = usage_figures(
        _raw(
            requests=3,
            unpriced_requests=1,
            priced_requests=2,
            priced_cost_usd=Decimal("0.000001"),
        )
    )

    assert (figures["cost_usd"], figures["unpriced_requests"]) == (Decimal("0.000001"), 1)


def test_figures_cost_of_requests_priced_at_zero_beside_unpriced_ones_is_zero_not_unknown():
    # given two requests priced at $0 (cache hits, a free model) and one unpriced
    figures = usage_figures(_raw(requests=3, unpriced_requests=1, priced_requests=2))

    # then the cost of the priced ones is known, $0, and the unpriced one is counted apart
    assert (figures["cost_usd"], figures["unpriced_requests"]) == (Decimal(0), 1)
    assert "priced_requests" not in figures


def test_figures_cost_is_none_when_only_failed_calls_beside_unpriced_ones():
    # given an unpriced answer and two failed attempts, which had nothing to price
    figures = usage_figures(_raw(requests=3, errors=2, unpriced_requests=1))

    assert (figures["cost_usd"], figures["unpriced_requests"]) == (None, 1)


def test_figures_cost_is_zero_when_nothing_happened():
    assert usage_figures(_raw())["cost_usd"] == Decimal(0)


def test_figures_average_latency_is_whole_milliseconds_per_request():
    figures = usage_figures(_raw(requests=3, latency_ms_sum=1000))

    assert (figures["average_latency_ms"], "latency_ms_sum" in figures) == (333, False)


@pytest.mark.django_db
def test_dashboard_shows_a_config_once_after_its_type_changed():
    now = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant, name="local", provider_type="ollama")
    for day, provider_type, cost in ((1, "openai", "0.25"), (0, "ollama", "0")):
        DailyUsageFactory(
            tenant=tenant,
            provider_config=config,
            provider_type=provider_type,
            day=now.date() - dt.timedelta(days=day),
            cost_usd=Decimal(cost),
            request_count=4,
        )

    dashboard = usage_dashboard(tenant=tenant, now=now)

    assert dashboard.by_provider == [("local", Decimal("0.25"), 8, 0)]


@pytest.mark.django_db
def test_dashboard_shows_a_deleted_config_as_one_deleted_row():
    # Days recomputed since the deletion lost the config (NULL); older days keep its id.
    now = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
    tenant = TenantFactory()
    gone = ProviderConfigFactory(tenant=tenant, name="openai-old", provider_type="openai")
    kept = ProviderConfigFactory(tenant=tenant, name="main")
    DailyUsageFactory(
        tenant=tenant, provider_config=gone, provider_type="openai",
        day=now.date() - dt.timedelta(days=3), cost_usd=Decimal("0.4"), request_count=3,
    )  # fmt: skip
    DailyUsageFactory(
        tenant=tenant, provider_config=None, provider_type="openai", day=now.date(),
        cost_usd=Decimal("0.2"), request_count=2, unpriced_count=1,
    )  # fmt: skip
    DailyUsageFactory(
        tenant=tenant, provider_config=kept, day=now.date(), cost_usd=Decimal("0.5"),
        request_count=9,
    )  # fmt: skip
    gone.delete()

    dashboard = usage_dashboard(tenant=tenant, now=now)

    assert dashboard.by_provider == [
        ("(deleted) openai", Decimal("0.6"), 5, 1),
        ("main", Decimal("0.5"), 9, 0),
    ]
    assert dashboard.unpriced == [("(deleted) openai", "fake-small", 1)]


@pytest.mark.django_db
def test_dashboard_warns_of_a_config_s_unpriced_model_once_after_its_type_changed():
    now = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant, name="local", provider_type="ollama")
    for day, provider_type in ((1, "openai"), (0, "ollama")):
        DailyUsageFactory(
            tenant=tenant,
            provider_config=config,
            provider_type=provider_type,
            model="home-brew",
            day=now.date() - dt.timedelta(days=day),
            cost_usd=Decimal(0),
            request_count=3,
            unpriced_count=3,
        )

    dashboard = usage_dashboard(tenant=tenant, now=now)

    assert dashboard.unpriced == [("local", "home-brew", 6)]


@pytest.mark.django_db
def test_dashboard_breakdowns_add_up_to_the_total_past_ten_rows():
    # given 12 customers and 12 models: the ten largest are listed, the rest in one row
    now = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant, name="main")
    for index in range(12):
        DailyUsageFactory(
            tenant=tenant,
            provider_config=config,
            day=now.date(),
            customer_id=f"customer-{index:02}",
            model=f"model-{index:02}",
            cost_usd=Decimal("1.000001") * (index + 1),
            request_count=index + 1,
        )
    DailyUsageFactory(
        tenant=tenant, provider_config=config, day=now.date(), customer_id="customer-99",
        model="mystery", cost_usd=Decimal(0), request_count=5, unpriced_count=5,
    )  # fmt: skip

    dashboard = usage_dashboard(tenant=tenant, now=now)

    # then the last row holds the other three (two priced, one unpriced), and the rows
    # add up to the totals to the micro-dollar
    for rows in (dashboard.by_customer, dashboard.by_model):
        assert len(rows) == 11
        assert rows[-1] == ("(3 others)", Decimal("3.000003"), 8, 5)
        assert sum(cost for _, cost, _, _ in rows) == dashboard.total_cost == Decimal("78.000078")
        assert sum(requests for _, _, requests, _ in rows) == dashboard.total_requests == 83
    assert dashboard.by_service == [("summarizer", Decimal("78.000078"), 83, 5)]
    assert dashboard.total_unpriced == 5


@pytest.mark.django_db
def test_dashboard_breakdown_rest_of_unpriced_usage_only_reads_unpriced():
    now = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant, name="main")
    for index in range(12):
        DailyUsageFactory(
            tenant=tenant, provider_config=config, day=now.date(), customer_id=f"c-{index:02}",
            cost_usd=Decimal(index + 1) if index >= 2 else Decimal(0), request_count=1,
            unpriced_count=0 if index >= 2 else 1,
        )  # fmt: skip

    dashboard = usage_dashboard(tenant=tenant, now=now)

    assert dashboard.by_customer[-1] == ("(2 others)", None, 2, 2)
