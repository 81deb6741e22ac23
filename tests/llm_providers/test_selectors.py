"""Which tenants a user sees and administers; provider configs listed per tenant."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from llm_providers.selectors import (
    provider_config_list,
    tenant_ids_for_user,
    tenant_list_for_user,
    user_is_tenant_admin,
)
from tests.factories import (
    ProviderConfigFactory,
    TenantFactory,
    TenantMembershipFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_member_sees_own_tenants_only(tenant, other_tenant, tenant_admin):
    assert tenant_ids_for_user(tenant_admin) == {tenant.pk}
    assert list(tenant_list_for_user(tenant_admin)) == [tenant]


def test_role_filter_keeps_admin_memberships(tenant, other_tenant):
    user = UserFactory()
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    TenantMembershipFactory(user=user, tenant=other_tenant, role="viewer")
    assert tenant_ids_for_user(user) == {tenant.pk, other_tenant.pk}
    assert tenant_ids_for_user(user, role="admin") == {tenant.pk}
    assert user_is_tenant_admin(user, tenant.pk) is True
    assert user_is_tenant_admin(user, other_tenant.pk) is False


def test_superuser_sees_every_tenant(tenant, other_tenant, superuser):
    assert tenant_ids_for_user(superuser) == {tenant.pk, other_tenant.pk}
    assert user_is_tenant_admin(superuser, other_tenant.pk) is True


def test_inactive_tenant_hidden_from_members(tenant_admin, tenant):
    tenant.is_active = False
    tenant.save()
    assert tenant_ids_for_user(tenant_admin) == set()


def test_inactive_user_sees_nothing(tenant_admin):
    tenant_admin.is_active = False
    tenant_admin.save()
    assert tenant_ids_for_user(tenant_admin) == set()


def test_anonymous_user_sees_nothing(tenant):
    assert tenant_ids_for_user(AnonymousUser()) == set()


def test_provider_config_list_starts_from_tenant():
    tenant = TenantFactory()
    mine = ProviderConfigFactory(tenant=tenant, name="a")
    inactive = ProviderConfigFactory(tenant=tenant, name="b", is_active=False)
    ProviderConfigFactory(name="theirs")
    assert set(provider_config_list(tenant=tenant)) == {mine, inactive}
    assert list(provider_config_list(tenant=tenant, active_only=True)) == [mine]
