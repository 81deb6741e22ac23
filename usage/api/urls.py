"""Routes of the call log endpoints under /api/v1/."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import CallLogViewSet

# The trailing slash is optional: /calls and /calls/ are the same resource.
router = SimpleRouter(trailing_slash="/?")
router.register("calls", CallLogViewSet, basename="call")

urlpatterns = [*router.urls]
