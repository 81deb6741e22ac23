"""Routing override CRUD and route resolution ("which provider would serve this call?")."""

from __future__ import annotations

import copy

from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from llm_providers.api.history import (
    change_history_record_addition,
    change_history_record_change,
    change_history_record_deletion,
)
from llm_providers.api.scoping import TenantScopedAPIMixin
from llm_providers.chat_input import scope_validate
from overrides.models import RoutingOverride
from overrides.routing import route_resolve
from overrides.services import (
    routing_override_create,
    routing_override_delete,
    routing_override_update,
)

from .selectors import routing_override_list
from .serializers import (
    RouteQuerySerializer,
    RouteSerializer,
    RoutingOverrideFilterSerializer,
    RoutingOverrideSerializer,
)

_FILTER_PARAMETERS = [
    OpenApiParameter("customer_id", str, description="Only overrides of this customer id."),
    OpenApiParameter("service_name", str, description="Only overrides of this service."),
]


def _fallback_pairs(fallbacks: list[dict]) -> list[tuple]:
    # Under PATCH, nested defaults are not applied: an omitted model means the default one.
    return [(f["provider_config"], f.get("model", "")) for f in fallbacks]


def _current_fallbacks(override: RoutingOverride) -> list[tuple]:
    return [(f.provider_config_id, f.model) for f in override.fallbacks.all()]


class RoutingOverrideViewSet(
    TenantScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Routing overrides of the tenant, each with its ordered fallbacks."""

    serializer_class = RoutingOverrideSerializer
    query_serializer_classes = {"list": RoutingOverrideFilterSerializer}

    def get_queryset(self):
        if self.schema_generation:
            return RoutingOverride.objects.none()
        filters = {}
        if self.action == "list":
            query = RoutingOverrideFilterSerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            filters = query.validated_data
        return routing_override_list(tenant=self.tenant, **filters)

    @extend_schema(summary="List the tenant's routing overrides", parameters=_FILTER_PARAMETERS)
    def list(self, request):
        return super().list(request)

    @extend_schema(summary="Add a routing override with its fallbacks")
    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        fallbacks = _fallback_pairs(data.pop("fallbacks"))
        with transaction.atomic():
            override = routing_override_create(tenant=self.tenant, fallbacks=fallbacks, **data)
            change_history_record_addition(user=request.user, instance=override)
        return Response(
            self.get_serializer(self._reloaded(override)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(summary="Replace a routing override and its fallbacks")
    def update(self, request, pk=None):
        return self._update(request, partial=False)

    @extend_schema(summary="Change some fields of a routing override")
    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool):
        override = self.get_object()
        serializer = self.get_serializer(override, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        fallbacks = data.pop("fallbacks", None)
        pairs = _fallback_pairs(fallbacks) if fallbacks is not None else None
        changed = [name for name, value in data.items() if getattr(override, name) != value]
        if pairs is not None and [(c.pk, m) for c, m in pairs] != _current_fallbacks(override):
            changed.append("fallbacks")
        with transaction.atomic():
            override = routing_override_update(override=override, data=data, fallbacks=pairs)
            change_history_record_change(user=request.user, instance=override, fields=changed)
        return Response(self.get_serializer(self._reloaded(override)).data)

    @extend_schema(summary="Delete a routing override", responses={204: None})
    def destroy(self, request, pk=None):
        override = self.get_object()
        before = copy.copy(override)
        with transaction.atomic():
            routing_override_delete(override=override)
            change_history_record_deletion(user=request.user, instance=before)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _reloaded(self, override: RoutingOverride) -> RoutingOverride:
        """The override as stored, with its new fallbacks in order."""
        return routing_override_list(tenant=self.tenant).get(pk=override.pk)


class RouteResolveView(TenantScopedAPIMixin, APIView):
    """Which override or default would serve a customer's and a service's calls, and why."""

    query_serializer_class = RouteQuerySerializer

    @extend_schema(
        summary="Resolve the route for a customer and a service",
        parameters=[
            OpenApiParameter("customer_id", str, description="The caller's customer id."),
            OpenApiParameter("service_name", str, description="The calling service."),
        ],
        responses={
            200: RouteSerializer,
            422: OpenApiResponse(
                description="No route (`no_route`): no active override matches and the tenant "
                "has no active default provider config with a default model."
            ),
        },
    )
    def get(self, request):
        query = RouteQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        # What complete() refuses is refused here too, rather than given a route.
        customer_id, service_name = scope_validate(
            customer_id=query.validated_data.get("customer_id", ""),
            service_name=query.validated_data.get("service_name", ""),
        )
        route = route_resolve(
            tenant=self.tenant, customer_id=customer_id, service_name=service_name
        )
        return Response(RouteSerializer(route).data)
