"""Routes of the override and route resolution endpoints under /api/v1/."""

from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from .views import RouteResolveView, RoutingOverrideViewSet

# The trailing slash is optional: /overrides and /overrides/ are one resource.
router = SimpleRouter(trailing_slash="/?")
router.register("overrides", RoutingOverrideViewSet, basename="override")

urlpatterns = [
    re_path(r"^routes/resolve/?$", RouteResolveView.as_view(), name="route-resolve"),
    *router.urls,
]
