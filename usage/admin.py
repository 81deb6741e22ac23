"""Admin for usage: budgets and alerts (tenant admins edit), read-only DailyUsage and CallLog
(fast on millions of rows: no full counts, capped counting paginator, no facets), and the
per-tenant usage dashboard."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.views.decorators.debug import sensitive_post_parameters
from kombu.exceptions import OperationalError as KombuOperationalError

from llm_providers.admin_display import utc_display
from llm_providers.admin_filters import ChoicesListFilter
from llm_providers.admin_scoping import TenantScopedAdmin
from llm_providers.encryption import UnreadableSecret
from llm_providers.forms import secret_inputs_ask_again
from llm_providers.models import ProviderConfig, Tenant
from llm_providers.selectors import tenant_list_for_user

from .aggregation import daily_usage_roll_up_unscheduled
from .alerts import alert_deliveries_retry, alerts_check
from .charts import budget_gauge, daily_cost_chart, spend_bars
from .models import AlertDelivery, Budget, CallLog, CostAlert, DailyUsage, UsageDashboard
from .money import usd_format, usd_format_beside, usd_format_brief, usd_format_exact
from .periods import zone
from .selectors import usage_dashboard
from .tasks import refresh_tenant_usage
from .webhooks import webhook_label

logger = logging.getLogger(__name__)

# --- large tables --------------------------------------------------------------


class CappedCountPaginator(Paginator):
    """Counts at most USAGE_ADMIN_COUNT_CAP rows (a LIMITed subquery), never the whole table.

    Past the cap the admin says "more than 10000" and offers the pages of the
    first rows; filters narrow the rest down.
    """

    @cached_property
    def count(self):
        cap = settings.USAGE_ADMIN_COUNT_CAP
        # Any cap+1 matching rows will do: in the list's order PostgreSQL would
        # walk the time index, or sort the whole table, to find the first ones.
        counted = self.object_list.order_by()[: cap + 1].count()
        self.count_capped = counted > cap
        return min(counted, cap)

    count_capped = False


class _TextFilter(admin.SimpleListFilter):
    """A list filter with a text box (exact match): no DISTINCT query over the table.

    Exact, not "starts with" nor "contains": no index serves these columns, so
    a value few rows have already reads every row (of the tenant) to find
    them; the box's placeholder says so.
    """

    template = "admin/usage/text_filter.html"
    lookup: str = ""
    placeholder = "exact value"

    def lookups(self, request, model_admin):
        return ()

    def has_output(self):
        return True

    def choices(self, changelist):
        yield {
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "placeholder": self.placeholder,
            "other_params": [
                (name, value)
                for name, value in changelist.params.items()
                if name != self.parameter_name
            ],
        }

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        return queryset.filter(**{self.lookup: value}) if value else queryset


class ServiceFilter(_TextFilter):
    title = "service"
    parameter_name = "service"
    placeholder = "exact service name"
    lookup = "service_name"


class CustomerFilter(_TextFilter):
    title = "customer"
    parameter_name = "customer"
    placeholder = "exact customer id"
    lookup = "customer_id"


class DailyModelFilter(_TextFilter):
    title = "model"
    parameter_name = "model"
    placeholder = "exact model name"
    lookup = "model"


class CallModelFilter(_TextFilter):
    title = "model"
    parameter_name = "model"
    placeholder = "exact model name"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        if not value:
            return queryset
        return queryset.filter(model_answered=value) | queryset.filter(
            model_answered="", model_requested=value
        )


# The fewest leading digits of a request id the call log search takes: each
# digit fewer matches 16 times as many calls, and 3 would already match one
# call in 4,096, a search for no request in particular.
REQUEST_ID_PREFIX_MIN = 4
_UUID_SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
_HEX_DIGITS = frozenset("0123456789abcdef")


def request_id_prefix_bounds(term: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The lowest and highest request id that start with `term`, or None.

    `term` is how a UUID is written, cut short: with its dashes where a UUID
    has them, or without any. UUIDs sort as their hexadecimal digits do (in
    PostgreSQL's uuid type and as SQLite's 32 hexadecimal characters alike),
    so the ids starting with it are those between the two bounds.
    """
    text = term.lower()
    if "-" in text:
        if len(text) > len(_UUID_SHAPE) or any(
            (char == "-") != (shape == "-") for char, shape in zip(text, _UUID_SHAPE, strict=False)
        ):
            return None
        text = text.replace("-", "")
    if not REQUEST_ID_PREFIX_MIN <= len(text) <= 32 or not set(text) <= _HEX_DIGITS:
        return None
    return uuid.UUID(text.ljust(32, "0")), uuid.UUID(text.ljust(32, "f"))


class UtcTimeFilter(admin.DateFieldListFilter):
    """Today, past 7 days, ... counted in UTC (the server's zone), and titled so."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "time (UTC)"


class CallDayFilter(_TextFilter):
    title = "day (UTC, YYYY-MM-DD)"
    parameter_name = "day"
    placeholder = "YYYY-MM-DD"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        if not value:
            return queryset
        try:
            day = date.fromisoformat(value)
        except ValueError:
            messages.error(request, f"“{value}” is not a day; write it as YYYY-MM-DD.")
            return queryset.none()
        start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        if day == date.max:
            # The calendar's last day has no next day to end before.
            return queryset.filter(created_at__gte=start)
        return queryset.filter(created_at__gte=start, created_at__lt=start + timedelta(days=1))


class ProviderFilter(admin.SimpleListFilter):
    """The provider configs of the tenants the user sees (never other tenants')."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        configs = ProviderConfig.objects.select_related("tenant").order_by("tenant__name", "name")
        if not request.user.is_superuser:
            configs = configs.filter(tenant_id__in=model_admin._visible_tenant_ids(request))
        return [("none", "(no provider config)")] + [
            (str(c.pk), f"{c.name} · {c.tenant.name}") for c in configs
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if value not in {choice for choice, _ in self.lookup_choices}:
            # Not a config the user sees (mistyped, deleted, another tenant's).
            messages.error(
                request, f"“{value}” is not one of the provider configs listed under “By provider”."
            )
            return queryset.none()
        if value == "none":
            return queryset.filter(provider_config__isnull=True)
        return queryset.filter(provider_config_id=uuid.UUID(value))


class _LargeTableChangeList(ChangeList):
    """Sorts by the sortable columns only, also when a typed URL asks for another."""

    def get_ordering_field(self, field_name):
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)

    def get_ordering(self, request, queryset):
        asked = self.params.get(ORDER_VAR)
        if asked and not any(
            self.get_ordering_field(self.list_display[int(index)]) is not None
            for index in (part.rpartition("-")[2] for part in asked.split("."))
            if index.isdigit() and int(index) < len(self.list_display)
        ):
            # Nothing asked for can be sorted by: the list's own order, not the id's.
            params, self.params = (
                self.params,
                {k: v for k, v in self.params.items() if k != ORDER_VAR},
            )
            try:
                return super().get_ordering(request, queryset)
            finally:
                self.params = params
        return super().get_ordering(request, queryset)


class _ReadOnlyLargeTableAdmin(TenantScopedAdmin):
    deleted_with_tenant = True
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    # Tenants and provider configs are read for the rows of the page, one query
    # each, never joined: a join widens every row of the table before the sort
    # that picks the page.
    list_select_related = ()

    # A page shows these in place of the stored fields: money in dollars,
    # every stored decimal kept, as on the budget page ($0.0001875, not
    # 0.000187500000 under "Cost usd").
    shown_instead = {"cost_usd": "cost_exact"}

    def get_changelist(self, request, **kwargs):
        return _LargeTableChangeList

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        replacements = set(self.shown_instead.values())
        return [self.shown_instead.get(f, f) for f in fields if f not in replacements]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch("tenant", queryset=Tenant.objects.only("id", "name")),
                Prefetch(
                    "provider_config",
                    queryset=ProviderConfig.objects.only("id", "tenant_id", "name"),
                ),
            )
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DailyUsage)
class DailyUsageAdmin(_ReadOnlyLargeTableAdmin):
    list_display = (
        "day",
        "tenant",
        "provider",
        "model",
        "service_name",
        "customer_id",
        "request_count",
        "error_count",
        "unpriced_count",
        "input_tokens",
        "output_tokens",
        "cost",
    )
    list_filter = (
        ("day", admin.DateFieldListFilter),
        ProviderFilter,
        DailyModelFilter,
        ServiceFilter,
        CustomerFilter,
    )
    ordering = ("-day", "-cost_usd")
    readonly_fields = ("cost_exact", "updated_at_utc")
    shown_instead = {
        **_ReadOnlyLargeTableAdmin.shown_instead,
        "updated_at": "updated_at_utc",
    }
    # Not by tenant or provider: that joins every row to sort by a name.
    sortable_by = tuple(f for f in list_display if f not in ("tenant", "provider"))

    def changelist_view(self, request, extra_context=None):
        # Without a beat, the list would read empty until the dashboard had
        # rolled the call logs up: it rolls them up itself, as the dashboard does.
        if daily_usage_roll_up_unscheduled():
            alerts_check()
        if not self._sees_one_tenant(request):
            return super().changelist_view(request, extra_context)
        # Rows are the tenant's local days, so the day filter's "Today" and
        # "Past 7 days" count in its time zone, not the server's.
        (zone_name,) = Tenant.objects.filter(pk__in=self._visible_tenant_ids(request)).values_list(
            "timezone", flat=True
        )
        with timezone.override(zone(zone_name)):
            return super().changelist_view(request, extra_context)

    @admin.display(description="provider")
    def provider(self, obj):
        # Days recomputed since a config's deletion have no config (its call logs
        # lost the link), older ones a dangling id: both read "(deleted)", as on
        # the usage dashboard.
        if obj.provider_config_id is None or obj.provider_config is None:
            return f"(deleted) {obj.provider_type}"
        return obj.provider_config.name

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, obj):
        # The stored sum counts priced calls only ($0 ones included): a row with
        # unpriced calls and none priced has an unknown cost, not $0, and the
        # unpriced calls of a priced row are not in its cost (as in the API and
        # on the dashboard; its "unpriced count" column says how many).
        return usd_format(obj.cost_known)

    # In UTC, named, as on the call log page.
    @admin.display(description="updated (UTC)")
    def updated_at_utc(self, obj):
        return utc_display(obj.updated_at)

    @admin.display(description="Cost (USD)")
    def cost_exact(self, obj):
        return obj.cost_text


@admin.register(CallLog)
class CallLogAdmin(_ReadOnlyLargeTableAdmin):
    list_display = (
        "created_at_utc",
        "tenant",
        "provider",
        "model_display",
        "service_name",
        "customer_id",
        "status",
        "input_tokens",
        "output_tokens",
        "cost",
        "latency_ms",
    )
    list_filter = (
        ("created_at", UtcTimeFilter),
        CallDayFilter,
        ProviderFilter,
        CallModelFilter,
        ("status", ChoicesListFilter),
        ServiceFilter,
        CustomerFilter,
    )
    # Only by time, which has an index: any other order reads and sorts every row.
    sortable_by = ("created_at_utc",)
    search_fields = ("request_id",)
    search_help_text = (
        "Search by request id: the whole id, or how it starts (at least its first "
        f"{REQUEST_ID_PREFIX_MIN} characters, e.g. 1f0c3a7e). Service, customer and model "
        "filters match the exact value."
    )
    exclude = ("prompt_preview", "created_at")
    readonly_fields = ("created_at_utc", "cost_exact")

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return ["created_at_utc", *(f for f in fields if f != "created_at_utc")]

    # In UTC, named, like the day filter: the admin's own format reads
    # "Nov. 22, 2026, 5:51 p.m." in no stated zone.
    @admin.display(description="time (UTC)", ordering="created_at")
    def created_at_utc(self, obj):
        return utc_display(obj.created_at)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(request_id=uuid.UUID(term)), False
        except ValueError:
            pass
        bounds = request_id_prefix_bounds(term)
        if bounds is None:
            messages.error(
                request,
                f"“{term}” is not a request id, nor how one starts: a request id is a UUID "
                "(32 hexadecimal digits, with or without dashes), searched by at least its "
                f"first {REQUEST_ID_PREFIX_MIN}.",
            )
            return queryset.none(), False
        # A range of the unique (request_id, attempt) index: as fast as the whole id.
        low, high = bounds
        return queryset.filter(request_id__gte=low, request_id__lte=high), False

    @admin.display(description="provider")
    def provider(self, obj):
        return obj.provider_config.name if obj.provider_config else obj.provider_type or "—"

    # Not named `model`: ModelAdmin.model is the model class, which shadows a
    # method of that name, and the column would show a blank CallLog per row.
    @admin.display(description="model")
    def model_display(self, obj):
        return obj.model_answered or obj.model_requested

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, obj):
        # A refused or failed call had nothing to price: no cost, not an unknown one.
        if obj.cost_usd is None and obj.price_source != CallLog.PriceSource.UNKNOWN:
            return "—"
        return usd_format(obj.cost_usd)

    @admin.display(description="Cost (USD)")
    def cost_exact(self, obj):
        if obj.cost_usd is None and obj.price_source != CallLog.PriceSource.UNKNOWN:
            return "—"
        return usd_format_exact(obj.cost_usd)


# --- budgets -------------------------------------------------------------------


class BudgetAdminForm(forms.ModelForm):
    alert_percentages = forms.CharField(
        required=False,
        # Named in the change history as the API names it, not by its attribute.
        label="Alert percentages",
        help_text="Alert when spend crosses these percentages of the limit, e.g. 50, 80, 100.",
    )
    webhook_url = forms.CharField(
        required=False,
        label="Webhook URL",
        # render_value=False: a form sent back with an error in another field
        # does not print the typed URL (its path is the secret) into the page.
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "new-password", "size": 80}
        ),
        help_text="Write-only: receives a JSON POST with a Slack-compatible “text”.",
    )
    clear_webhook_url = forms.BooleanField(required=False, label="Remove the webhook URL")

    class Meta:
        model = Budget
        fields = (
            "tenant",
            "name",
            "is_active",
            "period",
            "limit_usd",
            "action",
            "provider_config",
            "service_name",
            "customer_id",
            "alert_percentages",
            "alert_emails",
            "webhook_url",
        )
        labels = {"limit_usd": "Limit (USD)"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The stored URL is a secret: never render it back.
        self.initial["webhook_url"] = ""
        percentages = self.instance.alert_percentages if self.instance.pk else [50, 80, 100]
        if isinstance(percentages, list):
            self.initial["alert_percentages"] = ", ".join(str(p) for p in percentages)
        current = self.instance.webhook_url if self.instance.pk else None
        field = self.fields["webhook_url"]
        if isinstance(current, UnreadableSecret):
            field.help_text = "The stored URL cannot be decrypted: enter it again."
        elif current:
            field.help_text = f"Set ({webhook_label(current)}). Leave empty to keep it."

    def full_clean(self):
        super().full_clean()
        secret_inputs_ask_again(
            self,
            {
                "webhook_url": "Enter the URL again: a typed webhook URL is never sent "
                "back to the page."
            },
        )

    def _get_validation_exclusions(self):
        exclude = super()._get_validation_exclusions()
        if "tenant" not in self.fields and self.instance.tenant_id:
            # On change the tenant is read-only, hence not a form field; the
            # name must still be unique within it.
            exclude.discard("tenant")
        return exclude

    def clean_alert_percentages(self):
        raw = self.cleaned_data.get("alert_percentages") or ""
        # "50, 80%", "50;80" and "50 % 80 %" alike.
        parts = [
            p for p in raw.replace("%", " ").replace(";", ",").replace(" ", ",").split(",") if p
        ]
        # Plain digits: int() alone also takes "1_000", "+50" and other scripts' digits.
        if not all(p.isascii() and p.isdigit() for p in parts):
            raise forms.ValidationError(
                "Write whole percentages separated by commas, e.g. 50, 80, 100."
            )
        return [int(p) for p in parts]

    def clean(self):
        data = super().clean()
        new = (data.get("webhook_url") or "").strip()
        if data.get("clear_webhook_url"):
            data["webhook_url"] = None
        elif new:
            data["webhook_url"] = new
        else:
            data["webhook_url"] = self.instance.webhook_url if self.instance.pk else None
        # Left empty on a stored budget: the save keeps the URL stored then.
        self.webhook_url_kept = (
            bool(self.instance.pk) and not data.get("clear_webhook_url") and not new
        )
        return data


@admin.register(Budget)
@method_decorator(sensitive_post_parameters("webhook_url"), name="changeform_view")
class BudgetAdmin(TenantScopedAdmin):
    form = BudgetAdminForm
    list_display = (
        "name",
        "tenant",
        "scope",
        "period",
        "limit",
        "action",
        "is_active",
        "webhook",
    )
    list_filter = (
        ("period", ChoicesListFilter),
        ("action", ChoicesListFilter),
        "is_active",
    )
    list_select_related = ("tenant", "provider_config")
    search_fields = ("name", "service_name", "customer_id")

    def edited_fields(self, request, obj, form) -> list[str]:
        # The URL is written when typed or removed. Left empty, it is not: the
        # save keeps the one stored then, not one read before another was
        # saved elsewhere.
        fields = super().edited_fields(request, obj, form)
        if "clear_webhook_url" in form.changed_data and "webhook_url" not in fields:
            fields.append("webhook_url")
        return fields

    def get_fieldsets(self, request, obj=None):
        can_edit = (
            self.has_change_permission(request, obj)
            if obj is not None
            else self.has_add_permission(request)
        )
        # The URL is a secret: a page that shows fields as text (a viewer's)
        # would print it whole, so it gets the masked label instead.
        if not can_edit:
            webhook_fields = ("webhook",)
        elif obj is not None and (obj.webhook_url_readable or obj.webhook_unreadable):
            webhook_fields = ("webhook_url", "clear_webhook_url")
        else:
            # Nothing stored, nothing to remove.
            webhook_fields = ("webhook_url",)
        # A read-only page shows the limit and percentages as the form takes
        # them, not as stored (0.5000, [50, 80, 100]).
        limit = "limit_usd" if can_edit else "limit_display"
        percentages = "alert_percentages" if can_edit else "alert_percentages_display"
        return (
            (None, {"fields": ("tenant", "name", "is_active")}),
            ("Limit", {"fields": ("period", limit, "action")}),
            (
                "Scope (empty fields mean any)",
                {"fields": ("provider_config", "service_name", "customer_id")},
            ),
            ("Alerts", {"fields": (percentages, "alert_emails", *webhook_fields)}),
        )

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            # A budget never moves to another tenant: its alerts, counters and
            # the old tenant's cached budgets would still belong to the old one.
            readonly.append("tenant")
        return readonly

    @admin.display(description="scope")
    def scope(self, obj):
        return obj.scope_label

    # A limit is written as set: $10.005 must not read $10.01.
    @admin.display(description="limit", ordering="limit_usd")
    def limit(self, obj):
        return usd_format_exact(obj.limit_usd)

    @admin.display(description="Limit (USD)")
    def limit_display(self, obj):
        return usd_format_exact(obj.limit_usd)

    @admin.display(description="Alert percentages")
    def alert_percentages_display(self, obj):
        return ", ".join(str(p) for p in obj.alert_percentages or []) or "—"

    @admin.display(description="webhook")
    def webhook(self, obj):
        if obj.webhook_unreadable:
            return "unreadable — enter it again"
        return webhook_label(obj.webhook_url) if obj.webhook_url_readable else "—"


# --- alerts --------------------------------------------------------------------


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    extra = 0
    can_delete = False
    fields = (
        "channel",
        "target_label",
        "state",
        "attempts",
        "last_error",
        "next_attempt_at_utc",
        "delivered_at_utc",
    )
    readonly_fields = fields

    @admin.display(description="next attempt (UTC)")
    def next_attempt_at_utc(self, obj):
        return utc_display(obj.next_attempt_at)

    @admin.display(description="delivered (UTC)")
    def delivered_at_utc(self, obj):
        return utc_display(obj.delivered_at)

    # The parent admin has already checked the tenant.
    def has_view_permission(self, request, obj=None):
        return True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CostAlert)
class CostAlertAdmin(TenantScopedAdmin):
    list_display = ("created_at_utc", "tenant", "kind", "message", "deliveries_state")
    list_filter = (("kind", ChoicesListFilter), ("created_at", UtcTimeFilter))
    list_select_related = ("tenant",)
    inlines = (AlertDeliveryInline,)
    readonly_fields = (
        "tenant",
        "kind",
        "budget",
        "provider_config",
        "period_key",
        "percent_display",
        "spend_display",
        "limit_display",
        "message",
        "created_at_utc",
    )
    fields = readonly_fields
    actions = ("retry_deliveries",)
    deleted_with_tenant = True
    show_facets = admin.ShowFacets.NEVER

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("deliveries")

    def changelist_view(self, request, extra_context=None):
        # Alerts follow an aggregation: without a beat the list runs the
        # roll-up and the alert checks first, as the dashboard does.
        if daily_usage_roll_up_unscheduled():
            alerts_check()
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_retry_permission(self, request):
        return bool(self._admin_tenant_ids(request))

    @admin.display(description="time (UTC)", ordering="created_at")
    def created_at_utc(self, obj):
        return utc_display(obj.created_at)

    # As the budget page writes them, not as stored (0.002261500000, 0.0001).
    @admin.display(description="Percent")
    def percent_display(self, obj):
        return "—" if obj.kind == CostAlert.Kind.UNPRICED else f"{obj.percent}%"

    @admin.display(description="Spend (USD)")
    def spend_display(self, obj):
        return "—" if obj.spend_usd is None else usd_format_exact(obj.spend_usd)

    @admin.display(description="Limit (USD)")
    def limit_display(self, obj):
        return "—" if obj.limit_usd is None else usd_format_exact(obj.limit_usd)

    @admin.display(description="deliveries")
    def deliveries_state(self, obj):
        return ", ".join(d.summary for d in obj.deliveries.all()) or "no recipients"

    @admin.action(description="Retry undelivered deliveries now", permissions=["retry"])
    def retry_deliveries(self, request, queryset):
        skipped = 0
        if not request.user.is_superuser:
            administered = self.actionable_selection(request, queryset)
            skipped = queryset.count() - administered.count()
            queryset = administered
        if skipped:
            self.message_user(
                request,
                f"{skipped} alert{pluralize(skipped)} of tenants you only view "
                f"{pluralize(skipped, 'was,were')} not retried.",
                level=messages.WARNING,
            )
            if not queryset.exists():
                return
        retried = alert_deliveries_retry(alerts=queryset)
        if retried.sending:
            self.message_user(
                request,
                f"{retried.sending} deliver{pluralize(retried.sending, 'y is,ies are')} being "
                "sent right now, so "
                f"{pluralize(retried.sending, 'it was,they were')} not retried: the outcome "
                "shows under the alert once the attempt ends.",
                level=messages.WARNING,
            )
        if retried.queued:
            self.message_user(
                request,
                f"{retried.queued} deliver{pluralize(retried.queued, 'y,ies')} queued for "
                "another attempt.",
            )
        elif not retried.sending:
            self.message_user(
                request,
                "Nothing to retry: every delivery of the selected alerts has gone out.",
                level=messages.WARNING,
            )


# --- the dashboard -------------------------------------------------------------


@admin.register(UsageDashboard)
class UsageDashboardAdmin(TenantScopedAdmin):
    """The usage dashboard: its changelist lists the user's tenants, one page per tenant."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [
            path(
                "<uuid:tenant_id>/",
                self.admin_site.admin_view(self.dashboard_view),
                name="usage_usagedashboard_tenant",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        tenants = list(tenant_list_for_user(request.user).order_by("name"))
        if len(tenants) == 1:
            return HttpResponseRedirect(
                reverse("admin:usage_usagedashboard_tenant", args=[tenants[0].pk])
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage dashboard",
            "opts": self.model._meta,
            "tenants": tenants,
        }
        return TemplateResponse(request, "admin/usage/dashboard_index.html", context)

    def dashboard_view(self, request, tenant_id):
        # Another tenant's dashboard does not exist, as far as this user knows.
        if tenant_id not in self._visible_tenant_ids(request):
            raise Http404("No such tenant.")
        tenant = get_object_or_404(Tenant, pk=tenant_id)
        can_refresh = tenant.pk in self._admin_tenant_ids(request)
        if request.method == "POST":
            if not can_refresh:
                raise PermissionDenied
            data = usage_dashboard(tenant=tenant)
            try:
                refresh_tenant_usage.delay(
                    str(tenant.pk), data.first_day.isoformat(), data.last_day.isoformat()
                )
            except KombuOperationalError as exc:
                logger.warning("Usage recompute for tenant %s not queued: %s", tenant.pk, exc)
                self.message_user(
                    request,
                    "The task queue cannot be reached, so nothing was recomputed; the figures "
                    "are those of the last aggregation. Try again once the broker is back.",
                    level=messages.ERROR,
                )
            else:
                self.message_user(request, "Usage of the last 30 days is being recomputed.")
            return HttpResponseRedirect(request.path)
        # No worker and no beat (the embedded default): nothing rolls call
        # logs up on a schedule, so the page runs the scheduled roll-up itself
        # (the recent days, and the days of every call logged since the last
        # run, however old: a demo left for a weekend), then the alert checks
        # that follow every aggregation.
        rolled_up_now = daily_usage_roll_up_unscheduled()
        if rolled_up_now:
            alerts_check()
        data = usage_dashboard(tenant=tenant)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Usage — {tenant.name}",
            "opts": self.model._meta,
            "dashboard": data,
            "tenant": tenant,
            "can_refresh": can_refresh,
            "rolled_up_now": rolled_up_now,
            "total_cost": usd_format_brief(data.total_cost),
            "total_cost_exact": usd_format_exact(data.total_cost),
            "daily_chart": daily_cost_chart(data.daily),
            "breakdowns": [
                ("By provider", spend_bars(data.by_provider)),
                ("By model", spend_bars(data.by_model)),
                ("By service", spend_bars(data.by_service)),
                ("By customer", spend_bars(data.by_customer)),
            ],
            "budgets": [
                {
                    "status": status,
                    # Precise enough to compare with the limit next to it.
                    "spend": usd_format_beside(status.spend_usd, status.budget.limit_usd),
                    "spend_exact": usd_format_exact(status.spend_usd),
                    # A limit is what its admin typed: shown as typed, not rounded.
                    "limit": usd_format_exact(status.budget.limit_usd),
                    "gauge": budget_gauge(status.percent),
                }
                for status in data.budgets
            ],
        }
        return TemplateResponse(request, "admin/usage/dashboard.html", context)
