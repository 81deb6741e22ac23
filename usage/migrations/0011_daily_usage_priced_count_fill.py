from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

from django.db import migrations
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Greatest

# Primary keys per UPDATE: within SQLite's 999 parameters.
_BATCH = 500

_GROUP_KEY = (
    "tenant_id",
    "day",
    "provider_config_id",
    "provider_type",
    "model",
    "service_name",
    "customer_id",
)


def priced_counts_fill(apps, schema_editor):
    """Count each stored group's priced requests (those with a cost, $0 included).

    A request is an answer (priced, or unpriced when its model has no known
    price), a cache hit ($0), a refused call (no cost) or a failed attempt,
    which has no cost unless the provider charged for what it answered
    before failing (its price source is then set). So a group's priced
    requests are its requests less its failures, refusals and unpriced ones,
    plus its failed attempts that were charged: those are counted from the
    call logs still kept. A group whose logs retention has purged counts
    the charged failures it had as not priced (at least one request is
    priced where the cost is not $0, and never fewer than none: a day the
    purge cut in two keeps some of its unpriced failures' logs and not
    others); every later recompute of its day sets the exact count.

    The writes are one UPDATE of every row, then one per batch of the groups
    with charged failures, those of a batch having the same number of them:
    a handful of statements whatever the number of groups.
    """
    DailyUsage = apps.get_model("usage", "DailyUsage")
    CallLog = apps.get_model("usage", "CallLog")
    uncharged = F("request_count") - F("error_count") - F("blocked_count") - F("unpriced_count")
    at_least = Case(When(~Q(cost_usd=0), then=Value(1)), default=Value(0))
    DailyUsage.objects.update(priced_count=Greatest(uncharged, at_least))
    charged = Counter()
    failures = (
        CallLog.objects.filter(status="error")
        .exclude(price_source="")
        .values_list(
            "tenant_id",
            "tenant__timezone",
            "created_at",
            "provider_config_id",
            "provider_type",
            "model_answered",
            "model_requested",
            "service_name",
            "customer_id",
        )
    )
    for tenant_id, zone_name, created_at, config_id, provider_type, *rest in failures.iterator():
        answered, requested, service_name, customer_id = rest
        day = created_at.astimezone(ZoneInfo(zone_name or "UTC")).date()
        key = (tenant_id, day, config_id, provider_type, answered or requested)
        charged[(*key, service_name, customer_id)] += 1
    if not charged:
        return
    days = [key[1] for key in charged]
    groups = DailyUsage.objects.filter(day__range=(min(days), max(days))).values_list(
        "pk", *_GROUP_KEY
    )
    pks_by_count = defaultdict(list)
    for pk, *key in groups.iterator(chunk_size=10_000):
        count = charged.get(tuple(key))
        if count:
            pks_by_count[count].append(pk)
    for count, pks in pks_by_count.items():
        for start in range(0, len(pks), _BATCH):
            DailyUsage.objects.filter(pk__in=pks[start : start + _BATCH]).update(
                priced_count=Greatest(uncharged + count, at_least)
            )


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0010_daily_usage_priced_count'),
    ]

    operations = [
        migrations.RunPython(priced_counts_fill, migrations.RunPython.noop),
    ]
