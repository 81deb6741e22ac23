"""Aggregation benchmark: a full DailyUsage recompute against the bare grouped SELECT.

Fills CallLog of its own PostgreSQL database (never the test database) with
synthetic rows in one INSERT ... SELECT generate_series, then prints the
median time of:

- the bare grouped SELECT, exactly as the recompute issues it, run on the
  server only (EXPLAIN ANALYZE, TIMING OFF) and with every row fetched;
- a full recompute into an empty DailyUsage (every row inserted);
- a full recompute over an unchanged DailyUsage (the steady state: nothing
  written);

both in one connection and with the days shared among --workers connections
(default USAGE_AGGREGATION_WORKERS), and
- the periodic run (`daily_usage_recompute_recent`, last two hours + late logs).

Each recompute is paired with a bare SELECT run just before it; the ratios
printed are the medians of those per-pair ratios.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/llm_bench \\
        .venv/bin/python bench/aggregate.py [--rows 1000000] [--tenants 300] [--days 30] \\
        [--customers 20] [--runs 3] [--workers N] [--reload]

The data are kept between runs (pass --reload to rebuild them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/llm_bench"
TIMEZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"]


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--customers", type=int, default=20, help="Distinct customers per tenant (0: none)."
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        help="Connections of the split recompute (default: USAGE_AGGREGATION_WORKERS).",
    )
    parser.add_argument("--reload", action="store_true", help="Rebuild the data.")
    return parser.parse_args()


def _database_create(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _setup(url: str) -> None:
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/aggregate.py needs PostgreSQL: set DATABASE_URL=postgres://…/llm_bench")
    name = urlsplit(url).path.lstrip("/")
    if name.startswith("test_") or name in {"llm_provider_layer", "postgres"}:
        sys.exit(f"Refusing to fill database “{name}”: give the benchmark its own database.")
    _database_create(url)
    os.environ["DATABASE_URL"] = url
    os.environ.pop("REDIS_URL", None)  # the benchmark touches no cache
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _load(rows: int, tenants: int, days: int, customers: int) -> None:
    from django.db import connection, transaction

    from llm_providers.models import ProviderConfig, Tenant

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE usage_calllog, usage_dailyusage, usage_aggregationstate, "
            "llm_providers_tenant CASCADE"
        )
        created = Tenant.objects.bulk_create(
            Tenant(name=f"Bench {i}", slug=f"bench-{i}", timezone=TIMEZONES[i % len(TIMEZONES)])
            for i in range(tenants)
        )
        ProviderConfig.objects.bulk_create(
            ProviderConfig(tenant=t, name=name, provider_type="fake", default_model="fake-small")
            for t in created
            for name in ("primary", "fallback")
        )
        # Skewed, like real traffic: u**3 sends most calls to a few tenants. Per
        # call: the primary provider config 90 % of the time (2 % none at all),
        # one of three models and four services, and half the calls for no
        # customer, the rest mostly for a tenant's few big customers (of
        # --customers).
        # 5 % errors, 6 % cache hits, 1 % unpriced.
        cursor.execute(
            """
            WITH t AS (SELECT array_agg(id ORDER BY slug) AS ids FROM llm_providers_tenant),
                 p AS (SELECT array_agg(c.id ORDER BY tn.slug, c.name DESC) AS ids
                       FROM llm_providers_providerconfig c
                       JOIN llm_providers_tenant tn ON tn.id = c.tenant_id),
                 g AS (SELECT n,
                              (abs(hashint4(n)) %% 1000000) / 1000000.0 AS u1,
                              (abs(hashint4(n + 7919)) %% 1000000) / 1000000.0 AS u2,
                              abs(hashint4(n + 104729)) AS h
                       FROM generate_series(1, %(rows)s) AS n),
                 r AS (SELECT g.*, floor(%(tenants)s * u1 * u1 * u1)::int AS ti FROM g)
            INSERT INTO usage_calllog (
                tenant_id, request_id, attempt, operation, provider_config_id, provider_type,
                model_requested, model_answered, customer_id, service_name, route_rule, status,
                error_code, error_message, input_tokens, output_tokens, cache_read_tokens,
                cache_write_tokens, reasoning_tokens, usage_estimated, cost_usd, price_source,
                latency_ms, streamed, input_hash, prompt_preview, created_at)
            SELECT t.ids[1 + r.ti], gen_random_uuid(), 1, 'complete',
                   CASE WHEN r.h %% 50 = 0 THEN NULL
                        ELSE p.ids[1 + 2 * r.ti + (CASE WHEN r.h %% 10 = 0 THEN 1 ELSE 0 END)]
                   END,
                   'fake',
                   (ARRAY['gpt-4o', 'gpt-4o', 'gpt-4o-mini', 'claude-sonnet'])[1 + (r.h / 7) %% 4],
                   (ARRAY['gpt-4o', 'gpt-4o', 'gpt-4o-mini', 'claude-sonnet'])[1 + (r.h / 7) %% 4],
                   CASE WHEN r.u2 < 0.5 OR %(customers)s = 0 THEN ''
                        ELSE 'customer-' || floor(%(customers)s * power(2 * r.u2 - 1, 3))::int
                   END,
                   (ARRAY['summarizer', 'summarizer', 'chat', 'translator', 'search'])
                       [1 + (r.h / 11) %% 5],
                   'default',
                   CASE WHEN r.h %% 20 = 0 THEN 'error'
                        WHEN r.h %% 17 = 0 THEN 'cached' ELSE 'ok' END,
                   '', '', 100 + r.h %% 900, 10 + r.h %% 300, r.h %% 50, 0, r.h %% 30,
                   r.h %% 41 = 0,
                   CASE WHEN r.h %% 97 = 0 THEN NULL
                        ELSE ((100 + r.h %% 900) * 0.0000025
                              + (10 + r.h %% 300) * 0.00001)::numeric(20, 12) END,
                   CASE WHEN r.h %% 97 = 0 THEN 'unknown' ELSE 'genai_prices' END,
                   200 + r.h %% 800, false, '', '',
                   now() - make_interval(secs => (r.h / 13) %% (%(days)s * 86400))
            FROM r, t, p
            """,
            {"rows": rows, "tenants": tenants, "days": days, "customers": customers},
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE usage_calllog")
        cursor.execute("VACUUM ANALYZE llm_providers_tenant")


def _median(function, runs: int, before=None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = _arguments()
    url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    _setup(url)

    from datetime import timedelta

    from django.db import connection, transaction
    from django.utils import timezone

    from usage.aggregation import (
        aggregation_session_configure,
        daily_usage_recompute,
        daily_usage_recompute_recent,
    )
    from usage.models import CallLog, DailyUsage
    from usage.selectors import DayWindow, call_log_daily_groups, tenant_timezones

    if args.reload or CallLog.objects.count() != args.rows:
        started = time.perf_counter()
        _load(args.rows, args.tenants, args.days, args.customers)
        print(f"loaded {args.rows:,} call logs in {time.perf_counter() - started:.1f} s")

    now = timezone.now()
    first_day = (now - timedelta(days=args.days + 1)).date()
    last_day = now.date() + timedelta(days=1)
    windows = [DayWindow(name, first_day, last_day) for name in tenant_timezones()]
    sql, params = call_log_daily_groups(windows=windows).query.sql_with_params()

    def bare(prefix: str):
        # The same transaction settings as the recompute, so both plan alike.
        def run() -> None:
            with transaction.atomic(), connection.cursor() as cursor:
                aggregation_session_configure(cursor)
                cursor.execute(prefix + sql, params)
                cursor.fetchall()

        return run

    from django.conf import settings

    workers = args.workers or settings.USAGE_AGGREGATION_WORKERS

    def recompute(count: int):
        def run() -> None:
            daily_usage_recompute(first_day=first_day, last_day=last_day, now=now, workers=count)

        return run

    def empty_daily_usage() -> None:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE usage_dailyusage")

    runs = args.runs
    server_bare = bare("EXPLAIN (ANALYZE, TIMING OFF) ")
    server_bare()  # warm the cache
    fetched = _median(bare(""), runs)

    # Each recompute is timed right after a bare SELECT, and the ratio taken
    # per pair, so that a noisy neighbour slows both sides of a ratio alike.
    def paired(measured, before=None) -> tuple[float, float, float]:
        bares, times, ratios = [], [], []
        for _ in range(runs):
            bare_time = _median(server_bare, 1)
            measured_time = _median(measured, 1, before=before)
            bares.append(bare_time)
            times.append(measured_time)
            ratios.append(measured_time / bare_time)
        return statistics.median(bares), statistics.median(times), statistics.median(ratios)

    measured = {}
    for count in sorted({1, workers}):
        measured["empty", count] = paired(recompute(count), before=empty_daily_usage)
    recompute(1)()  # the first read of freshly written rows sets their hint bits
    for count in sorted({1, workers}):
        measured["unchanged", count] = paired(recompute(count))
    groups = DailyUsage.objects.count()
    recent = _median(lambda: daily_usage_recompute_recent(now=timezone.now()), runs)

    print(
        f"{CallLog.objects.count():,} call logs, {args.tenants} tenants in "
        f"{len(windows)} time zones, {args.days} days -> {groups:,} DailyUsage rows"
    )
    print(f"median of {runs} runs each:")
    server = statistics.median(bare_time for bare_time, _, _ in measured.values())
    print(f"  bare grouped SELECT, server only          {server:8.3f} s")
    print(f"  bare grouped SELECT, rows fetched         {fetched:8.3f} s")
    for (state, count), (_, seconds, ratio) in measured.items():
        label = "into empty DailyUsage" if state == "empty" else "DailyUsage unchanged"
        connections = f"{count} connection{'s' if count > 1 else ''}"
        print(f"  recompute {label}, {connections:13} {seconds:8.3f} s  ({ratio:.2f}x bare)")
    print(f"  periodic run (recent + late logs)         {recent:8.3f} s")


if __name__ == "__main__":
    main()
