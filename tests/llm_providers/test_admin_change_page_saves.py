"""Every admin change page writes only what it edited, and never re-creates a
row deleted while it saves.

Each page is posted while another connection commits a change between the
request's reading of the row and its writing (a hook on `save_form`, which
runs in between; for an inline's row, on `save_model`, which runs once the
inline's forms are read): a delete of the row, which the page must answer with 404
rather than insert the row again (Django's Model.save() inserts when its
UPDATE finds no row), or a change of a field the page did not edit, which
must survive the save.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from tests.factories import (
    BudgetFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    RoutingFallbackFactory,
    RoutingOverrideFactory,
    UserFactory,
)
from tests.llm_providers.api.test_access_changes import _committed_elsewhere

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@dataclass
class Page:
    admin: str  # the ModelAdmin class, by its dotted path
    row: object  # the object whose row the page writes
    url: str
    data: dict
    edited: tuple[str, object]  # the field the page edits, and its value once saved
    elsewhere: tuple[str, object] | None  # a field changed elsewhere meanwhile, and its value
    hook: str = "save_form"  # the admin's step before which the change elsewhere commits


def _override_form(override, fallback, **changes) -> dict:
    data = {
        "customer_id": override.customer_id,
        "service_name": "",
        "provider_config": str(override.provider_config_id),
        "model": "",
        "is_active": "on",
        "note": "",
        "fallbacks-TOTAL_FORMS": "1",
        "fallbacks-INITIAL_FORMS": "1",
        "fallbacks-MIN_NUM_FORMS": "0",
        "fallbacks-MAX_NUM_FORMS": "1000",
        "fallbacks-0-id": str(fallback.pk),
        "fallbacks-0-override": str(override.pk),
        "fallbacks-0-position": str(fallback.position),
        "fallbacks-0-provider_config": str(fallback.provider_config_id),
        "fallbacks-0-model": "",
    }
    return {**data, **changes}


def _override_and_fallback(tenant):
    override = RoutingOverrideFactory(
        tenant=tenant, customer_id="acme", provider_config=ProviderConfigFactory(tenant=tenant)
    )
    fallback = RoutingFallbackFactory(
        override=override, provider_config=ProviderConfigFactory(tenant=tenant), position=1
    )
    return override, fallback


def _routing_override(tenant) -> Page:
    override, fallback = _override_and_fallback(tenant)
    return Page(
        "overrides.admin.RoutingOverrideAdmin",
        override,
        f"/admin/overrides/routingoverride/{override.pk}/change/",
        _override_form(override, fallback, note="moved to the backup"),
        ("note", "moved to the backup"),
        ("is_active", False),
    )


def _routing_fallback(tenant) -> Page:
    override, fallback = _override_and_fallback(tenant)
    return Page(
        "overrides.admin.RoutingOverrideAdmin",
        fallback,
        f"/admin/overrides/routingoverride/{override.pk}/change/",
        _override_form(override, fallback, **{"fallbacks-0-model": "fake-large"}),
        ("model", "fake-large"),
        ("position", 7),
        hook="save_model",
    )


def _model_price(tenant) -> Page:
    price = ModelPriceFactory(tenant=tenant, effective_from=dt.date(2025, 1, 1))
    return Page(
        "llm_providers.admin.ModelPriceAdmin",
        price,
        f"/admin/llm_providers/modelprice/{price.pk}/change/",
        {
            "tenant": str(tenant.pk),
            "provider_type": "fake",
            "model": "fake-small",
            "input_per_mtok": "1.000000",
            "output_per_mtok": "3.000000",
            "cache_read_per_mtok": "",
            "cache_write_per_mtok": "",
            "effective_from": "2025-01-01",
        },
        ("output_per_mtok", Decimal("3.000000")),
        ("input_per_mtok", Decimal("5.000000")),
    )


def _budget(tenant) -> Page:
    budget = BudgetFactory(tenant=tenant, name="Cap", limit_usd=Decimal("5.0000"))
    return Page(
        "usage.admin.BudgetAdmin",
        budget,
        f"/admin/usage/budget/{budget.pk}/change/",
        {
            "name": "Monthly cap",
            "is_active": "on",
            "period": "monthly",
            "limit_usd": "5.0000",
            "action": "alert",
            "provider_config": "",
            "service_name": "",
            "customer_id": "",
            "alert_percentages": "50, 80, 100",
            "alert_emails": "finance@example.com",
            "webhook_url": "",
        },
        ("name", "Monthly cap"),
        ("limit_usd", Decimal("7.0000")),
    )


def _provider_config(tenant) -> Page:
    config = ProviderConfigFactory(tenant=tenant, name="main", priority=100)
    return Page(
        "llm_providers.admin.ProviderConfigAdmin",
        config,
        f"/admin/llm_providers/providerconfig/{config.pk}/change/",
        {
            "name": "primary",
            "provider_type": "fake",
            "default_model": "fake-small",
            "allowed_models": "",
            "base_url": "",
            "aws_region": "",
            "options": json.dumps(config.options),
            "is_active": "on",
            "priority": "100",
            "rpm_limit": "",
            "tpm_limit": "",
            "api_key": "",
            "aws_access_key_id": "",
            "aws_secret_access_key": "",
        },
        ("name", "primary"),
        ("priority", 5),
    )


def _user(tenant) -> Page:
    user = UserFactory(username="mona")
    return Page(
        "llm_providers.admin.UserAdmin",
        user,
        f"/admin/auth/user/{user.pk}/change/",
        {
            "username": "mona",
            "first_name": "Mona",
            "last_name": "",
            "email": "mona@example.com",
            "is_active": "on",
            "is_staff": "on",
        },
        ("first_name", "Mona"),
        ("is_active", False),
    )


def _group(tenant) -> Page:
    group = Group.objects.create(name="support")
    return Page(
        "llm_providers.admin.GroupAdmin",
        group,
        f"/admin/auth/group/{group.pk}/change/",
        {"name": "first-line support"},
        ("name", "first-line support"),
        None,
    )


PAGES = {
    "routing override": _routing_override,
    "routing fallback": _routing_fallback,
    "model price": _model_price,
    "budget": _budget,
    "provider config": _provider_config,
    "user": _user,
    "group": _group,
}


def _post_with(monkeypatch, page: Page, meanwhile):
    """Post the page as superuser, `meanwhile` committed elsewhere between its read and write."""
    module_name, _, class_name = page.admin.rpartition(".")
    model_admin = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    step = getattr(model_admin, page.hook)

    def hooked(self, *args, **kwargs):
        _committed_elsewhere(meanwhile)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(model_admin, page.hook, hooked)
    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client.post(page.url, page.data)


@pytest.mark.parametrize("name", PAGES)
def test_an_object_deleted_while_its_change_page_is_saved_stays_deleted(monkeypatch, tenant, name):
    page = PAGES[name](tenant)
    rows = type(page.row).objects.filter(pk=page.row.pk)

    response = _post_with(monkeypatch, page, rows.delete)

    assert response.status_code == 404
    assert not rows.exists()


@pytest.mark.parametrize("name", [name for name in PAGES if name != "group"])
def test_a_field_changed_while_a_change_page_is_saved_keeps_its_new_value(
    monkeypatch, tenant, name
):
    page = PAGES[name](tenant)
    rows = type(page.row).objects.filter(pk=page.row.pk)
    other, value = page.elsewhere

    response = _post_with(monkeypatch, page, lambda: rows.update(**{other: value}))

    assert response.status_code == 302
    edited, edited_value = page.edited
    assert rows.values_list(edited, other).get() == (edited_value, value)


def test_the_users_page_leaves_a_password_changed_meanwhile(monkeypatch, tenant):
    page = _user(tenant)
    users = get_user_model().objects.filter(pk=page.row.pk)

    def password_changed():
        user = users.get()
        user.set_password("changed-meanwhile-456")
        user.save(update_fields=["password"])

    response = _post_with(monkeypatch, page, password_changed)

    assert response.status_code == 302
    assert users.get().check_password("changed-meanwhile-456")
    assert users.get().first_name == "Mona"


@pytest.mark.parametrize(
    ("meanwhile", "status", "is_active"), [("delete", 404, None), ("deactivate", 302, False)]
)
def test_the_users_password_page_neither_recreates_nor_reactivates_the_user(
    monkeypatch, tenant, meanwhile, status, is_active
):
    from llm_providers.admin import UserAdmin

    user = UserFactory(username="mona")
    users = get_user_model().objects.filter(pk=user.pk)
    form_class = UserAdmin.change_password_form
    save = form_class.save

    def hooked(self, *args, **kwargs):
        change = users.delete if meanwhile == "delete" else lambda: users.update(is_active=False)
        _committed_elsewhere(change)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(form_class, "save", hooked)
    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True))

    response = client.post(
        f"/admin/auth/user/{user.pk}/password/",
        {"usable_password": "true", "password1": "Fresh-pass-789", "password2": "Fresh-pass-789"},
    )

    assert response.status_code == status
    assert list(users.values_list("is_active", flat=True)) == ([] if is_active is None else [False])
    if is_active is not None:
        assert users.get().check_password("Fresh-pass-789")


# A field each page refuses as posted, so the page is shown again with its errors.
INVALID = {
    "routing override": {"provider_config": ""},
    "model price": {"input_per_mtok": "cheap"},
    "budget": {"limit_usd": ""},
    "provider config": {"name": ""},
    "user": {"username": ""},
    "group": {"name": ""},
}


@pytest.mark.parametrize("name", INVALID)
def test_an_object_deleted_while_its_change_page_is_posted_with_an_error_is_not_found(
    monkeypatch, tenant, name
):
    # given a change page posted with an error while the object is deleted elsewhere
    page = PAGES[name](tenant)
    page = replace(page, data={**page.data, **INVALID[name]}, hook="get_form")
    rows = type(page.row).objects.filter(pk=page.row.pk)

    response = _post_with(monkeypatch, page, rows.delete)

    # then the page says the object is gone rather than asking to correct its errors
    assert response.status_code == 404
    assert not rows.exists()
