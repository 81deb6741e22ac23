"""Usage API benchmark: p50/p95 of the usage endpoints with 1M and with 10M call logs behind them.

For each size, a PostgreSQL database of its own (never the test database)
is filled with synthetic CallLog rows in INSERT ... SELECT generate_series
statements: 300 tenants in 4 time zones over 35 days. One tenant, the one
measured, gets 15 % of the calls spread over many groups (3 provider
configs x 200 customers, each customer with its service and model: 600
groups a day); the others share the rest, skewed towards a few. The
aggregation (`usage.aggregation.daily_usage_recompute`) then fills
DailyUsage, and every usage endpoint is timed for the measured tenant
through Django's test client (authentication, tenant selection, throttling,
the query and JSON included), warmed up, a few hundred requests each.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/llm_bench_api \\
        .venv/bin/python bench/usage_api.py [--requests 300] [--reload]

The two sizes live in `<database>_1m` and `<database>_10m` and are kept
between runs (pass --reload to rebuild them). The script runs each size in a
child process (`--measure`) and prints both, and the 10M/1M ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/llm_bench_api"
SIZES = {"1m": 1_000_000, "10m": 10_000_000}
TENANTS = 300
DAYS = 35
TIMEZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"]
# The measured tenant: 15 % of all calls, 3 provider configs x 200 customers.
MEASURED_SHARE = 0.15
MEASURED_CUSTOMERS = 200
# Rows per INSERT statement: keeps each transaction's memory and WAL modest.
BATCH = 1_000_000
WARMUP = 20


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="Timed requests per endpoint.")
    parser.add_argument("--reload", action="store_true", help="Rebuild both databases.")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="Multiply both sizes (e.g. 0.01 for a quick trial).",
    )
    parser.add_argument("--measure", choices=sorted(SIZES), help=argparse.SUPPRESS)
    return parser.parse_args()


def _database_url(base: str, size: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}_{size}"))


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
    name = urlsplit(url).path.lstrip("/")
    if name.startswith("test_") or name in {"llm_provider_layer", "postgres"}:
        sys.exit(f"Refusing to fill database “{name}”: give the benchmark its own database.")
    _database_create(url)
    os.environ["DATABASE_URL"] = url
    os.environ.pop("REDIS_URL", None)  # throttling counts in local memory, as without Redis
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.development"
    # DEBUG off: no query log, as in production.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
    os.environ.setdefault("SALT_KEY", "bench-salt")
    os.environ["ALLOWED_HOSTS"] = "testserver"
    # Throttling stays on (its cache round trip is part of every request), high enough.
    os.environ["API_THROTTLE_USER"] = "10000000/min"
    # As in production, a beat keeps DailyUsage current: reports only read it.
    os.environ["USAGE_ROLL_UP_ON_READ"] = "0"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _load(rows: int) -> None:
    from django.db import connection, transaction

    from llm_providers.models import ProviderConfig, Tenant

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE usage_calllog, usage_dailyusage, usage_aggregationstate, "
            "llm_providers_tenant CASCADE"
        )
        tenants = Tenant.objects.bulk_create(
            Tenant(name=f"Bench {i}", slug=f"bench-{i:03d}", timezone=TIMEZONES[i % 4])
            for i in range(TENANTS)
        )
        ProviderConfig.objects.bulk_create(
            ProviderConfig(tenant=t, name=name, provider_type="fake", default_model="fake-small")
            for t in tenants
            for name in ("primary", "secondary", "tertiary")
        )
    for start in range(0, rows, BATCH):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                """
                WITH t AS (SELECT array_agg(id ORDER BY slug) AS ids FROM llm_providers_tenant),
                     p AS (SELECT array_agg(c.id ORDER BY tn.slug, c.name) AS ids
                           FROM llm_providers_providerconfig c
                           JOIN llm_providers_tenant tn ON tn.id = c.tenant_id),
                     g AS (SELECT n,
                                  (abs(hashint4(n)) %% 1000000) / 1000000.0 AS u,
                                  abs(hashint4(n + 7919)) AS h,
                                  abs(hashint4(n + 104729)) AS k
                           FROM generate_series(%(first)s, %(last)s) AS n),
                     r AS (SELECT g.*,
                                  CASE WHEN u < %(share)s THEN 0
                                       ELSE 1 + floor((%(tenants)s - 1)
                                            * power((u - %(share)s) / (1 - %(share)s), 3))::int
                                  END AS ti
                           FROM g),
                     d AS (SELECT r.*,
                                  CASE WHEN ti = 0 THEN h %% %(customers)s ELSE h %% 20 END AS c
                           FROM r)
                INSERT INTO usage_calllog (
                    tenant_id, request_id, attempt, operation, provider_config_id, provider_type,
                    model_requested, model_answered, customer_id, service_name, route_rule,
                    status, error_code, error_message, input_tokens, output_tokens,
                    cache_read_tokens, cache_write_tokens, reasoning_tokens, usage_estimated,
                    cost_usd, price_source, latency_ms, streamed, input_hash, prompt_preview,
                    created_at)
                SELECT t.ids[1 + d.ti], gen_random_uuid(), 1, 'complete',
                       p.ids[1 + 3 * d.ti + (d.h / %(customers)s) %% 3], 'fake',
                       (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'mistral-large'])
                           [1 + (d.c / 5) %% 4],
                       (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'mistral-large'])
                           [1 + (d.c / 5) %% 4],
                       'customer-' || d.c,
                       (ARRAY['summarizer', 'chat', 'translator', 'search', 'agent'])[1 + d.c %% 5],
                       'default',
                       CASE WHEN d.k %% 20 = 0 THEN 'error'
                            WHEN d.k %% 17 = 0 THEN 'cached' ELSE 'ok' END,
                       '', '', 100 + d.k %% 900, 10 + d.k %% 300, d.k %% 50, 0, d.k %% 30,
                       false,
                       CASE WHEN d.k %% 97 = 0 THEN NULL
                            ELSE ((100 + d.k %% 900) * 0.0000025
                                  + (10 + d.k %% 300) * 0.00001)::numeric(20, 12) END,
                       CASE WHEN d.k %% 97 = 0 THEN 'unknown' ELSE 'genai_prices' END,
                       200 + d.k %% 800, false, '', '',
                       now() - make_interval(secs => (d.k / 13) %% (%(days)s * 86400))
                FROM d, t, p
                """,
                {
                    "first": start + 1,
                    "last": min(start + BATCH, rows),
                    "share": MEASURED_SHARE,
                    "tenants": TENANTS,
                    "customers": MEASURED_CUSTOMERS,
                    "days": DAYS,
                },
            )
        print(f"  {min(start + BATCH, rows):,} call logs", file=sys.stderr, flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE usage_calllog")
        cursor.execute("VACUUM ANALYZE llm_providers_tenant")


def _aggregate() -> float:
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from usage.aggregation import daily_usage_recompute

    now = timezone.now()
    started = time.perf_counter()
    daily_usage_recompute(
        first_day=(now - timedelta(days=DAYS + 1)).date(),
        last_day=now.date() + timedelta(days=1),
        now=now,
    )
    elapsed = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE usage_dailyusage")
    return elapsed


def _caller():
    """The measured tenant, its first provider config and an admin's token."""
    from django.contrib.auth import get_user_model

    from llm_providers.models import ProviderConfig, Tenant, TenantMembership
    from llm_providers.services import user_token_create

    tenant = Tenant.objects.get(slug="bench-000")
    user, _ = get_user_model().objects.get_or_create(username="bench-admin")
    TenantMembership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": "admin"})
    _, token = user_token_create(user=user, name="bench")
    config = ProviderConfig.objects.get(tenant=tenant, name="primary")
    return tenant, config, token


def _plan(tenant) -> str:
    """How PostgreSQL reads the measured tenant's 30 days for a breakdown."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from usage.selectors import _report_aggregates, _report_rows

    today = timezone.now().date()
    rows = _report_rows(tenant=tenant, first_day=today - timedelta(days=29), last_day=today)
    query = rows.values("customer_id").annotate(**_report_aggregates()).query
    sql, params = query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    scans = []

    def walk(node):
        if "Relation Name" in node or "Index Name" in node:
            index = f" ({node['Index Name']})" if "Index Name" in node else ""
            scans.append(f"{node['Node Type']}{index}")
        for child in node.get("Plans", []):
            walk(child)

    walk((plan[0] if isinstance(plan, list) else json.loads(plan)[0])["Plan"])
    return "; ".join(scans)


def _measure(size: str, url: str, requests: int, reload: bool, scale: float) -> dict:
    _setup(url)
    from django.test import Client

    from usage.models import CallLog, DailyUsage

    rows = int(SIZES[size] * scale)
    loaded = None
    aggregated = None
    if reload or CallLog.objects.count() != rows or not DailyUsage.objects.exists():
        started = time.perf_counter()
        _load(rows)
        loaded = time.perf_counter() - started
        aggregated = _aggregate()
    tenant, config, token = _caller()
    endpoints = {
        "usage/summary": "/api/v1/usage/summary/",
        "usage/by-provider": "/api/v1/usage/by-provider/",
        "usage/by-model": "/api/v1/usage/by-model/",
        "usage/by-service": "/api/v1/usage/by-service/",
        "usage/by-customer": "/api/v1/usage/by-customer/?limit=100",
        "usage/daily": "/api/v1/usage/daily/",
        "providers/{id}/usage": f"/api/v1/providers/{config.pk}/usage/",
    }
    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    figures = {}
    for name, path in endpoints.items():
        for _ in range(WARMUP):
            assert client.get(path).status_code == 200, path
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.content[:300]
        times.sort()
        figures[name] = {
            "p50": statistics.median(times),
            "p95": times[int(len(times) * 0.95) - 1],
        }
    body = client.get(endpoints["usage/by-customer"]).json()
    from datetime import timedelta

    from django.utils import timezone

    today = timezone.now().date()
    measured_rows = DailyUsage.objects.filter(
        tenant=tenant, day__gte=today - timedelta(days=31)
    ).count()
    return {
        "call_logs": CallLog.objects.count(),
        "daily_usage_rows": DailyUsage.objects.count(),
        "measured_tenant_rows": measured_rows,
        "measured_tenant_customers": len(body["groups"]),
        "loaded_s": loaded,
        "aggregated_s": aggregated,
        "plan": _plan(tenant),
        "endpoints": figures,
    }


def main() -> None:
    args = _arguments()
    base = os.environ.get("DATABASE_URL") or DEFAULT_URL
    if not base.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/usage_api.py needs PostgreSQL: set DATABASE_URL=postgres://…/llm_bench_api")
    if args.measure:
        url = _database_url(base, args.measure)
        result = _measure(args.measure, url, args.requests, args.reload, args.scale)
        print(json.dumps(result))
        return

    results = {}
    for size in SIZES:
        print(f"{size}: loading (if needed) and measuring…", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--measure", size, "--requests", str(args.requests)]
        command += ["--scale", str(args.scale)]
        if args.reload:
            command.append("--reload")
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)
        results[size] = json.loads(done.stdout.strip().splitlines()[-1])

    for size, result in results.items():
        load = (
            f", loaded in {result['loaded_s']:.0f} s, aggregated in {result['aggregated_s']:.1f} s"
            if result["loaded_s"] is not None
            else ""
        )
        print(
            f"{size}: {result['call_logs']:,} call logs -> {result['daily_usage_rows']:,} "
            f"DailyUsage rows; measured tenant: {result['measured_tenant_rows']:,} rows in the "
            f"window, {result['measured_tenant_customers']} customers listed{load}"
        )
        print(f"     plan: {result['plan']}")
    print(f"{args.requests} requests per endpoint after {WARMUP} warm-up requests, milliseconds:")
    print(f"{'endpoint':24} {'1M p50':>8} {'1M p95':>8} {'10M p50':>8} {'10M p95':>8} "
          f"{'p50 10M/1M':>10} {'p95 10M/1M':>10}")  # fmt: skip
    small, large = results["1m"]["endpoints"], results["10m"]["endpoints"]
    for name in small:
        a, b = small[name], large[name]
        print(
            f"{name:24} {a['p50']:8.2f} {a['p95']:8.2f} {b['p50']:8.2f} {b['p95']:8.2f} "
            f"{b['p50'] / a['p50']:10.2f} {b['p95'] / a['p95']:10.2f}"
        )


if __name__ == "__main__":
    main()
