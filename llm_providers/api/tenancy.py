"""The current tenant of an API request, and the caller's role in it.

A service key acts for its own tenant. A user acts for one of the tenants it
belongs to: the only one, or the one named by the `X-Tenant` header or the
`tenant` query parameter (a slug or an id). Every tenant-scoped view reads the
tenant from here, once per request.
"""

from __future__ import annotations

import re
import uuid
from contextlib import suppress
from dataclasses import dataclass

from django.db.models import F, Q, Value
from rest_framework.exceptions import APIException

from llm_providers.exceptions import ApplicationError
from llm_providers.models import ServiceKey, Tenant, TenantMembership

TENANT_HEADER = "X-Tenant"
TENANT_QUERY_PARAMETER = "tenant"

ROLE_ADMIN = TenantMembership.Role.ADMIN.value
ROLE_VIEWER = TenantMembership.Role.VIEWER.value
ROLE_SERVICE = "service"

_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
# How many of a user's tenants an "ambiguous tenant" error lists.
_LISTED_TENANTS = 20


class _TenantError(ApplicationError, APIException):
    """Also a DRF APIException: the browsable API checks permissions again while
    it renders its forms, and treats only APIExceptions as "no form"."""

    def __init__(self, message: str, *, extra: dict | None = None):
        super().__init__(message, extra=extra)
        self.status_code = self.http_status


class TenantAmbiguousError(_TenantError):
    code = "tenant_ambiguous"
    http_status = 400


class TenantSelectionError(_TenantError):
    code = "tenant_invalid"
    http_status = 400


class TenantForbiddenError(_TenantError):
    code = "tenant_forbidden"
    http_status = 403


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who is calling, for which tenant, with which role (admin, viewer or service)."""

    tenant: Tenant
    role: str
    user: object | None = None
    service_key: ServiceKey | None = None


def _named_tenant(request) -> str:
    header = request.META.get("HTTP_X_TENANT", "").strip()
    query = request.query_params.get(TENANT_QUERY_PARAMETER, "").strip()
    if header and query and _tenant_id_named(header) != _tenant_id_named(query):
        raise TenantSelectionError(
            f"The {TENANT_HEADER} header (“{header}”) and the `{TENANT_QUERY_PARAMETER}` "
            "query parameter name different tenants; name one.",
        )
    return header or query


def _tenant_id_named(value: str):
    """The id of the tenant `value` names (by slug or id), or the value itself when none."""
    lookup = _tenant_lookup(value)
    found = Tenant.objects.filter(lookup).values_list("pk", flat=True).first() if lookup else None
    return found or value


def _tenant_lookup(value: str) -> Q | None:
    """A filter for a tenant named by id or slug, or None when the value can be neither."""
    with suppress(ValueError):
        return Q(pk=uuid.UUID(value))
    return Q(slug=value) if _SLUG.match(value) else None


def _as_uuid(value: str) -> uuid.UUID | None:
    with suppress(ValueError):
        return uuid.UUID(value)
    return None


def _service_key_context(service_key: ServiceKey, named: str) -> TenantContext:
    tenant = service_key.tenant
    if named and named != tenant.slug and _as_uuid(named) != tenant.pk:
        raise TenantForbiddenError(
            f"This service key belongs to tenant “{tenant.slug}” and cannot act for another "
            "tenant.",
        )
    return TenantContext(tenant=tenant, role=ROLE_SERVICE, service_key=service_key)


def _named_tenant_refusal(user, named: str, lookup: Q | None) -> str:
    if user.is_superuser:
        return f"No tenant “{named}” exists."
    # A member of a deactivated tenant is told why, not that it is no member.
    if (
        lookup is not None
        and Tenant.objects.filter(lookup, memberships__user=user, is_active=False).exists()
    ):
        return f"The tenant “{named}” is inactive: its members cannot act for it."
    return f"You are not a member of a tenant “{named}” (or it does not exist)."


def _user_context(user, named: str) -> TenantContext:
    if user.is_superuser:
        # A superuser administers every tenant, active or not.
        tenants = Tenant.objects.annotate(membership_role=Value(ROLE_ADMIN))
    else:
        # The role comes along with the tenant: one query per request.
        tenants = Tenant.objects.filter(memberships__user=user, is_active=True).annotate(
            membership_role=F("memberships__role")
        )
    if named:
        lookup = _tenant_lookup(named)
        found = list(tenants.filter(lookup)[:1]) if lookup is not None else []
        if not found:
            raise TenantForbiddenError(_named_tenant_refusal(user, named, lookup))
    else:
        found = list(tenants.order_by("slug")[: _LISTED_TENANTS + 1])
        if not found:
            raise TenantForbiddenError(
                "No tenant exists yet."
                if user.is_superuser
                else "You are not a member of any active tenant."
            )
        if len(found) > 1:
            slugs = [t.slug for t in found[:_LISTED_TENANTS]]
            # A superuser belongs to no tenant: every tenant is theirs to name.
            several = (
                "Several tenants exist" if user.is_superuser else "You belong to several tenants"
            )
            raise TenantAmbiguousError(
                f"{several}: name one with the "
                f"{TENANT_HEADER} header or the `{TENANT_QUERY_PARAMETER}` query parameter "
                f"(its slug or id), e.g. {TENANT_HEADER}: {slugs[0]}.",
                extra={"tenants": slugs},
            )
    tenant = found[0]
    return TenantContext(tenant=tenant, role=tenant.membership_role, user=user)


def request_tenant_context(request) -> TenantContext:
    """The tenant and role of an authenticated request, resolved once and kept on it.

    Raises TenantForbiddenError (403) when the caller may not act for the
    named tenant, TenantAmbiguousError (400) when a user of several tenants
    names none, TenantSelectionError (400) when header and query disagree.
    """
    cached = getattr(request, "_tenant_context", None)
    if cached is not None:
        return cached
    named = _named_tenant(request)
    if isinstance(request.auth, ServiceKey):
        context = _service_key_context(request.auth, named)
    else:
        context = _user_context(request.user, named)
    request._tenant_context = context
    return context
