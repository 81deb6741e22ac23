"""Who may do what in a tenant: admins write, viewers read, service keys do what a view allows.

A view states its policy in two attributes, read by `TenantRolePermission`:

- `read_roles`: roles allowed the safe methods (GET, HEAD, OPTIONS);
- `write_roles`: roles allowed every other method.

Roles are `admin` and `viewer` (a user's membership) and `service` (a
service key). The default lets admins and viewers read and admins write.
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from .tenancy import ROLE_ADMIN, ROLE_SERVICE, ROLE_VIEWER, request_tenant_context

DEFAULT_READ_ROLES = frozenset({ROLE_ADMIN, ROLE_VIEWER})
DEFAULT_WRITE_ROLES = frozenset({ROLE_ADMIN})

_REFUSALS = {
    ROLE_VIEWER: "Viewers can read but not change anything in this tenant.",
    ROLE_SERVICE: "Service keys are not allowed to do this; use a tenant admin's credentials.",
}


class TenantRolePermission(BasePermission):
    """Resolve the request's tenant and check the caller's role against the view's policy."""

    code = "permission_denied"

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        context = request_tenant_context(request)
        if request.method in SAFE_METHODS:
            allowed = getattr(view, "read_roles", DEFAULT_READ_ROLES)
        else:
            allowed = getattr(view, "write_roles", DEFAULT_WRITE_ROLES)
        if context.role in allowed:
            return True
        self.message = _REFUSALS.get(context.role, "Your role may not do this in this tenant.")
        return False
