"""Routes of the call log, usage report, budget and alert endpoints under /api/v1/."""

from __future__ import annotations

from django.urls import re_path

from llm_providers.api.routers import OptionalSlashRouter

from .views import (
    BudgetViewSet,
    CallLogViewSet,
    CostAlertViewSet,
    ProviderUsageView,
    UsageByCustomerView,
    UsageByModelView,
    UsageByProviderView,
    UsageByServiceView,
    UsageDailyView,
    UsageSummaryView,
)

router = OptionalSlashRouter()
router.register("calls", CallLogViewSet, basename="call")
router.register("budgets", BudgetViewSet, basename="budget")
router.register("alerts", CostAlertViewSet, basename="alert")

urlpatterns = [
    re_path(r"^usage/summary/?$", UsageSummaryView.as_view(), name="usage-summary"),
    re_path(r"^usage/by-provider/?$", UsageByProviderView.as_view(), name="usage-by-provider"),
    re_path(r"^usage/by-model/?$", UsageByModelView.as_view(), name="usage-by-model"),
    re_path(r"^usage/by-service/?$", UsageByServiceView.as_view(), name="usage-by-service"),
    re_path(r"^usage/by-customer/?$", UsageByCustomerView.as_view(), name="usage-by-customer"),
    re_path(r"^usage/daily/?$", UsageDailyView.as_view(), name="usage-daily"),
    re_path(
        r"^providers/(?P<pk>[0-9a-fA-F-]{32,36})/usage/?$",
        ProviderUsageView.as_view(),
        name="provider-usage",
    ),
    *router.urls,
]
