"""Admin for routing overrides: tenant-scoped, fallbacks edited inline in order."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from llm_providers.admin_display import utc_display
from llm_providers.admin_scoping import TenantScopedAdmin, TenantScopedInline

from .models import RoutingFallback, RoutingOverride
from .services import routing_overrides_lock


def _active_configs_only(formfield):
    if formfield is not None:
        formfield.queryset = formfield.queryset.filter(is_active=True).select_related("tenant")
    return formfield


def _configs_in_use_offered(form_class, override, config_ids):
    """Keep offering the configs an override already names, also once retired:
    otherwise its form could not be saved, not even to switch it off."""
    field = form_class.base_fields.get("provider_config")
    if field is not None and config_ids:
        in_use = field.queryset.model.objects.filter(pk__in=config_ids, tenant=override.tenant_id)
        field.queryset = (field.queryset | in_use).distinct()
    return form_class


class RoutingOverrideAdminForm(forms.ModelForm):
    def clean(self):
        cleaned_data = super().clean()
        tenant = cleaned_data.get("tenant") if "tenant" in self.fields else None
        tenant_id = tenant.pk if tenant is not None else self.instance.tenant_id
        if tenant_id:
            # Held until the admin's transaction commits, so the unique checks
            # that follow see any write of the same scope that raced this page.
            routing_overrides_lock(tenant_id=tenant_id)
        return cleaned_data

    def _get_validation_exclusions(self):
        exclude = super()._get_validation_exclusions()
        if "tenant" not in self.fields and self.instance.tenant_id:
            # On change the tenant is read-only, hence not a form field; the
            # customer and service must still be unique within it.
            exclude.discard("tenant")
        return exclude


# Said of a fallback repeated on the page and of one stored already alike.
FALLBACK_ONCE = "A provider config and model may be a fallback of this override once only"
_FALLBACK_UNIQUE_CHECK = {"override", "provider_config", "model"}


def _stored_fallback_named(exc: ValidationError) -> ValidationError:
    # Django's own names the model and its fields ("Routing fallback with this
    # Override, Provider config and Model already exists.").
    errors = exc.update_error_dict({})
    for field, field_errors in errors.items():
        errors[field] = [
            ValidationError(f"{FALLBACK_ONCE}: this one is a fallback of it already.", "unique")
            if set((getattr(error, "params", None) or {}).get("unique_check", ()))
            == _FALLBACK_UNIQUE_CHECK
            else error
            for error in field_errors
        ]
    return ValidationError(errors)


class RoutingFallbackAdminForm(forms.ModelForm):
    def validate_unique(self):
        super().validate_unique()
        if self.instance.override_id is None:
            return
        # Model validation leaves the inline's foreign key out, and with it the
        # unique constraint: a row repeating a fallback stored since the page
        # was opened would reach the database.
        exclude = self._get_validation_exclusions() - {"override"}
        try:
            self.instance.validate_constraints(exclude=exclude)
        except ValidationError as exc:
            self._update_errors(_stored_fallback_named(exc))


class RoutingFallbackFormSet(BaseInlineFormSet):
    def get_unique_error_message(self, unique_check):
        # Django's own names the fields ("provider_config and model").
        if set(unique_check) - {self.fk.name} == {"provider_config", "model"}:
            return f"{FALLBACK_ONCE}: remove or change the repeated row."
        return super().get_unique_error_message(unique_check)


class RoutingFallbackInline(TenantScopedInline):
    model = RoutingFallback
    form = RoutingFallbackAdminForm
    formset = RoutingFallbackFormSet
    extra = 0
    fields = ("position", "provider_config", "model")
    ordering = ("position", "id")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "provider_config":
            formfield = _active_configs_only(formfield)
        return formfield

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        if obj is not None:
            in_use = [f.provider_config_id for f in obj.fallbacks.all()]
            _configs_in_use_offered(formset.form, obj, in_use)
        return formset


@admin.register(RoutingOverride)
class RoutingOverrideAdmin(TenantScopedAdmin):
    form = RoutingOverrideAdminForm
    list_display = (
        "tenant",
        "customer_id",
        "service_name",
        "provider_config",
        "model",
        "fallback_count",
        "is_active",
        "updated_at_utc",
    )
    list_filter = ("is_active", ("tenant", admin.RelatedOnlyFieldListFilter))
    search_fields = ("customer_id", "service_name", "model", "note")
    list_select_related = ("tenant", "provider_config")
    fieldsets = (
        (
            None,
            {
                "description": (
                    "An override sends the calls of a customer, of a service, or of a customer "
                    "in one service to a provider config and model other than the tenant’s "
                    "default provider config. When several overrides match a call, the most "
                    "specific wins: customer and service, then customer, then service; with "
                    "none, the tenant’s default provider config serves it."
                ),
                "fields": ("tenant", "customer_id", "service_name"),
            },
        ),
        (
            "Target",
            {
                "description": (
                    "Fallbacks (below) are tried in order of position, lowest first, when the "
                    "target fails after its retries (provider down, timeout, rate limit, key "
                    "refused, or a budget of its provider config used up). A request the "
                    "provider rejects as invalid would fail everywhere, so it is not sent on; "
                    "embeddings use the target only. No fallback is tried once the call’s "
                    "deadline has no time left for it, nor for a stream that has already sent "
                    "part of its answer: the caller gets the error."
                ),
                "fields": ("provider_config", "model", "is_active", "note"),
            },
        ),
    )
    inlines = (RoutingFallbackInline,)

    # In UTC, named, as on the other admin pages.
    @admin.display(description="updated (UTC)", ordering="updated_at")
    def updated_at_utc(self, obj):
        return utc_display(obj.updated_at)

    @admin.display(description="fallbacks")
    def fallback_count(self, obj):
        return obj.fallbacks.count()

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("fallbacks")

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            # An override never moves to another tenant: its fallbacks (not all
            # of them need be on the form) would still name the old tenant's configs.
            readonly.append("tenant")
        return readonly

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "provider_config":
            formfield = _active_configs_only(formfield)
        return formfield

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            _configs_in_use_offered(form, obj, [obj.provider_config_id])
        return form
