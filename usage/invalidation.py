"""Keep what is derived from settings in step with them.

A budget change replaces the tenant's config version, so cached definitions
are dropped. A tenant's new time zone has its usage days recomputed in that
zone once the change is committed.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save

from llm_providers.invalidation import config_version_bump_now_and_on_commit
from llm_providers.models import Tenant

from .models import Budget


def _on_budget_change(sender, instance, **kwargs):
    config_version_bump_now_and_on_commit(instance.tenant_id)


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
    from .tasks import recompute_tenant_history

    tenant_id = str(instance.pk)
    # robust: a broker that is down must not undo the change of time zone.
    transaction.on_commit(lambda: recompute_tenant_history.delay(tenant_id), robust=True)


post_save.connect(_on_budget_change, sender=Budget, dispatch_uid="cfgver-budget")
post_delete.connect(_on_budget_change, sender=Budget, dispatch_uid="cfgver-d-budget")
pre_save.connect(_remember_tenant_timezone, sender=Tenant, dispatch_uid="usage-tz-remember")
post_save.connect(_on_tenant_timezone_change, sender=Tenant, dispatch_uid="usage-tz-recompute")
