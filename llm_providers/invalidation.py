"""Replace a tenant's config version whenever something its routes or prices read changes."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_save

from .config_cache import config_version_bump_on_commit
from .models import ModelPrice, ProviderConfig, Tenant


def _on_tenant_owned_change(sender, instance, **kwargs):
    config_version_bump_on_commit(instance.tenant_id)


def _remember_price_tenant(sender, instance, raw=False, **kwargs):
    # The stored row's tenant, as a one-element list (its tenant may be None:
    # a global price); empty for a new price.
    instance._stored_tenant_ids = []
    if raw or instance._state.adding:
        return
    instance._stored_tenant_ids = list(
        ModelPrice.objects.filter(pk=instance.pk).values_list("tenant_id", flat=True)
    )


def _on_price_save(sender, instance, created=False, **kwargs):
    config_version_bump_on_commit(instance.tenant_id)
    # A price moved to another tenant (or from or to every tenant) must stop
    # pricing the calls of those it applied to before; None bumps them all.
    for stored in getattr(instance, "_stored_tenant_ids", []):
        if not created and stored != instance.tenant_id:
            config_version_bump_on_commit(stored)


def _on_tenant_change(sender, instance, **kwargs):
    config_version_bump_on_commit(instance.pk)


for _model in (ProviderConfig, ModelPrice):
    post_delete.connect(_on_tenant_owned_change, sender=_model, dispatch_uid=f"cfgver-d-{_model}")
post_save.connect(_on_tenant_owned_change, sender=ProviderConfig, dispatch_uid="cfgver-config")
pre_save.connect(_remember_price_tenant, sender=ModelPrice, dispatch_uid="cfgver-price-tenant")
post_save.connect(_on_price_save, sender=ModelPrice, dispatch_uid="cfgver-price")
post_save.connect(_on_tenant_change, sender=Tenant, dispatch_uid="cfgver-tenant")
post_delete.connect(_on_tenant_change, sender=Tenant, dispatch_uid="cfgver-d-tenant")
