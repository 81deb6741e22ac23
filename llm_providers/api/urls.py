"""Routes of the provider config, service key, completion, embedding and health endpoints
under /api/v1/."""

from __future__ import annotations

from django.urls import re_path

from .routers import OptionalSlashRouter
from .views import (
    CompletionView,
    EmbeddingView,
    HealthView,
    ProviderConfigViewSet,
    ServiceKeyViewSet,
)

router = OptionalSlashRouter()
router.register("providers", ProviderConfigViewSet, basename="provider")
router.register("service-keys", ServiceKeyViewSet, basename="service-key")

urlpatterns = [
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    re_path(r"^completions/?$", CompletionView.as_view(), name="completions"),
    re_path(r"^embeddings/?$", EmbeddingView.as_view(), name="embeddings"),
    *router.urls,
]
