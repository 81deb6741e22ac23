"""Replace a tenant's config version whenever something its routes or prices read changes."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .config_cache import config_version_bump
from .models import ModelPrice, ProviderConfig, Tenant


def config_version_bump_now_and_on_commit(tenant_id) -> None:
    """Bump at once (this connection sees the change) and again after commit.

    The second bump discards anything another process cached from the
    pre-commit state while the transaction was open.
    """
    config_version_bump(tenant_id)
    transaction.on_commit(lambda: config_version_bump(tenant_id))


def _on_tenant_owned_change(sender, instance, **kwargs):
    config_version_bump_now_and_on_commit(instance.tenant_id)


def _on_tenant_change(sender, instance, **kwargs):
    config_version_bump_now_and_on_commit(instance.pk)


for _model in (ProviderConfig, ModelPrice):
    post_save.connect(_on_tenant_owned_change, sender=_model, dispatch_uid=f"cfgver-{_model}")
    post_delete.connect(_on_tenant_owned_change, sender=_model, dispatch_uid=f"cfgver-d-{_model}")
post_save.connect(_on_tenant_change, sender=Tenant, dispatch_uid="cfgver-tenant")
post_delete.connect(_on_tenant_change, sender=Tenant, dispatch_uid="cfgver-d-tenant")
