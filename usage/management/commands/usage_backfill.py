"""`manage.py usage_backfill --from YYYY-MM-DD [--to ...] [--tenant slug]`: recompute days."""

from __future__ import annotations

import re
from contextlib import suppress
from datetime import date, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Min
from django.template.defaultfilters import pluralize
from django.utils import timezone
from tqdm import tqdm

from llm_providers.management.arguments import text
from llm_providers.models import Tenant
from usage.aggregation import (
    RecomputeResult,
    daily_usage_recompute,
    daily_usage_recompute_connections,
)
from usage.models import CallLog, DailyUsage
from usage.periods import local_date, zone
from usage.selectors import tenant_timezones

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(value: str, option: str) -> date:
    if not value:
        # An empty --to would otherwise read as "not given", i.e. today.
        raise CommandError(f"{option} is empty; write a day as YYYY-MM-DD.")
    # date.fromisoformat alone also takes 20260101 and week dates (2026-W01).
    with suppress(ValueError):
        if _ISO_DAY.fullmatch(value):
            return date.fromisoformat(value)
    raise CommandError(f"“{value}” is not a date; write it as YYYY-MM-DD.")


def _today(tenant: Tenant | None) -> date:
    """Today in the tenant's time zone; for every tenant, the latest of their todays."""
    now = timezone.now()
    names = [tenant.timezone] if tenant else tenant_timezones() or ["UTC"]
    return max(local_date(now, zone(name)) for name in names)


def _first_day_with_usage(tenant: Tenant | None, today: date) -> date:
    """The earliest day that has call logs or daily usage (today when there is none).

    A day before it has nothing to recompute: starting there spares a --from
    far in the past a transaction for every empty day.
    """
    logs, usage = CallLog.objects.all(), DailyUsage.objects.all()
    if tenant is not None:
        logs, usage = logs.filter(tenant=tenant), usage.filter(tenant=tenant)
    first_log = logs.aggregate(first=Min("created_at"))["first"]
    first_usage = usage.aggregate(first=Min("day"))["first"]
    candidates = [first_usage]
    if first_log is not None:
        # Every log is counted on a local day of its tenant's zone: the
        # earliest of the first log's local days in those zones comes first.
        names = [tenant.timezone] if tenant else tenant_timezones() or ["UTC"]
        candidates += [local_date(first_log, zone(name)) for name in names]
    return min([day for day in candidates if day] or [today])


class Command(BaseCommand):
    help = (
        "Recompute DailyUsage from CallLog for a range of days (each tenant's local days). "
        "Safe to rerun; days older than the call-log retention are kept as they are."
    )

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="first", required=True, help="First day, YYYY-MM-DD.")
        parser.add_argument(
            "--to",
            dest="last",
            help="Last day, YYYY-MM-DD (default and latest: today in the tenants' time zones).",
        )
        parser.add_argument("--tenant", type=text, help="Only this tenant (its slug).")
        parser.add_argument(
            "--chunk-days",
            type=int,
            default=1,
            help="Days recomputed per transaction (default 1).",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help=(
                "PostgreSQL connections recomputing at once, each its own transaction of "
                "--chunk-days days (default: USAGE_AGGREGATION_WORKERS)."
            ),
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, **options):
        first = _day(options["first"], "--from")
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant has the slug “{options['tenant']}”.")
        today = _today(tenant)
        last = _day(options["last"], "--to") if options["last"] is not None else today
        if options["last"] is not None and first > last:
            raise CommandError(f"--from ({first}) is after --to ({last}); swap them.")
        if first > today:
            raise CommandError(f"--from ({first}) is after today ({today}); nothing is logged yet.")
        # No call log is dated after today: later days have nothing to recompute
        # (and a far --to would loop for ages, or past the last date there is).
        last = min(last, today)
        chunk = options["chunk_days"]
        if chunk < 1:
            raise CommandError("--chunk-days must be 1 or more.")
        workers = options["workers"]
        if workers is None:
            workers = settings.USAGE_AGGREGATION_WORKERS
        if workers < 1:
            raise CommandError("--workers must be 1 or more.")
        # Where the days cannot be shared out, each chunk is a transaction of its own.
        workers = daily_usage_recompute_connections(workers)
        asked_first = first
        first = max(first, _first_day_with_usage(tenant, today))
        if first > last:
            self.stdout.write(
                f"Nothing is logged from {asked_first} to {last}: nothing to recompute."
            )
            return

        total = RecomputeResult()
        days = (last - first).days + 1
        with tqdm(
            total=days,
            unit="day",
            desc="Recomputing daily usage",
            disable=options["no_progress"],
            file=self.stderr,
        ) as progress:
            start = first
            while start <= last:
                # One chunk of days per worker, recomputed side by side.
                span = min(chunk * workers, (last - start).days + 1)
                end = start + timedelta(days=span - 1)
                total.add(
                    daily_usage_recompute(
                        first_day=start,
                        last_day=end,
                        tenant=tenant,
                        workers=min(workers, -(-span // chunk)),
                    )
                )
                progress.update((end - start).days + 1)
                start = end + timedelta(days=1)

        scope = f"tenant {tenant.slug}" if tenant else "all tenants"
        if first > asked_first:
            self.stdout.write(f"Nothing is logged before {first}: the recompute starts there.")
        self.stdout.write(
            f"Recomputed {days} day{pluralize(days)} from {first} to {last} for {scope}: "
            f"{total.written} row{pluralize(total.written)} written, {total.removed} removed."
        )
        if total.kept_before:
            self.stdout.write(
                f"Days before {total.kept_before} were kept as they are: their call logs "
                "are past the retention period."
            )
