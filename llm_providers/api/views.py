"""Provider config and service key endpoints, completions and embeddings, and the health check.

Views validate input with a serializer, call one service or selector, record
API changes in the admin history, and serialize the result.
"""

from __future__ import annotations

import copy

from django.conf import settings
from django.db import transaction
from django.http import JsonResponse
from django.views import defaults
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from llm_providers.completion import complete, embed, stream
from llm_providers.models import ProviderConfig, ServiceKey
from llm_providers.selectors import provider_config_list, provider_config_references
from llm_providers.services import (
    PROVIDER_CONFIG_FIELDS,
    SECRET_FIELDS,
    provider_config_create,
    provider_config_delete,
    provider_config_test_connection,
    provider_config_update,
    service_key_create,
    service_key_revoke,
)

from .base import APIViewMixin, MethodCheckedFirstMixin
from .events import (
    EVENT_STREAM,
    REQUEST_ID_HEADER,
    SSE_EVENT_SCHEMA,
    completion_event_response,
)
from .exception_handlers import error_body
from .health import health_check
from .history import (
    change_history_record_addition,
    change_history_record_change,
    change_history_record_deactivation,
    change_history_record_deletion,
)
from .negotiation import ContentNegotiation, JSONFallbackNegotiation
from .scoping import TenantScopedAPIMixin
from .selectors import service_key_list
from .serializers import (
    CompletionRequestSerializer,
    CompletionResultSerializer,
    ConnectionCheckSerializer,
    EmbeddingRequestSerializer,
    EmbeddingResultSerializer,
    HealthSerializer,
    ProviderConfigSerializer,
    ServiceKeyCreatedSerializer,
    ServiceKeySerializer,
)
from .tenancy import ROLE_ADMIN, ROLE_SERVICE, ROLE_VIEWER


def _changed_fields(instance, data: dict) -> list[str]:
    """Names of the fields `data` changes on `instance`; a given secret always counts."""
    changed = []
    for name, value in data.items():
        if name in SECRET_FIELDS:
            if value:
                changed.append(name)
        elif name in PROVIDER_CONFIG_FIELDS and getattr(instance, name) != value:
            changed.append(name)
    return changed


@extend_schema_view(
    list=extend_schema(summary="List the tenant's provider configs (keys masked)"),
    create=extend_schema(summary="Add a provider config"),
    retrieve=extend_schema(summary="Show a provider config (key masked)"),
    update=extend_schema(summary="Replace a provider config; omitted keys are kept"),
    partial_update=extend_schema(summary="Change some fields of a provider config"),
)
class ProviderConfigViewSet(
    TenantScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Provider configs of the tenant. Service keys may read them; only admins write."""

    serializer_class = ProviderConfigSerializer
    read_roles = frozenset({ROLE_ADMIN, ROLE_VIEWER, ROLE_SERVICE})
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def get_queryset(self):
        if self.schema_generation:
            return ProviderConfig.objects.none()
        return provider_config_list(tenant=self.tenant).order_by("priority", "name", "id")

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            config = provider_config_create(tenant=self.tenant, **serializer.validated_data)
            change_history_record_addition(user=request.user, instance=config)
        return Response(self.get_serializer(config).data, status=status.HTTP_201_CREATED)

    def update(self, request, pk=None):
        return self._update(request, partial=False)

    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool):
        config = self.get_object()
        serializer = self.get_serializer(config, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changed = _changed_fields(config, data)
        with transaction.atomic():
            config = provider_config_update(provider_config=config, data=data)
            change_history_record_change(user=request.user, instance=config, fields=changed)
        return Response(self.get_serializer(config).data)

    @extend_schema(
        summary="Delete a provider config, or deactivate it when calls or overrides use it",
        responses={
            204: OpenApiResponse(description="Deleted."),
            200: OpenApiResponse(
                ProviderConfigSerializer,
                description="Call logs or overrides refer to it: deactivated instead, "
                "so that history keeps its provider.",
            ),
        },
    )
    def destroy(self, request, pk=None):
        config = self.get_object()
        # Deleting clears the instance's id; the history entry needs it.
        before = copy.copy(config)
        # Deleting a config deactivated already changes nothing, and records nothing.
        already_off = not (config.is_active or config.is_default)
        with transaction.atomic():
            deleted = provider_config_delete(provider_config=config)
            if deleted:
                change_history_record_deletion(user=request.user, instance=before)
            elif not already_off:
                change_history_record_deactivation(
                    user=request.user,
                    instance=config,
                    references=provider_config_references(provider_config=config),
                )
        if deleted:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(self.get_serializer(config).data, status=status.HTTP_200_OK)

    @extend_schema(
        summary="Test the connection: authenticate and list the provider's models",
        request=None,
        responses={200: ConnectionCheckSerializer},
    )
    @action(detail=True, methods=["post"], url_path="test")
    def test(self, request, pk=None):
        config = self.get_object()
        check = provider_config_test_connection(provider_config=config)
        return Response(ConnectionCheckSerializer(check).data)


@extend_schema_view(
    list=extend_schema(summary="List the tenant's service keys (prefixes only)"),
    retrieve=extend_schema(summary="Show a service key (prefix only)"),
)
class ServiceKeyViewSet(
    TenantScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Service keys of the tenant: admins create and revoke them, viewers see them."""

    serializer_class = ServiceKeySerializer
    lookup_field = "prefix"
    lookup_value_regex = "[A-Za-z0-9]{1,8}"

    def get_queryset(self):
        if self.schema_generation:
            return ServiceKey.objects.none()
        return service_key_list(tenant=self.tenant)

    @extend_schema(
        summary="Create a service key; the response shows its secret this once",
        request=ServiceKeySerializer,
        responses={201: ServiceKeyCreatedSerializer},
    )
    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            service_key, secret = service_key_create(
                tenant=self.tenant, **serializer.validated_data
            )
            change_history_record_addition(user=request.user, instance=service_key)
        service_key.key = secret
        # The secret is in this response only: no browser or proxy cache may keep it.
        return Response(
            ServiceKeyCreatedSerializer(service_key).data,
            status=status.HTTP_201_CREATED,
            headers={"Cache-Control": "no-store"},
        )

    @extend_schema(
        summary="Revoke a service key for good",
        request=None,
        responses={200: ServiceKeySerializer},
    )
    @action(detail=True, methods=["post"], url_path="revoke")
    def revoke(self, request, prefix=None):
        service_key = self.get_object()
        with transaction.atomic():
            if service_key_revoke(service_key=service_key):
                change_history_record_change(
                    user=request.user, instance=service_key, fields=["revoked"]
                )
        return Response(self.get_serializer(service_key).data)


# --- completions and embeddings ---------------------------------------------------

# Programs call completions with a service key; a tenant admin may try them out.
CALLERS = frozenset({ROLE_ADMIN, ROLE_SERVICE})

_CALL_ERRORS = {
    413: OpenApiResponse(
        description="The body is larger than the server accepts (`request_too_large`); "
        "send fewer or shorter texts per call."
    ),
    422: OpenApiResponse(
        description="No route (`no_route`), or the provider refused the content "
        "(`content_refused`)."
    ),
    429: OpenApiResponse(
        description="`budget_exceeded` (a blocking budget), `rate_limited` (the provider "
        "config's rpm/tpm limit), `provider_rate_limited` (the provider), or `throttled` "
        "(this credential); `Retry-After` says when to retry."
    ),
    502: OpenApiResponse(
        description="The provider failed (`upstream_unavailable`, `provider_authentication`, "
        "`provider_error`, ...)."
    ),
    503: OpenApiResponse(
        description="Budget counters unreachable while a blocking budget applies "
        "(`budget_unavailable`)."
    ),
    504: OpenApiResponse(description="The provider did not answer in time (`provider_timeout`)."),
    500: OpenApiResponse(
        description="An unexpected error (`server_error`: logged, with no details given), or "
        "a stored provider key that does not decrypt with the configured keys "
        "(`secret_unreadable`)."
    ),
}


class CompletionView(TenantScopedAPIMixin, APIView):
    """A chat completion for the tenant: routed, gated by budgets and limits, priced, logged."""

    read_roles = CALLERS
    write_roles = CALLERS
    content_negotiation_class = JSONFallbackNegotiation

    @extend_schema(
        summary="Complete a chat (JSON, or server-sent events with stream=true)",
        request=CompletionRequestSerializer,
        responses={
            (200, "application/json"): OpenApiResponse(
                CompletionResultSerializer,
                description="stream=false: the answer as JSON. stream=true: server-sent "
                'events, `chunk` (`{"text": ...}`) per piece of text, then one `done` event '
                "(usage, cost, provider, model, request id); a failure after the first chunk is "
                "an `error` event in the error shape, before `done`. While no event has been "
                "written for STREAM_KEEPALIVE_SECONDS (10 s by default) the stream carries an "
                "SSE comment line, `: keep-alive`, which SSE clients ignore; a failure before "
                "any text that comes after the first of them is an `error` event.",
            ),
            (200, EVENT_STREAM): OpenApiResponse(SSE_EVENT_SCHEMA),
            **_CALL_ERRORS,
        },
    )
    def post(self, request):
        serializer = CompletionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        arguments = serializer.completion_arguments()
        if serializer.validated_data["stream"]:
            return completion_event_response(
                stream(tenant=self.tenant, **arguments),
                keepalive_seconds=settings.STREAM_KEEPALIVE_SECONDS,
            )
        result = complete(tenant=self.tenant, **arguments)
        return Response(
            CompletionResultSerializer(result).data,
            headers={REQUEST_ID_HEADER: str(result.request_id)},
        )


class EmbeddingView(TenantScopedAPIMixin, APIView):
    """Embeddings for the tenant, on the primary target of its route (never a fallback)."""

    read_roles = CALLERS
    write_roles = CALLERS

    @extend_schema(
        summary="Embed texts with a model",
        request=EmbeddingRequestSerializer,
        responses={200: EmbeddingResultSerializer, **_CALL_ERRORS},
    )
    def post(self, request):
        serializer = EmbeddingRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = embed(tenant=self.tenant, **serializer.validated_data)
        return Response(
            EmbeddingResultSerializer(result).data,
            headers={REQUEST_ID_HEADER: str(result.request_id)},
        )


class HealthView(APIViewMixin, APIView):
    """Whether the database, the cache and the Celery broker answer.

    Public and not throttled, for load balancers and monitors; it names
    components and their state, never addresses or credentials.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(
        summary="Health of the database, cache and broker",
        responses={
            200: OpenApiResponse(HealthSerializer, description="Every configured component is up."),
            503: OpenApiResponse(HealthSerializer, description="A configured component is down."),
        },
    )
    def get(self, request):
        report = health_check()
        return Response(
            HealthSerializer(report).data,
            status=status.HTTP_200_OK if report.ok else status.HTTP_503_SERVICE_UNAVAILABLE,
        )


class SchemaView(MethodCheckedFirstMixin, SpectacularAPIView):
    """The OpenAPI schema (/api/schema/): 405 and 406 as the API's views answer them
    (a 405 in the schema's first format, YAML)."""

    content_negotiation_class = ContentNegotiation


API_PATH_PREFIX = "/api/"


def _under_api(request) -> bool:
    return request.path.startswith(API_PATH_PREFIX) or request.path == API_PATH_PREFIX.rstrip("/")


def not_found(request, exception):
    """The project's 404 handler: the API's error shape under /api/, Django's page elsewhere."""
    if _under_api(request):
        return JsonResponse(error_body(code="not_found", message="Not found."), status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request, exception):
    """The project's 400 handler for requests refused before any view (a Host header not
    in ALLOWED_HOSTS): the API's error shape under /api/, Django's page elsewhere."""
    if _under_api(request):
        return JsonResponse(
            error_body(code="bad_request", message="The request was refused as malformed."),
            status=400,
        )
    return defaults.bad_request(request, exception)


def server_error(request):
    """The project's 500 handler: the API's error shape under /api/, Django's page elsewhere."""
    if _under_api(request):
        return JsonResponse(
            error_body(code="server_error", message="An unexpected error occurred."), status=500
        )
    return defaults.server_error(request)
