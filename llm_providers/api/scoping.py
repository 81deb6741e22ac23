"""The base of every tenant-scoped API view: the request's tenant, and querysets from it.

Views list and look up objects only through `get_queryset()`, which starts
from `self.tenant`; an object of another tenant is therefore "not found"
(404), never "forbidden", so ids of other tenants reveal nothing.
"""

from __future__ import annotations

from functools import cached_property

from llm_providers.models import Tenant

from .permissions import DEFAULT_READ_ROLES, DEFAULT_WRITE_ROLES
from .tenancy import TenantContext, request_tenant_context


class TenantScopedAPIMixin:
    read_roles = DEFAULT_READ_ROLES
    write_roles = DEFAULT_WRITE_ROLES

    @property
    def schema_generation(self) -> bool:
        """True while drf-spectacular inspects the view with a fake request."""
        return getattr(self, "swagger_fake_view", False)

    @cached_property
    def tenant_context(self) -> TenantContext:
        return request_tenant_context(self.request)

    @property
    def tenant(self) -> Tenant:
        return self.tenant_context.tenant

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        if not self.schema_generation:
            context["tenant"] = self.tenant
        return context
