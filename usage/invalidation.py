"""Keep what is derived from settings in step with them.

A budget change replaces the tenant's config version, so cached definitions
are dropped; a budget switched on again, or given back a scope or time zone it
counted before, has its stale live counters dropped. A tenant's new time zone
has its usage days recomputed in that zone once the change is committed. A
tenant's delete waits for a running recompute, so none writes its days after it.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from llm_providers.config_cache import config_version_bump_on_commit
from llm_providers.models import Tenant

from .budget import budget_counters_forget, budget_definition_of
from .models import Budget


def _on_budget_change(sender, instance, **kwargs):
    config_version_bump_on_commit(instance.tenant_id)


def _remember_budget_counted(sender, instance, raw=False, **kwargs):
    # What the stored budget counts, if it is active: its counters are in use.
    instance._usage_stored_counted = None
    if raw or instance._state.adding:
        return
    stored = Budget.objects.select_related("tenant").filter(pk=instance.pk).first()
    if stored is not None and stored.is_active:
        instance._usage_stored_counted = budget_definition_of(stored).definition


def _on_budget_save(sender, instance, created=False, raw=False, **kwargs):
    config_version_bump_on_commit(instance.tenant_id)
    if raw or created or not instance.is_active:
        return
    # Switched on again, or back to a scope it counted before: counters of that
    # definition may be left from then, without the spend made since.
    if budget_definition_of(instance).definition != instance._usage_stored_counted:
        budget_counters_forget(budget=instance)


def _remember_tenant_timezone(sender, instance, raw=False, **kwargs):
    instance._usage_stored_timezone = None
    if raw or instance._state.adding:
        return
    instance._usage_stored_timezone = (
        Tenant.objects.filter(pk=instance.pk).values_list("timezone", flat=True).first()
    )


def _on_tenant_timezone_change(sender, instance, created=False, raw=False, **kwargs):
    stored = getattr(instance, "_usage_stored_timezone", None)
    if raw or created or stored is None or stored == instance.timezone:
        return
    from .aggregation import daily_usage_recount_request
    from .tasks import recompute_tenant_history

    # Stored with the change: the periodic aggregation recounts the days if
    # the task queued below never runs (a broker that is down) or stops.
    daily_usage_recount_request(tenant=instance)
    # Counters of a zone the tenant had before may be left from then.
    for budget in Budget.objects.filter(tenant=instance, is_active=True).select_related("tenant"):
        budget_counters_forget(budget=budget)
    tenant_id = str(instance.pk)
    # robust: a broker that is down must not undo the change of time zone.
    transaction.on_commit(lambda: recompute_tenant_history.delay(tenant_id), robust=True)


def _on_tenant_delete(sender, instance, **kwargs):
    from .aggregation import daily_usage_recompute_wait

    # Sent inside the delete's transaction, before any row goes.
    daily_usage_recompute_wait()


pre_save.connect(_remember_budget_counted, sender=Budget, dispatch_uid="usage-budget-remember")
post_save.connect(_on_budget_save, sender=Budget, dispatch_uid="cfgver-budget")
post_delete.connect(_on_budget_change, sender=Budget, dispatch_uid="cfgver-d-budget")
pre_save.connect(_remember_tenant_timezone, sender=Tenant, dispatch_uid="usage-tz-remember")
post_save.connect(_on_tenant_timezone_change, sender=Tenant, dispatch_uid="usage-tz-recompute")
pre_delete.connect(_on_tenant_delete, sender=Tenant, dispatch_uid="usage-tenant-delete")
