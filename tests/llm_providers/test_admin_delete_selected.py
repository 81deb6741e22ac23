"""Deleting a selection in the admin: forged selections never reach another tenant's objects."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from llm_providers.models import ModelPrice, ProviderConfig, ServiceKey, TenantMembership
from overrides.models import RoutingOverride
from tests.factories import (
    ModelPriceFactory,
    ProviderConfigFactory,
    RoutingOverrideFactory,
    ServiceKeyFactory,
    TenantFactory,
    TenantMembershipFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def third_tenant(db):
    return TenantFactory(name="Initech", slug="initech")


@pytest.fixture
def mixed_user(tenant, other_tenant):
    """Administers `tenant`, only views `other_tenant`, is no member of any other."""
    user = UserFactory(username="mixed")
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    TenantMembershipFactory(user=user, tenant=other_tenant, role="viewer")
    return user


def _selected(page: str) -> list[str]:
    return re.findall(r'name="_selected_action" value="([^"]+)"', page)


def _objects(tenant, other_tenant, third_tenant):
    """One object of each deletable kind per tenant: own, viewed, foreign."""
    made = {}
    for label, owner in (("own", tenant), ("viewed", other_tenant), ("foreign", third_tenant)):
        config = ProviderConfigFactory(tenant=owner, name=f"{label}-config")
        made[label] = {
            "providerconfig": config,
            "modelprice": ModelPriceFactory(tenant=owner, model=f"{label}-model"),
            "routingoverride": RoutingOverrideFactory(
                tenant=owner, provider_config=config, customer_id=f"{label}-customer"
            ),
            "servicekey": ServiceKeyFactory(tenant=owner, name=f"{label}-key"),
        }
    return made


_CHANGELISTS = {
    "providerconfig": ("admin:llm_providers_providerconfig_changelist", ProviderConfig),
    "modelprice": ("admin:llm_providers_modelprice_changelist", ModelPrice),
    "routingoverride": ("admin:overrides_routingoverride_changelist", RoutingOverride),
    "servicekey": ("admin:llm_providers_servicekey_changelist", ServiceKey),
}


@pytest.mark.parametrize("kind", sorted(_CHANGELISTS))
def test_confirmation_offers_only_own_objects_of_a_forged_selection(
    client, tenant, other_tenant, third_tenant, mixed_user, kind
):
    # given an object of each tenant, and a user who administers one, views one
    objects = _objects(tenant, other_tenant, third_tenant)
    url, model = _CHANGELISTS[kind]
    client.force_login(mixed_user)
    ids = [str(objects[label][kind].pk) for label in ("own", "viewed", "foreign")]

    # when a selection naming all three is posted for deletion
    response = client.post(reverse(url), {"action": "delete_selected", "_selected_action": ids})

    # then the confirmation offers the administered tenant's object only
    page = response.content.decode()
    assert response.status_code == 200
    assert _selected(page) == [ids[0]]
    assert "foreign" not in page
    assert model.objects.filter(pk__in=ids).count() == 3


@pytest.mark.parametrize("kind", sorted(_CHANGELISTS))
def test_confirmed_forged_selection_with_a_viewed_object_deletes_nothing(
    client, tenant, other_tenant, third_tenant, mixed_user, kind
):
    objects = _objects(tenant, other_tenant, third_tenant)
    url, model = _CHANGELISTS[kind]
    client.force_login(mixed_user)
    ids = [str(objects[label][kind].pk) for label in ("own", "viewed", "foreign")]

    response = client.post(
        reverse(url), {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )

    assert response.status_code == 403
    assert model.objects.filter(pk__in=ids).count() == 3


@pytest.mark.parametrize("kind", sorted(_CHANGELISTS))
def test_confirmed_forged_selection_with_a_foreign_object_deletes_only_own(
    client, tenant, other_tenant, third_tenant, mixed_user, kind
):
    # given a selection naming the user's object and one of a tenant they are no member of
    objects = _objects(tenant, other_tenant, third_tenant)
    url, model = _CHANGELISTS[kind]
    client.force_login(mixed_user)
    own, foreign = objects["own"][kind], objects["foreign"][kind]

    # when it is posted as confirmed
    response = client.post(
        reverse(url),
        {
            "action": "delete_selected",
            "_selected_action": [str(own.pk), str(foreign.pk)],
            "post": "yes",
        },
    )

    # then the foreign one is never part of the selection: only the own one goes
    assert response.status_code == 302
    assert model.objects.filter(pk=foreign.pk).exists()
    if kind == "providerconfig":
        assert not ProviderConfig.objects.filter(pk=own.pk, is_active=True).exists()
    else:
        assert not model.objects.filter(pk=own.pk).exists()


def test_confirmed_selection_with_a_global_price_deletes_nothing(client, tenant, tenant_admin):
    shared = ModelPriceFactory(model="shared-model")
    own = ModelPriceFactory(tenant=tenant, model="own-model")
    client.force_login(tenant_admin)

    response = client.post(
        reverse("admin:llm_providers_modelprice_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [str(shared.pk), str(own.pk)],
            "post": "yes",
        },
    )

    assert response.status_code == 403
    assert ModelPrice.objects.filter(pk__in=[shared.pk, own.pk]).count() == 2


def test_viewer_has_no_delete_action(client, tenant, tenant_viewer):
    price = ModelPriceFactory(tenant=tenant, model="own-model")
    client.force_login(tenant_viewer)

    for post in ({}, {"post": "yes"}):
        client.post(
            reverse("admin:llm_providers_modelprice_changelist"),
            {"action": "delete_selected", "_selected_action": [str(price.pk)], **post},
        )

    assert ModelPrice.objects.filter(pk=price.pk).exists()


def test_memberships_of_a_viewed_tenant_stay_out_of_the_selection(
    client, tenant, other_tenant, mixed_user
):
    own = TenantMembershipFactory(tenant=tenant, role="viewer")
    viewed = TenantMembershipFactory(tenant=other_tenant, role="admin")
    client.force_login(mixed_user)
    url = reverse("admin:llm_providers_tenantmembership_changelist")
    ids = [str(own.pk), str(viewed.pk)]

    asked = client.post(url, {"action": "delete_selected", "_selected_action": ids})
    confirmed = client.post(
        url, {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )

    assert _selected(asked.content.decode()) == [str(own.pk)]
    assert confirmed.status_code == 403
    assert TenantMembership.objects.filter(pk__in=ids).count() == 2


def test_price_list_offers_a_tenant_admin_checkboxes_on_their_own_prices_only(
    client, tenant, other_tenant, mixed_user
):
    # given a global price, one of the tenant the user administers, one of a viewed tenant
    shared = ModelPriceFactory(model="shared-model")
    own = ModelPriceFactory(tenant=tenant, model="own-model")
    viewed = ModelPriceFactory(tenant=other_tenant, model="viewed-model")
    client.force_login(mixed_user)

    # when the user opens the price list
    page = client.get(reverse("admin:llm_providers_modelprice_changelist")).content.decode()

    # then all three are listed, and only their own one can be selected (for deletion)
    for price in (shared, own, viewed):
        assert f"/admin/llm_providers/modelprice/{price.pk}/change/" in page
    assert _selected(page) == [str(own.pk)]
    assert 'value="delete_selected"' in page


def test_price_list_offers_a_superuser_checkboxes_on_every_price(client, tenant, superuser):
    shared = ModelPriceFactory(model="shared-model")
    own = ModelPriceFactory(tenant=tenant, model="own-model")
    client.force_login(superuser)

    page = client.get(reverse("admin:llm_providers_modelprice_changelist")).content.decode()

    assert sorted(_selected(page)) == sorted([str(shared.pk), str(own.pk)])
