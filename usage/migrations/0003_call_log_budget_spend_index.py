"""A covering index for rebuilding budget counters from CallLog (PostgreSQL only).

The rebuild sums cost_usd of one tenant over a period, optionally filtered by
provider config, service or customer; with these columns included it is an
index-only scan (docs/PERFORMANCE.md). SQLite has no INCLUDE and makes do with
the (tenant, created_at) index. Built CONCURRENTLY, so the migration does not
lock a large CallLog table against writes.
"""

from django.db import migrations

INDEX = "call_log_budget_spend"


def _create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON usage_calllog "
        "(tenant_id, created_at) INCLUDE (cost_usd, provider_config_id, service_name, customer_id)"
    )


def _drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("usage", "0002_daily_usage_budgets_alerts")]

    operations = [migrations.RunPython(_create, _drop, elidable=False)]
