"""Tenant scoping in the admin: admins edit their tenants, viewers look, superusers see all."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from llm_providers.config_cache import config_version
from llm_providers.models import ModelPrice, ProviderConfig, ServiceKey, Tenant, TenantMembership
from llm_providers.pricing import PriceSource, price_lookup
from overrides.models import RoutingOverride
from tests.factories import (
    CallLogFactory,
    CostAlertFactory,
    DailyUsageFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    RoutingFallbackFactory,
    RoutingOverrideFactory,
    ServiceKeyFactory,
    TenantMembershipFactory,
    UserFactory,
)
from usage.models import CallLog, DailyUsage

pytestmark = pytest.mark.django_db

KEY = "sk-Hq4Zp7Lm2Xc9Vb5Nr8Tw3Ky6"
OTHER_KEY = "sk-Gt5Rf2Ds8Aq1Wz7Xe4Cv9Bn3"


def _url(name: str, *args) -> str:
    return reverse(f"admin:llm_providers_{name}", args=args)


def _config_post(config: ProviderConfig, **overrides) -> dict:
    data = {
        "name": config.name,
        "provider_type": config.provider_type,
        "default_model": config.default_model,
        "allowed_models": "",
        "base_url": "",
        "aws_region": "",
        "options": json.dumps(config.options or {}),
        "is_active": "on",
        "priority": str(config.priority),
        "api_key": "",
        "aws_access_key_id": "",
        "aws_secret_access_key": "",
    }
    data.update(overrides)
    return data


@pytest.fixture
def mine(tenant):
    return ProviderConfigFactory(
        tenant=tenant, name="acme-openai", provider_type="openai", api_key=KEY
    )


@pytest.fixture
def theirs(other_tenant):
    return ProviderConfigFactory(
        tenant=other_tenant, name="globex-openai", provider_type="openai", api_key=OTHER_KEY
    )


# --- provider configs ---------------------------------------------------------------------


def test_tenant_admin_changelist_lists_own_configs_only(client, tenant_admin, mine, theirs):
    client.force_login(tenant_admin)
    response = client.get(_url("providerconfig_changelist"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "acme-openai" in html
    assert "globex-openai" not in html
    assert "Globex" not in html  # not even in the tenant filter


def test_superuser_changelist_lists_every_tenant(client, superuser, mine, theirs):
    client.force_login(superuser)
    html = client.get(_url("providerconfig_changelist")).content.decode()
    assert "acme-openai" in html
    assert "globex-openai" in html


def test_other_tenants_change_page_not_shown(client, tenant_admin, theirs):
    client.force_login(tenant_admin)
    response = client.get(_url("providerconfig_change", theirs.pk))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
    followed = client.get(response["Location"])
    assert "globex-openai" not in followed.content.decode()


def test_forged_change_post_for_other_tenant_changes_nothing(
    client, tenant_admin, theirs, raw_column
):
    client.force_login(tenant_admin)
    before = raw_column(theirs, "api_key")
    response = client.post(
        _url("providerconfig_change", theirs.pk),
        _config_post(theirs, name="hijacked", api_key="sk-attacker-key-00000000"),
    )
    assert response.status_code == 302
    stored = ProviderConfig.objects.get(pk=theirs.pk)
    assert (stored.name, stored.api_key) == ("globex-openai", OTHER_KEY)
    assert raw_column(theirs, "api_key") == before


def test_forged_add_post_for_other_tenant_refused(client, tenant_admin, other_tenant):
    client.force_login(tenant_admin)
    response = client.post(
        _url("providerconfig_add"),
        {
            "tenant": str(other_tenant.pk),
            "name": "planted",
            "provider_type": "fake",
            "options": "{}",
            "priority": "100",
            "is_active": "on",
        },
    )
    assert response.status_code == 200
    assert "Select a valid choice. That choice is not one of the available choices." in (
        response.content.decode()
    )
    assert not ProviderConfig.objects.filter(name="planted").exists()


def test_tenant_choices_offer_own_tenants_only(client, tenant_admin, tenant, other_tenant):
    client.force_login(tenant_admin)
    html = client.get(_url("providerconfig_add")).content.decode()
    assert f'<option value="{tenant.pk}" selected>Acme</option>' in html
    assert str(other_tenant.pk) not in html


def test_forged_delete_for_other_tenant_changes_nothing(client, tenant_admin, theirs):
    client.force_login(tenant_admin)
    response = client.post(_url("providerconfig_delete", theirs.pk), {"post": "yes"})
    assert response.status_code == 302
    assert ProviderConfig.objects.filter(pk=theirs.pk, is_active=True).exists()


def test_bulk_delete_refused_for_viewed_tenant(client, tenant, other_tenant, theirs):
    user = UserFactory(username="mixed")
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    TenantMembershipFactory(user=user, tenant=other_tenant, role="viewer")
    client.force_login(user)
    response = client.post(
        _url("providerconfig_changelist"),
        {"action": "delete_selected", "_selected_action": [str(theirs.pk)], "post": "yes"},
    )
    assert response.status_code == 403
    assert ProviderConfig.objects.filter(pk=theirs.pk).exists()


def test_bulk_delete_with_a_referenced_config_of_a_viewed_tenant_changes_nothing(
    client, tenant, other_tenant, mine, theirs
):
    # given a user who administers `tenant` but only views `other_tenant`,
    # whose config served a call (so deleting it would deactivate it)
    user = UserFactory(username="mixed")
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    TenantMembershipFactory(user=user, tenant=other_tenant, role="viewer")
    CallLogFactory(tenant=other_tenant, provider_config=theirs)
    client.force_login(user)

    # when both configs are deleted in one bulk action
    response = client.post(
        _url("providerconfig_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [str(mine.pk), str(theirs.pk)],
            "post": "yes",
        },
    )

    # then the action is refused as a whole: neither config is touched
    assert response.status_code == 403
    assert ProviderConfig.objects.filter(pk=mine.pk, is_active=True).exists()
    assert ProviderConfig.objects.filter(pk=theirs.pk, is_active=True).exists()


def test_bulk_delete_confirmation_offers_only_the_administered_tenants_objects(
    client, tenant, other_tenant, mine, theirs
):
    # given a user who administers `tenant` but only views `other_tenant`
    user = UserFactory(username="mixed")
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    TenantMembershipFactory(user=user, tenant=other_tenant, role="viewer")
    client.force_login(user)

    # when a config of each is selected for deletion
    response = client.post(
        _url("providerconfig_changelist"),
        {"action": "delete_selected", "_selected_action": [str(mine.pk), str(theirs.pk)]},
    )

    # then the confirmation page offers the administered one and says why the other is left
    page = response.content.decode()
    assert response.status_code == 200
    assert "permission to delete the following types" not in page
    assert "1 provider config of tenants you only view was not selected for deletion." in page
    assert re.findall(r'name="_selected_action" value="([^"]+)"', page) == [str(mine.pk)]
    assert ProviderConfig.objects.filter(pk__in=[mine.pk, theirs.pk]).count() == 2


def test_connection_action_skips_viewed_tenant(client, tenant, other_tenant, theirs):
    user = UserFactory(username="mixed")
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    TenantMembershipFactory(user=user, tenant=other_tenant, role="viewer")
    client.force_login(user)
    response = client.post(
        _url("providerconfig_changelist"),
        {"action": "test_connection", "_selected_action": [str(theirs.pk)]},
        follow=True,
    )
    assert "1 config of tenants you only view was not tested." in response.content.decode()
    assert ProviderConfig.objects.get(pk=theirs.pk).last_test_status == ""


@pytest.mark.parametrize(
    ("changelist", "action", "selected"),
    [
        ("llm_providers_providerconfig", "test_connection", "not-a-uuid"),
        ("llm_providers_providerconfig", "delete_selected", "1"),
        ("usage_costalert", "retry_deliveries", "not-a-number"),
    ],
)
def test_action_on_a_selection_of_no_such_ids_changes_nothing_not_a_server_error(
    client, tenant_admin, mine, changelist, action, selected
):
    client.force_login(tenant_admin)
    url = reverse(f"admin:{changelist}_changelist")

    response = client.post(url, {"action": action, "_selected_action": [selected], "post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == url
    page = client.get(url).content.decode()
    assert "The selection names no such items; nothing was changed." in page
    assert ProviderConfig.objects.get(pk=mine.pk).last_test_status == ""


def test_viewer_sees_read_only_page_without_key(client, tenant_viewer, mine, assert_secret_absent):
    client.force_login(tenant_viewer)
    listing = client.get(_url("providerconfig_changelist"))
    page = client.get(_url("providerconfig_change", mine.pk))
    html = page.content.decode()
    assert listing.status_code == 200
    assert "acme-openai" in listing.content.decode()
    assert page.status_code == 200
    assert 'name="name"' not in html
    assert 'type="password"' not in html
    assert 'name="_save"' not in html
    assert f"sk-…{KEY[-4:]}" in html
    assert_secret_absent(html, KEY)
    assert_secret_absent(listing.content.decode(), KEY)


def test_viewer_post_refused(client, tenant_viewer, mine):
    client.force_login(tenant_viewer)
    response = client.post(_url("providerconfig_change", mine.pk), _config_post(mine, name="x"))
    assert response.status_code == 403
    assert ProviderConfig.objects.get(pk=mine.pk).name == "acme-openai"


def test_viewer_cannot_add(client, tenant_viewer):
    client.force_login(tenant_viewer)
    assert client.get(_url("providerconfig_add")).status_code == 403


def test_staff_without_membership_sees_no_provider_admin(client, mine):
    user = UserFactory(username="outsider")
    client.force_login(user)
    assert client.get(_url("providerconfig_changelist")).status_code == 403
    assert "Provider configs" not in client.get(reverse("admin:index")).content.decode()


def test_superuser_sees_configs_before_any_membership(client, superuser):
    client.force_login(superuser)
    assert client.get(_url("providerconfig_changelist")).status_code == 200
    assert client.get(_url("providerconfig_add")).status_code == 200


# --- tenants ------------------------------------------------------------------------------


def test_tenant_admin_edits_own_tenant_settings(client, tenant_admin, tenant):
    client.force_login(tenant_admin)
    response = client.post(
        _url("tenant_change", tenant.pk),
        {"name": "Acme Corp", "timezone": "Europe/Paris", "response_cache_ttl_seconds": "300"},
    )
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.name, tenant.timezone, tenant.response_cache_ttl_seconds) == (
        "Acme Corp",
        "Europe/Paris",
        300,
    )
    assert (tenant.slug, tenant.is_active) == ("acme", True)


def test_tenant_admin_cannot_change_other_tenant(client, tenant_admin, other_tenant):
    client.force_login(tenant_admin)
    response = client.post(
        _url("tenant_change", other_tenant.pk),
        {"name": "Owned", "timezone": "UTC", "response_cache_ttl_seconds": "0"},
    )
    assert response.status_code == 302
    assert Tenant.objects.get(pk=other_tenant.pk).name == "Globex"
    html = client.get(_url("tenant_changelist")).content.decode()
    assert "Acme" in html and "Globex" not in html


def test_only_superuser_creates_tenants(client, tenant_admin, superuser):
    client.force_login(tenant_admin)
    assert client.get(_url("tenant_add")).status_code == 403
    client.force_login(superuser)
    response = client.post(
        _url("tenant_add"),
        {
            "name": "Initech",
            "slug": "initech",
            "is_active": "on",
            "timezone": "UTC",
            "response_cache_ttl_seconds": "0",
        },
    )
    assert response.status_code == 302
    assert Tenant.objects.filter(slug="initech").exists()


def test_superuser_deletes_a_used_tenant_with_its_records(
    client, superuser, tenant, other_tenant, mine, theirs
):
    # given a tenant that served calls, rolled them up, alerted, and routes by an override
    for _ in range(3):
        CallLogFactory(tenant=tenant, provider_config=mine)
    DailyUsageFactory(tenant=tenant, provider_config=mine)
    CostAlertFactory(tenant=tenant)
    override = RoutingOverrideFactory(tenant=tenant, provider_config=mine)
    RoutingFallbackFactory(override=override, provider_config=mine)
    kept = CallLogFactory(tenant=other_tenant, provider_config=theirs)
    client.force_login(superuser)

    # when a superuser opens the tenant's delete page and confirms
    page = client.get(_url("tenant_delete", tenant.pk))
    response = client.post(_url("tenant_delete", tenant.pk), {"post": "yes"})

    # then the page counts the usage records rather than listing each, and the
    # tenant goes with everything it owns; the other tenant keeps its rows
    html = page.content.decode()
    assert "Cannot delete" not in html
    assert "Call logs: 3" in html and "Daily usage: 1" in html and "Cost alerts: 1" in html
    assert "Call log: " not in html
    assert response.status_code == 302
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert not CallLog.objects.filter(tenant_id=tenant.pk).exists()
    assert not DailyUsage.objects.filter(tenant_id=tenant.pk).exists()
    assert not RoutingOverride.objects.filter(pk=override.pk).exists()
    assert list(CallLog.objects.values_list("pk", flat=True)) == [kept.pk]
    assert ProviderConfig.objects.filter(pk=theirs.pk).exists()


def test_viewer_cannot_edit_tenant(client, tenant_viewer, tenant):
    client.force_login(tenant_viewer)
    response = client.post(
        _url("tenant_change", tenant.pk),
        {"name": "Renamed", "timezone": "UTC", "response_cache_ttl_seconds": "0"},
    )
    assert response.status_code == 403
    assert Tenant.objects.get(pk=tenant.pk).name == "Acme"


# --- memberships --------------------------------------------------------------------------


def test_tenant_admin_adds_member_by_username(client, tenant_admin, tenant):
    UserFactory(username="newcomer")
    client.force_login(tenant_admin)
    response = client.post(
        _url("tenantmembership_add"),
        {"tenant": str(tenant.pk), "user": "newcomer", "role": "viewer"},
    )
    assert response.status_code == 302
    assert TenantMembership.objects.get(user__username="newcomer").tenant_id == tenant.pk


def test_membership_for_other_tenant_refused(client, tenant_admin, other_tenant):
    UserFactory(username="newcomer")
    client.force_login(tenant_admin)
    response = client.post(
        _url("tenantmembership_add"),
        {"tenant": str(other_tenant.pk), "user": "newcomer", "role": "admin"},
    )
    assert response.status_code == 200
    assert not TenantMembership.objects.filter(tenant=other_tenant).exists()


def test_membership_add_page_lists_no_users(client, tenant_admin):
    UserFactory(username="someone-elsewhere")
    client.force_login(tenant_admin)
    html = client.get(_url("tenantmembership_add")).content.decode()
    assert "someone-elsewhere" not in html


def test_unknown_username_says_so(client, tenant_admin, tenant):
    client.force_login(tenant_admin)
    response = client.post(
        _url("tenantmembership_add"),
        {"tenant": str(tenant.pk), "user": "nobody", "role": "viewer"},
    )
    assert "No active user has this username." in response.content.decode()


def test_membership_change_page_names_the_user_and_saves_as_shown(client, tenant_admin, tenant):
    member = UserFactory(username="bob")
    # A user whose username is bob's id: the form must not pick them instead.
    UserFactory(username=str(member.pk))
    membership = TenantMembershipFactory(user=member, tenant=tenant, role="viewer")
    client.force_login(tenant_admin)
    url = _url("tenantmembership_change", membership.pk)
    html = client.get(url).content.decode()
    shown = re.search(r'<input type="text" name="user" value="([^"]*)"', html).group(1)
    assert shown == "bob"
    response = client.post(url, {"tenant": str(tenant.pk), "user": shown, "role": "admin"})
    assert response.status_code == 302
    membership.refresh_from_db()
    assert (membership.user_id, membership.role) == (member.pk, "admin")


def test_memberships_of_other_tenants_hidden(client, tenant_admin, other_tenant):
    TenantMembershipFactory(user=UserFactory(username="globex-person"), tenant=other_tenant)
    client.force_login(tenant_admin)
    html = client.get(_url("tenantmembership_changelist")).content.decode()
    assert "acme-admin" in html
    assert "globex-person" not in html


# --- prices -------------------------------------------------------------------------------


def test_tenant_admin_sees_global_prices_read_only(client, tenant_admin):
    price = ModelPriceFactory(model="shared-model")
    client.force_login(tenant_admin)
    assert "shared-model" in client.get(_url("modelprice_changelist")).content.decode()
    page = client.get(_url("modelprice_change", price.pk)).content.decode()
    assert 'name="input_per_mtok"' not in page
    response = client.post(
        _url("modelprice_change", price.pk),
        {
            "provider_type": "fake",
            "model": "shared-model",
            "input_per_mtok": "0",
            "output_per_mtok": "0",
            "effective_from": "2020-01-01",
        },
    )
    assert response.status_code == 403
    assert ModelPrice.objects.get(pk=price.pk).input_per_mtok == 1


def test_negative_cache_prices_are_refused_with_a_message(client, tenant_admin, tenant):
    # when a tenant admin types a negative cache read and cache write price
    client.force_login(tenant_admin)
    response = client.post(
        _url("modelprice_add"),
        {
            "tenant": str(tenant.pk),
            "provider_type": "fake",
            "model": "fake-small",
            "input_per_mtok": "0.1",
            "output_per_mtok": "0.2",
            "cache_read_per_mtok": "-0.05",
            "cache_write_per_mtok": "-1",
            "effective_from": "2025-01-01",
        },
    )

    # then no price is stored: it would make cached tokens earn money back
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["cache_read_per_mtok"] == ["Ensure this value is greater than or equal to 0."]
    assert errors["cache_write_per_mtok"] == ["Ensure this value is greater than or equal to 0."]
    assert not ModelPrice.objects.exists()


def test_second_price_for_the_same_model_and_day_is_refused_with_a_message(
    client, tenant_admin, tenant
):
    # given the tenant already prices fake-small from 2025-01-01
    ModelPriceFactory(
        tenant=tenant, provider_type="fake", model="fake-small", effective_from=date(2025, 1, 1)
    )
    client.force_login(tenant_admin)

    # when a second price for the same model and day is added
    response = client.post(
        _url("modelprice_add"),
        {
            "tenant": str(tenant.pk),
            "provider_type": "fake",
            "model": "fake-small",
            "input_per_mtok": "0.1",
            "output_per_mtok": "0.2",
            "effective_from": "2025-01-01",
        },
    )

    # then the form says what clashes, and the first price stays the only one
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "This tenant already has a price for this model from this day: change that one, "
        "or choose another day."
    ]
    assert ModelPrice.objects.count() == 1


def test_superuser_second_global_price_for_the_same_model_and_day_is_refused_with_a_message(
    client, superuser
):
    ModelPriceFactory(
        tenant=None, provider_type="fake", model="fake-large", effective_from=date(2025, 1, 1)
    )
    client.force_login(superuser)

    response = client.post(
        _url("modelprice_add"),
        {
            "tenant": "",
            "provider_type": "fake",
            "model": "fake-large",
            "input_per_mtok": "2.5",
            "output_per_mtok": "10",
            "effective_from": "2025-01-01",
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "A global price for this model from this day already exists: change that one, "
        "or choose another day."
    ]
    assert ModelPrice.objects.count() == 1


def test_tenant_admin_cannot_create_global_price(client, tenant_admin):
    client.force_login(tenant_admin)
    response = client.post(
        _url("modelprice_add"),
        {
            "tenant": "",
            "provider_type": "fake",
            "model": "fake-small",
            "input_per_mtok": "0.1",
            "output_per_mtok": "0.2",
            "effective_from": "2025-01-01",
        },
    )
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not ModelPrice.objects.exists()


def test_tenant_admin_creates_own_tenant_price(client, tenant_admin, tenant):
    client.force_login(tenant_admin)
    response = client.post(
        _url("modelprice_add"),
        {
            "tenant": str(tenant.pk),
            "provider_type": "fake",
            "model": "fake-small",
            "input_per_mtok": "0.100000",
            "output_per_mtok": "0.200000",
            "effective_from": "2025-01-01",
        },
    )
    assert response.status_code == 302
    price = ModelPrice.objects.get()
    assert (price.tenant_id, str(price.input_per_mtok)) == (tenant.pk, "0.100000")


def test_new_price_form_starts_from_today_in_utc(client, tenant_admin, settings):
    # 23:30 in New York is already the next day in UTC, the day prices are dated by.
    settings.TIME_ZONE = "America/New_York"
    evening = datetime(2026, 3, 9, 23, 30, tzinfo=ZoneInfo("America/New_York"))
    client.force_login(tenant_admin)

    with mock.patch("django.utils.timezone.now", return_value=evening):
        response = client.get(_url("modelprice_add"))

    assert response.context["adminform"].form.initial["effective_from"] == date(2026, 3, 10)
    assert 'name="effective_from" value="2026-03-10"' in response.content.decode()


def test_price_form_list_and_filter_name_the_unit_and_the_global_prices(
    client, tenant_admin, tenant
):
    # given a global price and one of the tenant's
    shared = ModelPriceFactory(model="shared-model")
    ModelPriceFactory(tenant=tenant, model="own-model")
    client.force_login(tenant_admin)

    # when the add form, the list and the global price's read-only page are opened
    form = client.get(_url("modelprice_add")).content.decode()
    listed = client.get(_url("modelprice_changelist")).content.decode()
    shown = client.get(_url("modelprice_change", shared.pk)).content.decode()

    # then prices are per million tokens in dollars, and "no tenant" reads as what it means
    for label in ("Input", "Output", "Cache read", "Cache write"):
        assert f">{label} (USD per 1M tokens):</label>" in form
        assert f'">{label} (USD per 1M tokens)</a></div>' in listed
        assert f"<label>{label} (USD per 1M tokens):</label>" in shown
    assert '<div class="readonly">1.00</div>' in shown
    assert all("per mtok" not in html.lower() for html in (form, listed, shown))
    tenant_filter = re.search(r"By tenant.*?</details>", listed, re.S).group(0)
    choices = re.findall(r'<a href="[^"]*">([^<]*)</a>', tenant_filter)
    assert choices == ["All", "Acme", "all tenants (global prices)"]


def test_deleting_selected_prices_with_global_ones_deletes_the_tenants_and_says_so(
    client, tenant_admin, tenant
):
    # given a global price and one of the tenant's, both selected in the list
    shared = ModelPriceFactory(model="shared-model")
    own = ModelPriceFactory(tenant=tenant, model="own-model")
    client.force_login(tenant_admin)
    selected = {"action": "delete_selected", "_selected_action": [shared.pk, own.pk]}

    # when "Delete selected model prices" is chosen, then confirmed
    asked = client.post(_url("modelprice_changelist"), selected)
    confirmed = client.post(
        _url("modelprice_changelist"),
        {"action": "delete_selected", "_selected_action": [own.pk], "post": "yes"},
    )

    # then the confirmation offers the tenant's price and says why the global one stays
    page = asked.content.decode()
    assert asked.status_code == 200
    assert "permission to delete the following types" not in page
    assert "1 global price (all tenants) was not selected for deletion: only a superuser " in (page)
    assert re.findall(r'name="_selected_action" value="(\d+)"', page) == [str(own.pk)]
    assert confirmed.status_code == 302
    assert list(ModelPrice.objects.values_list("pk", flat=True)) == [shared.pk]


def test_deleting_only_global_prices_deletes_nothing_and_says_why(client, tenant_admin):
    shared = ModelPriceFactory(model="shared-model")
    client.force_login(tenant_admin)

    response = client.post(
        _url("modelprice_changelist"),
        {"action": "delete_selected", "_selected_action": [shared.pk]},
        follow=True,
    )

    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        "1 global price (all tenants) was not selected for deletion: only a superuser "
        "deletes global prices."
    ]
    assert ModelPrice.objects.filter(pk=shared.pk).exists()


def test_other_tenants_prices_hidden(client, tenant_admin, other_tenant):
    ModelPriceFactory(tenant=other_tenant, model="their-model")
    client.force_login(tenant_admin)
    assert "their-model" not in client.get(_url("modelprice_changelist")).content.decode()


def test_superuser_creates_global_price(client, superuser):
    client.force_login(superuser)
    response = client.post(
        _url("modelprice_add"),
        {
            "tenant": "",
            "provider_type": "fake",
            "model": "fake-large",
            "input_per_mtok": "2.5",
            "output_per_mtok": "10",
            "effective_from": "2025-01-01",
        },
    )
    assert response.status_code == 302
    assert ModelPrice.objects.get().tenant_id is None


# --- service keys ----------------------------------------------------------------------------


def test_service_keys_of_other_tenants_hidden(client, tenant_admin, tenant, other_tenant):
    ServiceKeyFactory(tenant=tenant, name="acme-batch")
    ServiceKeyFactory(tenant=other_tenant, name="globex-batch")
    client.force_login(tenant_admin)
    html = client.get(_url("servicekey_changelist")).content.decode()
    assert "acme-batch" in html
    assert "globex-batch" not in html


def test_service_key_for_other_tenant_refused(client, tenant_admin, other_tenant):
    client.force_login(tenant_admin)
    response = client.post(
        _url("servicekey_add"), {"tenant": str(other_tenant.pk), "name": "planted"}
    )
    assert response.status_code == 200
    assert not ServiceKey.objects.exists()


@pytest.mark.parametrize(
    "add_url",
    [
        "admin:llm_providers_providerconfig_add",
        "admin:overrides_routingoverride_add",
        "admin:usage_budget_add",
    ],
)
def test_add_form_chooses_the_tenant_of_an_admin_of_only_one(client, tenant, tenant_admin, add_url):
    client.force_login(tenant_admin)

    html = client.get(reverse(add_url)).content.decode()

    assert f'<option value="{tenant.pk}" selected>{tenant.name}</option>' in html


def test_add_form_leaves_the_tenant_to_choose_for_an_admin_of_two(client, tenant, tenant_admin):
    second = TenantMembershipFactory(user=tenant_admin, role=TenantMembership.Role.ADMIN).tenant
    client.force_login(tenant_admin)

    html = client.get(reverse("admin:usage_budget_add")).content.decode()

    assert '<option value="" selected>---------</option>' in html
    assert f'<option value="{tenant.pk}">' in html and f'<option value="{second.pk}">' in html


@pytest.mark.parametrize(
    "url",
    [
        "/admin/llm_providers/providerconfig/?provider_type__exact=%00",
        "/admin/llm_providers/tenantmembership/?role__exact=ad%00min",
        "/admin/usage/calllog/?status__exact=%00",
        "/admin/usage/calllog/?customer=acme%00",
        "/admin/usage/dailyusage/?model=%00",
        "/admin/usage/budget/?period__exact=%00",
        "/admin/overrides/routingoverride/?service_name=%00",
        "/admin/llm_providers/tenant/?name=Ac%00me",
    ],
)
def test_list_filter_with_a_nul_character_is_a_bad_lookup_not_a_server_error(
    client, tenant_admin, url
):
    # given a tenant admin, and a filter value PostgreSQL cannot compare with text
    client.force_login(tenant_admin)

    # when the list is asked for it
    response = client.get(url)

    # then the admin says the lookup is wrong, as for any other bad filter
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


@pytest.mark.parametrize(
    ("model_name", "field_name"),
    [("budget", "provider_config"), ("budget", "tenant"), ("costalert", "budget")],
)
def test_autocomplete_with_a_nul_character_finds_nothing_not_a_server_error(
    client, tenant_admin, model_name, field_name
):
    client.force_login(tenant_admin)

    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "usage", "model_name": model_name, "field_name": field_name, "term": "a\x00"},
    )

    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize("model_name", ["servicekey", "usertoken"])
@pytest.mark.parametrize("view", ["change", "history", "delete"])
def test_object_url_with_a_nul_character_answers_like_a_missing_object(
    client, tenant_admin, model_name, view
):
    # Their primary keys are text: PostgreSQL refuses a NUL in the lookup.
    client.force_login(tenant_admin)

    response = client.get(f"/admin/llm_providers/{model_name}/ab%00cd/{view}/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/auth/user/?q=ad%00min",
        "/admin/auth/group/?q=ops%00",
        "/admin/auth/user/ab%00cd/change/",
        "/admin/auth/group/ab%00cd/change/",
    ],
)
def test_user_and_group_pages_with_a_nul_character_answer_without_a_server_error(
    client, superuser, url
):
    # given users and groups to search, and a term PostgreSQL cannot compare with text
    from django.contrib.auth.models import Group

    Group.objects.create(name="ops")
    client.force_login(superuser)

    # when a superuser asks for it
    response = client.get(url)

    # then a search is a bad lookup, as for the app's lists, and an object URL
    # answers like a missing object
    assert response.status_code == 302
    if "?q=" in url:
        assert response["Location"] == url.split("?")[0] + "?e=1"
    else:
        assert response["Location"] == "/admin/"


def test_global_price_moved_to_one_tenant_no_longer_prices_the_others(
    client, superuser, tenant, other_tenant
):
    def lookup(of):
        return price_lookup(
            tenant_id=of.pk,
            provider_type="fake",
            model="fake-small",
            version=config_version(of.pk),
        )

    price = ModelPriceFactory(tenant=None, model="fake-small", input_per_mtok="3")
    # the other tenant's calls have been priced at the global rate (and cached it)
    assert lookup(other_tenant).input_per_mtok == 3

    # when a superuser makes the price one tenant's own
    client.force_login(superuser)
    response = client.post(
        _url("modelprice_change", price.pk),
        {
            "tenant": str(tenant.pk),
            "provider_type": "fake",
            "model": "fake-small",
            "input_per_mtok": "3",
            "output_per_mtok": "2",
            "effective_from": str(price.effective_from),
        },
    )
    assert response.status_code == 302

    # then the other tenant is no longer charged at that tenant's rate
    assert lookup(other_tenant).source == PriceSource.UNKNOWN
    assert lookup(tenant).input_per_mtok == 3


def test_tenant_price_moved_to_another_tenant_no_longer_prices_the_first(
    client, tenant_admin, tenant, other_tenant
):
    TenantMembershipFactory(
        user=tenant_admin, tenant=other_tenant, role=TenantMembership.Role.ADMIN
    )
    price = ModelPriceFactory(tenant=tenant, model="fake-small", input_per_mtok="4")
    version = config_version(tenant.pk)
    assert (
        price_lookup(
            tenant_id=tenant.pk, provider_type="fake", model="fake-small", version=version
        ).input_per_mtok
        == 4
    )

    # when the admin of both tenants gives the price to the other one
    client.force_login(tenant_admin)
    response = client.post(
        _url("modelprice_change", price.pk),
        {
            "tenant": str(other_tenant.pk),
            "provider_type": "fake",
            "model": "fake-small",
            "input_per_mtok": "4",
            "output_per_mtok": "2",
            "effective_from": str(price.effective_from),
        },
    )
    assert response.status_code == 302

    # then the first tenant's calls are no longer priced at the other's rate
    found = price_lookup(
        tenant_id=tenant.pk,
        provider_type="fake",
        model="fake-small",
        version=config_version(tenant.pk),
    )
    assert found.source == PriceSource.UNKNOWN


def test_prices_read_in_cents_and_a_missing_cache_price_reads_as_empty(client, tenant_admin):
    # given a global price with sub-cent and whole-dollar rates and no cache prices
    price = ModelPriceFactory(
        model="shared-model", input_per_mtok="0.075000", output_per_mtok="10.000000"
    )
    client.force_login(tenant_admin)

    # when the list and the price's read-only page are opened
    listed = client.get(_url("modelprice_changelist")).content.decode()
    shown = client.get(_url("modelprice_change", price.pk)).content.decode()

    # then the rates carry the decimals they have (at least cents), and no "None"
    row = re.search(r"<tr>.*?shared-model.*?</tr>", listed, re.S).group(0)
    cells = re.findall(r'<td class="field-[a-z_]+_price[^"]*">([^<]*)</td>', row)
    assert cells == ["0.075", "10.00", "—", "—"]
    readonly = re.findall(r'<div class="readonly">([^<]*)</div>', shown)
    assert readonly[3:7] == ["0.075", "10.00", "—", "—"]
    assert "None" not in shown


def test_provider_config_and_tenant_pages_put_units_in_parentheses_and_show_a_zone_name(
    client, tenant_admin, tenant
):
    # given a config tested once
    config = ProviderConfigFactory(tenant=tenant, last_test_latency_ms=212)
    client.force_login(tenant_admin)

    # when the tenant admin opens it and the tenant's page
    config_page = client.get(_url("providerconfig_change", config.pk)).content.decode()
    tenant_page = client.get(_url("tenant_change", tenant.pk)).content.decode()

    # then durations name their unit, and the time zone field says what to type
    assert "<label>Last test latency (ms):</label>" in config_page
    assert ">Response cache TTL (seconds):</label>" in tenant_page
    assert "An IANA time zone name such as Europe/Berlin" in tenant_page
