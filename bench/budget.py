"""Budget gate benchmark: reserve and settle on warm counters, and a cold rebuild.

Prints p50/p95 of `budget_reserve` for a tenant without budgets (a dict
lookup), with two applicable budgets on Redis counters (one Lua call) and on
database counters (row locks), the Redis PING round trip for reference, and
the time of a cold-counter rebuild from CallLog for the busiest tenant of the
aggregation benchmark's data (run bench/aggregate.py first for that figure).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/llm_bench \\
    REDIS_URL=redis://127.0.0.1:6379/<a db of your own> \\
        .venv/bin/python bench/budget.py [--calls 5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from aggregate import DEFAULT_URL, _database_create  # noqa: E402


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95)] * 1000
    return f"p50 {p50:.3f} ms, p95 {p95:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/budget.py needs PostgreSQL: set DATABASE_URL=postgres://…/llm_bench")
    if not os.environ.get("REDIS_URL"):
        sys.exit("bench/budget.py needs REDIS_URL (a Redis database of its own).")
    _database_create(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db.models import Count
    from django.utils import timezone

    from llm_providers.config_cache import config_version
    from llm_providers.models import Tenant
    from usage.budget import BudgetDefinition, ReservationEntry, budget_reserve, budget_settle
    from usage.budget_counters import RedisCounters, settled_from_call_logs
    from usage.models import Budget, CallLog
    from usage.periods import period_containing

    call_command("migrate", verbosity=0)
    tenant, _ = Tenant.objects.get_or_create(slug="budget-bench", defaults={"name": "Budget"})
    idle, _ = Tenant.objects.get_or_create(slug="budget-bench-idle", defaults={"name": "Idle"})
    Budget.objects.filter(tenant=tenant).delete()
    Budget.objects.create(
        tenant=tenant, name="monthly cap", limit_usd=Decimal("1000000"), action="block"
    )
    Budget.objects.create(
        tenant=tenant,
        name="summarizer daily",
        period="daily",
        limit_usd=Decimal("1000000"),
        service_name="summarizer",
    )

    def run(target) -> tuple[list[float], list[float]]:
        version = config_version(target.pk)
        reserves, settles = [], []
        for index in range(args.calls + 200):
            start = time.perf_counter()
            reservation = budget_reserve(
                tenant=target,
                provider_config_id=None,
                service_name="summarizer",
                customer_id="acme",
                amount_usd=Decimal("0.0042"),
                request_id=uuid.uuid4(),
                version=version,
            )
            middle = time.perf_counter()
            budget_settle(reservation=reservation, cost_usd=Decimal("0.0017"))
            end = time.perf_counter()
            if index >= 200:  # warm-up: counters built, scripts loaded
                reserves.append(middle - start)
                settles.append(end - middle)
        return reserves, settles

    reserves, _ = run(idle)
    print(f"reserve, tenant without budgets:          {_percentiles(reserves)}")
    settings.USAGE_BUDGET_BACKEND = "redis"
    reserves, settles = run(tenant)
    print(f"reserve, 2 budgets, warm Redis counters:  {_percentiles(reserves)}")
    print(f"settle,  2 budgets, warm Redis counters:  {_percentiles(settles)}")
    counters = RedisCounters()
    counters._scripts()
    pings = []
    for _ in range(args.calls):
        start = time.perf_counter()
        counters._client.ping()
        pings.append(time.perf_counter() - start)
    print(f"Redis PING (one round trip):              {_percentiles(pings)}")
    settings.USAGE_BUDGET_BACKEND = "database"
    reserves, settles = run(tenant)
    print(f"reserve, 2 budgets, database counters:    {_percentiles(reserves)}")

    busiest = (
        CallLog.objects.exclude(tenant=tenant)
        .values("tenant_id")
        .annotate(n=Count("pk"))
        .order_by("-n")
        .first()
    )
    if busiest:
        now = timezone.now()
        definition = BudgetDefinition(
            id=0,
            name="rebuild",
            tenant_id=busiest["tenant_id"],
            timezone_name="UTC",
            period="monthly",
            limit_usd=Decimal(1),
            limit_nano=1,
            blocking=True,
            provider_config_id="",
            service_name="",
            customer_id="",
            definition="bench",
        )
        entry = ReservationEntry(budget=definition, period=period_containing("monthly", now, "UTC"))
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            settled_from_call_logs(entry)
            samples.append(time.perf_counter() - start)
        rows = CallLog.objects.filter(
            tenant_id=busiest["tenant_id"],
            created_at__gte=entry.period.start,
            created_at__lt=entry.period.end,
        ).count()
        print(
            f"cold rebuild, busiest tenant ({rows:,} logs this month): "
            f"median {statistics.median(samples) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
