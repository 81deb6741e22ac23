"""The base of every tenant-scoped API view: the request's tenant, and querysets from it.

Views list and look up objects only through `get_queryset()`, which starts
from `self.tenant`; an object of another tenant is therefore "not found"
(404), never "forbidden", so ids of other tenants reveal nothing.

A query parameter the endpoint does not take is refused (400), as a body
field it does not have is: a misspelt filter (`?stauts=error`) would
otherwise answer every row as though they matched it. So is one given more
than once: each takes a single value, and so is one sent empty where an
empty text is not one of its values (`?status=`). A method the path does not
have answers 405 before any of this, to anyone (`base.MethodCheckedFirstMixin`).
"""

from __future__ import annotations

from functools import cached_property

from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings

from llm_providers.models import Tenant

from .base import APIViewMixin
from .permissions import DEFAULT_READ_ROLES, DEFAULT_WRITE_ROLES
from .tenancy import TENANT_QUERY_PARAMETER, TenantContext, request_tenant_context


class TenantScopedAPIMixin(APIViewMixin):
    acts_for_tenant = True
    read_roles = DEFAULT_READ_ROLES
    write_roles = DEFAULT_WRITE_ROLES
    # The serializer of the query parameters a view takes: `query_serializer_class`
    # on a plain view, per action (e.g. "list") on a viewset.
    query_serializer_class = None
    query_serializer_classes: dict = {}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method.lower() != "options":
            self.query_parameters_check(request)

    def query_fields(self) -> dict:
        """The fields of the query parameters the action takes (none: an empty dict)."""
        action = getattr(self, "action", None)
        serializer_class = (
            self.query_serializer_class
            if action is None
            else self.query_serializer_classes.get(action)
        )
        return dict(serializer_class().fields) if serializer_class is not None else {}

    def query_parameters_known(self) -> set[str]:
        """The tenant, the format, the action's own and (lists) the paginator's parameters."""
        known = {TENANT_QUERY_PARAMETER, api_settings.URL_FORMAT_OVERRIDE}
        action = getattr(self, "action", None)
        known.update(self.query_fields())
        paginator = getattr(self, "paginator", None) if action == "list" else None
        if paginator is not None:
            for attribute in ("page_query_param", "page_size_query_param", "cursor_query_param"):
                known.add(getattr(paginator, attribute, None))
        known.discard(None)
        return known

    def query_parameters_check(self, request) -> None:
        known = self.query_parameters_known()
        unknown = sorted(name for name in request.query_params if name not in known)
        if unknown:
            message = (
                "Unknown query parameter. The parameters this endpoint takes are: "
                f"{', '.join(sorted(known))}."
            )
            raise ValidationError({name: [message] for name in unknown})
        # Every parameter takes one value: a filter given twice would otherwise
        # be narrowed silently to its last value (`?status=ok&status=error`
        # would list the failed calls alone).
        repeated = {
            name: [f"Given {len(values)} times: this parameter takes one value. Give it once."]
            for name, values in request.query_params.lists()
            if len(values) > 1
        }
        if repeated:
            raise ValidationError(repeated)
        # A parameter sent without a value, where an empty text is none of its values,
        # would otherwise count as not sent: `?status=` would list every call as
        # though each matched it.
        fields = self.query_fields()
        empty = {
            name: ["Empty: give a value, or leave the parameter out."]
            for name, value in request.query_params.items()
            if value == "" and name in fields and not getattr(fields[name], "allow_blank", False)
        }
        if empty:
            raise ValidationError(empty)

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
