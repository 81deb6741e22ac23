"""Replace the tenant's config version when a budget changes, so cached definitions are dropped."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from llm_providers.invalidation import config_version_bump_now_and_on_commit

from .models import Budget


def _on_budget_change(sender, instance, **kwargs):
    config_version_bump_now_and_on_commit(instance.tenant_id)


post_save.connect(_on_budget_change, sender=Budget, dispatch_uid="cfgver-budget")
post_delete.connect(_on_budget_change, sender=Budget, dispatch_uid="cfgver-d-budget")
