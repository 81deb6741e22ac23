"""Admin lists offer a checkbox, and actions, on the rows the user may act on only.

A tenant admin acts on their tenants' rows; a viewer's rows, and a global
price to a tenant admin, are listed without a checkbox; a viewer gets no
actions at all; a superuser acts on every row. A forged POST of an action
naming a row the list offered no checkbox for changes nothing.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone

from llm_providers.models import ProviderConfig, ServiceKey, TenantMembership
from tests.factories import (
    AlertDeliveryFactory,
    BudgetFactory,
    CallLogFactory,
    CostAlertFactory,
    DailyUsageFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    RoutingOverrideFactory,
    ServiceKeyFactory,
    TenantMembershipFactory,
    UserFactory,
)
from usage.models import AlertDelivery, Budget

pytestmark = pytest.mark.django_db

# Each list whose rows belong to tenants, and the actions it offers a tenant admin.
LISTS = {
    "providerconfig": ("llm_providers", ["delete_selected", "test_connection"]),
    "servicekey": ("llm_providers", ["delete_selected", "revoke"]),
    "modelprice": ("llm_providers", ["delete_selected"]),
    "tenantmembership": ("llm_providers", ["delete_selected"]),
    "routingoverride": ("overrides", ["delete_selected"]),
    "budget": ("usage", ["delete_selected"]),
    "costalert": ("usage", ["retry_deliveries"]),
}


def _changelist(kind: str) -> str:
    app, _ = LISTS[kind]
    return reverse(f"admin:{app}_{kind}_changelist")


def _change_url(kind: str, obj) -> str:
    app, _ = LISTS.get(kind, ("usage", None))
    return reverse(f"admin:{app}_{kind}_change", args=[quote(obj.pk)])


def _selectable(page: str) -> list[str]:
    return re.findall(r'name="_selected_action" value="([^"]+)"', page)


def _offered_actions(page: str) -> list[str]:
    select = re.search(r'<select name="action"[^>]*>(.*?)</select>', page, re.S)
    if select is None:
        return []
    return [value for value in re.findall(r'<option value="([^"]*)"', select.group(1)) if value]


def _row_of(kind: str, tenant, label: str):
    """One object of `kind` belonging to `tenant`."""
    if kind == "providerconfig":
        return ProviderConfigFactory(tenant=tenant, name=f"{label}-config")
    if kind == "servicekey":
        return ServiceKeyFactory(tenant=tenant, name=f"{label}-key")
    if kind == "modelprice":
        return ModelPriceFactory(tenant=tenant, model=f"{label}-model")
    if kind == "tenantmembership":
        return TenantMembershipFactory(
            tenant=tenant, user=UserFactory(username=f"{label}-member"), role="viewer"
        )
    if kind == "routingoverride":
        return RoutingOverrideFactory(tenant=tenant, customer_id=f"{label}-customer")
    if kind == "budget":
        return BudgetFactory(tenant=tenant, name=f"{label}-budget")
    if kind == "costalert":
        alert = CostAlertFactory(tenant=tenant)
        # Given up: out of attempts, until retried.
        AlertDeliveryFactory(alert=alert, attempts=24, next_attempt_at=None, last_error="SMTP down")
        return alert
    raise AssertionError(kind)


@pytest.fixture
def mixed_user(tenant, other_tenant):
    """Administers `tenant`, only views `other_tenant`."""
    user = UserFactory(username="mixed")
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    TenantMembershipFactory(user=user, tenant=other_tenant, role="viewer")
    return user


def _rows_on_page(kind, client, *rows) -> str:
    page = client.get(_changelist(kind)).content.decode()
    for row in rows:
        assert _change_url(kind, row) in page, f"{row} is not listed"
    return page


# --- what the lists offer -------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(LISTS))
def test_a_tenant_admin_who_views_another_tenant_can_select_their_own_rows_only(
    client, tenant, other_tenant, mixed_user, kind
):
    # given a row of the tenant the user administers and one of the tenant they view
    own = _row_of(kind, tenant, "own")
    viewed = _row_of(kind, other_tenant, "viewed")
    client.force_login(mixed_user)

    # when the user opens the list
    page = _rows_on_page(kind, client, own, viewed)

    # then both are listed, the actions are offered, and only their own row has a checkbox
    assert _offered_actions(page) == sorted(LISTS[kind][1])
    selectable = _selectable(page)
    assert str(own.pk) in selectable
    assert str(viewed.pk) not in selectable
    if kind == "tenantmembership":
        # The user's own admin membership is of the administered tenant; their
        # viewer membership is not.
        own_ids = TenantMembership.objects.filter(tenant=tenant).values_list("pk", flat=True)
        assert sorted(selectable) == sorted(str(pk) for pk in own_ids)
    else:
        assert selectable == [str(own.pk)]


@pytest.mark.parametrize("kind", sorted(LISTS))
def test_a_viewer_is_offered_no_checkbox_and_no_action(client, tenant, tenant_viewer, kind):
    row = _row_of(kind, tenant, "viewed")
    client.force_login(tenant_viewer)

    page = _rows_on_page(kind, client, row)

    assert _selectable(page) == []
    assert _offered_actions(page) == []
    assert 'id="action-toggle"' not in page


@pytest.mark.parametrize("kind", sorted(LISTS))
def test_a_superuser_can_select_every_row(client, tenant, other_tenant, superuser, kind):
    first = _row_of(kind, tenant, "first")
    second = _row_of(kind, other_tenant, "second")
    client.force_login(superuser)

    page = _rows_on_page(kind, client, first, second)

    assert {str(first.pk), str(second.pk)} <= set(_selectable(page))
    assert set(LISTS[kind][1]) <= set(_offered_actions(page))


def test_global_prices_have_no_checkbox_for_a_tenant_admin(client, tenant, tenant_admin):
    shared = ModelPriceFactory(model="shared-model")
    own = ModelPriceFactory(tenant=tenant, model="own-model")
    client.force_login(tenant_admin)

    page = _rows_on_page("modelprice", client, shared, own)

    assert _selectable(page) == [str(own.pk)]


@pytest.mark.parametrize("kind", ["calllog", "dailyusage"])
@pytest.mark.parametrize("who", ["superuser", "tenant_admin"])
def test_call_logs_and_daily_usage_offer_no_checkbox_to_anyone(client, tenant, request, kind, who):
    row = CallLogFactory(tenant=tenant) if kind == "calllog" else DailyUsageFactory(tenant=tenant)
    client.force_login(request.getfixturevalue(who))

    page = client.get(reverse(f"admin:usage_{kind}_changelist")).content.decode()

    assert reverse(f"admin:usage_{kind}_change", args=[row.pk]) in page
    assert _selectable(page) == []
    assert _offered_actions(page) == []


def test_tenants_are_selectable_by_a_superuser_only(client, tenant, tenant_admin, superuser):
    url = reverse("admin:llm_providers_tenant_changelist")
    client.force_login(tenant_admin)
    admin_page = client.get(url).content.decode()
    client.force_login(superuser)
    superuser_page = client.get(url).content.decode()

    # A tenant admin edits their tenant's settings; deleting a tenant is a superuser's.
    assert reverse("admin:llm_providers_tenant_change", args=[tenant.pk]) in admin_page
    assert (_selectable(admin_page), _offered_actions(admin_page)) == ([], [])
    assert _selectable(superuser_page) == [str(tenant.pk)]
    assert _offered_actions(superuser_page) == ["delete_selected"]


# --- forged selections ---------------------------------------------------------------


def _untouched(kind: str, row) -> bool:
    """Whether `row` is as its factory made it: not deleted, revoked, tested or retried."""
    model = type(row)
    if not model.objects.filter(pk=row.pk).exists():
        return False
    if kind == "providerconfig":
        return ProviderConfig.objects.get(pk=row.pk).last_test_status == ""
    if kind == "servicekey":
        return ServiceKey.objects.get(pk=row.pk).revoked is False
    if kind == "costalert":
        return AlertDelivery.objects.get(alert=row).next_attempt_at is None
    return True


_FORGED = [(kind, action) for kind, (_, actions) in sorted(LISTS.items()) for action in actions]


@pytest.mark.parametrize(("kind", "action"), _FORGED)
@pytest.mark.parametrize("confirmed", [False, True], ids=["asked", "confirmed"])
def test_a_forged_action_on_a_viewed_row_changes_nothing(
    client, tenant, other_tenant, mixed_user, kind, action, confirmed
):
    # given a row of a tenant the user only views, which their list offered no checkbox for
    viewed = _row_of(kind, other_tenant, "viewed")
    client.force_login(mixed_user)
    assert str(viewed.pk) not in _selectable(client.get(_changelist(kind)).content.decode())

    # when an action naming it is posted anyway (a deletion's confirmation too)
    data = {"action": action, "_selected_action": [str(viewed.pk)]}
    if confirmed:
        data["post"] = "yes"
    response = client.post(_changelist(kind), data)

    # then it is refused or leaves the row out, and the row is as it was
    assert response.status_code in (302, 403)
    assert _untouched(kind, viewed)


@pytest.mark.parametrize(("kind", "action"), _FORGED)
def test_a_viewers_forged_action_changes_nothing(client, tenant, tenant_viewer, kind, action):
    row = _row_of(kind, tenant, "viewed")
    client.force_login(tenant_viewer)

    response = client.post(
        _changelist(kind), {"action": action, "_selected_action": [str(row.pk)], "post": "yes"}
    )

    # The list offers a viewer no action: the POST only shows the list again.
    assert response.status_code == 200
    assert _untouched(kind, row)


def test_a_forged_deletion_next_to_an_own_row_deletes_the_own_row_only(
    client, tenant, other_tenant, mixed_user
):
    # given a budget of each tenant, both named in the confirmation's POST
    own = BudgetFactory(tenant=tenant, name="own-budget")
    viewed = BudgetFactory(tenant=other_tenant, name="viewed-budget")
    client.force_login(mixed_user)

    asked = client.post(
        _changelist("budget"),
        {"action": "delete_selected", "_selected_action": [str(own.pk), str(viewed.pk)]},
    )

    # then the confirmation offers their own one only, and deleting it leaves the other
    assert _selectable(asked.content.decode()) == [str(own.pk)]
    client.post(
        _changelist("budget"),
        {"action": "delete_selected", "_selected_action": [str(own.pk)], "post": "yes"},
    )
    assert list(Budget.objects.values_list("name", flat=True)) == ["viewed-budget"]


def test_retrying_alerts_of_both_tenants_retries_the_administered_ones_only(
    client, tenant, other_tenant, mixed_user
):
    own = _row_of("costalert", tenant, "own")
    viewed = _row_of("costalert", other_tenant, "viewed")
    client.force_login(mixed_user)

    response = client.post(
        _changelist("costalert"),
        {"action": "retry_deliveries", "_selected_action": [str(own.pk), str(viewed.pk)]},
        follow=True,
    )

    assert [str(m) for m in response.context["messages"]] == [
        "1 alert of tenants you only view was not retried.",
        "1 delivery queued for another attempt.",
    ]
    assert AlertDelivery.objects.get(alert=own).next_attempt_at <= timezone.now()
    assert _untouched("costalert", viewed)
