"""Admin and call log API benchmark: every CallLog / DailyUsage changelist with each
filter, search and sort, the change pages, the usage dashboard and `/api/v1/calls/`
with each filter and deep cursors, timed on the data of `bench/aggregate.py`.

Run `bench/aggregate.py` on the same database first (it loads 1,000,000 call
logs over 300 tenants and fills DailyUsage). This script adds a superuser and
an admin of the busiest tenant (`bench-0`, 15 % of the calls), then requests
each page through Django's test client (session or token authentication,
middleware, the queries and the rendered page included): a warm-up request,
then the median of `--runs`. With `--sql` it prints, for each page, the number
of queries and the slowest one.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/llm_bench \\
        .venv/bin/python bench/admin_pages.py [--runs 5] [--sql] [--only calllog]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/llm_bench"


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sql", action="store_true", help="Show query counts and the slowest.")
    parser.add_argument("--only", default="", help="Only pages whose name contains this.")
    return parser.parse_args()


def _setup(url: str) -> None:
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/admin_pages.py needs PostgreSQL: set DATABASE_URL=postgres://…/llm_bench")
    name = urlsplit(url).path.lstrip("/")
    if name.startswith("test_") or name in {"llm_provider_layer", "postgres"}:
        sys.exit(f"Refusing to use database “{name}”: give the benchmark its own database.")
    os.environ["DATABASE_URL"] = url
    os.environ.pop("REDIS_URL", None)  # throttling counts in local memory, as without Redis
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.development"
    # DEBUG off: no query log, as in production (--sql captures the queries itself).
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
    os.environ.setdefault("SALT_KEY", "bench-salt")
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["API_THROTTLE_USER"] = "10000000/min"
    # A broker address keeps the dashboard from rolling call logs up on every
    # view (what it does with no worker): the page itself is measured.
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "0")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _users():
    from django.contrib.auth import get_user_model

    from llm_providers.models import Tenant, TenantMembership
    from llm_providers.services import user_token_create

    users = get_user_model().objects
    superuser = users.filter(username="bench-superuser").first() or users.create_superuser(
        "bench-superuser", "bench@example.com", "bench"
    )
    tenant = Tenant.objects.get(slug="bench-0")
    admin, _ = users.get_or_create(username="bench-tenant-admin", defaults={"is_staff": True})
    TenantMembership.objects.get_or_create(user=admin, tenant=tenant, defaults={"role": "admin"})
    _, token = user_token_create(user=admin, name="bench")
    return superuser, admin, tenant, token


def _pages(tenant) -> dict[str, list[str]]:
    from datetime import timedelta

    from django.utils import timezone

    from llm_providers.models import ProviderConfig
    from usage.models import CallLog

    config = ProviderConfig.objects.get(tenant=tenant, name="primary")
    log = CallLog.objects.filter(tenant=tenant).order_by("-id").first()
    today = timezone.now().date()
    week = (today - timedelta(days=7)).isoformat()
    tomorrow = (today + timedelta(days=1)).isoformat()
    day = (today - timedelta(days=3)).isoformat()
    calls = "/admin/usage/calllog/"
    daily = "/admin/usage/dailyusage/"
    admin_lists = {
        "calllog": f"{calls}",
        "calllog past 7 days": f"{calls}?created_at__gte={week}&created_at__lt={tomorrow}",
        "calllog day": f"{calls}?day={day}",
        "calllog provider": f"{calls}?provider={config.pk}",
        "calllog provider none": f"{calls}?provider=none",
        "calllog model": f"{calls}?model=gpt-4o-mini",
        "calllog model rare": f"{calls}?model=no-such-model",
        "calllog status error": f"{calls}?status__exact=error",
        "calllog status blocked": f"{calls}?status__exact=blocked",
        "calllog service": f"{calls}?service=chat",
        "calllog service rare": f"{calls}?service=no-such-service",
        "calllog customer": f"{calls}?customer=customer-3",
        "calllog customer rare": f"{calls}?customer=customer-19",
        "calllog search request id": f"{calls}?q={log.request_id}",
        # Column numbers of the superuser's lists (a tenant's user has no tenant column).
        "calllog sort latency": f"{calls}?o=10",
        "calllog page 50": f"{calls}?p=50",
        "calllog change": f"{calls}{log.pk}/change/",
        "dailyusage": f"{daily}",
        "dailyusage past 7 days": f"{daily}?day__gte={week}&day__lt={tomorrow}",
        "dailyusage provider": f"{daily}?provider={config.pk}",
        "dailyusage model": f"{daily}?model=gpt-4o-mini",
        "dailyusage service": f"{daily}?service=chat",
        "dailyusage customer": f"{daily}?customer=customer-3",
        "dailyusage customer rare": f"{daily}?customer=customer-19",
        "dailyusage sort errors": f"{daily}?o=7",
        "dashboard": f"/admin/usage/usagedashboard/{tenant.pk}/",
        "dashboard index": "/admin/usage/usagedashboard/",
    }
    api = "/api/v1/calls/"
    api_lists = {
        "api calls": api,
        "api calls status error": f"{api}?status=error",
        "api calls status blocked": f"{api}?status=blocked",
        "api calls provider": f"{api}?provider_config={config.pk}",
        "api calls model": f"{api}?model=gpt-4o-mini",
        "api calls model rare": f"{api}?model=no-such-model",
        "api calls service": f"{api}?service_name=chat",
        "api calls service rare": f"{api}?service_name=no-such-service",
        "api calls customer": f"{api}?customer_id=customer-3",
        "api calls customer rare": f"{api}?customer_id=customer-19",
        "api calls request id": f"{api}?request_id={log.request_id}",
        "api calls window": f"{api}?created_after={week}T00:00:00Z&created_before={day}T00:00:00Z",
        "api calls page 200": f"{api}?page_size=200",
    }
    return admin_lists, api_lists


def _deep_cursor(client, path: str, pages: int) -> str:
    """The `next` link after walking `pages` pages of 200."""
    url = f"{path}?page_size=200"
    for _ in range(pages):
        url = client.get(url).json()["next"]
    return url


def main() -> None:
    args = _arguments()
    url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    _setup(url)
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    superuser, tenant_admin, tenant, token = _users()
    admin_lists, api_lists = _pages(tenant)
    super_client, admin_client = Client(), Client()
    super_client.force_login(superuser)
    admin_client.force_login(tenant_admin)
    api_client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    api_lists["api calls cursor 50 pages"] = _deep_cursor(api_client, "/api/v1/calls/", 50)
    api_lists["api calls cursor 500 pages"] = _deep_cursor(api_client, "/api/v1/calls/", 500)

    requests = []
    for name, path in admin_lists.items():
        requests.append((f"{name} (superuser)", super_client, path))
        requests.append((f"{name} (tenant admin)", admin_client, path))
    requests += [(name, api_client, path) for name, path in api_lists.items()]

    print(f"{'page':<48} {'median ms':>10} {'max ms':>8}" + ("  queries" if args.sql else ""))
    for name, client, path in requests:
        if args.only and args.only not in name:
            continue
        response = client.get(path)
        assert response.status_code in (200, 302), (name, path, response.status_code)
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
        line = f"{name:<48} {statistics.median(times):10.1f} {max(times):8.1f}"
        if args.sql:
            reset_queries()
            with CaptureQueriesContext(connection) as captured:
                client.get(path)
            slowest = max(captured.captured_queries, key=lambda q: float(q["time"]))
            line += f"  {len(captured)} queries, slowest {float(slowest['time']) * 1000:.0f} ms: "
            line += slowest["sql"][:300]
        print(line, flush=True)


if __name__ == "__main__":
    main()
