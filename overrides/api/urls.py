"""Routes of the override and route resolution endpoints under /api/v1/."""

from __future__ import annotations

from django.urls import re_path

from llm_providers.api.routers import OptionalSlashRouter

from .views import RouteResolveView, RoutingOverrideViewSet

router = OptionalSlashRouter()
router.register("overrides", RoutingOverrideViewSet, basename="override")

urlpatterns = [
    re_path(r"^routes/resolve/?$", RouteResolveView.as_view(), name="route-resolve"),
    *router.urls,
]
