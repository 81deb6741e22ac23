"""Routes of the call log endpoints under /api/v1/."""

from __future__ import annotations

from llm_providers.api.routers import OptionalSlashRouter

from .views import CallLogViewSet

router = OptionalSlashRouter()
router.register("calls", CallLogViewSet, basename="call")

urlpatterns = [*router.urls]
