"""Usage endpoints: call logs (filters, cursors, exact costs), usage reports (exact sums,
tenant-local days, ranges, limits, zero-filled days), budgets and alerts."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import ADDITION, DELETION, LogEntry
from django.utils import timezone

from llm_providers.completion import complete
from llm_providers.config_cache import config_version
from tests.factories import (
    AlertDeliveryFactory,
    BudgetFactory,
    CallLogFactory,
    CostAlertFactory,
    DailyUsageFactory,
    ProviderConfigFactory,
)
from tests.usage.priced_groups import EXPECTED, priced_groups_log
from usage.aggregation import daily_usage_recompute
from usage.alerts import alert_delivery_attempt, alerts_check
from usage.models import Budget, DailyUsage
from usage.periods import local_date, zone

pytestmark = pytest.mark.django_db

CALLS = "/api/v1/calls/"
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _ids(response) -> list[int]:
    return [c["id"] for c in response.json()["results"]]


def test_call_list_shows_exact_cost_and_tokens(admin_api, tenant):
    log = CallLogFactory(
        tenant=tenant, cost_usd=Decimal("0.000123456789"), input_tokens=1234, output_tokens=56
    )

    response = admin_api.get(CALLS)

    assert response.status_code == 200
    [item] = response.json()["results"]
    assert item["id"] == log.pk
    assert item["cost_usd"] == "0.000123456789"
    assert (item["input_tokens"], item["output_tokens"]) == (1234, 56)
    assert item["provider_config"] == str(log.provider_config_id)
    assert item["request_id"] == str(log.request_id)


def test_call_list_shows_null_cost_when_model_unpriced(admin_api, tenant):
    CallLogFactory(tenant=tenant, cost_usd=None, price_source="unknown")

    [item] = admin_api.get(CALLS).json()["results"]

    assert (item["cost_usd"], item["price_source"]) == (None, "unknown")


def test_call_list_pages_newest_first_by_cursor_when_timestamps_tie(admin_api, tenant):
    older = CallLogFactory(tenant=tenant, created_at=NOON - timedelta(hours=1))
    tied = [CallLogFactory(tenant=tenant, created_at=NOON) for _ in range(3)]

    first = admin_api.get(CALLS, {"page_size": 2})
    second = admin_api.get(first.json()["next"])

    expected = [t.pk for t in sorted(tied, key=lambda log: -log.pk)] + [older.pk]
    assert _ids(first) + _ids(second) == expected
    assert first.json()["previous"] is None
    assert second.json()["next"] is None


def _walk(api, url: str, link: str) -> list[list[int]]:
    """The pages met following `link` ("next" or "previous") from `url`, first page included."""
    pages = []
    while url:
        body = api.get(url).json()
        pages.append([item["id"] for item in body["results"]])
        url = body[link]
    return pages


def test_call_list_previous_links_walk_back_over_tied_timestamps(admin_api, tenant):
    tied = sorted(
        (CallLogFactory(tenant=tenant, created_at=NOON).pk for _ in range(5)), reverse=True
    )
    last = admin_api.get(CALLS, {"page_size": 2})
    for _ in range(2):
        last = admin_api.get(last.json()["next"])

    back = _walk(admin_api, last.json()["previous"], "previous")

    assert _ids(last) == tied[4:]
    assert back == [tied[2:4], tied[:2]]


def test_call_list_next_links_skip_nothing_when_a_call_with_the_same_time_arrives(
    admin_api, tenant
):
    tied = sorted(
        (CallLogFactory(tenant=tenant, created_at=NOON).pk for _ in range(4)), reverse=True
    )
    first = admin_api.get(CALLS, {"page_size": 2})
    # A call that started at the same instant is written while the caller reads.
    CallLogFactory(tenant=tenant, created_at=NOON)

    rest = _walk(admin_api, first.json()["next"], "next")

    assert _ids(first) + [pk for page in rest for pk in page] == tied


def test_call_list_follows_a_cursor_holding_only_a_time(admin_api, tenant):
    # Cursors given out before positions carried ids hold the time alone.
    older = CallLogFactory(tenant=tenant, created_at=NOON - timedelta(hours=1))
    CallLogFactory(tenant=tenant, created_at=NOON)
    cursor = base64.b64encode(urlencode({"p": str(NOON)}).encode()).decode()

    response = admin_api.get(CALLS, {"cursor": cursor})

    assert response.status_code == 200
    assert _ids(response) == [older.pk]


def test_alert_list_previous_links_walk_back_over_alerts_of_one_check(admin_api, tenant):
    # One alerts check stamps every alert it creates with the same time.
    alerts = sorted(
        (CostAlertFactory(tenant=tenant, created_at=NOON, percent=p).pk for p in range(1, 6)),
        reverse=True,
    )
    pages = _walk(admin_api, "/api/v1/alerts/?page_size=2", "next")
    last = admin_api.get("/api/v1/alerts/", {"page_size": 2})
    for _ in range(2):
        last = admin_api.get(last.json()["next"])

    back = _walk(admin_api, last.json()["previous"], "previous")

    assert pages == [alerts[:2], alerts[2:4], alerts[4:]]
    assert back == [alerts[2:4], alerts[:2]]


def test_call_list_answers_404_when_cursor_invalid(admin_api, tenant):
    response = admin_api.get(CALLS, {"cursor": "garbage"})

    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "Invalid cursor",
        "fields": {},
        "extra": {},
    }


@pytest.mark.parametrize(
    "cursor",
    [
        "\x00",  # no base64 character at all: DRF's lax decoding reads nothing
        "cD0y\x00",  # base64 with a NUL in it
        "!!",  # characters outside base64
        "",  # nothing
        base64.b64encode(b"a=1").decode(),  # base64, but of no position
    ],
    ids=["nul", "base64-and-nul", "not-base64", "empty", "no-position"],
)
def test_call_list_answers_404_when_cursor_is_not_base64_of_a_position(admin_api, tenant, cursor):
    CallLogFactory(tenant=tenant, created_at=NOON)

    response = admin_api.get(CALLS, {"cursor": cursor})

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid cursor"


def test_call_list_still_follows_an_offset_cursor_without_a_position(admin_api, tenant):
    # given: calls of one time, and a cursor of an offset alone, as given out
    # for such a first page before positions held ids
    calls = sorted(CallLogFactory(tenant=tenant, created_at=NOON).pk for _ in range(5))
    cursor = base64.b64encode(b"o=2").decode()

    response = admin_api.get(CALLS, {"cursor": cursor, "page_size": 2})

    assert response.status_code == 200
    assert _ids(response) == calls[::-1][2:4]


@pytest.mark.parametrize(
    "position",
    [
        "garbage",  # not a time at all
        "2026-02-30 12:00:00+00:00",  # shaped like one, but no such day
        "2026-03-01 12:00:00",  # a time without its zone: no cursor the API gives
        "2026-03-01T12:00:00+00:00|x",  # a time and something that is not an id
        "2026-03-01T12:00:00+00:00|99999999999999999999",  # an id past any row's
    ],
)
def test_call_list_answers_404_when_cursor_position_is_not_a_time(admin_api, tenant, position):
    # given: a cursor well encoded, as `next` links are, around a position no link carries
    CallLogFactory(tenant=tenant, created_at=NOON)
    cursor = base64.b64encode(urlencode({"p": position}).encode()).decode()

    # when
    response = admin_api.get(CALLS, {"cursor": cursor})

    # then
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "Invalid cursor",
        "fields": {},
        "extra": {},
    }


@pytest.mark.parametrize(
    ("field", "matching", "other"),
    [
        ("status", {"status": "error"}, {"status": "ok"}),
        ("service_name", {"service_name": "summarizer"}, {"service_name": "chat"}),
        ("customer_id", {"customer_id": "acme-corp"}, {"customer_id": "initech"}),
    ],
)
def test_call_list_filters_by_field(admin_api, tenant, field, matching, other):
    wanted = CallLogFactory(tenant=tenant, **matching)
    CallLogFactory(tenant=tenant, **other)

    response = admin_api.get(CALLS, {field: matching[field]})

    assert _ids(response) == [wanted.pk]


def test_call_list_filters_by_provider_config(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant)
    wanted = CallLogFactory(tenant=tenant, provider_config=config)
    CallLogFactory(tenant=tenant)

    response = admin_api.get(CALLS, {"provider_config": str(config.pk)})

    assert _ids(response) == [wanted.pk]


def test_call_list_filters_by_model_requested_or_answered(admin_api, tenant):
    requested = CallLogFactory(tenant=tenant, model_requested="gpt-4o", model_answered="x")
    answered = CallLogFactory(tenant=tenant, model_requested="y", model_answered="gpt-4o")
    CallLogFactory(tenant=tenant, model_requested="claude", model_answered="claude")

    response = admin_api.get(CALLS, {"model": "gpt-4o"})

    assert sorted(_ids(response)) == sorted([requested.pk, answered.pk])


def test_call_list_filters_attempts_of_one_request(admin_api, tenant):
    request_id = uuid.uuid4()
    first = CallLogFactory(tenant=tenant, request_id=request_id, attempt=1, status="error")
    second = CallLogFactory(tenant=tenant, request_id=request_id, attempt=2)
    CallLogFactory(tenant=tenant)

    response = admin_api.get(CALLS, {"request_id": str(request_id)})

    assert sorted(_ids(response)) == [first.pk, second.pk]


def test_call_list_filters_by_half_open_time_range(admin_api, tenant):
    CallLogFactory(tenant=tenant, created_at=NOON - timedelta(seconds=1))
    at_start = CallLogFactory(tenant=tenant, created_at=NOON)
    inside = CallLogFactory(tenant=tenant, created_at=NOON + timedelta(minutes=30))
    CallLogFactory(tenant=tenant, created_at=NOON + timedelta(hours=1))

    response = admin_api.get(
        CALLS,
        {"created_after": "2026-03-01T12:00:00Z", "created_before": "2026-03-01T13:00:00Z"},
    )

    assert _ids(response) == [inside.pk, at_start.pk]


@pytest.mark.parametrize(
    ("field", "value"),
    [("created_after", "2026-03-01T12:00:00"), ("created_before", "2026-03-01")],
)
def test_call_list_answers_400_when_a_time_has_no_utc_offset(admin_api, tenant, field, value):
    # given a tenant 14 hours ahead of UTC, whose noon is UTC's 22:00 the day before
    tenant.timezone = "Pacific/Kiritimati"
    tenant.save()
    CallLogFactory(tenant=tenant, created_at=NOON)

    # when a time is given without its offset (UTC's noon or the tenant's?)
    response = admin_api.get(CALLS, {field: value})

    # then it is refused, saying how to write it, rather than read in the server's zone
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        field: [
            "Give the time with its UTC offset (Z or ±HH:MM), e.g. 2026-03-01T00:00:00Z: "
            "without one it could be UTC's time or the tenant's."
        ]
    }


def test_call_list_answers_400_when_range_inverted(admin_api, tenant):
    response = admin_api.get(
        CALLS,
        {"created_after": "2026-03-02T00:00:00Z", "created_before": "2026-03-01T00:00:00Z"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "created_before": ["Must be later than created_after."]
    }


def test_call_list_answers_400_when_a_filter_is_empty(admin_api, tenant):
    # given a call that went through and one that failed
    CallLogFactory(tenant=tenant, status="ok")
    CallLogFactory(tenant=tenant, status="error", cost_usd=None, price_source="")

    # when the status filter is sent without a value (a URL built from an empty variable)
    response = admin_api.get(CALLS, {"status": ""})

    # then it is refused rather than answering both calls as though they matched it
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "status": ["Empty: give a value, or leave the parameter out."]
    }


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/calls/", "model"),
        ("/api/v1/calls/", "created_after"),
        ("/api/v1/usage/summary/", "days"),
        ("/api/v1/usage/daily/", "start"),
        ("/api/v1/usage/by-customer/", "limit"),
        ("/api/v1/alerts/", "kind"),
        ("/api/v1/alerts/", "budget"),
    ],
)
def test_usage_endpoints_answer_400_naming_an_empty_parameter(admin_api, tenant, path, parameter):
    response = admin_api.get(path, {parameter: ""})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        parameter: ["Empty: give a value, or leave the parameter out."]
    }


def test_call_list_filters_by_an_empty_service_name(admin_api, tenant):
    # An empty service name is a value: calls that named no service.
    unnamed = CallLogFactory(tenant=tenant, service_name="")
    CallLogFactory(tenant=tenant, service_name="summarizer")

    response = admin_api.get(CALLS, {"service_name": ""})

    assert _ids(response) == [unnamed.pk]


def test_call_list_answers_400_naming_each_bad_filter(admin_api, tenant):
    response = admin_api.get(CALLS, {"status": "exploded", "request_id": "nope"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "status": ['"exploded" is not a valid choice.'],
        "request_id": ["Must be a valid UUID."],
    }


def test_call_retrieve_answers_one_call(service_api, tenant):
    log = CallLogFactory(tenant=tenant, error_code="provider_timeout", status="error")

    response = service_api.get(f"{CALLS}{log.pk}/")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["error_code"]) == (
        "error",
        "provider_timeout",
    )


# --- usage reports -------------------------------------------------------------

USAGE = "/api/v1/usage/"


def _today(tenant) -> date:
    return local_date(timezone.now(), zone(tenant.timezone))


def _usage_row(tenant, day, **fields):
    fields.setdefault("provider_config", None)
    if fields["provider_config"] is None:
        fields.setdefault("provider_type", "fake")
    return DailyUsageFactory(tenant=tenant, day=day, **fields)


@pytest.fixture
def config(tenant):
    return ProviderConfigFactory(tenant=tenant, name="fake-main")


def test_usage_summary_sums_rows_of_the_window_exactly(service_api, tenant, config):
    today = _today(tenant)
    _usage_row(
        tenant, today, provider_config=config, request_count=10, error_count=2,
        blocked_count=1, cached_count=3, input_tokens=1000, output_tokens=500,
        cache_read_tokens=200, cache_write_tokens=50, reasoning_tokens=40,
        cost_usd=Decimal("0.001234567891"), latency_ms_sum=1200,
    )  # fmt: skip
    _usage_row(
        tenant, today - timedelta(days=29), provider_config=config, model="fake-large",
        request_count=5, input_tokens=10, output_tokens=20, cost_usd=Decimal("0.000000000009"),
        latency_ms_sum=300,
    )  # fmt: skip
    _usage_row(tenant, today - timedelta(days=30), provider_config=config, request_count=99)
    DailyUsageFactory(day=today, request_count=77)  # another tenant

    response = service_api.get(f"{USAGE}summary/")

    assert response.status_code == 200
    body = response.json()
    assert (body["start"], body["end"], body["timezone"]) == (
        str(today - timedelta(days=29)),
        str(today),
        "UTC",
    )
    assert body["totals"] == {
        "requests": 15,
        "errors": 2,
        "blocked": 1,
        "cached": 3,
        "unpriced_requests": 0,
        "input_tokens": 1010,
        "output_tokens": 520,
        "cache_read_tokens": 200,
        "cache_write_tokens": 50,
        "reasoning_tokens": 40,
        "cost_usd": "0.001234567900",
        "average_latency_ms": 100,
    }


def test_usage_summary_matches_aggregated_call_logs(admin_api, tenant, config):
    now = timezone.now()
    for status, cost, source in (
        ("ok", Decimal("0.000125000000"), "override"),
        ("ok", Decimal("0.000375000001"), "override"),
        ("error", None, ""),
        ("cached", Decimal("0"), "none"),
        ("ok", None, "unknown"),
    ):
        CallLogFactory(
            tenant=tenant, provider_config=config, status=status, cost_usd=cost,
            price_source=source, created_at=now,
        )  # fmt: skip
    today = _today(tenant)
    daily_usage_recompute(first_day=today, last_day=today, tenant=tenant, now=now)

    totals = admin_api.get(f"{USAGE}summary/", {"days": 1}).json()["totals"]

    assert (totals["requests"], totals["errors"], totals["cached"]) == (5, 1, 1)
    assert totals["unpriced_requests"] == 1
    assert totals["cost_usd"] == "0.000500000001"
    assert (totals["input_tokens"], totals["output_tokens"]) == (500, 250)


def test_usage_cost_is_null_when_all_usage_is_unpriced(admin_api, tenant, config):
    today = _today(tenant)
    _usage_row(tenant, today, provider_config=config, model="mystery", request_count=4,
               unpriced_count=4, cost_usd=Decimal(0))  # fmt: skip
    _usage_row(tenant, today, provider_config=config, model="fake-small", request_count=2,
               cost_usd=Decimal("0.5"))  # fmt: skip

    body = admin_api.get(f"{USAGE}by-model/").json()

    assert [(g["model"], g["cost_usd"], g["unpriced_requests"]) for g in body["groups"]] == [
        ("fake-small", "0.500000000000", 0),
        ("mystery", None, 4),
    ]
    assert (body["totals"]["cost_usd"], body["totals"]["unpriced_requests"]) == (
        "0.500000000000",
        4,
    )


def _cost_text(cost):
    return None if cost is None else f"{cost:.12f}"


def test_usage_reports_cost_priced_requests_exactly_and_unknown_only_when_none_was_priced(
    viewer_api, tenant, config
):
    # given four models' calls, aggregated: all priced at $0, $0 beside unpriced,
    # priced beside unpriced, and unpriced only (yesterday)
    now = timezone.now()
    priced_groups_log(tenant, config, now)
    today = _today(tenant)
    yesterday = today - timedelta(days=1)
    daily_usage_recompute(first_day=yesterday, last_day=today, tenant=tenant, now=now)

    def figures(item):
        return (
            item["requests"], item["errors"], item["blocked"], item["cached"],
            item["unpriced_requests"], item["cost_usd"],
        )  # fmt: skip

    def expected(model):
        requests, errors, blocked, cached, _, unpriced, _, cost = EXPECTED[model]
        return (requests, errors, blocked, cached, unpriced, _cost_text(cost))

    window = {"start": str(yesterday), "end": str(today)}

    # when each report is read
    by_model = viewer_api.get(f"{USAGE}by-model/", window).json()
    by_service = viewer_api.get(f"{USAGE}by-service/", window).json()
    by_provider = viewer_api.get(f"{USAGE}by-provider/", window).json()
    by_customer = viewer_api.get(f"{USAGE}by-customer/", {**window, "limit": 1}).json()
    daily = viewer_api.get(f"{USAGE}daily/", window).json()
    summary = viewer_api.get(f"{USAGE}summary/", window).json()
    earlier = viewer_api.get(f"{USAGE}summary/", {"start": str(yesterday), "end": str(yesterday)})
    provider = viewer_api.get(f"/api/v1/providers/{config.pk}/usage/", window).json()

    # then a group's cost is its priced requests' exact sum ($0 when they cost
    # nothing, beside unpriced requests or not), null only when none was priced,
    # and its unpriced requests are counted apart
    order = ["paid-and-unpriced", "zero-and-unpriced", "free", "unpriced"]
    assert [(g["model"], *figures(g)) for g in by_model["groups"]] == [
        (model, *expected(model)) for model in order
    ]
    assert [(g["service_name"], *figures(g)) for g in by_service["groups"]] == [
        (model, *expected(model)) for model in order
    ]
    assert [(m["model"], *figures(m)) for m in provider["models"]] == [
        (model, *expected(model)) for model in order
    ]
    # every group together: the priced sum, and the 5 unpriced requests apart
    everything = (13, 3, 1, 2, 5, "0.000123456790")
    for body in (by_model, by_service, by_provider, by_customer, daily, summary, provider):
        assert figures(body["totals"]) == everything
    assert [(g["provider_name"], *figures(g)) for g in by_provider["groups"]] == [
        ("fake-main", *everything)
    ]
    assert [(g["customer_id"], *figures(g)) for g in by_customer["groups"]] == [
        ("acme", *everything)
    ]
    # a day of unpriced usage alone has an unknown cost; today's is the priced sum
    assert [(d["day"], *figures(d)) for d in daily["days"]] == [
        (str(yesterday), *expected("unpriced")),
        (str(today), 10, 2, 0, 2, 3, "0.000123456790"),
    ]
    assert [(d["day"], d["cost_usd"]) for d in provider["days"]] == [
        (str(yesterday), None),
        (str(today), "0.000123456790"),
    ]
    assert figures(earlier.json()["totals"]) == expected("unpriced")


def test_usage_cost_of_cache_hits_of_an_unpriced_model_is_zero_beside_its_unpriced_calls(
    viewer_api, tenant
):
    # given a model with no known price, asked once and then served twice from
    # the response cache (which costs nothing)
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    ProviderConfigFactory(
        tenant=tenant, name="fake-main", default_model="fake-large", is_default=True
    )
    hello = [{"role": "user", "content": "hi"}]
    results = [complete(tenant=tenant, messages=hello) for _ in range(3)]
    assert [(r.cached, r.cost_usd) for r in results] == [
        (False, None),
        (True, Decimal(0)),
        (True, Decimal(0)),
    ]
    today = _today(tenant)
    daily_usage_recompute(first_day=today, last_day=today, tenant=tenant)

    # when its usage is read
    body = viewer_api.get(f"{USAGE}by-model/", {"days": 1}).json()

    # then the cache hits' cost is known, $0, and the unpriced call is counted apart
    [group] = body["groups"]
    assert (group["model"], group["requests"], group["cached"]) == ("fake-large", 3, 2)
    assert (group["cost_usd"], group["unpriced_requests"]) == ("0.000000000000", 1)
    assert body["totals"]["cost_usd"] == "0.000000000000"


def test_usage_reports_roll_call_logs_up_first_when_nothing_runs_on_a_schedule(
    service_api, tenant, config, settings
):
    # given the embedded defaults (no broker, so no beat), a call today and
    # one three days ago that nothing has rolled up
    settings.USAGE_ROLL_UP_ON_READ = True
    now = timezone.now()
    CallLogFactory(tenant=tenant, provider_config=config, cost_usd=Decimal("0.000125000000"),
                   created_at=now)  # fmt: skip
    CallLogFactory(tenant=tenant, provider_config=config, cost_usd=Decimal("0.000375000001"),
                   created_at=now - timedelta(days=3))  # fmt: skip

    # when a program reads its usage
    summary = service_api.get(f"{USAGE}summary/", {"days": 7}).json()["totals"]
    daily = service_api.get(f"{USAGE}daily/", {"days": 7}).json()["days"]
    provider = service_api.get(f"/api/v1/providers/{config.pk}/usage/", {"days": 7}).json()

    # then both calls are in every report, exactly
    assert (summary["requests"], summary["cost_usd"]) == (2, "0.000500000001")
    assert [d["requests"] for d in daily] == [0, 0, 0, 1, 0, 0, 1]
    assert provider["totals"]["cost_usd"] == "0.000500000001"


def test_usage_reports_read_what_the_beat_stored_when_one_runs(service_api, tenant, config):
    # given a deployment with a beat, and a call it has not rolled up yet
    CallLogFactory(tenant=tenant, provider_config=config, created_at=timezone.now())

    totals = service_api.get(f"{USAGE}summary/", {"days": 7}).json()["totals"]

    # then the report shows what DailyUsage holds, and the request adds nothing to it
    assert totals["requests"] == 0
    assert not DailyUsage.objects.filter(tenant=tenant).exists()


def test_usage_days_are_the_tenants_local_days_ending_today(viewer_api, tenant, config):
    tenant.timezone = "Pacific/Kiritimati"  # UTC+14: its today is often UTC's tomorrow
    tenant.save()
    today = _today(tenant)
    for offset, requests in ((0, 1), (6, 2), (7, 4)):
        _usage_row(tenant, today - timedelta(days=offset), provider_config=config,
                   request_count=requests)  # fmt: skip

    body = viewer_api.get(f"{USAGE}summary/", {"days": 7}).json()

    assert (body["start"], body["end"]) == (str(today - timedelta(days=6)), str(today))
    assert body["timezone"] == "Pacific/Kiritimati"
    assert body["totals"]["requests"] == 3


def test_usage_counts_a_call_on_its_local_day_of_the_tenants_zone(admin_api, tenant, config):
    tenant.timezone = "Europe/Paris"
    tenant.save()
    # 23:30 UTC on March 1st is 00:30 on March 2nd in Paris.
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    CallLogFactory(tenant=tenant, provider_config=config, created_at=late)
    daily_usage_recompute(
        first_day=date(2026, 3, 1), last_day=date(2026, 3, 2), tenant=tenant, now=late
    )

    body = admin_api.get(f"{USAGE}daily/", {"start": "2026-03-01", "end": "2026-03-02"}).json()

    assert [(d["day"], d["requests"]) for d in body["days"]] == [
        ("2026-03-01", 0),
        ("2026-03-02", 1),
    ]


def test_usage_daily_lists_every_day_with_zeros_where_no_usage(admin_api, tenant, config):
    first = date(2026, 2, 27)
    _usage_row(tenant, first, provider_config=config, request_count=3, cost_usd=Decimal("0.3"))
    _usage_row(tenant, first + timedelta(days=2), provider_config=config, request_count=1,
               cost_usd=Decimal("0.1"), service_name="chat")  # fmt: skip
    _usage_row(tenant, first + timedelta(days=2), provider_config=config, request_count=2,
               cost_usd=Decimal("0.2"))  # fmt: skip

    body = admin_api.get(f"{USAGE}daily/", {"start": "2026-02-27", "end": "2026-03-02"}).json()

    assert [(d["day"], d["requests"], d["cost_usd"]) for d in body["days"]] == [
        ("2026-02-27", 3, "0.300000000000"),
        ("2026-02-28", 0, "0.000000000000"),
        ("2026-03-01", 3, "0.300000000000"),
        ("2026-03-02", 0, "0.000000000000"),
    ]
    assert body["days"][1] == {
        "day": "2026-02-28",
        "requests": 0,
        "errors": 0,
        "blocked": 0,
        "cached": 0,
        "unpriced_requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": "0.000000000000",
        "average_latency_ms": 0,
    }
    assert body["totals"]["cost_usd"] == "0.600000000000"


def test_usage_by_provider_names_configs_most_expensive_first(admin_api, tenant, config):
    today = _today(tenant)
    cheap = ProviderConfigFactory(tenant=tenant, name="cheap")
    _usage_row(tenant, today, provider_config=cheap, cost_usd=Decimal("0.01"), request_count=50)
    _usage_row(tenant, today, provider_config=config, cost_usd=Decimal("0.02"), request_count=1)
    _usage_row(tenant, today, provider_config=None, provider_type="openai",
               cost_usd=Decimal("0.005"), request_count=2)  # fmt: skip

    groups = admin_api.get(f"{USAGE}by-provider/").json()["groups"]

    assert [
        (g["provider_config"], g["provider_name"], g["provider_type"], g["cost_usd"])
        for g in groups
    ] == [
        (str(config.pk), "fake-main", "fake", "0.020000000000"),
        (str(cheap.pk), "cheap", "fake", "0.010000000000"),
        (None, None, "openai", "0.005000000000"),
    ]


def test_usage_by_provider_shows_deleted_config_without_name(admin_api, tenant, config):
    gone = ProviderConfigFactory(tenant=tenant, name="gone")
    _usage_row(tenant, _today(tenant), provider_config=gone, request_count=3)
    gone_id = gone.pk
    gone.delete()

    [group] = admin_api.get(f"{USAGE}by-provider/").json()["groups"]

    assert (group["provider_config"], group["provider_name"], group["requests"]) == (
        str(gone_id),
        None,
        3,
    )


def test_usage_by_provider_lists_a_config_once_after_its_type_changed(admin_api, tenant, config):
    # The config answered as OpenAI, then was switched to Ollama; calls without
    # a config stay apart per type.
    today = _today(tenant)
    config.provider_type = "ollama"
    config.save()
    _usage_row(tenant, today, provider_config=config, provider_type="openai",
               cost_usd=Decimal("0.030000000001"), request_count=3)  # fmt: skip
    _usage_row(tenant, today, provider_config=config, provider_type="ollama",
               cost_usd=Decimal(0), request_count=5)  # fmt: skip
    _usage_row(tenant, today, provider_type="openai", cost_usd=Decimal("0.02"), request_count=1)
    _usage_row(tenant, today, provider_type="bedrock", cost_usd=Decimal("0.01"), request_count=1)

    groups = admin_api.get(f"{USAGE}by-provider/").json()["groups"]

    assert [
        (g["provider_config"], g["provider_name"], g["provider_type"], g["requests"], g["cost_usd"])
        for g in groups
    ] == [
        (str(config.pk), "fake-main", "ollama", 8, "0.030000000001"),
        (None, None, "openai", 1, "0.020000000000"),
        (None, None, "bedrock", 1, "0.010000000000"),
    ]


def test_usage_by_service_sums_each_service_over_days_and_models(admin_api, tenant, config):
    today = _today(tenant)
    for day, model, service, cost in (
        (today, "fake-small", "summarizer", "0.1"),
        (today - timedelta(days=1), "fake-large", "summarizer", "0.2"),
        (today, "fake-small", "chat", "0.25"),
        (today, "fake-small", "", "0.01"),
    ):
        _usage_row(tenant, day, provider_config=config, model=model, service_name=service,
                   cost_usd=Decimal(cost), request_count=1)  # fmt: skip

    groups = admin_api.get(f"{USAGE}by-service/").json()["groups"]

    assert [(g["service_name"], g["requests"], g["cost_usd"]) for g in groups] == [
        ("summarizer", 2, "0.300000000000"),
        ("chat", 1, "0.250000000000"),
        ("", 1, "0.010000000000"),
    ]


def test_usage_by_customer_lists_limit_most_expensive_with_all_in_totals(admin_api, tenant, config):
    today = _today(tenant)
    for customer, cost in (("initech", "0.3"), ("acme", "0.5"), ("globex", "0.1")):
        _usage_row(tenant, today, provider_config=config, customer_id=customer,
                   cost_usd=Decimal(cost), request_count=1)  # fmt: skip

    body = admin_api.get(f"{USAGE}by-customer/", {"limit": 2}).json()

    assert [(g["customer_id"], g["cost_usd"]) for g in body["groups"]] == [
        ("acme", "0.500000000000"),
        ("initech", "0.300000000000"),
    ]
    assert body["has_more"] is True
    assert (body["totals"]["requests"], body["totals"]["cost_usd"]) == (3, "0.900000000000")


def test_usage_by_customer_has_no_more_when_all_listed(admin_api, tenant, config):
    _usage_row(tenant, _today(tenant), provider_config=config, customer_id="acme")

    body = admin_api.get(f"{USAGE}by-customer/").json()

    assert ([g["customer_id"] for g in body["groups"]], body["has_more"]) == (["acme"], False)


def test_usage_range_of_366_days_is_accepted(admin_api, tenant, config):
    _usage_row(tenant, date(2024, 12, 31), provider_config=config, request_count=2)
    _usage_row(tenant, date(2024, 1, 1), provider_config=config, request_count=1)

    body = admin_api.get(f"{USAGE}daily/", {"start": "2024-01-01", "end": "2024-12-31"}).json()

    assert len(body["days"]) == 366
    assert body["totals"]["requests"] == 3


def test_usage_start_without_end_runs_until_today(admin_api, tenant, config):
    today = _today(tenant)

    body = admin_api.get(f"{USAGE}summary/", {"start": str(today - timedelta(days=3))}).json()

    assert (body["start"], body["end"]) == (str(today - timedelta(days=3)), str(today))


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"days": "0"}, {"days": ["Ensure this value is greater than or equal to 1."]}),
        ({"days": "366"}, {"days": ["Ensure this value is less than or equal to 365."]}),
        ({"days": "a week"}, {"days": ["A valid integer is required."]}),
        (
            {"start": "2026-03-10", "end": "2026-03-01"},
            {"end": ["The last day (2026-03-01) is before the first day (2026-03-10)."]},
        ),
        (
            {"start": "2025-01-01", "end": "2026-01-02"},
            {"end": ["The range covers 367 days; at most 366 are allowed."]},
        ),
        (
            {"end": "2026-03-01"},
            {"start": ["Give the first day of the range too (start=YYYY-MM-DD)."]},
        ),
        (
            {"days": "7", "start": "2026-03-01"},
            {"days": ["Give either days or a start (and end) date, not both."]},
        ),
        (
            {"start": "2026-02-30"},
            {"start": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]},
        ),
    ],
    ids=[
        "zero",
        "too-many",
        "not-a-number",
        "inverted",
        "too-long",
        "end-only",
        "both",
        "no-such-date",
    ],  # fmt: skip
)
def test_usage_window_answers_400_naming_the_bad_parameter(admin_api, tenant, query, fields):
    response = admin_api.get(f"{USAGE}summary/", query)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == ("validation_error", fields)


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0", "Ensure this value is greater than or equal to 1."),
        ("1001", "Ensure this value is less than or equal to 1000."),
    ],
)
def test_usage_by_customer_answers_400_when_limit_out_of_range(admin_api, tenant, limit, message):
    response = admin_api.get(f"{USAGE}by-customer/", {"limit": limit})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"limit": [message]}


def test_provider_usage_reports_totals_models_and_days_of_that_config(viewer_api, tenant, config):
    other = ProviderConfigFactory(tenant=tenant, name="other")
    today = _today(tenant)
    _usage_row(tenant, today, provider_config=config, model="fake-large",
               cost_usd=Decimal("0.4"), request_count=4)  # fmt: skip
    _usage_row(tenant, today - timedelta(days=2), provider_config=config, model="fake-small",
               cost_usd=Decimal("0.1"), request_count=1)  # fmt: skip
    _usage_row(tenant, today, provider_config=other, cost_usd=Decimal("9"), request_count=9)

    response = viewer_api.get(f"/api/v1/providers/{config.pk}/usage/", {"days": 3})

    assert response.status_code == 200
    body = response.json()
    assert body["provider_config"] == {
        "id": str(config.pk),
        "name": "fake-main",
        "provider_type": "fake",
    }
    assert (body["totals"]["requests"], body["totals"]["cost_usd"]) == (5, "0.500000000000")
    assert [(m["model"], m["requests"]) for m in body["models"]] == [
        ("fake-large", 4),
        ("fake-small", 1),
    ]
    assert [d["requests"] for d in body["days"]] == [1, 0, 4]


def test_provider_usage_answers_400_when_days_out_of_range(admin_api, tenant, config):
    response = admin_api.get(f"/api/v1/providers/{config.pk}/usage/", {"days": 400})

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["days"]


def test_provider_usage_answers_404_when_id_is_not_a_uuid(admin_api, tenant):
    response = admin_api.get("/api/v1/providers/" + "-" * 36 + "/usage/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- budgets -------------------------------------------------------------------

BUDGETS = "/api/v1/budgets/"
WEBHOOK = "https://93.184.215.14/hooks/T0001/B0001/s3cr3t-webhook-token"


def _history(instance) -> list[LogEntry]:
    return list(LogEntry.objects.filter(object_id=str(instance.pk)).order_by("id"))


def test_budget_create_stores_budget_and_hides_webhook(admin_api, tenant, config):
    response = admin_api.post(
        BUDGETS,
        {
            "name": "monthly-cap",
            "limit_usd": "250.50",
            "action": "block",
            "provider_config": str(config.pk),
            "customer_id": "acme-corp",
            "alert_percentages": [80, 100],
            "alert_emails": ["finance@example.com", "ops@example.com"],
            "webhook_url": WEBHOOK,
        },
    )

    assert response.status_code == 201, response.content
    body = response.json()
    budget = Budget.objects.get(tenant=tenant, name="monthly-cap")
    assert body == {
        "id": budget.pk,
        "name": "monthly-cap",
        "is_active": True,
        "period": "monthly",
        "limit_usd": "250.5000",
        "action": "block",
        "provider_config": str(config.pk),
        "service_name": "",
        "customer_id": "acme-corp",
        "alert_percentages": [80, 100],
        "alert_emails": ["finance@example.com", "ops@example.com"],
        "has_webhook": True,
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert (budget.limit_usd, budget.webhook_url) == (Decimal("250.5"), WEBHOOK)
    assert budget.alert_emails == "finance@example.com, ops@example.com"
    assert [e.action_flag for e in _history(budget)] == [ADDITION]


def test_budget_create_applies_defaults(admin_api, tenant):
    response = admin_api.post(BUDGETS, {"name": "cap", "limit_usd": 10})

    assert response.status_code == 201
    body = response.json()
    assert (body["period"], body["action"], body["provider_config"]) == ("monthly", "alert", None)
    assert (body["alert_percentages"], body["alert_emails"], body["has_webhook"]) == (
        [50, 80, 100],
        [],
        False,
    )


def test_budget_create_refuses_private_webhook_url(admin_api, tenant):
    response = admin_api.post(
        BUDGETS, {"name": "cap", "limit_usd": "10", "webhook_url": "http://10.0.0.5/hook"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "webhook_url": [
            "The webhook URL points at a private address (10.0.0.5); webhook URLs must be "
            "public unless PROVIDER_ALLOW_PRIVATE_URLS is on."
        ]
    }
    assert not Budget.objects.exists()


def test_budget_create_refuses_duplicate_name(admin_api, tenant):
    BudgetFactory(tenant=tenant, name="cap")

    response = admin_api.post(BUDGETS, {"name": "cap", "limit_usd": "10"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "name": ["A budget named “cap” already exists in this tenant."]
    }


def test_budget_create_reads_percentages_written_as_plain_digits(admin_api, tenant):
    response = admin_api.post(
        BUDGETS, {"name": "cap", "limit_usd": "10", "alert_percentages": ["50", 80]}
    )

    assert response.status_code == 201
    assert Budget.objects.get(tenant=tenant).alert_percentages == [50, 80]


def test_budget_create_allows_a_name_used_by_another_tenant(admin_api, tenant, other_tenant):
    BudgetFactory(tenant=other_tenant, name="cap")

    response = admin_api.post(BUDGETS, {"name": "cap", "limit_usd": "10"})

    assert response.status_code == 201
    assert Budget.objects.filter(name="cap").count() == 2


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {"limit_usd": "0"},
            {"limit_usd": ["Ensure this value is greater than or equal to 0.0001."]},
        ),
        (
            {"limit_usd": "1.00001"},
            {"limit_usd": ["Ensure that there are no more than 4 decimal places."]},
        ),
        (
            {"alert_percentages": [50, 50]},
            {"alert_percentages": ["Each alert percentage may appear only once."]},
        ),
        (
            {"alert_percentages": [0]},
            {"alert_percentages": {"0": ["Ensure this value is greater than or equal to 1."]}},
        ),
        (
            {"alert_percentages": [50, "1_000"]},
            {"alert_percentages": {"1": ["A valid integer is required."]}},
        ),
        (
            {"alert_percentages": ["+50"]},
            {"alert_percentages": {"0": ["A valid integer is required."]}},
        ),
        (
            {"alert_percentages": ["٥٠"]},
            {"alert_percentages": {"0": ["A valid integer is required."]}},
        ),
        (
            {"alert_emails": ["not-an-address"]},
            {"alert_emails": {"0": ["Enter a valid email address."]}},
        ),
        ({"period": "weekly"}, {"period": ['"weekly" is not a valid choice.']}),
        (
            {"webhook_url": "ftp://example.com/x"},
            {"webhook_url": ["The webhook URL must start with http:// or https://."]},
        ),
    ],
    ids=[
        "zero-limit",
        "too-precise",
        "repeated-percent",
        "zero-percent",
        "underscored-percent",
        "signed-percent",
        "arabic-indic-percent",
        "bad-email",
        "bad-period",
        "bad-scheme",
    ],  # fmt: skip
)
def test_budget_create_answers_400_naming_the_bad_field(admin_api, tenant, body, fields):
    response = admin_api.post(BUDGETS, {"name": "cap", "limit_usd": "10", **body})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == fields
    assert not Budget.objects.exists()


@pytest.mark.parametrize("field", ["customer_id", "service_name"])
def test_budget_create_refuses_a_scope_no_call_can_carry(admin_api, tenant, field):
    # given a scope with a tab inside: completions refuse such a customer or service
    body = {"name": "cap", "limit_usd": "10", "action": "block", field: "acme\tcorp"}

    # when a tenant admin saves a blocking budget for it
    response = admin_api.post(BUDGETS, body)

    # then it is refused, saying why, rather than stored as a budget that never applies
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        field: [
            f"{field} must not contain control characters. Calls that carry one are refused, "
            "so this budget would never apply."
        ]
    }
    assert not Budget.objects.exists()


def test_budget_update_keeps_webhook_when_omitted(admin_api, tenant):
    budget = BudgetFactory(tenant=tenant, name="cap", webhook_url=WEBHOOK)

    response = admin_api.patch(f"{BUDGETS}{budget.pk}/", {"limit_usd": "12.5"})

    assert response.status_code == 200
    budget.refresh_from_db()
    assert (budget.limit_usd, budget.webhook_url) == (Decimal("12.5"), WEBHOOK)
    assert response.json()["has_webhook"] is True
    [entry] = _history(budget)
    assert entry.get_change_message() == "Changed Limit usd."


def test_budget_update_records_only_limit_when_same_addresses_sent_in_a_list(admin_api, tenant):
    # given: addresses as the admin form stores them, one per line
    budget = BudgetFactory(
        tenant=tenant, name="cap", alert_emails="finance@example.com\nops@example.com"
    )

    # when: a client sends the same addresses back with a new limit
    response = admin_api.patch(
        f"{BUDGETS}{budget.pk}/",
        {"limit_usd": "12.5", "alert_emails": ["finance@example.com", "ops@example.com"]},
    )

    # then: only the limit is recorded as changed
    assert response.status_code == 200
    assert response.json()["alert_emails"] == ["finance@example.com", "ops@example.com"]
    [entry] = _history(budget)
    assert entry.get_change_message() == "Changed Limit usd."


@pytest.mark.parametrize("cleared", [None, ""])
def test_budget_update_removes_webhook_when_null_or_empty(admin_api, tenant, cleared):
    budget = BudgetFactory(tenant=tenant, name="cap", webhook_url=WEBHOOK)

    response = admin_api.patch(f"{BUDGETS}{budget.pk}/", {"webhook_url": cleared})

    assert response.status_code == 200
    budget.refresh_from_db()
    assert (budget.webhook_url, response.json()["has_webhook"]) == (None, False)
    [entry] = _history(budget)
    assert entry.get_change_message() == "Changed Webhook url."
    assert "s3cr3t" not in entry.change_message


def test_budget_replace_resets_omitted_fields_but_keeps_webhook(admin_api, tenant, config):
    budget = BudgetFactory(
        tenant=tenant, name="cap", provider_config=config, customer_id="acme",
        action="block", webhook_url=WEBHOOK,
    )  # fmt: skip

    response = admin_api.put(f"{BUDGETS}{budget.pk}/", {"name": "cap", "limit_usd": "3"})

    assert response.status_code == 200
    budget.refresh_from_db()
    assert (budget.provider_config, budget.customer_id, budget.action) == (None, "", "alert")
    assert budget.webhook_url == WEBHOOK


def test_budget_update_refuses_other_tenants_provider_config(admin_api, tenant, other_tenant):
    budget = BudgetFactory(tenant=tenant, name="cap")
    foreign = ProviderConfigFactory(tenant=other_tenant)

    response = admin_api.patch(f"{BUDGETS}{budget.pk}/", {"provider_config": str(foreign.pk)})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "provider_config": [f"No provider config with id “{foreign.pk}” in this tenant."]
    }
    budget.refresh_from_db()
    assert budget.provider_config is None


def test_budget_delete_keeps_its_alerts(admin_api, tenant):
    budget = BudgetFactory(tenant=tenant, name="cap")
    alert = CostAlertFactory(tenant=tenant, budget=budget)

    response = admin_api.delete(f"{BUDGETS}{budget.pk}/")

    assert response.status_code == 204
    assert not Budget.objects.filter(pk=budget.pk).exists()
    alert.refresh_from_db()
    assert alert.budget is None
    assert LogEntry.objects.get(object_id=str(budget.pk)).action_flag == DELETION


def test_budget_list_shows_own_budgets_by_name(service_api, tenant, other_tenant):
    BudgetFactory(tenant=tenant, name="b-cap")
    BudgetFactory(tenant=tenant, name="a-cap")
    BudgetFactory(tenant=other_tenant, name="foreign")

    response = service_api.get(BUDGETS)

    assert response.status_code == 200
    assert [b["name"] for b in response.json()["results"]] == ["a-cap", "b-cap"]


def test_budget_change_refreshes_the_tenants_config_version(admin_api, tenant):
    budget = BudgetFactory(tenant=tenant, name="cap")
    before = config_version(tenant.pk)

    admin_api.patch(f"{BUDGETS}{budget.pk}/", {"action": "block"})

    assert config_version(tenant.pk) != before


# --- alerts --------------------------------------------------------------------

ALERTS = "/api/v1/alerts/"


def test_alert_list_shows_newest_first_with_deliveries(viewer_api, tenant):
    budget = BudgetFactory(tenant=tenant, name="cap")
    older = CostAlertFactory(tenant=tenant, budget=budget, percent=50,
                             created_at=NOON - timedelta(hours=1))  # fmt: skip
    newer = CostAlertFactory(tenant=tenant, budget=budget, percent=80, created_at=NOON,
                             spend_usd=Decimal("8.123456789012"))  # fmt: skip
    AlertDeliveryFactory(alert=newer, attempts=2, last_error="smtp: connection refused")
    AlertDeliveryFactory(
        alert=newer, channel="webhook", target=WEBHOOK, target_label="https://93.184.215.14/…",
        delivered_at=NOON,
    )  # fmt: skip

    response = viewer_api.get(ALERTS)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [a["id"] for a in results] == [newer.pk, older.pk]
    first = results[0]
    assert (first["kind"], first["budget"], first["percent"]) == ("budget", budget.pk, 80)
    assert (first["spend_usd"], first["limit_usd"]) == ("8.123456789012", "10.0000")
    assert [(d["channel"], d["state"], d["target_label"]) for d in first["deliveries"]] == [
        ("email", "retrying", "finance@example.com"),
        ("webhook", "delivered", "https://93.184.215.14/…"),
    ]
    assert "s3cr3t" not in response.content.decode()


def test_alert_list_names_the_recipients_a_mail_server_refused(
    viewer_api, tenant, smtp_refusing_gone
):
    # given a budget alert emailed through a mail server that refused one of its recipients
    BudgetFactory(
        tenant=tenant, alert_percentages=[50], alert_emails="ops@example.com, gone@example.com"
    )
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6"), created_at=timezone.now())
    today = timezone.now().date()
    daily_usage_recompute(first_day=today - timedelta(days=1), last_day=today)
    (alert,) = alerts_check()
    alert_delivery_attempt(delivery_id=alert.deliveries.get().pk)

    # when
    [listed] = viewer_api.get(ALERTS).json()["results"]

    # then the delivery is delivered, saying who did not get it
    [delivery] = listed["deliveries"]
    assert delivery["state"] == "delivered"
    assert delivery["last_error"] == (
        "Delivered, but the mail server refused 1 of 2 recipients: gone@example.com "
        "(550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown)."
    )


def test_alert_list_shows_a_percentage_alerted_again_at_a_raised_limit(admin_api, tenant):
    # given a $10 budget that alerted at 80 % with $8.50 spent
    budget = BudgetFactory(tenant=tenant, name="cap", alert_percentages=[80])
    today = timezone.now().date()
    CallLogFactory(tenant=tenant, cost_usd=Decimal("8.50"), created_at=timezone.now())
    daily_usage_recompute(first_day=today - timedelta(days=1), last_day=today)
    alerts_check()

    # when its limit is raised to $20 and spend reaches $16.50, 82.5 % of it
    raised = admin_api.patch(f"{BUDGETS}{budget.pk}/", {"limit_usd": "20"})
    CallLogFactory(tenant=tenant, cost_usd=Decimal("8.00"), created_at=timezone.now())
    daily_usage_recompute(first_day=today - timedelta(days=1), last_day=today)
    alerts_check()
    results = admin_api.get(ALERTS, {"budget": budget.pk}).json()["results"]

    # then both 80 % alerts are listed, newest first, each with the limit it is of
    assert raised.status_code == 200
    assert [(a["percent"], a["limit_usd"], a["spend_usd"]) for a in results] == [
        (80, "20.0000", "16.500000000000"),
        (80, "10.0000", "8.500000000000"),
    ]
    assert results[0]["message"].endswith("has reached 80% of its $20.00 limit: $16.50 spent.")
    assert [len(a["deliveries"]) for a in results] == [1, 1]


def test_alert_list_filters_by_kind_and_budget(admin_api, tenant):
    budget = BudgetFactory(tenant=tenant, name="cap")
    wanted = CostAlertFactory(tenant=tenant, budget=budget)
    CostAlertFactory(tenant=tenant)
    CostAlertFactory(tenant=tenant, kind="unpriced", budget=None, subject_key="model:x")

    by_budget = admin_api.get(ALERTS, {"budget": budget.pk})
    by_kind = admin_api.get(ALERTS, {"kind": "unpriced"})

    assert [a["id"] for a in by_budget.json()["results"]] == [wanted.pk]
    assert [a["kind"] for a in by_kind.json()["results"]] == ["unpriced"]


def test_alert_list_answers_400_when_kind_unknown(admin_api, tenant):
    response = admin_api.get(ALERTS, {"kind": "panic"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"kind": ['"panic" is not a valid choice.']}


def test_usage_by_customer_answers_zeros_when_no_usage(admin_api, tenant):
    body = admin_api.get(f"{USAGE}by-customer/", {"limit": 1}).json()

    assert (body["groups"], body["has_more"]) == ([], False)
    assert (body["totals"]["requests"], body["totals"]["cost_usd"]) == (0, "0.000000000000")


def test_usage_by_customer_has_no_more_when_exactly_limit_listed(admin_api, tenant, config):
    for customer in ("acme", "initech"):
        _usage_row(tenant, _today(tenant), provider_config=config, customer_id=customer)

    body = admin_api.get(f"{USAGE}by-customer/", {"limit": 2}).json()

    assert (len(body["groups"]), body["has_more"], body["totals"]["requests"]) == (2, False, 20)


# Without `end` the range ends today: a refusal names `start`, the parameter given.
@pytest.mark.parametrize(
    ("days_from_today", "message"),
    [
        (2, "The first day ({start}) is after today ({today}), where a range without end ends."),
        (
            -366,
            "The range from {start} to today ({today}) covers 367 days; at most 366 are allowed.",
        ),
    ],
    ids=["after-today", "too-long"],
)
def test_usage_window_without_end_names_start_when_refused(
    admin_api, tenant, days_from_today, message
):
    today = _today(tenant)
    start = today + timedelta(days=days_from_today)

    response = admin_api.get(f"{USAGE}summary/", {"start": str(start)})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == (
        "validation_error",
        {"start": [message.format(start=start, today=today)]},
    )
