"""Replace the tenant's config version when an override or fallback changes."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from llm_providers.config_cache import config_version_bump_on_commit

from .models import RoutingFallback, RoutingOverride


def _on_override_change(sender, instance, **kwargs):
    config_version_bump_on_commit(instance.tenant_id)


def _on_fallback_change(sender, instance, **kwargs):
    tenant_id = (
        RoutingOverride.objects.filter(pk=instance.override_id)
        .values_list("tenant_id", flat=True)
        .first()
    )
    if tenant_id is not None:
        config_version_bump_on_commit(tenant_id)


post_save.connect(_on_override_change, sender=RoutingOverride, dispatch_uid="cfgver-override")
post_delete.connect(_on_override_change, sender=RoutingOverride, dispatch_uid="cfgver-d-override")
post_save.connect(_on_fallback_change, sender=RoutingFallback, dispatch_uid="cfgver-fallback")
post_delete.connect(_on_fallback_change, sender=RoutingFallback, dispatch_uid="cfgver-d-fallback")
