"""Reads that every app shares: which tenants a user may see and manage, whose token is whose."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import (
    USER_TOKEN_PREFIX_LENGTH,
    ProviderConfig,
    Tenant,
    TenantMembership,
    UserToken,
)


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


# What keeps a provider config from being deleted: call logs keep the history
# of the calls it served, overrides and fallbacks route to it, and a budget
# scoped to it must not vanish with it. Reverse relations, by related name.
PROVIDER_CONFIG_REFERENCES = ("call_logs", "routing_overrides", "routing_fallbacks", "budgets")


def provider_config_is_referenced(*, provider_config: ProviderConfig) -> bool:
    """Whether anything refers to the config, so that deleting it only deactivates it."""
    return any(getattr(provider_config, name).exists() for name in PROVIDER_CONFIG_REFERENCES)


def provider_config_references(*, provider_config: ProviderConfig) -> list[str]:
    """What refers to the config, counted: ["3 call logs", "1 routing override"]; [] if nothing."""
    references = []
    for name in PROVIDER_CONFIG_REFERENCES:
        related = getattr(provider_config, name)
        count = related.count()
        if count:
            meta = related.model._meta
            label = meta.verbose_name if count == 1 else meta.verbose_name_plural
            references.append(f"{count} {label}")
    return references


def user_token_for_key(*, key: str) -> UserToken | None:
    """The token whose hash `key` matches, with its user, or None.

    Its rows are found by prefix (indexed), then each hash is compared in
    constant time. Revoked and expired tokens are returned too: the caller
    refuses them.
    """
    candidates = UserToken.objects.select_related("user").filter(
        prefix=key[:USER_TOKEN_PREFIX_LENGTH]
    )
    return next((token for token in candidates if token.is_valid(key)), None)


def user_token_list(*, user) -> QuerySet[UserToken]:
    """The tokens `user` may see: its own, or every one for a superuser."""
    tokens = UserToken.objects.select_related("user")
    return tokens if user.is_superuser else tokens.filter(user=user)
