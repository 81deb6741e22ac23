"""The overrides admin: tenant scoping, role permissions, forged choices refused."""

import datetime as dt
import re
import threading

import pytest
from django.db import connection, transaction
from django.test import Client

from llm_providers.models import TenantMembership
from overrides.models import RoutingFallback, RoutingOverride
from overrides.routing import route_resolve
from overrides.services import routing_override_create, routing_override_delete
from tests.factories import (
    ProviderConfigFactory,
    RoutingFallbackFactory,
    RoutingOverrideFactory,
    TenantFactory,
    TenantMembershipFactory,
)
from tests.llm_providers.api.test_access_changes import _committed_elsewhere

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/overrides/routingoverride/"
ADD_URL = "/admin/overrides/routingoverride/add/"


@pytest.fixture
def tenant():
    return TenantFactory()


@pytest.fixture
def admin_client_for(client):
    def login(tenant, role=TenantMembership.Role.ADMIN):
        membership = TenantMembershipFactory(tenant=tenant, role=role)
        client.force_login(membership.user)
        return client

    return login


def _form(tenant, config, customer="acme", fallbacks=()):
    data = {
        "tenant": str(tenant.pk),
        "customer_id": customer,
        "service_name": "",
        "provider_config": str(config.pk),
        "model": "",
        "is_active": "on",
        "note": "",
        "fallbacks-TOTAL_FORMS": str(len(fallbacks)),
        "fallbacks-INITIAL_FORMS": "0",
        "fallbacks-MIN_NUM_FORMS": "0",
        "fallbacks-MAX_NUM_FORMS": "1000",
    }
    for index, fallback in enumerate(fallbacks):
        data[f"fallbacks-{index}-position"] = str(index)
        data[f"fallbacks-{index}-provider_config"] = str(fallback.pk)
        data[f"fallbacks-{index}-model"] = ""
    return data


def test_add_page_explains_overrides_their_precedence_and_fallbacks(tenant, admin_client_for):
    html = admin_client_for(tenant).get(ADD_URL).content.decode()

    # what an override is, which one wins, and what its fallbacks do
    assert (
        "An override sends the calls of a customer, of a service, or of a customer in one "
        "service to a provider config and model other than the tenant’s default provider "
        "config." in html
    )
    assert (
        "When several overrides match a call, the most specific wins: customer and service, "
        "then customer, then service; with none, the tenant’s default provider config "
        "serves it." in html
    )
    assert (
        "Fallbacks (below) are tried in order of position, lowest first, when the target "
        "fails after its retries" in html
    )
    assert "Empty matches any customer." in html
    assert "Empty matches any service." in html
    # the fallbacks' column heading carries what a position is
    assert 'title="Fallbacks are tried from the lowest position up; ties in the order added."' in (
        html
    )


def test_add_page_says_a_call_that_names_a_model_keeps_it(tenant, admin_client_for):
    # the override's model serves only the calls that name none: an explicit
    # model replaces the primary target's (docs/ARCHITECTURE.md, Route)
    html = admin_client_for(tenant).get(ADD_URL).content.decode()
    assert (
        "For the calls that name no model; empty: the provider config's default model. "
        "A call that names a model keeps it (it must be allowed on the provider config)." in html
    )


def test_add_page_says_when_fallbacks_are_not_tried(tenant, admin_client_for):
    # a stream that has sent text is neither retried nor sent on, and no
    # fallback starts once the call's deadline has no time left (completion.py)
    html = admin_client_for(tenant).get(ADD_URL).content.decode()

    assert (
        "No fallback is tried once the call’s deadline has no time left for it, nor for a "
        "stream that has already sent part of its answer: the caller gets the error." in html
    )


def test_changelist_shows_only_own_tenants_overrides(tenant, admin_client_for):
    mine = RoutingOverrideFactory(tenant=tenant, customer_id="mine-customer")
    RoutingOverrideFactory(customer_id="their-customer")

    response = admin_client_for(tenant).get(LIST_URL)

    assert response.status_code == 200
    assert "mine-customer" in response.text
    assert "their-customer" not in response.text
    assert list(response.context["cl"].queryset) == [mine]


def test_changelist_filter_names_no_other_tenant(tenant, admin_client_for):
    # given a user of two tenants
    second = TenantFactory(name="Second Own Tenant")
    RoutingOverrideFactory(tenant=tenant)
    RoutingOverrideFactory(tenant=second)
    RoutingOverrideFactory(tenant=TenantFactory(name="Globex Secret Project"))
    client = admin_client_for(tenant)
    user = TenantMembership.objects.get(tenant=tenant).user
    TenantMembershipFactory(tenant=second, user=user)

    response = client.get(LIST_URL)

    assert tenant.name in response.text and second.name in response.text
    assert "Globex Secret Project" not in response.text
    assert "column-tenant" in response.text


def test_changelist_of_a_one_tenant_user_has_no_tenant_column(tenant, admin_client_for):
    RoutingOverrideFactory(tenant=tenant, customer_id="acme")

    response = admin_client_for(tenant).get(LIST_URL)

    assert "acme" in response.text
    assert "column-tenant" not in response.text


def test_change_page_of_other_tenants_override_is_not_found(tenant, admin_client_for):
    theirs = RoutingOverrideFactory()

    response = admin_client_for(tenant).get(f"{LIST_URL}{theirs.pk}/change/")

    # The admin redirects with "doesn't exist" for objects outside the queryset.
    assert response.status_code == 302
    assert response.url == "/admin/"


def test_add_creates_override_with_fallback(tenant, admin_client_for):
    primary = ProviderConfigFactory(tenant=tenant)
    backup = ProviderConfigFactory(tenant=tenant)

    response = admin_client_for(tenant).post(ADD_URL, _form(tenant, primary, fallbacks=[backup]))

    assert response.status_code == 302
    override = RoutingOverride.objects.get(tenant=tenant, customer_id="acme")
    assert list(override.fallbacks.values_list("provider_config", flat=True)) == [backup.pk]


def test_forged_post_with_other_tenants_provider_is_refused(tenant, admin_client_for):
    foreign = ProviderConfigFactory()

    response = admin_client_for(tenant).post(ADD_URL, _form(tenant, foreign))

    assert response.status_code == 200
    assert "Select a valid choice" in response.text
    assert not RoutingOverride.objects.exists()


def test_forged_post_for_other_tenant_is_refused(tenant, admin_client_for):
    other = TenantFactory()
    their_config = ProviderConfigFactory(tenant=other)

    response = admin_client_for(tenant).post(ADD_URL, _form(other, their_config))

    assert response.status_code == 200
    assert not RoutingOverride.objects.exists()


def test_forged_fallback_of_other_tenant_is_refused(tenant, admin_client_for):
    primary = ProviderConfigFactory(tenant=tenant)
    foreign = ProviderConfigFactory()

    response = admin_client_for(tenant).post(ADD_URL, _form(tenant, primary, fallbacks=[foreign]))

    assert response.status_code == 200
    assert not RoutingOverride.objects.exists()


def test_fallback_of_another_administered_tenant_is_refused(tenant, admin_client_for):
    # The user administers both tenants, but a fallback must share the override's tenant.
    client = admin_client_for(tenant)
    other = TenantFactory()
    user = TenantMembership.objects.get(tenant=tenant).user
    TenantMembershipFactory(user=user, tenant=other)
    primary = ProviderConfigFactory(tenant=tenant)
    elsewhere = ProviderConfigFactory(tenant=other)

    response = client.post(ADD_URL, _form(tenant, primary, fallbacks=[elsewhere]))

    assert response.status_code == 200
    assert "Choose a provider config of the same tenant." in response.text
    assert not RoutingOverride.objects.exists()


def test_inactive_provider_is_not_offered(tenant, admin_client_for):
    ProviderConfigFactory(tenant=tenant, name="retired", is_active=False)
    ProviderConfigFactory(tenant=tenant, name="live")

    response = admin_client_for(tenant).get(ADD_URL)

    choices = [
        c.name for c in response.context["adminform"].form.fields["provider_config"].queryset
    ]
    assert choices == ["live"]


def test_viewer_sees_but_cannot_change(tenant, admin_client_for):
    override = RoutingOverrideFactory(tenant=tenant)
    client = admin_client_for(tenant, role=TenantMembership.Role.VIEWER)

    view = client.get(f"{LIST_URL}{override.pk}/change/")
    post = client.post(f"{LIST_URL}{override.pk}/change/", _form(tenant, override.provider_config))
    add = client.get(ADD_URL)

    assert view.status_code == 200
    assert 'name="_save"' not in view.text
    assert post.status_code == 403
    assert add.status_code == 403


def test_override_does_not_move_to_another_tenant(tenant, admin_client_for):
    # given a user administering two tenants, and an override of the first
    # with a fallback to one of the first tenant's configs
    client = admin_client_for(tenant)
    user = TenantMembership.objects.get(tenant=tenant).user
    other = TenantFactory()
    TenantMembershipFactory(user=user, tenant=other)
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme")
    fallback = RoutingFallbackFactory(override=override)
    their_config = ProviderConfigFactory(tenant=other, is_default=True)

    # when a change form names the other tenant and leaves the fallbacks off
    response = client.post(f"{LIST_URL}{override.pk}/change/", _form(other, their_config))

    # then the override stays in its tenant, and the other tenant's routes
    # never reach the first tenant's config
    assert response.status_code in (200, 302)
    override.refresh_from_db()
    assert override.tenant == tenant
    route = route_resolve(tenant=other, customer_id="acme")
    assert fallback.provider_config not in [t.provider_config for t in route.targets]


def test_change_to_a_scope_its_tenant_already_routes_is_a_form_error(tenant, admin_client_for):
    config = ProviderConfigFactory(tenant=tenant)
    RoutingOverrideFactory(tenant=tenant, customer_id="acme", provider_config=config)
    override = RoutingOverrideFactory(tenant=tenant, customer_id="globex", provider_config=config)

    response = admin_client_for(tenant).post(
        f"{LIST_URL}{override.pk}/change/", _form(tenant, config, customer="acme")
    )

    assert response.status_code == 200
    assert "An override for this customer and service already exists in this tenant." in (
        response.text
    )
    override.refresh_from_db()
    assert override.customer_id == "globex"


def test_fallback_added_twice_from_two_pages_is_a_form_error(tenant, admin_client_for):
    # given an override whose fallback another admin added after this page was opened
    config = ProviderConfigFactory(tenant=tenant)
    backup = ProviderConfigFactory(tenant=tenant)
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme", provider_config=config)
    RoutingFallbackFactory(override=override, provider_config=backup, position=0)

    # when this page adds the same fallback
    response = admin_client_for(tenant).post(
        f"{LIST_URL}{override.pk}/change/", _form(tenant, config, fallbacks=[backup])
    )

    # then it is told so in the words of a fallback repeated on the page, and the
    # override keeps one fallback
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.forms[0].non_field_errors()
    assert errors == [
        "A provider config and model may be a fallback of this override once only: "
        "this one is a fallback of it already."
    ]
    assert "Routing fallback with this" not in response.text
    assert override.fallbacks.count() == 1


def test_change_deactivates_override_whose_providers_were_retired(tenant, admin_client_for):
    # given an override whose provider config and fallback config were deactivated
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme")
    fallback = RoutingFallbackFactory(override=override, position=0)
    for config in (override.provider_config, fallback.provider_config):
        config.is_active = False
        config.save()
    data = _form(tenant, override.provider_config, fallbacks=[fallback.provider_config])
    data.pop("is_active")
    data["fallbacks-INITIAL_FORMS"] = "1"
    data["fallbacks-0-id"] = str(fallback.pk)
    data["fallbacks-0-override"] = str(override.pk)

    # when the admin switches it off
    response = admin_client_for(tenant).post(f"{LIST_URL}{override.pk}/change/", data)

    # then it is saved, its targets kept
    assert response.status_code == 302, response.context["adminform"].form.errors
    override.refresh_from_db()
    assert override.is_active is False
    assert list(override.fallbacks.values_list("provider_config", flat=True)) == [
        fallback.provider_config_id
    ]


def test_change_page_offers_current_retired_provider_but_no_other(tenant, admin_client_for):
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme")
    override.provider_config.is_active = False
    override.provider_config.save()
    ProviderConfigFactory(tenant=tenant, name="other-retired", is_active=False)
    live = ProviderConfigFactory(tenant=tenant, name="live")

    response = admin_client_for(tenant).get(f"{LIST_URL}{override.pk}/change/")

    choices = set(response.context["adminform"].form.fields["provider_config"].queryset)
    assert choices == {override.provider_config, live}


def test_change_page_labels_the_retired_configs_it_still_offers(tenant, admin_client_for):
    # given a switched-off override whose target and fallback configs were retired
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme", is_active=False)
    override.provider_config.name = "old-target"
    fallback = RoutingFallbackFactory(override=override, position=0)
    fallback.provider_config.name = "old-backup"
    for config in (override.provider_config, fallback.provider_config):
        config.is_active = False
        config.save()
    ProviderConfigFactory(tenant=tenant, name="live")

    # when its page is opened
    html = admin_client_for(tenant).get(f"{LIST_URL}{override.pk}/change/").content.decode()

    # then the target's and the fallback's choices say which configs are inactive
    def options(field):
        select = re.search(rf'<select name="{field}".*?</select>', html, re.S).group(0)
        return re.findall(r"<option [^>]*>(.*?)</option>", select)

    assert options("provider_config") == [
        "---------",
        "live (Fake (demo and tests))",
        "old-target (Fake (demo and tests), inactive)",
    ]
    assert options("fallbacks-0-provider_config") == [
        "---------",
        "live (Fake (demo and tests))",
        "old-backup (Fake (demo and tests), inactive)",
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_add_racing_an_open_write_of_the_same_scope_is_a_form_error():
    # given another write of the same scope, open but not yet committed

    tenant = TenantFactory()
    config = ProviderConfigFactory(tenant=tenant)
    membership = TenantMembershipFactory(tenant=tenant, role=TenantMembership.Role.ADMIN)
    responses = []

    def post_same_scope():
        client = Client(raise_request_exception=False)
        client.force_login(membership.user)
        try:
            responses.append(client.post(ADD_URL, _form(tenant, config, customer="acme")))
        finally:
            connection.close()

    # when the admin's form is posted meanwhile, and the other write then commits
    with transaction.atomic():
        routing_override_create(tenant=tenant, provider_config=config, customer_id="acme")
        page = threading.Thread(target=post_same_scope)
        page.start()
        page.join(timeout=1)
    page.join(timeout=10)

    # then the page says so, rather than failing with a server error
    assert responses[0].status_code == 200
    assert "An override for this customer and service already exists in this tenant." in (
        responses[0].text
    )
    assert RoutingOverride.objects.filter(tenant=tenant).count() == 1


def test_the_same_fallback_twice_on_one_page_is_named_in_words(tenant, admin_client_for):
    # given an override whose two fallback rows name the same provider config and model
    target = ProviderConfigFactory(tenant=tenant, name="primary")
    backup = ProviderConfigFactory(tenant=tenant, name="backup")
    client = admin_client_for(tenant)

    # when it is saved
    response = client.post(ADD_URL, _form(tenant, target, fallbacks=[backup, backup]))

    # then the error says what repeats in the page's words, not in field names
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.non_form_errors()
    assert errors == [
        "A provider config and model may be a fallback of this override once only: "
        "remove or change the repeated row."
    ]
    assert not RoutingOverride.objects.exists()


def test_override_list_shows_the_update_time_in_utc(tenant, admin_client_for):
    # given an override last updated at 22:55:07 UTC, in a tenant in New York
    tenant.timezone = "America/New_York"
    tenant.save()
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme")
    RoutingOverride.objects.filter(pk=override.pk).update(
        updated_at=dt.datetime(2026, 11, 22, 22, 55, 7, tzinfo=dt.UTC)
    )

    # when
    listed = admin_client_for(tenant).get(LIST_URL).content.decode()

    # then the time names its zone, as on the other admin pages
    assert "Updated (UTC)</a>" in listed
    assert '<td class="field-updated_at_utc">2026-11-22 22:55:07 UTC</td>' in listed
    assert "p.m." not in listed


def _change_form(override, fallbacks, **changes):
    """The override's change page as posted: its fields, its stored fallbacks and a new one."""
    new_fallback = ProviderConfigFactory(tenant=override.tenant)
    data = _form(
        override.tenant,
        override.provider_config,
        customer=override.customer_id,
        fallbacks=[f.provider_config for f in fallbacks] + [new_fallback],
    )
    data["fallbacks-INITIAL_FORMS"] = str(len(fallbacks))
    for index, fallback in enumerate(fallbacks):
        data[f"fallbacks-{index}-id"] = str(fallback.pk)
        data[f"fallbacks-{index}-override"] = str(override.pk)
    return {**data, **changes}


def test_override_deleted_while_its_change_page_is_open_is_not_saved_again(
    tenant, admin_client_for
):
    # given a tenant admin with the change page of an override with fallbacks open
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme")
    fallback = RoutingFallbackFactory(override=override, position=0)
    client = admin_client_for(tenant)
    url = f"{LIST_URL}{override.pk}/change/"
    assert client.get(url).status_code == 200
    data = _change_form(override, [fallback], note="moved to the backup")

    # when someone else deletes it, then the page is saved
    override_id = override.pk
    routing_override_delete(override=override)
    response = client.post(url, data, follow=True)

    # then the admin is told it is gone, as on every change page, and nothing is re-created
    assert response.redirect_chain == [("/admin/", 302)]
    assert (
        f'<li class="warning">Routing override with ID “{override_id}” doesn’t exist. '
        "Perhaps it was deleted?</li>" in response.text
    )
    assert not RoutingOverride.objects.filter(tenant=tenant).exists()
    assert not RoutingFallback.objects.filter(override_id=override_id).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_override_deleted_while_its_change_page_is_posted_with_an_error_is_not_found(
    monkeypatch, tenant, admin_client_for
):
    # given a tenant admin posting the change page of an override with fallbacks,
    # its provider config left out, while someone else deletes the override
    from overrides.admin import RoutingOverrideAdmin

    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme")
    fallback = RoutingFallbackFactory(override=override, position=0)
    client = admin_client_for(tenant)
    get_form = RoutingOverrideAdmin.get_form

    def deleted_meanwhile(self, *args, **kwargs):
        _committed_elsewhere(lambda: RoutingOverride.objects.filter(pk=override.pk).delete())
        return get_form(self, *args, **kwargs)

    monkeypatch.setattr(RoutingOverrideAdmin, "get_form", deleted_meanwhile)

    # when the page is saved
    response = client.post(
        f"{LIST_URL}{override.pk}/change/", _change_form(override, [fallback], provider_config="")
    )

    # then it answers that the override is gone, not errors on rows that went with it
    assert response.status_code == 404
    assert not RoutingOverride.objects.filter(tenant=tenant).exists()
    assert not RoutingFallback.objects.filter(override_id=override.pk).exists()
