"""Call logs, usage reports, budgets and cost alerts of the tenant.

Usage reports read DailyUsage (recomputed from call logs every few minutes),
so they answer in milliseconds whatever the number of call logs. Days are
the tenant's local days.
"""

from __future__ import annotations

import copy

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from llm_providers.api.history import (
    change_history_record_addition,
    change_history_record_change,
    change_history_record_deletion,
)
from llm_providers.api.pagination import CreatedAtCursorPagination
from llm_providers.api.scoping import TenantScopedAPIMixin
from llm_providers.api.tenancy import ROLE_ADMIN, ROLE_SERVICE, ROLE_VIEWER
from llm_providers.selectors import provider_config_list
from usage.aggregation import daily_usage_roll_up_unscheduled
from usage.models import Budget, CallLog, CostAlert, email_list_parse
from usage.periods import local_date, zone
from usage.selectors import (
    budget_list,
    cost_alert_list,
    usage_by_group,
    usage_daily,
    usage_of_provider_config,
    usage_summary,
)
from usage.services import budget_create, budget_delete, budget_update

from .selectors import call_log_list
from .serializers import (
    BudgetSerializer,
    CallLogFilterSerializer,
    CallLogSerializer,
    CostAlertFilterSerializer,
    CostAlertSerializer,
    ProviderUsageSerializer,
    UsageByCustomerSerializer,
    UsageByModelSerializer,
    UsageByProviderSerializer,
    UsageByServiceSerializer,
    UsageDailySerializer,
    UsageGroupLimitSerializer,
    UsageSummarySerializer,
    UsageWindowSerializer,
)

READERS = frozenset({ROLE_ADMIN, ROLE_VIEWER, ROLE_SERVICE})


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
    query_serializer_classes = {"list": CallLogFilterSerializer}
    read_roles = READERS
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


# --- usage reports -------------------------------------------------------------


class _UsageReportView(TenantScopedAPIMixin, APIView):
    """A usage report over a window of the tenant's local days (`days` or `start`/`end`)."""

    read_roles = READERS
    query_serializer_class = UsageWindowSerializer

    def window(self) -> dict:
        """The validated query: `first_day`, `last_day` (and `limit` where there is one).

        Without a broker nothing aggregates on a schedule: the report rolls the
        call logs up first, as the admin's usage dashboard does.
        """
        today = local_date(timezone.now(), zone(self.tenant.timezone))
        query = self.query_serializer_class(
            data=self.request.query_params, context={"today": today}
        )
        query.is_valid(raise_exception=True)
        daily_usage_roll_up_unscheduled()
        return query.validated_data


class UsageSummaryView(_UsageReportView):
    """Totals of the tenant's usage over a window of days."""

    @extend_schema(
        summary="Usage totals over the last N days or a date range",
        parameters=[UsageWindowSerializer],
        responses={200: UsageSummarySerializer},
    )
    def get(self, request):
        report = usage_summary(tenant=self.tenant, **self.window())
        return Response(UsageSummarySerializer(report).data)


class _UsageGroupView(_UsageReportView):
    group = ""
    serializer_class = None

    def get(self, request):
        report = usage_by_group(tenant=self.tenant, group=self.group, **self.window())
        return Response(self.serializer_class(report).data)


def _group_schema(label: str, serializer, parameters=UsageWindowSerializer):
    return extend_schema(
        summary=f"Usage per {label}, most expensive first, with totals",
        parameters=[parameters],
        responses={200: serializer},
    )


class UsageByProviderView(_UsageGroupView):
    """Usage per provider config."""

    group = "provider"
    serializer_class = UsageByProviderSerializer

    @_group_schema("provider config", UsageByProviderSerializer)
    def get(self, request):
        return super().get(request)


class UsageByModelView(_UsageGroupView):
    """Usage per model (the model that answered)."""

    group = "model"
    serializer_class = UsageByModelSerializer

    @_group_schema("model", UsageByModelSerializer)
    def get(self, request):
        return super().get(request)


class UsageByServiceView(_UsageGroupView):
    """Usage per calling service."""

    group = "service"
    serializer_class = UsageByServiceSerializer

    @_group_schema("service", UsageByServiceSerializer)
    def get(self, request):
        return super().get(request)


class UsageByCustomerView(_UsageGroupView):
    """Usage per customer, the `limit` most expensive ones."""

    group = "customer"
    serializer_class = UsageByCustomerSerializer
    query_serializer_class = UsageGroupLimitSerializer

    @_group_schema("customer", UsageByCustomerSerializer, UsageGroupLimitSerializer)
    def get(self, request):
        return super().get(request)


class UsageDailyView(_UsageReportView):
    """One row per day of the window, days without usage included as zeros."""

    @extend_schema(
        summary="Usage per day, every day of the window (zeros where there was none)",
        parameters=[UsageWindowSerializer],
        responses={200: UsageDailySerializer},
    )
    def get(self, request):
        report = usage_daily(tenant=self.tenant, **self.window())
        return Response(UsageDailySerializer(report).data)


class ProviderUsageView(_UsageReportView):
    """Usage of one provider config: totals, per model and per day."""

    @extend_schema(
        summary="Usage of one provider config: totals, per model and per day",
        parameters=[UsageWindowSerializer],
        responses={200: ProviderUsageSerializer},
    )
    def get(self, request, pk):
        config = get_object_or_404(provider_config_list(tenant=self.tenant), pk=pk)
        report = usage_of_provider_config(
            tenant=self.tenant, provider_config=config, **self.window()
        )
        return Response(ProviderUsageSerializer(report).data)


# --- budgets -------------------------------------------------------------------


def _budget_changed_fields(budget: Budget, data: dict) -> list[str]:
    """Fields `data` changes; a given webhook URL always counts (its value is never compared)."""
    changed = []
    for name, value in data.items():
        if name == "webhook_url":
            if value or budget.webhook_url:
                changed.append(name)
        elif name == "alert_emails":
            # Stored as text, separated however it was entered (the admin's form
            # keeps newlines): the same addresses are no change.
            if email_list_parse(budget.alert_emails) != email_list_parse(value):
                changed.append(name)
        elif getattr(budget, name) != value:
            changed.append(name)
    return changed


@extend_schema_view(
    list=extend_schema(summary="List the tenant's budgets"),
    retrieve=extend_schema(summary="Show a budget (the webhook URL is never shown)"),
    create=extend_schema(summary="Add a budget"),
    update=extend_schema(summary="Replace a budget; an omitted webhook URL is kept"),
    partial_update=extend_schema(summary="Change some fields of a budget"),
    destroy=extend_schema(summary="Delete a budget; its alerts stay", responses={204: None}),
)
class BudgetViewSet(
    TenantScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Spending limits of the tenant: everyone reads them, admins write them."""

    serializer_class = BudgetSerializer
    read_roles = READERS
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        if self.schema_generation:
            return Budget.objects.none()
        return budget_list(tenant=self.tenant)

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            budget = budget_create(tenant=self.tenant, **serializer.service_data())
            change_history_record_addition(user=request.user, instance=budget)
        return Response(self.get_serializer(budget).data, status=status.HTTP_201_CREATED)

    def update(self, request, pk=None):
        return self._update(request, partial=False)

    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool):
        budget = self.get_object()
        serializer = self.get_serializer(budget, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.service_data()
        changed = _budget_changed_fields(budget, data)
        with transaction.atomic():
            budget = budget_update(budget=budget, data=data)
            change_history_record_change(user=request.user, instance=budget, fields=changed)
        return Response(self.get_serializer(budget).data)

    def destroy(self, request, pk=None):
        budget = self.get_object()
        before = copy.copy(budget)
        with transaction.atomic():
            change_history_record_deletion(user=request.user, instance=before)
            budget_delete(budget=budget)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- alerts --------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List the tenant's cost alerts, newest first",
        parameters=[CostAlertFilterSerializer],
    ),
    retrieve=extend_schema(summary="Show one cost alert and its deliveries"),
)
class CostAlertViewSet(
    TenantScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Alerts that fired (budget thresholds, provider error rates, unpriced usage)."""

    serializer_class = CostAlertSerializer
    pagination_class = CreatedAtCursorPagination
    query_serializer_classes = {"list": CostAlertFilterSerializer}
    read_roles = READERS
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        if self.schema_generation:
            return CostAlert.objects.none()
        filters = {}
        if self.action == "list":
            query = CostAlertFilterSerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            filters = query.selector_filters()
        return cost_alert_list(tenant=self.tenant, **filters)
