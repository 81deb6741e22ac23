"""Routes of the provider config, service key and health endpoints under /api/v1/."""

from __future__ import annotations

from django.urls import re_path

from .routers import OptionalSlashRouter
from .views import HealthView, ProviderConfigViewSet, ServiceKeyViewSet

router = OptionalSlashRouter()
router.register("providers", ProviderConfigViewSet, basename="provider")
router.register("service-keys", ServiceKeyViewSet, basename="service-key")

urlpatterns = [
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    *router.urls,
]
