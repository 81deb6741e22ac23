"""Reads that every app shares: which tenants a user may see and manage."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import ProviderConfig, Tenant, TenantMembership


def tenant_ids_for_user(user, *, role: str | None = None) -> set:
    """Ids of the tenants `user` belongs to (with `role`, only those where it has it).

    A superuser belongs to every tenant as an admin.
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    if user.is_superuser:
        return set(Tenant.objects.values_list("pk", flat=True))
    memberships = TenantMembership.objects.filter(user=user, tenant__is_active=True)
    if role is not None:
        memberships = memberships.filter(role=role)
    return set(memberships.values_list("tenant_id", flat=True))


def tenant_list_for_user(user, *, role: str | None = None) -> QuerySet[Tenant]:
    return Tenant.objects.filter(pk__in=tenant_ids_for_user(user, role=role))


def user_is_tenant_admin(user, tenant_id) -> bool:
    if getattr(user, "is_superuser", False):
        return True
    return tenant_id in tenant_ids_for_user(user, role=TenantMembership.Role.ADMIN)


def provider_config_list(*, tenant: Tenant, active_only: bool = False) -> QuerySet[ProviderConfig]:
    configs = ProviderConfig.objects.filter(tenant=tenant)
    if active_only:
        configs = configs.filter(is_active=True)
    return configs
