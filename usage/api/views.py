"""Call log endpoints: the tenant's provider attempts, newest first, cursor-paginated."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets

from llm_providers.api.pagination import CreatedAtCursorPagination
from llm_providers.api.scoping import TenantScopedAPIMixin
from llm_providers.api.tenancy import ROLE_ADMIN, ROLE_SERVICE, ROLE_VIEWER
from usage.models import CallLog

from .selectors import call_log_list
from .serializers import CallLogFilterSerializer, CallLogSerializer


@extend_schema_view(
    list=extend_schema(
        summary="List the tenant's call logs, newest first",
        parameters=[CallLogFilterSerializer],
    ),
    retrieve=extend_schema(summary="Show one call log"),
)
class CallLogViewSet(
    TenantScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """One row per provider attempt; rows of one request share `request_id`."""

    serializer_class = CallLogSerializer
    pagination_class = CreatedAtCursorPagination
    read_roles = frozenset({ROLE_ADMIN, ROLE_VIEWER, ROLE_SERVICE})
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        if self.schema_generation:
            return CallLog.objects.none()
        filters = {}
        if self.action == "list":
            query = CallLogFilterSerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            filters = query.selector_filters()
        return call_log_list(tenant=self.tenant, **filters)
