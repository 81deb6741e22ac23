"""The budget gate: reserve, refuse, settle, release, expiry, cold rebuild, concurrency."""

import datetime as dt
import math
import os
import threading
import uuid
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from llm_providers.config_cache import (
    config_version,
    config_versions_forget,
)
from tests.factories import BudgetFactory, CallLogFactory, ProviderConfigFactory, TenantFactory
from usage import bookkeeping, budget_counters
from usage.aggregation import daily_usage_recompute
from usage.bookkeeping import bookkeeping_flush, bookkeeping_submit
from usage.budget import (
    BudgetExceeded,
    BudgetUnavailable,
    budget_release,
    budget_reserve,
    budget_settle,
)
from usage.models import Budget, BudgetCounter, BudgetHold
from usage.periods import DAILY, MONTHLY, period_containing
from usage.retention import call_logs_purge
from usage.services import budget_update


def _reserve(
    tenant,
    amount,
    *,
    service="summarizer",
    customer="acme",
    provider_config_id=None,
    request_id=None,
):
    return budget_reserve(
        tenant=tenant,
        provider_config_id=provider_config_id,
        service_name=service,
        customer_id=customer,
        amount_usd=Decimal(amount),
        request_id=request_id or uuid.uuid4(),
    )


def _blocking_daily(tenant, limit="1.00", **kwargs):
    return BudgetFactory(
        tenant=tenant,
        name="Daily cap",
        period=Budget.Period.DAILY,
        limit_usd=Decimal(limit),
        action=Budget.Action.BLOCK,
        **kwargs,
    )


@pytest.mark.django_db
def test_reserve_costs_no_query_when_tenant_has_no_budget(django_assert_num_queries):
    tenant = TenantFactory()
    version = config_version(tenant.pk)
    budget_reserve(
        tenant=tenant,
        provider_config_id=None,
        service_name="s",
        customer_id="c",
        amount_usd=Decimal("1"),
        request_id=uuid.uuid4(),
        version=version,
    )

    with django_assert_num_queries(0):
        reservation = budget_reserve(
            tenant=tenant,
            provider_config_id=None,
            service_name="s",
            customer_id="c",
            amount_usd=Decimal("1"),
            request_id=uuid.uuid4(),
            version=version,
        )

    assert not reservation


@pytest.mark.django_db
def test_refusal_writes_a_sub_cent_limit_as_set_and_the_spend_to_compare_with_it(counters):
    # given a blocking budget of $0.0001 a day with $0.000034 spent
    tenant = TenantFactory()
    _blocking_daily(tenant, limit="0.0001")
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.000034"))

    # when a call that may cost $0.0002 asks for room
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.0002")

    # then
    assert caught.value.message.startswith(
        "Budget “Daily cap” (daily, limit $0.0001) refuses this call: $0.000034 is already "
        "spent or reserved this period and the call may cost up to $0.0002."
    )


@pytest.mark.django_db
def test_refusal_writes_a_limit_as_set_not_rounded_to_cents(counters):
    tenant = TenantFactory()
    _blocking_daily(tenant, limit="10.005")
    CallLogFactory(tenant=tenant, cost_usd=Decimal("10.0049"))

    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.01")

    assert caught.value.message.startswith(
        "Budget “Daily cap” (daily, limit $10.005) refuses this call: $10.0049 is already "
        "spent or reserved this period and the call may cost up to $0.01."
    )


@pytest.mark.django_db
def test_refusal_amounts_never_read_as_fitting_under_the_limit(counters):
    # given a blocking budget of $10 a day with $5.004 spent
    tenant = TenantFactory()
    _blocking_daily(tenant, limit="10")
    CallLogFactory(tenant=tenant, cost_usd=Decimal("5.004"))

    # when a call that may cost $4.997 asks for room: $10.001 in all, over the limit
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "4.997")

    # then the amounts add up past the limit as written ($5.00 and $5.00 would
    # read as fitting exactly), exact since cents would hide why
    assert caught.value.message.startswith(
        "Budget “Daily cap” (daily, limit $10.00) refuses this call: $5.004 is already "
        "spent or reserved this period and the call may cost up to $4.997."
    )


@pytest.mark.django_db
def test_refusal_amounts_keep_the_limits_decimals_when_they_show_the_overrun(counters):
    tenant = TenantFactory()
    _blocking_daily(tenant, limit="10")
    CallLogFactory(tenant=tenant, cost_usd=Decimal("6.004"))

    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "4.997")

    assert caught.value.message.startswith(
        "Budget “Daily cap” (daily, limit $10.00) refuses this call: $6.00 is already "
        "spent or reserved this period and the call may cost up to $5.00."
    )


@pytest.mark.django_db
def test_reserve_refuses_with_budget_spend_limit_and_reset_when_blocking_budget_would_go_over(
    counters,
):
    # given a $1 daily blocking budget with $0.90 already spent today
    tenant = TenantFactory(timezone="Europe/Paris")
    budget = _blocking_daily(tenant)
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.900000000000"))
    period = period_containing(DAILY, timezone.now(), "Europe/Paris")

    # when a call that may cost $0.20 asks for room
    before = timezone.now()
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.20")
    after = timezone.now()

    # then it is refused, naming the budget, spend, limit and reset
    error = caught.value
    assert error.code == "budget_exceeded"
    assert error.http_status == 429
    local_reset = period.end.astimezone(ZoneInfo("Europe/Paris"))
    assert error.message == (
        "Budget “Daily cap” (daily, limit $1.00) refuses this call: $0.90 is already "
        "spent or reserved this period and the call may cost up to $0.20. The budget "
        f"resets at {local_reset:%Y-%m-%d} 00:00 Europe/Paris ({period.end.isoformat()})."
    )
    assert error.extra["budget_id"] == budget.pk
    assert error.extra["budget_name"] == "Daily cap"
    assert error.extra["spend_usd"] == "0.900000000000"
    assert error.extra["limit_usd"] == "1.0000"
    assert error.extra["resets_at"] == period.end.isoformat()
    # The whole seconds until the reset, as seen at some moment during the call.
    assert (
        max(1, math.ceil((period.end - after).total_seconds()))
        <= error.extra["retry_after_seconds"]
        <= math.ceil((period.end - before).total_seconds())
    )


@pytest.mark.django_db
def test_reserve_allows_call_when_only_an_alert_budget_would_go_over(counters):
    tenant = TenantFactory()
    BudgetFactory(tenant=tenant, limit_usd=Decimal("1.00"), action=Budget.Action.ALERT)
    CallLogFactory(tenant=tenant, cost_usd=Decimal("5.00"))

    reservation = _reserve(tenant, "0.50")

    assert reservation
    assert reservation.amount_usd == Decimal("0.50")


@pytest.mark.django_db
def test_reserve_refuses_when_outstanding_reservations_fill_the_budget(counters):
    tenant = TenantFactory()
    _blocking_daily(tenant)

    first = _reserve(tenant, "0.60")

    assert first
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.60")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.6")


@pytest.mark.django_db
def test_settle_replaces_reserved_amount_by_real_cost(counters):
    tenant = TenantFactory()
    _blocking_daily(tenant)
    reservation = _reserve(tenant, "0.60")

    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.100000000000"))
    budget_settle(reservation=reservation, cost_usd=Decimal("0.100000000000"))

    # $0.10 settled + $0.85 asked = $0.95 fits; a further $0.06 does not.
    assert _reserve(tenant, "0.85")
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.06")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.95")


@pytest.mark.django_db
def test_settle_counts_zero_when_call_is_unpriced(counters):
    tenant = TenantFactory()
    _blocking_daily(tenant)
    reservation = _reserve(tenant, "0.60")

    budget_settle(reservation=reservation, cost_usd=None)

    assert _reserve(tenant, "1.00")


@pytest.mark.django_db
def test_release_gives_the_reservation_back(counters):
    tenant = TenantFactory()
    _blocking_daily(tenant)
    reservation = _reserve(tenant, "0.70")

    budget_release(reservation=reservation)

    assert _reserve(tenant, "0.70")


@pytest.mark.django_db
def test_reservation_lapses_when_not_settled_within_its_ttl(counters, settings):
    # given a crashed worker's reservation that is never settled
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 60
    tenant = TenantFactory()
    _blocking_daily(tenant)
    start = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    with mock.patch("django.utils.timezone.now", return_value=start):
        _reserve(tenant, "0.70")
    # still held one second before its TTL ends
    held = start + dt.timedelta(seconds=59)
    with (
        mock.patch("django.utils.timezone.now", return_value=held),
        pytest.raises(BudgetExceeded),
    ):
        _reserve(tenant, "0.70")

    # when its TTL has passed
    later = start + dt.timedelta(seconds=61)
    with mock.patch("django.utils.timezone.now", return_value=later):
        # then its amount is free again
        assert _reserve(tenant, "0.70")


# One input token of a model priced $0.0375 per million: half a nano-dollar over 37.
HALF_NANO_COST = Decimal("0.0000000375")


@pytest.mark.django_db
def test_settled_costs_finer_than_a_nano_dollar_add_up_exactly(counters):
    # given four calls of 37.5 nano-dollars each, logged and settled
    tenant = TenantFactory()
    _blocking_daily(tenant)
    for _ in range(4):
        reservation = _reserve(tenant, "0.01")
        CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=HALF_NANO_COST)
        budget_settle(reservation=reservation, cost_usd=HALF_NANO_COST)

    # then the counter holds their sum, 150 nano-dollars, not four rounded costs
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "1.00")
    assert Decimal(caught.value.extra["spend_usd"]) == 4 * HALF_NANO_COST


@pytest.mark.redis
@pytest.mark.django_db
def test_redis_counter_rebuilt_keeps_costs_finer_than_a_nano_dollar(settings, monkeypatch):
    # given a Redis counter due for its rebuild, three logged calls of 37.5
    # nano-dollars, and a fourth that settles while CallLog is summed
    settings.USAGE_BUDGET_BACKEND = "redis"
    tenant = TenantFactory()
    budget = _blocking_daily(tenant)
    fourth = _reserve(tenant, "0.01")
    for _ in range(3):
        CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=HALF_NANO_COST)
    client = redis.Redis.from_url(settings.USAGE_BUDGET_REDIS_URL)
    [counter] = client.keys(f"llmpl:budget:{budget.pk}:*:h")
    client.hset(counter, "d", 0)
    summed = budget_counters.settled_from_call_logs

    def sum_while_the_fourth_settles(entry):
        total = summed(entry)
        CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=HALF_NANO_COST)
        budget_settle(reservation=fourth, cost_usd=HALF_NANO_COST)
        return total

    monkeypatch.setattr(budget_counters, "settled_from_call_logs", sum_while_the_fourth_settles)

    # then the rebuilt counter holds the four costs exactly
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "1.00")
    assert Decimal(caught.value.extra["spend_usd"]) == 4 * HALF_NANO_COST
    assert summed(_entry_of(budget)) == 4 * HALF_NANO_COST


def _entry_of(budget):
    from usage.budget import ReservationEntry, budget_definition_of

    definition = budget_definition_of(budget)
    period = period_containing(definition.period, timezone.now(), definition.timezone_name)
    return ReservationEntry(budget=definition, period=period)


@pytest.mark.django_db
def test_settlement_sent_twice_counts_its_cost_once(counters):
    # given a call that holds $0.60 of a $1 budget and cost $0.30
    tenant = TenantFactory()
    _blocking_daily(tenant)
    reservation = _reserve(tenant, "0.60")
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.30"))

    # when its settlement is sent again (the first landed, its reply was lost)
    budget_settle(reservation=reservation, cost_usd=Decimal("0.30"))
    budget_settle(reservation=reservation, cost_usd=Decimal("0.30"))

    # then $0.30 is spent, not $0.60
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.80")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.3")


@pytest.mark.django_db
def test_settlement_after_its_reservation_lapsed_counts_its_cost_once(counters, settings):
    # given a call whose $0.60 reservation lapsed before it settled
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 1
    tenant = TenantFactory()
    _blocking_daily(tenant)
    start = timezone.now()
    with mock.patch("django.utils.timezone.now", return_value=start):
        late = _reserve(tenant, "0.60")
    later = start + dt.timedelta(seconds=2)
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert _reserve(tenant, "0.10")
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.30"))

    # when it settles $0.30, and the settlement is sent again
    budget_settle(reservation=late, cost_usd=Decimal("0.30"))
    budget_settle(reservation=late, cost_usd=Decimal("0.30"))

    # then its cost counts once, next to the $0.10 still held
    with (
        mock.patch("django.utils.timezone.now", return_value=later),
        pytest.raises(BudgetExceeded) as caught,
    ):
        _reserve(tenant, "0.80")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.4")


@pytest.fixture
def blipping_redis(own_redis, settings, monkeypatch):
    """Redis counters on a Redis of the test's own, settled by the background writer."""
    settings.USAGE_BUDGET_BACKEND = "redis"
    settings.USAGE_BUDGET_REDIS_URL = own_redis.url
    settings.CALL_LOG_ASYNC = True
    monkeypatch.setattr(bookkeeping, "_writer", None)
    monkeypatch.setattr(bookkeeping, "_RETRY_DELAYS", (0.5,) * 8)
    # Retries this quick would all fall in the default fail-fast window after
    # a Redis failure (llm_providers.redis_outage); scaled down with them.
    settings.CACHE_OUTAGE_RETRY_SECONDS = 0.4
    yield own_redis
    own_redis.resume()
    assert bookkeeping_flush(timeout=30)


def test_writer_retries_a_settlement_past_the_fail_fast_window_after_a_redis_failure():
    # A retry sent while the window is open fails at once without reaching
    # Redis: the writer's retries must go on well past one window to reach it.
    assert sum(bookkeeping._RETRY_DELAYS) > 2 * django_settings.CACHE_OUTAGE_RETRY_SECONDS


def _settle_through_a_blip(server, reservation, cost_usd):
    """Send the settlement to the writer while Redis is stopped; resume it 1.5 s later."""
    server.pause()
    resume = threading.Timer(1.5, server.resume)
    resume.start()
    try:
        bookkeeping_submit(
            budget_settle,
            label=f"budget settlement {reservation.reservation_id}",
            reservation=reservation,
            cost_usd=cost_usd,
        )
        assert bookkeeping_flush(timeout=30)
    finally:
        resume.join()


@pytest.mark.redis
@pytest.mark.django_db
def test_settlement_lost_in_a_redis_blip_is_retried_and_counted_once(blipping_redis, caplog):
    # given a call that holds $0.60 of a $1 budget
    tenant = TenantFactory()
    budget = _blocking_daily(tenant)
    reservation = _reserve(tenant, "0.60")
    client = redis.Redis.from_url(blipping_redis.url)
    [counter] = client.keys(f"llmpl:budget:{budget.pk}:*:h")
    # A settlement sent into the blip then fails on resuming (unknown script):
    # it is lost outright.
    client.script_flush()

    # when Redis stops answering as the $0.30 settlement is sent
    _settle_through_a_blip(blipping_redis, reservation, Decimal("0.30"))

    # then the writer retried it: its reservation is gone and its cost counted once
    assert f"bookkeeping retrying budget settlement {reservation.reservation_id}" in caplog.text
    assert client.hget(counter, "s") == b"300000000"
    assert client.hget(counter, "t") == b"0"
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.80")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.3")


@pytest.mark.redis
@pytest.mark.django_db
def test_settlement_whose_reply_a_redis_blip_lost_is_retried_and_counted_once(
    blipping_redis, caplog
):
    # given a call that holds $0.60 of a $1 budget, the settle script loaded
    tenant = TenantFactory()
    budget = _blocking_daily(tenant)
    reservation = _reserve(tenant, "0.60")
    client = redis.Redis.from_url(blipping_redis.url)
    [counter] = client.keys(f"llmpl:budget:{budget.pk}:*:h")
    client.script_load(budget_counters._SETTLE_LUA)

    # when Redis stops answering as the $0.30 settlement is sent: it runs when
    # Redis resumes, but its reply is lost and the writer sends it again
    _settle_through_a_blip(blipping_redis, reservation, Decimal("0.30"))

    # then its cost counts once
    assert f"bookkeeping retrying budget settlement {reservation.reservation_id}" in caplog.text
    assert client.hget(counter, "s") == b"300000000"
    assert client.hget(counter, "t") == b"0"


@pytest.fixture
def own_redis_counters(own_redis, settings):
    """Redis counters on a Redis of the test's own."""
    settings.USAGE_BUDGET_BACKEND = "redis"
    settings.USAGE_BUDGET_REDIS_URL = own_redis.url
    return redis.Redis.from_url(own_redis.url)


def _held_total(client, budget) -> int:
    [counter] = client.keys(f"llmpl:budget:{budget.pk}:*:h")
    return int(client.hget(counter, "t"))


@pytest.mark.redis
@pytest.mark.django_db
def test_reserve_goes_on_after_redis_dropped_its_connections_and_scripts(own_redis_counters):
    # given a $1 budget holding $0.30, its scripts loaded and a connection open
    tenant = TenantFactory()
    budget = _blocking_daily(tenant)
    assert _reserve(tenant, "0.30")

    # when Redis closes every client connection and forgets its scripts (a restart)
    own_redis_counters.script_flush()
    own_redis_counters.client_kill_filter(_type="normal", skipme=True)

    # then the next reservation reconnects, loads the script again and counts
    assert _reserve(tenant, "0.30")
    assert _held_total(own_redis_counters, budget) == 600_000_000
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.50")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.6")


@pytest.mark.redis
@pytest.mark.django_db
def test_reserve_does_not_read_a_reply_left_on_its_connection(own_redis_counters):
    # given a connection with a reply nobody read (a command cut off after sending)
    tenant = TenantFactory()
    budget = _blocking_daily(tenant)
    assert _reserve(tenant, "0.30")
    conn = budget_counters.counters_backend("redis")._own.connection
    conn.send_command("PING")
    assert conn.can_read(timeout=5)  # the reply has arrived

    # when the next call reserves on it
    reservation = _reserve(tenant, "0.20")

    # then it got its own reply, and counted
    assert reservation
    assert _held_total(own_redis_counters, budget) == 500_000_000


@pytest.mark.redis
@pytest.mark.django_db
def test_threads_and_a_forked_process_reserve_on_connections_of_their_own(own_redis_counters):
    # given a $10 budget, its counter warm and this thread's connection open
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="10.00")
    assert _reserve(tenant, "0.01")
    version = config_version(tenant.pk)

    def reserve_many(count):
        for _ in range(count):
            budget_reserve(
                tenant=tenant,
                provider_config_id=None,
                service_name="summarizer",
                customer_id="acme",
                amount_usd=Decimal("0.01"),
                request_id=uuid.uuid4(),
                version=version,
            )

    # when a forked process, two threads and this thread reserve at once
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked process
        os.close(read_end)
        try:
            reserve_many(100)
            os.write(write_end, b"ok")
        except BaseException as exc:
            os.write(write_end, type(exc).__name__.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    workers = [threading.Thread(target=reserve_many, args=(100,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    reserve_many(100)
    for worker in workers:
        worker.join()
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        child_outcome = pipe.read()

    # then every reservation got its own reply and counted
    assert child_outcome == b"ok"
    assert _held_total(own_redis_counters, budget) == 401 * 10_000_000


@pytest.mark.django_db
def test_cold_counter_counts_only_this_periods_call_logs_in_tenant_timezone(counters):
    # given a monthly budget in Tokyo, one log just before the local month began
    # and one just after
    tenant = TenantFactory(timezone="Asia/Tokyo")
    BudgetFactory(
        tenant=tenant, limit_usd=Decimal("1.00"), action=Budget.Action.BLOCK, name="Monthly"
    )
    period = period_containing(MONTHLY, timezone.now(), "Asia/Tokyo")
    CallLogFactory(
        tenant=tenant,
        cost_usd=Decimal("0.500000000000"),
        created_at=period.start - dt.timedelta(seconds=1),
    )
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0.300000000000"), created_at=period.start)

    # when the counter is rebuilt, then only the second counts
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.75")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.3")


@pytest.mark.django_db
def test_cold_counter_counts_spend_whose_call_logs_retention_purged(counters, settings):
    # given a $1 monthly blocking budget with $0.90 spent on the month's first
    # day, aggregated, and its call log since purged by a short retention
    tenant = TenantFactory(timezone="America/New_York")
    config = ProviderConfigFactory(tenant=tenant)
    BudgetFactory(
        tenant=tenant,
        name="Monthly cap",
        limit_usd=Decimal("1.00"),
        action=Budget.Action.BLOCK,
        provider_config=config,
    )
    now = timezone.now()
    period = period_containing(MONTHLY, now, "America/New_York")
    CallLogFactory(
        tenant=tenant,
        provider_config=config,
        cost_usd=Decimal("0.900000000000"),
        created_at=period.start,
    )
    CallLogFactory(tenant=tenant, provider_config=config, cost_usd=Decimal("0.05"), created_at=now)
    daily_usage_recompute(
        first_day=period.first_day, last_day=period.first_day, tenant=tenant, now=now
    )
    settings.USAGE_CALL_LOG_RETENTION_DAYS = 1
    purge_cutoff = period.start + (now - period.start) / 2
    assert call_logs_purge(now=purge_cutoff + dt.timedelta(days=1)).call_logs == 1

    # when the cold counter is rebuilt, then the purged day's spend still counts
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.10", provider_config_id=config.pk)
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.95")


@pytest.mark.django_db
def test_scoped_budget_ignores_calls_of_other_services(counters):
    tenant = TenantFactory()
    _blocking_daily(tenant, service_name="summarizer")
    CallLogFactory(tenant=tenant, service_name="translator", cost_usd=Decimal("5"))

    assert _reserve(tenant, "0.90", service="summarizer")
    assert not _reserve(tenant, "50", service="translator")


@pytest.mark.django_db
def test_provider_scoped_budget_applies_only_to_its_provider_config(counters):
    tenant = TenantFactory()
    scoped, other = ProviderConfigFactory(tenant=tenant), ProviderConfigFactory(tenant=tenant)
    _blocking_daily(tenant, provider_config=scoped)
    CallLogFactory(tenant=tenant, provider_config=scoped, cost_usd=Decimal("0.95"))

    with pytest.raises(BudgetExceeded):
        _reserve(tenant, "0.10", provider_config_id=scoped.pk)
    assert not _reserve(tenant, "0.10", provider_config_id=other.pk)


@pytest.mark.django_db
def test_refused_reservation_holds_nothing_on_other_budgets(counters):
    tenant = TenantFactory()
    _blocking_daily(tenant, limit="1.00")
    BudgetFactory(tenant=tenant, name="Watch", limit_usd=Decimal("100"))

    with pytest.raises(BudgetExceeded):
        _reserve(tenant, "2.00")

    assert BudgetHold.objects.count() == 0
    assert _reserve(tenant, "0.99")


@pytest.mark.django_db
def test_budget_save_replaces_tenant_config_version():
    tenant = TenantFactory()
    before = config_version(tenant.pk)

    budget = _blocking_daily(tenant, limit="0.50")

    after = config_version(tenant.pk)
    assert after != before
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.60")
    assert caught.value.extra["budget_id"] == budget.pk


@pytest.mark.django_db
def test_raised_limit_applies_to_the_next_reservation(counters):
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="0.50")
    with pytest.raises(BudgetExceeded):
        _reserve(tenant, "0.60")

    budget.limit_usd = Decimal("2.00")
    budget.save()

    assert _reserve(tenant, "0.60")


@pytest.mark.django_db
def test_reserve_refuses_blocking_budget_when_redis_is_unreachable(settings):
    settings.USAGE_BUDGET_BACKEND = "redis"
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    settings.USAGE_BUDGET_REDIS_URL = "redis://127.0.0.1:9/0"
    tenant = TenantFactory()
    _blocking_daily(tenant)

    with pytest.raises(BudgetUnavailable) as caught:
        _reserve(tenant, "0.10")

    assert caught.value.http_status == 503
    assert "“Daily cap”" in caught.value.message


@pytest.mark.django_db(transaction=True)
def test_blocking_budget_created_while_the_cache_is_down_applies_once_it_is_back(settings):
    # given a tenant whose budgets (none yet) were read under its config version
    # (the in-process cache stands for every process's: they read the same)
    settings.CONFIG_VERSION_LOCAL_SECONDS = 0
    tenant = TenantFactory()
    assert not _reserve(tenant, "5.00")
    working = settings.CACHES

    # when a blocking budget is created, and committed, while the shared cache
    # cannot be reached
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    _blocking_daily(tenant, limit="1.00")
    settings.CACHES = working

    # then, with the cache back, the budget refuses a call over its limit, in
    # this process and in others, which read the version from the shared cache
    with pytest.raises(BudgetExceeded):
        _reserve(tenant, "5.00")
    config_versions_forget()
    other_process_version = config_version(tenant.pk)
    with pytest.raises(BudgetExceeded):
        _reserve(tenant, "5.00")
    assert config_version(tenant.pk) == other_process_version


def _race(tenant, amount, threads):
    barrier = threading.Barrier(threads)
    outcomes = []
    lock = threading.Lock()

    def attempt():
        barrier.wait()
        try:
            _reserve(tenant, amount)
            outcome = "reserved"
        except BudgetExceeded:
            outcome = "refused"
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=attempt) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_exceed_blocking_budget_with_redis(settings):
    # given a budget that fits exactly 5 worst-case calls of $0.20
    settings.USAGE_BUDGET_BACKEND = "redis"
    tenant = TenantFactory()
    _blocking_daily(tenant, limit="1.00")
    CallLogFactory(tenant=tenant, cost_usd=Decimal("0"))

    # when 24 threads reserve at once
    outcomes = _race(tenant, "0.20", 24)

    # then exactly 5 succeed
    assert outcomes.count("reserved") == 5
    assert outcomes.count("refused") == 19


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_exceed_blocking_budget_with_database_counters(settings):
    settings.USAGE_BUDGET_BACKEND = "database"
    tenant = TenantFactory()
    _blocking_daily(tenant, limit="1.00")

    outcomes = _race(tenant, "0.20", 16)

    assert outcomes.count("reserved") == 5
    assert BudgetHold.objects.count() == 5


@pytest.mark.django_db
def test_budget_edit_keeps_reservations_and_spend_of_calls_in_flight(counters):
    # given a call in flight holding most of a blocking budget
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00")
    in_flight = _reserve(tenant, "0.90")

    # when the budget is edited without changing what it counts
    budget_update(budget=budget, data={"alert_emails": "ops@example.com", "name": "Cap"})

    # then its hold still counts, and so does its cost once it settles
    with pytest.raises(BudgetExceeded):
        _reserve(tenant, "0.90")
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.90"))
    budget_settle(reservation=in_flight, cost_usd=Decimal("0.90"))
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.20")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.9")


@pytest.mark.django_db
def test_budget_given_a_new_scope_counts_its_new_scope_from_call_logs(counters):
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00", service_name="summarizer")
    CallLogFactory(tenant=tenant, service_name="translator", cost_usd=Decimal("0.95"))
    assert _reserve(tenant, "0.50", service="summarizer")

    budget_update(budget=budget, data={"service_name": "translator"})

    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.10", service="translator")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.95")


@pytest.mark.redis
@pytest.mark.django_db
@pytest.mark.parametrize("times_sent", [1, 2], ids=["settled", "settlement-sent-twice"])
def test_call_settled_while_its_counter_is_rebuilt_counts_once(settings, monkeypatch, times_sent):
    # given a Redis counter due for its rebuild while call A holds $0.60
    settings.USAGE_BUDGET_BACKEND = "redis"
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00")
    call_a = _reserve(tenant, "0.60")
    client = redis.Redis.from_url(settings.USAGE_BUDGET_REDIS_URL)
    [counter] = client.keys(f"llmpl:budget:{budget.pk}:*:h")
    client.hset(counter, "d", 0)

    # when A logs and settles (its settlement sent once, or again after a
    # lost reply) while the next reservation sums CallLog
    summed = budget_counters.settled_from_call_logs

    def sum_while_a_settles(entry):
        total = summed(entry)
        CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.60"))
        for _ in range(times_sent):
            budget_settle(reservation=call_a, cost_usd=Decimal("0.60"))
        return total

    monkeypatch.setattr(budget_counters, "settled_from_call_logs", sum_while_a_settles)

    # then the rebuilt counter holds A's cost once: B ($0.60) does not fit, $0.30 does
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.60")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.6")
    assert client.hget(counter, "s") == b"600000000"
    assert not client.hexists(counter, "b")
    assert _reserve(tenant, "0.30")


def _at(moment):
    return mock.patch("django.utils.timezone.now", return_value=moment)


@pytest.mark.django_db
def test_database_counter_counts_a_call_whose_process_died_once_its_rebuild_is_due(settings):
    # given a $1 daily blocking budget counted in the database, and a call that
    # logged $0.30 and whose process died before settling it
    settings.USAGE_BUDGET_BACKEND = "database"
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 60
    settings.USAGE_BUDGET_COUNTER_REBUILD_SECONDS = 3600
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00")
    start = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    request_id = uuid.uuid4()
    with _at(start):
        _reserve(tenant, "0.60", request_id=request_id)
    CallLogFactory(
        tenant=tenant,
        request_id=request_id,
        service_name="summarizer",
        cost_usd=Decimal("0.300000000000"),
        created_at=start + dt.timedelta(seconds=1),
    )

    # when its reservation has lapsed but the counter's rebuild is not yet due,
    # then the counter still misses the $0.30
    with _at(start + dt.timedelta(seconds=3599)), pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "1.01")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0")
    [counter] = BudgetCounter.objects.filter(budget=budget)
    assert counter.settled_usd == Decimal("0")

    # when the first reservation past the deadline comes, then it counts the $0.30
    with _at(start + dt.timedelta(seconds=3600)), pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.71")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.3")
    counter.refresh_from_db()
    assert counter.settled_usd == Decimal("0.300000000000")
    assert counter.settled_read_at == start + dt.timedelta(seconds=3600)
    with _at(start + dt.timedelta(seconds=3601)):
        assert _reserve(tenant, "0.70")


@pytest.mark.django_db
def test_database_counter_rebuild_keeps_outstanding_reservations_and_counts_calls_in_flight_once(
    settings,
):
    # given a $1 daily blocking budget counted in the database: B logged and
    # settled $0.05; A holds $0.40 and logged $0.20 but has not settled yet;
    # C holds $0.30 and has not logged
    settings.USAGE_BUDGET_BACKEND = "database"
    settings.USAGE_BUDGET_COUNTER_REBUILD_SECONDS = 60
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00")
    # In the past, within today: settlements remember themselves from the real now.
    now = timezone.now()
    start = max(now - dt.timedelta(seconds=120), now.replace(hour=0, minute=0, second=0))
    call_a, call_b = uuid.uuid4(), uuid.uuid4()
    with _at(start):
        held_a = _reserve(tenant, "0.40", request_id=call_a)
        held_b = _reserve(tenant, "0.10", request_id=call_b)
        held_c = _reserve(tenant, "0.30")
    moment = start + dt.timedelta(seconds=1)
    for request_id, cost in ((call_b, "0.05"), (call_a, "0.20")):
        CallLogFactory(
            tenant=tenant,
            request_id=request_id,
            service_name="summarizer",
            cost_usd=Decimal(cost),
            created_at=moment,
        )
    budget_settle(reservation=held_b, cost_usd=Decimal("0.05"))

    # when a reservation past the rebuild deadline rebuilds the counter
    with _at(start + dt.timedelta(seconds=61)), pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.30")

    # then the settled value is B's cost alone, next to A's and C's holds
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.75")
    [counter] = BudgetCounter.objects.filter(budget=budget)
    assert counter.settled_usd == Decimal("0.050000000000")
    held = BudgetHold.objects.filter(counter=counter, amount_usd__gt=0)
    assert sorted(held.values_list("reservation_id", flat=True)) == sorted(
        [held_a.reservation_id, held_c.reservation_id]
    )

    # when A settles (and its settlement is sent again), B's settlement too,
    # and C is released, then each cost counts once: $0.25
    budget_settle(reservation=held_a, cost_usd=Decimal("0.20"))
    budget_settle(reservation=held_a, cost_usd=Decimal("0.20"))
    budget_settle(reservation=held_b, cost_usd=Decimal("0.05"))
    budget_release(reservation=held_c)
    with _at(start + dt.timedelta(seconds=62)), pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.76")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.25")
    counter.refresh_from_db()
    assert counter.settled_usd == Decimal("0.250000000000")


@pytest.mark.django_db
def test_database_counter_rebuild_counts_a_fallen_back_calls_settled_first_target(settings):
    # given a call whose first target was paid $0.10 for a broken answer and
    # settled it, and whose fallback target holds $0.50 and logged $0.20,
    # unsettled yet
    settings.USAGE_BUDGET_BACKEND = "database"
    settings.USAGE_BUDGET_COUNTER_REBUILD_SECONDS = 60
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00")
    now = timezone.now()
    start = max(now - dt.timedelta(seconds=120), now.replace(hour=0, minute=0, second=0))
    request_id = uuid.uuid4()
    with _at(start):
        first = _reserve(tenant, "0.50", request_id=request_id)
    CallLogFactory(
        tenant=tenant,
        request_id=request_id,
        cost_usd=Decimal("0.10"),
        created_at=start + dt.timedelta(seconds=1),
    )
    budget_settle(reservation=first, cost_usd=Decimal("0.10"))
    with _at(start + dt.timedelta(seconds=5)):
        _reserve(tenant, "0.50", request_id=request_id)
    CallLogFactory(
        tenant=tenant,
        request_id=request_id,
        attempt=2,
        cost_usd=Decimal("0.20"),
        created_at=start + dt.timedelta(seconds=6),
    )

    # when a reservation rebuilds the counter
    with _at(start + dt.timedelta(seconds=61)), pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.41")

    # then the first target's $0.10 stays counted; the fallback's $0.20 waits
    # for its settlement, its $0.50 held
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.6")
    [counter] = BudgetCounter.objects.filter(budget=budget)
    assert counter.settled_usd == Decimal("0.100000000000")


@pytest.mark.django_db
def test_budget_reactivated_mid_period_counts_spend_made_while_it_was_off(counters):
    # given a $1 daily blocking budget whose counter holds $0.50 of settled spend
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00")
    reservation = _reserve(tenant, "0.50")
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.50"))
    budget_settle(reservation=reservation, cost_usd=Decimal("0.50"))

    # when it is switched off, $0.40 is spent meanwhile, and it is switched on again
    budget_update(budget=budget, data={"is_active": False})
    assert not _reserve(tenant, "0.40")
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.40"))
    budget_update(budget=budget, data={"is_active": True})

    # then the $0.40 counts: $0.90 spent, a call of up to $0.20 does not fit
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.20")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.9")


@pytest.mark.django_db
def test_budget_given_back_its_old_scope_counts_spend_made_under_the_other_one(counters):
    # given a budget of service "summarizer" whose counter holds $0.50
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00", service_name="summarizer")
    reservation = _reserve(tenant, "0.50", service="summarizer")
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.50"))
    budget_settle(reservation=reservation, cost_usd=Decimal("0.50"))

    # when it counts "translator" for a while, during which "summarizer" spends
    # $0.40, and then "summarizer" again
    budget_update(budget=budget, data={"service_name": "translator"})
    assert _reserve(tenant, "0.10", service="translator")
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.40"))
    budget_update(budget=budget, data={"service_name": "summarizer"})

    # then the $0.40 counts
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.20", service="summarizer")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.9")


@pytest.mark.django_db
def test_budget_of_a_tenant_given_back_its_time_zone_counts_spend_made_in_the_other(counters):
    # given a UTC tenant's daily budget whose counter holds $0.50
    tenant = TenantFactory(timezone="UTC")
    _blocking_daily(tenant, limit="1.00")
    reservation = _reserve(tenant, "0.50")
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.50"))
    budget_settle(reservation=reservation, cost_usd=Decimal("0.50"))

    # when the tenant moves to Tokyo, spends $0.40, and moves back to UTC
    tenant.timezone = "Asia/Tokyo"
    tenant.save()
    CallLogFactory(tenant=tenant, service_name="summarizer", cost_usd=Decimal("0.40"))
    tenant.timezone = "UTC"
    tenant.save()

    # then the $0.40 counts
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.20")
    assert Decimal(caught.value.extra["spend_usd"]) == Decimal("0.9")


@pytest.mark.django_db
def test_refusal_before_any_spend_names_spend_as_plain_decimal(counters):
    # given a $0.10 daily blocking budget with nothing spent yet
    tenant = TenantFactory()
    _blocking_daily(tenant, limit="0.10")

    # when a call that may cost $0.20 asks for room
    with pytest.raises(BudgetExceeded) as caught:
        _reserve(tenant, "0.20")

    # then the spend is the money string of every other amount, not "0E-12"
    assert caught.value.extra["spend_usd"] == "0.000000000000"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_counter_rebuild_counts_once_a_call_that_logs_while_it_reads_call_logs(
    settings, monkeypatch
):
    # given a $1 daily blocking budget counted in the database: B logged and
    # settled $0.10; A holds $0.40 and has not logged yet
    settings.USAGE_BUDGET_BACKEND = "database"
    settings.USAGE_BUDGET_COUNTER_REBUILD_SECONDS = 60
    tenant = TenantFactory()
    budget = _blocking_daily(tenant, limit="1.00")
    now = timezone.now()
    start = max(now - dt.timedelta(seconds=120), now.replace(hour=0, minute=0, second=0))
    call_a, call_b = uuid.uuid4(), uuid.uuid4()
    with _at(start):
        held_a = _reserve(tenant, "0.40", request_id=call_a)
        held_b = _reserve(tenant, "0.10", request_id=call_b)
    CallLogFactory(
        tenant=tenant,
        request_id=call_b,
        cost_usd=Decimal("0.10"),
        created_at=start + dt.timedelta(seconds=1),
    )
    budget_settle(reservation=held_b, cost_usd=Decimal("0.10"))

    # when A's process commits A's $0.20 log row while a rebuild reads CallLog
    # (no lock keeps a log row out)
    read = budget_counters.settled_from_call_logs

    def read_then_a_logs(entry, **kwargs):
        settled = read(entry, **kwargs)

        def log_a():
            CallLogFactory(
                tenant=tenant,
                request_id=call_a,
                cost_usd=Decimal("0.20"),
                created_at=start + dt.timedelta(seconds=2),
            )
            connection.close()

        writer = threading.Thread(target=log_a)
        writer.start()
        writer.join()
        return settled

    monkeypatch.setattr(budget_counters, "settled_from_call_logs", read_then_a_logs)
    with _at(start + dt.timedelta(seconds=61)):
        assert _reserve(tenant, "0.10")
    monkeypatch.setattr(budget_counters, "settled_from_call_logs", read)

    # then the rebuilt value is B's $0.10, and A's settlement adds its $0.20
    [counter] = BudgetCounter.objects.filter(budget=budget)
    assert counter.settled_usd == Decimal("0.100000000000")
    budget_settle(reservation=held_a, cost_usd=Decimal("0.20"))
    counter.refresh_from_db()
    assert counter.settled_usd == Decimal("0.300000000000")
