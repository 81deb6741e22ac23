"""The base of every tenant-owned admin: users see their tenants only.

Permissions come from TenantMembership, not from Django's model permissions:
a staff user with an *admin* membership may add, change and delete the
tenant's objects; a *viewer* may only look; a superuser may do everything.
Choices of tenants and of tenant-owned objects in forms are limited to the
tenants the user administers, so a forged POST naming another tenant's id
fails validation and nothing is saved. A list offers its actions on the rows
the user may act on only (`actionable_rows`): the others are listed without
a checkbox, and each action leaves them out of a forged selection too.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import BooleanField, Case, Q, Value, When
from django.http import Http404
from django.template.defaultfilters import pluralize

from .admin_display import provider_config_choices_labelled
from .models import ProviderConfig, Tenant, TenantMembership
from .selectors import tenant_ids_for_user

# The annotation that marks, on a list's rows, those the user may act on.
_ACTIONABLE = "actionable_here"


def request_tenant_ids(request, *, role: str | None = None) -> set:
    """The tenants of the request's user (with `role`, only those), once per request."""
    attribute = f"_tenant_ids_{role or 'any'}"
    cached = getattr(request, attribute, None)
    if cached is None:
        cached = tenant_ids_for_user(request.user, role=role)
        setattr(request, attribute, cached)
    return cached


def edited_row_lock(obj):
    """Lock the row of `obj`, read at the start of its change page's request; 404 if gone.

    The admin's change view runs in a transaction; the lock (FOR NO KEY
    UPDATE, as the update itself takes; completions' FOR KEY SHARE on a
    tenant does not wait for it) holds until the page is saved. Returns the
    stored row.
    """
    stored = _stored_rows(obj).select_for_update(no_key=True).first()
    if stored is None:
        raise _deleted_meanwhile(obj)
    return stored


def _stored_rows(obj):
    return type(obj)._base_manager.using(obj._state.db).filter(pk=obj.pk)


def _deleted_meanwhile(obj) -> Http404:
    return Http404(f"This {obj._meta.verbose_name} was deleted meanwhile; nothing was saved.")


def edited_fields_save(obj, fields) -> None:
    """Write the `fields` a change page edited of `obj`, read at the start of its request.

    Only those fields (and the times stamped on every save) are written, so a
    change made meanwhile to any other (a key revoked, a tenant deactivated) is
    not undone; `obj` takes the stored value of every other field, so what
    follows the save (signals, the history entry, the messages) sees the row
    as it now is. The row is locked first: one deleted meanwhile answers 404
    rather than being inserted again by the save, a removed membership or key
    with it.
    """
    stored = edited_row_lock(obj)
    fields = set(fields)
    for field in type(obj)._meta.concrete_fields:
        if not field.primary_key and field.name not in fields:
            setattr(obj, field.attname, getattr(stored, field.attname))
    if fields:
        stamped = {f.name for f in type(obj)._meta.concrete_fields if getattr(f, "auto_now", False)}
        obj.save(update_fields=sorted(fields | stamped))


def form_edited_fields(obj, changed_data) -> list[str]:
    """The stored fields of `obj` among the names a form says it changed."""
    names = {f.name for f in type(obj)._meta.concrete_fields if not f.primary_key}
    return [name for name in changed_data if name in names]


class EditedFieldsAdmin(admin.ModelAdmin):
    """Change pages that write only what they edited, and never re-create a deleted row.

    Django's change page saves the whole row it read at the start of the
    request, with Model.save(), which inserts the row again when its UPDATE
    finds none: a change committed meanwhile to a field the page did not edit
    was undone, and an object deleted meanwhile came back. Here the row is
    locked once the form is valid (404 when it is gone), and the save writes
    the fields the form changed (`edited_fields`); inline rows alike.

    A page posted with errors while its object was deleted answers 404 as
    well, rather than asking to correct errors on a row that is gone (an
    inline's stored rows, deleted with it, read "Select a valid choice").

    An admin whose save_model sets a field the form does not change names it
    in `edited_fields`.
    """

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        posted = change and request.method == "POST" and obj is not None
        if posted and not _stored_rows(obj).exists():
            raise _deleted_meanwhile(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def edited_fields(self, request, obj, form) -> list[str]:
        return form_edited_fields(obj, form.changed_data)

    def stored_row_check(self, request, obj) -> None:
        """Lock the row of the object being changed; 404 when it was deleted meanwhile."""
        edited_row_lock(obj)

    def save_form(self, request, form, change):
        obj = super().save_form(request, form, change)
        if change:
            self.stored_row_check(request, obj)
        return obj

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            return
        edited_fields_save(obj, self.edited_fields(request, obj, form))

    def save_formset(self, request, form, formset, change):
        if not change:
            super().save_formset(request, form, formset, change)
            return
        # Rows of the inline, as the object's own: a row deleted meanwhile is
        # not inserted again, and only its edited fields are written.
        formset.save(commit=False)
        for row in formset.deleted_objects:
            row.delete()
        for row, changed_data in formset.changed_objects:
            edited_fields_save(row, form_edited_fields(row, changed_data))
        for row in formset.new_objects:
            row.save()
        formset.save_m2m()


class NulSafeAdmin(admin.ModelAdmin):
    """PostgreSQL refuses NUL in text, so a filter value, search term or text
    primary key with one would fail the query (a server error): the admin
    answers a filter like any bad lookup, a search (the autocomplete's)
    finds nothing and an object URL is a missing object."""

    def get_object(self, request, object_id, from_field=None):
        if "\x00" in object_id:
            return None
        return super().get_object(request, object_id, from_field)

    def get_changelist_instance(self, request):
        params = request.GET.lists()
        if any("\x00" in key or any("\x00" in v for v in values) for key, values in params):
            raise IncorrectLookupParameters("A filter value contains a NUL character.")
        return super().get_changelist_instance(request)

    def get_search_results(self, request, queryset, search_term):
        if "\x00" in search_term:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)


class TenantScopedAdmin(EditedFieldsAdmin, NulSafeAdmin):
    # Lookup path from the model to its tenant, e.g. "override__tenant".
    tenant_path = "tenant"

    # True for the records of a tenant's activity (call logs, daily usage,
    # alerts): their admins delete nothing, yet the rows go with their tenant,
    # and the tenant's delete page counts them rather than listing each.
    deleted_with_tenant = False

    # --- which tenants ---------------------------------------------------------

    def _visible_tenant_ids(self, request) -> set:
        return request_tenant_ids(request)

    def _admin_tenant_ids(self, request) -> set:
        return request_tenant_ids(request, role=TenantMembership.Role.ADMIN)

    def tenant_id_of(self, obj):
        value = obj
        for part in self.tenant_path.split("__"):
            value = getattr(value, part, None)
            if value is None:
                return None
        return value.pk

    # --- what the lists show --------------------------------------------------

    def _sees_one_tenant(self, request) -> bool:
        return not request.user.is_superuser and len(self._visible_tenant_ids(request)) == 1

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        # A user of one tenant needs no tenant column: it would say the same on every row.
        if self._sees_one_tenant(request):
            return tuple(c for c in columns if c != self.tenant_path)
        return columns

    def get_list_filter(self, request):
        filters = super().get_list_filter(request)
        if self._sees_one_tenant(request):
            return tuple(f for f in filters if f != self.tenant_path)
        return filters

    # --- queryset and permissions ---------------------------------------------

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        queryset = queryset.filter(**{f"{self.tenant_path}__in": self._visible_tenant_ids(request)})
        return self.actionable_annotate(request, queryset)

    def has_module_permission(self, request):
        if not (request.user.is_active and request.user.is_staff):
            return False
        # A superuser manages every tenant, also before the first one exists.
        return request.user.is_superuser or bool(self._visible_tenant_ids(request))

    def has_view_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        if obj is None or request.user.is_superuser:
            return True
        return self.tenant_id_of(obj) in self._visible_tenant_ids(request)

    def has_add_permission(self, request):
        if not self.has_module_permission(request):
            return False
        return request.user.is_superuser or bool(self._admin_tenant_ids(request))

    def has_change_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        if request.user.is_superuser:
            return True
        if obj is None:
            return bool(self._admin_tenant_ids(request))
        return self.tenant_id_of(obj) in self._admin_tenant_ids(request)

    def has_delete_permission(self, request, obj=None):
        return self.has_change_permission(request, obj)

    def response_action(self, request, queryset):
        # A forged or mangled selection that is no id at all would fail the
        # action's `pk__in` filter with a server error.
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                self.opts.pk.to_python(value)
        except ValidationError:
            self.message_user(
                request, "The selection names no such items; nothing was changed.", messages.WARNING
            )
            return None
        return super().response_action(request, queryset)

    # --- what the list's actions act on ----------------------------------------

    def actionable_rows(self, request) -> Q:
        """The rows a non-superuser may act on with the list's actions (delete
        them, test, revoke, retry): those of the tenants they administer."""
        return Q(**{f"{self.tenant_path}__in": self._admin_tenant_ids(request)})

    def actionable_selection(self, request, queryset):
        """The selected objects the user may act on; a superuser, all of them."""
        if request.user.is_superuser:
            return queryset
        return queryset.filter(self.actionable_rows(request))

    def actionable_annotate(self, request, queryset):
        """Mark the rows the user may act on, for `action_checkbox`.

        Only where the list offers a non-superuser actions: a viewer's list,
        and one of records that have none (call logs), get no checkboxes at all.
        """
        if request.user.is_superuser or not self.get_actions(request):
            return queryset
        return queryset.annotate(
            **{
                _ACTIONABLE: Case(
                    When(self.actionable_rows(request), then=Value(True)),
                    default=Value(False),
                    output_field=BooleanField(),
                )
            }
        )

    def action_checkbox(self, obj):
        # A row the user may not act on (a viewed tenant's, a global price to a
        # tenant admin) is listed without a checkbox: whatever action they
        # picked would leave it out.
        if not getattr(obj, _ACTIONABLE, True):
            return ""
        return super().action_checkbox(obj)

    # --- deleting a selection ------------------------------------------------

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (_delete_selected_administered, name, description)
        return actions

    def undeletable_selection_message(self, request, undeletable) -> str:
        count = undeletable.count()
        name = self.opts.verbose_name if count == 1 else self.opts.verbose_name_plural
        return (
            f"{count} {name} of tenants you only view {pluralize(count, 'was,were')} not "
            "selected for deletion."
        )

    # --- form choices ----------------------------------------------------------

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.related_model is ProviderConfig:
            formfield = provider_config_choices_labelled(formfield)
        if formfield is None or request.user.is_superuser:
            return formfield
        allowed = self._admin_tenant_ids(request)
        related = db_field.related_model
        if related is Tenant:
            formfield.queryset = formfield.queryset.filter(pk__in=allowed)
            if len(allowed) == 1:
                # The only choice: chosen already rather than a "---------" to pick.
                formfield.initial = next(iter(allowed))
        elif any(f.name == "tenant" for f in related._meta.get_fields()):
            formfield.queryset = formfield.queryset.filter(tenant_id__in=allowed)
        return formfield

    def save_model(self, request, obj, form, change):
        # Form choices already refuse other tenants; this guards every other path.
        self.tenant_write_check(request, obj)
        super().save_model(request, obj, form, change)

    def tenant_write_check(self, request, obj) -> None:
        """Refuse a write to an object of a tenant the user does not administer."""
        if request.user.is_superuser:
            return
        tenant_id = self.tenant_id_of(obj)
        if tenant_id is None or tenant_id not in self._admin_tenant_ids(request):
            raise PermissionDenied("You do not administer this tenant.")


def _delete_selected_administered(modeladmin, request, queryset):
    """Django's "Delete selected" on the selected objects the user may delete.

    Django's own action refuses the whole selection when one object may not
    be deleted, saying the selection "would result in deleting related
    objects": the confirmation page offers the others instead and says which
    were left out and why. A confirmed deletion (a POST naming objects the
    page never offered) is still refused as a whole.
    """
    if request.POST.get("post"):
        return delete_selected(modeladmin, request, queryset)
    deletable = modeladmin.actionable_selection(request, queryset)
    undeletable = queryset.exclude(pk__in=deletable.values("pk"))
    if undeletable.exists():
        modeladmin.message_user(
            request,
            modeladmin.undeletable_selection_message(request, undeletable),
            messages.WARNING,
        )
        if not deletable.exists():
            return None
    return delete_selected(modeladmin, request, deletable)


class TenantScopedInline(admin.TabularInline):
    """An inline of a TenantScopedAdmin: the parent object's tenant decides.

    Choices of tenant-owned objects are limited like in the parent admin.
    """

    def _parent_admin(self) -> TenantScopedAdmin:
        return self.admin_site._registry[self.parent_model]

    def has_view_permission(self, request, obj=None):
        return self._parent_admin().has_view_permission(request, obj)

    def has_add_permission(self, request, obj=None):
        return self._parent_admin().has_change_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._parent_admin().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._parent_admin().has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.related_model is ProviderConfig:
            formfield = provider_config_choices_labelled(formfield)
        if formfield is None or request.user.is_superuser:
            return formfield
        if any(f.name == "tenant" for f in db_field.related_model._meta.get_fields()):
            allowed = self._parent_admin()._admin_tenant_ids(request)
            formfield.queryset = formfield.queryset.filter(tenant_id__in=allowed)
        return formfield
