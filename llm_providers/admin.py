"""Admin for tenants, memberships, provider configs, prices and service keys, scoped by
tenant, for user tokens, scoped by user, and for users."""

from __future__ import annotations

import copy
import logging
import re
import secrets
from collections import Counter
from datetime import UTC

from django.contrib import admin, messages
from django.contrib.admin.utils import NestedObjects, quote, unquote
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import router, transaction
from django.db.models import CASCADE, Q
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.text import capfirst, get_text_list
from django.views.decorators.debug import sensitive_post_parameters
from rest_framework_api_key.models import APIKey

from .admin_display import EMPTY_VALUE, price_rate_display, utc_display, utc_field_display
from .admin_filters import ChoicesListFilter
from .admin_scoping import (
    EditedFieldsAdmin,
    NulSafeAdmin,
    TenantScopedAdmin,
    edited_fields_save,
    form_edited_fields,
    request_tenant_ids,
)
from .api.history import (
    change_history_record_change,
    change_history_record_deactivation,
    change_history_record_deletion,
)
from .forms import (
    SECRET_FORM_FIELDS,
    AdminLoginForm,
    ProviderConfigAdminForm,
    ServiceKeyAdminForm,
    TenantMembershipAdminForm,
    UserTokenAdminForm,
    provider_type_help_html,
    provider_type_unused_fields,
)
from .models import ModelPrice, ProviderConfig, ServiceKey, Tenant, TenantMembership, UserToken
from .selectors import provider_config_references
from .services import (
    SECRET_FIELDS,
    provider_config_create,
    provider_config_delete,
    provider_config_test_connection,
    provider_config_update,
    service_key_create,
    service_key_revoke,
    user_token_create,
    user_token_revoke,
)

logger = logging.getLogger(__name__)

admin.site.site_header = "LLM Provider Layer"
admin.site.site_title = "LLM Provider Layer"
admin.site.index_title = "Administration"
# Django writes "-" by default; the columns this project writes use "—".
admin.site.empty_value_display = EMPTY_VALUE
admin.site.login_form = AdminLoginForm

# The project's service keys are ServiceKey rows (one tenant each); the
# library's own tenant-less APIKey model is not used.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


# --- users ------------------------------------------------------------------------

_USER_TIMES_IN_UTC = {"last_login": "last_login_utc", "date_joined": "date_joined_utc"}


def _user_times_in_utc(fieldsets):
    """Django's user fieldsets with each time replaced by its UTC display."""
    return tuple(
        (name, {**options, "fields": [_USER_TIMES_IN_UTC.get(f, f) for f in options["fields"]]})
        for name, options in fieldsets
    )


User = get_user_model()
for _model in (User, Group):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class _PasswordOnlyChangeForm(AdminPasswordChangeForm):
    """Django's form of the user's password page, writing the password only.

    Its own save writes the whole user read at the start of the request:
    it would reactivate a user deactivated meanwhile, and insert again one
    deleted meanwhile (the page answers 404 instead).
    """

    def save(self, commit=True):
        user = super().save(commit=False)
        if commit:
            with transaction.atomic(using=user._state.db):
                edited_fields_save(user, ["password"])
        return user


@admin.register(User)
class UserAdmin(EditedFieldsAdmin, NulSafeAdmin, auth_admin.UserAdmin):
    """Django's user admin with the last login and the joining date written in
    UTC, zone named, as the app's pages write times. They are shown, not
    edited: Django sets them, and a hand-edited one would only mislead.

    Its change page writes what it edited only: a user deactivated, or given a
    new password, while someone saves their name stays so; its password page
    writes the password only."""

    change_password_form = _PasswordOnlyChangeForm

    list_display = (*auth_admin.UserAdmin.list_display, "last_login_utc", "date_joined_utc")
    fieldsets = _user_times_in_utc(auth_admin.UserAdmin.fieldsets)
    readonly_fields = tuple(_USER_TIMES_IN_UTC.values())

    last_login_utc = utc_field_display("last_login", "last login")
    date_joined_utc = utc_field_display("date_joined", "date joined")


@admin.register(Group)
class GroupAdmin(EditedFieldsAdmin, NulSafeAdmin, auth_admin.GroupAdmin):
    """Django's group admin, its search safe from a NUL character."""


# --- tenants ------------------------------------------------------------------


class _TenantDeletionCollector(NestedObjects):
    """Collects what deleting tenants takes with it; rows of `counted_models`
    that go by cascade are counted, not loaded."""

    def __init__(self, *args, counted_models, **kwargs):
        super().__init__(*args, **kwargs)
        self.counted_models = counted_models
        self.counts = Counter()

    def related_objects(self, related_model, related_fields, objs):
        related = super().related_objects(related_model, related_fields, objs)
        if related_model not in self.counted_models:
            return related
        # Rows only set to NULL (a call log of a deleted provider config) are
        # not deleted, nor counted; either way none is loaded.
        if all(field.remote_field.on_delete is CASCADE for field in related_fields):
            self.counts[related_model] += related.count()
        return related.none()


@admin.register(Tenant)
class TenantAdmin(EditedFieldsAdmin, NulSafeAdmin):
    """Superusers create and delete tenants; a tenant's admins edit its settings."""

    list_display = ("name", "slug", "is_active", "timezone", "response_cache_ttl_seconds")
    search_fields = ("name", "slug")
    list_filter = ("is_active",)
    prepopulated_fields = {"slug": ("name",)}
    fields = (
        "name",
        "slug",
        "is_active",
        "timezone",
        "response_cache_ttl_seconds",
        "store_prompt_previews",
        "created_at_utc",
    )
    created_at_utc = utc_field_display("created_at", "created")

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(pk__in=request_tenant_ids(request))

    def get_readonly_fields(self, request, obj=None):
        if request.user.is_superuser:
            return ("created_at_utc",)
        # Renaming the slug or deactivating the tenant is a superuser's call.
        return ("slug", "is_active", "created_at_utc")

    def get_prepopulated_fields(self, request, obj=None):
        return self.prepopulated_fields if request.user.is_superuser else {}

    def has_module_permission(self, request):
        if not (request.user.is_active and request.user.is_staff):
            return False
        return request.user.is_superuser or bool(request_tenant_ids(request))

    def has_view_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        return obj is None or request.user.is_superuser or obj.pk in request_tenant_ids(request)

    def has_add_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        if request.user.is_superuser:
            return True
        admin_ids = request_tenant_ids(request, role=TenantMembership.Role.ADMIN)
        return bool(admin_ids) if obj is None else obj.pk in admin_ids

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def get_deleted_objects(self, objs, request):
        """What deleting tenants takes with it, for the confirmation page.

        The records of a tenant's activity (`deleted_with_tenant` admins) go
        with it although their own admins delete nothing; a used tenant has
        millions of them, so they are counted, not loaded and listed.
        """
        counted = {
            model._meta.concrete_model
            for model, model_admin in self.admin_site._registry.items()
            if getattr(model_admin, "deleted_with_tenant", False)
        }
        collector = _TenantDeletionCollector(
            using=router.db_for_write(Tenant), origin=objs, counted_models=counted
        )
        collector.collect(objs)
        perms_needed = set()

        def describe(obj) -> str:
            opts = obj._meta
            model_admin = self.admin_site._registry.get(type(obj))
            if model_admin is not None and not model_admin.has_delete_permission(request, obj):
                perms_needed.add(opts.verbose_name)
            return f"{capfirst(opts.verbose_name)}: {obj}"

        deleted = collector.nested(describe)
        model_count = {
            model._meta.verbose_name_plural: len(instances)
            for model, instances in collector.model_objs.items()
        }
        for model, count in collector.counts.items():
            if not count:
                continue
            plural = model._meta.verbose_name_plural
            model_count[plural] = count
            deleted.append(f"{capfirst(plural)}: {count}")
        protected = [describe(obj) for obj in collector.protected]
        return deleted, model_count, perms_needed, protected

    def save_model(self, request, obj, form, change):
        allowed = self.has_change_permission(request, obj) if change else request.user.is_superuser
        if not allowed:
            raise PermissionDenied("You do not administer this tenant.")
        # On change, only what the page edited (EditedFieldsAdmin): writing the
        # whole row read at the start of the request back would undo a
        # deactivation made meanwhile (e.g. by a superuser) and let the
        # tenant's service keys work again.
        super().save_model(request, obj, form, change)


@admin.register(TenantMembership)
class TenantMembershipAdmin(TenantScopedAdmin):
    """A tenant's admins decide who else may see (viewer) or manage (admin) it."""

    form = TenantMembershipAdminForm
    list_display = ("user", "tenant", "role", "created_at_utc")
    list_filter = (("role", ChoicesListFilter), ("tenant", admin.RelatedOnlyFieldListFilter))
    search_fields = ("user__username", "user__email", "tenant__name")
    list_select_related = ("user", "tenant")

    # A membership removed while its page is saved stays removed (EditedFieldsAdmin):
    # the whole row written back would insert it again, and with it the user's access.
    created_at_utc = utc_field_display("created_at", "created")


# --- provider configs -----------------------------------------------------------


@admin.register(ProviderConfig)
# Error reports (DEBUG pages, mail to ADMINS, error trackers) show the posted
# form with the secrets replaced by stars.
@method_decorator(sensitive_post_parameters(*SECRET_FIELDS), name="changeform_view")
class ProviderConfigAdmin(TenantScopedAdmin):
    """Provider configs; keys are write-only and shown only as a mask.

    Writes go through the provider config services, which validate, encrypt
    and switch the tenant default atomically.
    """

    form = ProviderConfigAdminForm
    list_display = (
        "name",
        "tenant",
        "provider_type",
        "key_display",
        "is_default",
        "is_active",
        "priority",
        "default_model",
        "last_test_display",
        "last_test_latency_ms",
        "last_test_error",
    )
    list_display_links = ("name",)
    list_filter = (
        ("provider_type", ChoicesListFilter),
        "is_active",
        "is_default",
        ("last_test_status", ChoicesListFilter),
        ("tenant", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("tenant",)
    search_fields = ("name", "default_model")
    actions = ["test_connection"]
    readonly_fields = (
        "key_display",
        "key_fingerprint",
        "last_test_status",
        "last_tested_at_utc",
        "last_test_latency_ms",
        "last_test_error",
        "created_at_utc",
        "updated_at_utc",
    )
    last_tested_at_utc = utc_field_display("last_tested_at", "last tested")
    created_at_utc = utc_field_display("created_at", "created")
    updated_at_utc = utc_field_display("updated_at", "updated")

    # --- layout ----------------------------------------------------------------

    def get_fieldsets(self, request, obj=None):
        can_edit = (
            self.has_change_permission(request, obj)
            if obj is not None
            else self.has_add_permission(request)
        )
        secret_inputs = SECRET_FORM_FIELDS if can_edit else ()
        fieldsets = [
            (
                None,
                {
                    "fields": (
                        "tenant",
                        "name",
                        "provider_type",
                        "is_active",
                        "is_default",
                        "priority",
                    ),
                    "description": format_html(
                        'What each provider type needs:<ul class="provider-types">{}</ul>',
                        provider_type_help_html(),
                    ),
                },
            ),
            (
                "Credentials",
                {
                    "fields": ("key_display", *secret_inputs, "aws_region"),
                    "description": "Keys are write-only: they are stored encrypted and shown "
                    "only as a mask. Leave a key field empty to keep the stored key.",
                },
            ),
            (
                "Endpoint and models",
                {"fields": ("base_url", "default_model", "allowed_models", "options")},
            ),
            ("Limits", {"fields": ("rpm_limit", "tpm_limit")}),
        ]
        if obj is not None:
            fieldsets.append(
                (
                    "Last connection test",
                    {
                        "fields": (
                            "last_test_status",
                            "last_tested_at_utc",
                            "last_test_latency_ms",
                            "last_test_error",
                            "key_fingerprint",
                            "created_at_utc",
                            "updated_at_utc",
                        )
                    },
                )
            )
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        readonly = list(self.readonly_fields)
        if obj is not None:
            # A config never moves to another tenant.
            readonly.append("tenant")
        return readonly

    @admin.display(description="Key")
    def key_display(self, obj):
        if obj is None or obj._state.adding:
            return self.get_empty_value_display()
        return obj.key_mask or self.get_empty_value_display()

    @admin.display(description="Last test", ordering="last_tested_at")
    def last_test_display(self, obj):
        if not obj.last_tested_at:
            return "not tested"
        tested_at = timezone.localtime(obj.last_tested_at)
        return f"{obj.get_last_test_status_display()} · {tested_at:%Y-%m-%d %H:%M %Z}"

    # --- writes ----------------------------------------------------------------

    def stored_row_check(self, request, obj) -> None:
        # Not locked here: provider_config_update locks the tenant, then the row,
        # in the order every writer of configs does. Gone is gone, though.
        if not ProviderConfig.objects.filter(pk=obj.pk).exists():
            raise Http404("This provider config was deleted meanwhile; nothing was saved.")

    def save_model(self, request, obj, form, change):
        self.tenant_write_check(request, obj)
        fields = form.config_fields()
        secrets = form.secrets()
        if change:
            # Only the fields the page edited: the others keep what is stored
            # now, also when changed since the page's request read the config.
            edited = {name: value for name, value in fields.items() if name in form.changed_data}
            stored = self.get_queryset(request).filter(pk=obj.pk).first()
            if stored is None:
                self.stored_row_check(request, obj)
                raise PermissionDenied("You do not administer this tenant.")
            try:
                saved = provider_config_update(provider_config=stored, data={**edited, **secrets})
            except ValidationError:
                self.stored_row_check(request, obj)
                raise
        else:
            saved = provider_config_create(tenant=obj.tenant, **fields, **secrets)
        # The admin goes on with `obj` (redirect, log entry): give it the stored state.
        for field in ProviderConfig._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False
        obj._state.db = saved._state.db

    # A config that call logs, overrides or budgets refer to is deactivated,
    # not deleted (provider_config_delete). The confirmation page, the
    # history and the messages say which of the two happens.

    def get_deleted_objects(self, objs, request):
        deletable, kept = [], []
        for config in objs:
            references = provider_config_references(provider_config=config)
            if references:
                kept.append((config, references))
            else:
                deletable.append(config)
        # Only what is really deleted cascades or is protected; a kept config
        # neither blocks the delete nor lists its budgets as going with it.
        deleted_objects, model_count, perms_needed, protected = super().get_deleted_objects(
            deletable, request
        )
        for config, references in kept:
            # Deactivating is a change too: a config of a tenant the user only
            # views refuses the whole action, before anything is written.
            if not self.has_delete_permission(request, config):
                perms_needed.add(self.opts.verbose_name)
            deleted_objects += [
                f"Provider config: {config} — deactivated, not deleted: referred to by",
                references,
            ]
        return deleted_objects, model_count, perms_needed, protected

    def render_delete_form(self, request, context):
        context["deactivated_references"] = provider_config_references(
            provider_config=context["object"]
        )
        return super().render_delete_form(request, context)

    def log_deletions(self, request, queryset):
        # delete_model records each config's history once the service has
        # said whether it deleted or only deactivated it.
        return []

    def delete_model(self, request, obj):
        self._delete_or_deactivate(request, obj)

    def _delete_or_deactivate(self, request, obj) -> bool:
        """Delete `obj`, or deactivate it when something refers to it; True if deleted."""
        self.tenant_write_check(request, obj)
        # Deleting clears the instance's id; the history entry needs it.
        before = copy.copy(obj)
        with transaction.atomic():
            if provider_config_delete(provider_config=obj):
                change_history_record_deletion(user=request.user, instance=before)
                return True
            references = provider_config_references(provider_config=obj)
            change_history_record_deactivation(
                user=request.user, instance=obj, references=references
            )
        self.message_user(
            request,
            f"“{obj.name}” was deactivated instead of deleted: referred to by "
            f"{get_text_list(references, 'and')}.",
            messages.WARNING,
        )
        return False

    def response_delete(self, request, obj_display, obj_id):
        if ProviderConfig.objects.filter(pk=obj_id).exists():
            # Deactivated, not deleted: delete_model said so; no "deleted" message.
            return HttpResponseRedirect(reverse("admin:llm_providers_providerconfig_changelist"))
        return super().response_delete(request, obj_display, obj_id)

    def delete_queryset(self, request, queryset):
        outcomes = [self._delete_or_deactivate(request, config) for config in queryset]
        # Read by message_user: the bulk action's own "Successfully deleted N"
        # would count the deactivated configs as deleted.
        request._provider_config_deletes = (outcomes.count(True), outcomes.count(False))

    def message_user(self, request, message, level=messages.INFO, *args, **kwargs):
        outcome = getattr(request, "_provider_config_deletes", None)
        if outcome is not None and level == messages.SUCCESS:
            del request._provider_config_deletes
            deleted, deactivated = outcome
            message = f"Deleted {deleted} provider config{pluralize(deleted)}."
            if deactivated:
                message += f" Deactivated {deactivated} instead, which other records refer to."
        super().message_user(request, message, level, *args, **kwargs)

    # --- connection tests ------------------------------------------------------

    def _report_check(self, request, config, check) -> None:
        if check.ok:
            count = len(check.models)
            self.message_user(
                request,
                f"“{config.name}”: connection OK in {check.latency_ms} ms, "
                f"{count} model{pluralize(count)} offered.",
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request, f"“{config.name}”: connection failed: {check.error}", messages.ERROR
            )

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request, queryset):
        skipped = 0
        for config in queryset.select_related("tenant"):
            if not self.has_change_permission(request, config):
                skipped += 1
                continue
            check = provider_config_test_connection(provider_config=config)
            self._report_check(request, config, check)
        if skipped:
            self.message_user(
                request,
                f"{skipped} config{pluralize(skipped)} of tenants you only view "
                f"{pluralize(skipped, 'was,were')} not tested.",
                messages.WARNING,
            )

    def test_connection_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        config = self.get_object(request, unquote(object_id))
        if config is None:
            raise Http404("No such provider config.")
        if not self.has_change_permission(request, config):
            raise PermissionDenied("You do not administer this tenant.")
        check = provider_config_test_connection(provider_config=config)
        self._report_check(request, config, check)
        return HttpResponseRedirect(
            reverse("admin:llm_providers_providerconfig_change", args=[quote(config.pk)])
        )

    def get_urls(self):
        urls = [
            path(
                "<path:object_id>/test-connection/",
                self.admin_site.admin_view(self.test_connection_view),
                name="llm_providers_providerconfig_test_connection",
            )
        ]
        return urls + super().get_urls()

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["provider_type_fields"] = {
            "current": obj.provider_type if obj is not None else "",
            "unused": provider_type_unused_fields(),
        }
        return super().render_change_form(request, context, add, change, form_url, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        config = self.get_object(request, unquote(object_id))
        extra_context = {
            **(extra_context or {}),
            "can_test_connection": config is not None
            and self.has_change_permission(request, config),
        }
        return super().change_view(request, object_id, form_url, extra_context)


# --- prices ---------------------------------------------------------------------


# A price's fields, named on the admin's pages by their unit rather than by
# the field's name ("Input per mtok"), and the list's columns showing them.
_PRICE_LABELS = {
    "input_per_mtok": "Input (USD per 1M tokens)",
    "output_per_mtok": "Output (USD per 1M tokens)",
    "cache_read_per_mtok": "Cache read (USD per 1M tokens)",
    "cache_write_per_mtok": "Cache write (USD per 1M tokens)",
}
_PRICE_COLUMNS = {
    "input_per_mtok": "input_price",
    "output_per_mtok": "output_price",
    "cache_read_per_mtok": "cache_read_price",
    "cache_write_per_mtok": "cache_write_price",
}


def _price_column(field_name: str):
    @admin.display(description=_PRICE_LABELS[field_name], ordering=field_name)
    def column(self, obj):
        rate = getattr(obj, field_name)
        # The read-only page writes a callable's None as "None"; the list as "-".
        return self.get_empty_value_display() if rate is None else price_rate_display(rate)

    return column


class _PriceTenantFilter(admin.RelatedOnlyFieldListFilter):
    """The tenants' prices, and the global ones, named as the list's "Applies to" names them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.empty_value_display = "all tenants (global prices)"


@admin.register(ModelPrice)
class ModelPriceAdmin(TenantScopedAdmin):
    """Price overrides. Global rows (no tenant) are read-only except to superusers."""

    list_display = (
        "provider_type",
        "model",
        "scope",
        *_PRICE_COLUMNS.values(),
        "effective_from",
    )
    list_filter = (("provider_type", ChoicesListFilter), ("tenant", _PriceTenantFilter))
    search_fields = ("model",)
    list_select_related = ("tenant",)

    input_price = _price_column("input_per_mtok")
    output_price = _price_column("output_per_mtok")
    cache_read_price = _price_column("cache_read_per_mtok")
    cache_write_price = _price_column("cache_write_per_mtok")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and db_field.name in _PRICE_LABELS:
            formfield.label = _PRICE_LABELS[db_field.name]
        return formfield

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fields
        # A page that only shows the price (a global one, to a tenant admin)
        # labels it as the form does.
        return [_PRICE_COLUMNS.get(f, f) for f in fields]

    def undeletable_selection_message(self, request, undeletable) -> str:
        # The base selection leaves global prices out: only superusers delete them.
        global_count = undeletable.filter(tenant__isnull=True).count()
        parts = []
        if global_count:
            parts.append(
                f"{global_count} global price{pluralize(global_count)} (all tenants) "
                f"{pluralize(global_count, 'was,were')} not selected for deletion: only a "
                "superuser deletes global prices."
            )
        viewed = undeletable.filter(tenant__isnull=False)
        if viewed.exists():
            parts.append(super().undeletable_selection_message(request, viewed))
        return " ".join(parts)

    @admin.display(description="Applies to", ordering="tenant__name")
    def scope(self, obj):
        return obj.tenant.name if obj.tenant_id else "all tenants"

    def get_changeform_initial_data(self, request):
        # A new price usually applies from today: the UTC day, as prices are dated.
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("effective_from", timezone.now().astimezone(UTC).date())
        return initial

    def get_queryset(self, request):
        queryset = admin.ModelAdmin.get_queryset(self, request)
        if request.user.is_superuser:
            return queryset
        # Global prices are listed too, without a checkbox: they are not of a
        # tenant the user administers (`actionable_rows`), and only a superuser
        # deletes them.
        return self.actionable_annotate(
            request,
            queryset.filter(
                Q(tenant__in=self._visible_tenant_ids(request)) | Q(tenant__isnull=True)
            ),
        )

    def has_view_permission(self, request, obj=None):
        if obj is not None and obj.tenant_id is None:
            return self.has_module_permission(request)
        return super().has_view_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.tenant_id is None:
            return self.has_module_permission(request) and request.user.is_superuser
        return super().has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "tenant" and not request.user.is_superuser:
            # Only superusers set global prices.
            formfield.required = True
            formfield.empty_label = None
            formfield.help_text = "The tenant this price applies to."
        return formfield


# --- service keys ---------------------------------------------------------------


# The add form of a key carries a token of its own; the key it created is
# remembered under it for a day, so that the same form sent again (a reload
# of the page showing the secret, Back and Save) adds no second key.
SUBMISSION_FIELD = "_submission"
SUBMISSION_TTL_SECONDS = 24 * 3600
_SUBMISSION_PENDING = "pending"
_SUBMISSION_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


class _SecretShownOnce:
    """A new key's secret shown in the answer to the POST that creates it.

    Not through Django's messages: they wait for the next page in a cookie
    (signed, not encrypted) or in the session, where proxies, browser tools
    and session backups would keep the secret. The page is not cached and
    offers the links the save buttons would have followed.

    Each add form is sent at most once: its token is claimed in the cache
    before the key is created, and a form sent again leads to the key it
    created (its secret is not shown again). Without a cache that answers,
    a form sent again adds a second key, as a plain admin form would.
    """

    add_form_template = "admin/llm_providers/secret_add_form.html"

    def keep_secret_for_page(self, obj, secret: str, label: str) -> None:
        obj._secret_shown_once = (secret, label)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if add:
            context["submission_field"] = SUBMISSION_FIELD
            context["submission_token"] = secrets.token_urlsafe(24)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _submission_cache_key(self, request) -> str | None:
        token = request.POST.get(SUBMISSION_FIELD, "")
        if not _SUBMISSION_TOKEN.fullmatch(token):
            return None
        return f"admin-add:{self.opts.label_lower}:{request.user.pk}:{token}"

    def add_view(self, request, form_url="", extra_context=None):
        cache_key = self._submission_cache_key(request) if request.method == "POST" else None
        if cache_key is not None:
            try:
                claimed = cache.add(cache_key, _SUBMISSION_PENDING, SUBMISSION_TTL_SECONDS)
                earlier = None if claimed else cache.get(cache_key)
            except Exception as exc:
                logger.warning(
                    "Admin add form not checked for a second submission: cache unavailable (%s)",
                    type(exc).__name__,
                )
                cache_key = None
            else:
                if not claimed:
                    return self._response_sent_again(request, earlier)
        request._secret_created_pk = None
        try:
            response = super().add_view(request, form_url, extra_context)
        finally:
            if cache_key is not None:
                self._submission_settle(cache_key, request._secret_created_pk)
        return response

    def _submission_settle(self, cache_key: str, created_pk) -> None:
        try:
            if created_pk is None:
                # Nothing created (a validation error): the form may be sent again.
                cache.delete(cache_key)
            else:
                cache.set(cache_key, str(created_pk), SUBMISSION_TTL_SECONDS)
        except Exception as exc:
            logger.warning(
                "Admin add form's submission not recorded: cache unavailable (%s)",
                type(exc).__name__,
            )

    def _response_sent_again(self, request, earlier):
        opts = self.opts
        changelist_url = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        if earlier in (None, _SUBMISSION_PENDING):
            self.message_user(
                request,
                f"This form is being sent already: the {opts.verbose_name} it adds and its "
                "secret are shown on the page that answers it. No second one was added.",
                messages.WARNING,
            )
            return HttpResponseRedirect(changelist_url)
        created = self.get_queryset(request).filter(pk=earlier).first()
        if created is None:
            self.message_user(
                request,
                f"This form was sent already, and the {opts.verbose_name} it added is gone. "
                f"No second one was added: add a new {opts.verbose_name} with a new form.",
                messages.WARNING,
            )
            return HttpResponseRedirect(changelist_url)
        self.message_user(
            request,
            f"This form was sent already: it added {opts.verbose_name} “{created}”, whose "
            "secret was shown once, on the page that answered it, and is not shown again. "
            f"No second one was added. If the secret was not stored, revoke this "
            f"{opts.verbose_name} and add a new one.",
            messages.WARNING,
        )
        return HttpResponseRedirect(
            reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change",
                args=[quote(created.pk)],
                current_app=self.admin_site.name,
            )
        )

    def response_add(self, request, obj, post_url_continue=None):
        request._secret_created_pk = obj.pk
        shown = obj.__dict__.pop("_secret_shown_once", None)
        if shown is None:
            return super().response_add(request, obj, post_url_continue)
        secret, label = shown
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "title": f"{capfirst(opts.verbose_name)} created",
            "object": obj,
            "secret": secret,
            "secret_label": label,
            "secret_size": len(secret) + 2,
            "change_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change",
                args=[quote(obj.pk)],
                current_app=self.admin_site.name,
            ),
            "changelist_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_changelist",
                current_app=self.admin_site.name,
            ),
            "add_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_add", current_app=self.admin_site.name
            ),
        }
        request.current_app = self.admin_site.name
        response = TemplateResponse(request, "admin/llm_providers/secret_created.html", context)
        add_never_cache_headers(response)
        return response


class _KeyTimesInUtc:
    """A key's creation and expiry written in UTC, zone named, as on the usage
    pages; a live key's expiry is edited in UTC too (the server's zone, see
    the form's label)."""

    @admin.display(description="created (UTC)", ordering="created")
    def created_utc(self, obj):
        return utc_display(obj.created)

    @admin.display(description="expires (UTC)", ordering="expiry_date")
    def expires_utc(self, obj):
        return utc_display(obj.expiry_date)


def _key_edited_fields(obj, form) -> list[str]:
    """What the change page edited of a key (its name, expiry, revocation).

    `revoked` is written only to revoke: the key was read at the start of
    the request, and writing its whole row back would undo a revocation made
    meanwhile (through the API or the admin's action), letting a revoked key
    authenticate again.
    """
    fields = [name for name in form_edited_fields(obj, form.changed_data) if name != "revoked"]
    if obj.revoked:
        fields.append("revoked")
    return fields


@admin.register(ServiceKey)
class ServiceKeyAdmin(_SecretShownOnce, _KeyTimesInUtc, TenantScopedAdmin):
    """Keys with which internal programs call the API for one tenant.

    The secret is shown once, on the page that answers the creation;
    afterwards only the prefix is known.
    """

    form = ServiceKeyAdminForm
    list_display = ("name", "tenant", "prefix", "created_utc", "expires_utc", "expired", "revoked")
    list_filter = ("revoked", ("tenant", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "prefix")
    list_select_related = ("tenant",)
    actions = ["revoke"]

    @admin.display(description="Expired", boolean=True)
    def expired(self, obj):
        return obj.has_expired

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("tenant", "name", "expiry_date")
        expiry = "expires_utc" if obj.revoked else "expiry_date"
        return ("tenant", "name", "prefix", "created_utc", expiry, "revoked")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        if obj.revoked:
            return ("tenant", "name", "prefix", "created_utc", "expires_utc", "revoked")
        return ("tenant", "prefix", "created_utc")

    def edited_fields(self, request, obj, form) -> list[str]:
        return _key_edited_fields(obj, form)

    def save_model(self, request, obj, form, change):
        self.tenant_write_check(request, obj)
        if change:
            super().save_model(request, obj, form, change)
            return
        created, secret = service_key_create(
            tenant=obj.tenant, name=obj.name, expiry_date=obj.expiry_date
        )
        for field in ServiceKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding = False
        obj._state.db = created._state.db
        self.keep_secret_for_page(obj, secret, f"The secret of service key “{obj.name}” is:")

    @admin.action(description="Revoke selected service keys", permissions=["change"])
    def revoke(self, request, queryset):
        revoked = skipped = 0
        for service_key in queryset:
            if not self.has_change_permission(request, service_key):
                skipped += 1
            else:
                with transaction.atomic():
                    if service_key_revoke(service_key=service_key):
                        change_history_record_change(
                            user=request.user, instance=service_key, fields=["revoked"]
                        )
                        revoked += 1
        self.message_user(request, f"Revoked {revoked} service key{pluralize(revoked)}.")
        if skipped:
            self.message_user(
                request,
                f"{skipped} key{pluralize(skipped)} of tenants you only view "
                f"{pluralize(skipped, 'was,were')} not revoked.",
                messages.WARNING,
            )


# --- user tokens -------------------------------------------------------------------


@admin.register(UserToken)
class UserTokenAdmin(_SecretShownOnce, _KeyTimesInUtc, EditedFieldsAdmin, NulSafeAdmin):
    """API tokens with which people's scripts act as them.

    Each staff user sees and manages their own tokens; a superuser everyone's.
    The token is shown once, on the page that answers the creation;
    afterwards only its prefix is known.
    """

    form = UserTokenAdminForm
    list_display = ("name", "user", "prefix", "created_utc", "expires_utc", "expired", "revoked")
    list_filter = ("revoked",)
    search_fields = ("name", "prefix")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    actions = ["revoke"]

    @admin.display(description="Expired", boolean=True)
    def expired(self, obj):
        return obj.has_expired

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(user=request.user)

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        # A user who sees their own tokens only needs no owner column.
        return columns if request.user.is_superuser else tuple(c for c in columns if c != "user")

    def get_fields(self, request, obj=None):
        if obj is None:
            owner = ("user",) if request.user.is_superuser else ()
            return (*owner, "name", "expiry_date")
        expiry = "expires_utc" if obj.revoked else "expiry_date"
        return ("user", "name", "prefix", "created_utc", expiry, "revoked")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        if obj.revoked:
            return ("user", "name", "prefix", "created_utc", "expires_utc", "revoked")
        return ("user", "prefix", "created_utc")

    def _owns(self, request, obj) -> bool:
        return obj is None or request.user.is_superuser or obj.user_id == request.user.pk

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request) and self._owns(request, obj)

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        return self.has_view_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self.has_view_permission(request, obj)

    def edited_fields(self, request, obj, form) -> list[str]:
        return _key_edited_fields(obj, form)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        owner = obj.user if request.user.is_superuser else request.user
        created, token = user_token_create(user=owner, name=obj.name, expiry_date=obj.expiry_date)
        for field in UserToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding = False
        obj._state.db = created._state.db
        self.keep_secret_for_page(
            obj, token, f"The token “{obj.name}” of {owner.get_username()} is:"
        )

    @admin.action(description="Revoke selected user tokens", permissions=["change"])
    def revoke(self, request, queryset):
        revoked = 0
        # The queryset is the user's own tokens (all of them for a superuser).
        for user_token in queryset:
            with transaction.atomic():
                if user_token_revoke(user_token=user_token):
                    change_history_record_change(
                        user=request.user, instance=user_token, fields=["revoked"]
                    )
                    revoked += 1
        self.message_user(request, f"Revoked {revoked} user token{pluralize(revoked)}.")
