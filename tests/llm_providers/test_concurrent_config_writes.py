"""Two writers of one provider config: neither reverts what the other saved."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import Client
from django.urls import reverse

from llm_providers import admin as provider_admin
from llm_providers.api import views as api_views
from llm_providers.models import ProviderConfig
from llm_providers.services import provider_config_test_connection, provider_config_update
from tests.api.fixtures import token_client
from tests.factories import (
    ProviderConfigFactory,
    TenantFactory,
    TenantMembershipFactory,
    UserFactory,
)
from tests.threads import thread_run

OLD_KEY = "sk-proj-StoredBefore0123456789abcdefWXYZ"
NEW_KEY = "sk-proj-EnteredMeanwhile9876543210zyxQRST"


def _before_update(monkeypatch, caller, action) -> None:
    """Run `action` once, when `caller` (the API's or the admin's module) has read
    the config and hands it to `provider_config_update`."""
    pending = [action]

    def updating(**kwargs):
        if pending:
            pending.pop()()
        return provider_config_update(**kwargs)

    monkeypatch.setattr(caller, "provider_config_update", updating)


def _new_key_saved_elsewhere(config) -> None:
    def save():
        with transaction.atomic():
            stored = ProviderConfig.objects.get(pk=config.pk)
            provider_config_update(provider_config=stored, data={"api_key": NEW_KEY})

    thread_run(save)


@pytest.fixture
def setup(db):
    tenant = TenantFactory()
    admin = UserFactory()
    TenantMembershipFactory(user=admin, tenant=tenant, role="admin")
    config = ProviderConfigFactory(
        tenant=tenant, name="openai", provider_type="openai", api_key=OLD_KEY, priority=10
    )
    return tenant, admin, config


def _stored(config) -> tuple:
    stored = ProviderConfig.objects.get(pk=config.pk)
    return stored.api_key, stored.key_mask, stored.name, stored.priority


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_api_rename_does_not_revert_a_key_saved_meanwhile(setup, monkeypatch):
    # given a config, and an API request renaming it
    tenant, admin, config = setup
    api = token_client(admin, tenant=tenant)

    # when a new key is saved after the request read the config, before it saved
    _before_update(monkeypatch, api_views, lambda: _new_key_saved_elsewhere(config))
    answer = api.patch(f"/api/v1/providers/{config.pk}", {"name": "renamed"}, format="json")

    # then the config has both the new name and the new key
    assert answer.status_code == 200, answer.content
    assert answer.json()["key_mask"] == "sk-proj-…QRST"
    assert _stored(config) == (NEW_KEY, "sk-proj-…QRST", "renamed", 10)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_admin_save_with_empty_key_does_not_revert_a_key_saved_meanwhile(setup, monkeypatch):
    # given a config, and its admin change form sent with the key left empty
    tenant, admin, config = setup
    browser = Client()
    browser.force_login(admin)
    form = {
        "name": "openai",
        "provider_type": "openai",
        "default_model": "",
        "allowed_models": "",
        "base_url": "",
        "aws_region": "",
        "options": "{}",
        "is_active": "on",
        "priority": "3",
        "rpm_limit": "",
        "tpm_limit": "",
        "api_key": "",
        "aws_access_key_id": "",
        "aws_secret_access_key": "",
    }

    # when a new key is saved through the API after the admin read the config
    _before_update(monkeypatch, provider_admin, lambda: _new_key_saved_elsewhere(config))
    answer = browser.post(
        reverse("admin:llm_providers_providerconfig_change", args=[config.pk]), form
    )

    # then the config keeps the new key, with the priority the admin set
    assert answer.status_code == 302
    assert _stored(config) == (NEW_KEY, "sk-proj-…QRST", "openai", 3)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_update_does_not_revert_a_connection_test_recorded_meanwhile(
    setup, allow_private_urls, openai_upstream
):
    # given a config pointing at a loopback upstream that accepts its key
    tenant, _, config = setup
    config = provider_config_update(
        provider_config=config, data={"base_url": openai_upstream.base_url, "api_key": OLD_KEY}
    )

    openai_upstream.enqueue_models(["gpt-4o-mini"])

    # when its connection is tested after an update of its priority read it
    stale = ProviderConfig.objects.get(pk=config.pk)
    thread_run(
        lambda: provider_config_test_connection(
            provider_config=ProviderConfig.objects.get(pk=config.pk)
        )
    )
    provider_config_update(provider_config=stale, data={"priority": 4})

    # then the test's outcome stays recorded
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.last_test_status, stored.last_test_error, stored.priority) == ("ok", "", 4)
    assert stored.last_tested_at is not None


@pytest.mark.django_db(transaction=True)
def test_update_of_a_config_deleted_meanwhile_is_refused(setup):
    # given a config read by an update, then deleted by another writer
    _, _, config = setup
    stale = ProviderConfig.objects.get(pk=config.pk)
    ProviderConfig.objects.filter(pk=config.pk).delete()

    # when the update saves, then it is refused and nothing is recreated
    with pytest.raises(ValidationError) as refused:
        provider_config_update(provider_config=stale, data={"priority": 4})
    assert refused.value.messages == ["This provider config was deleted meanwhile."]
    assert ProviderConfig.objects.filter(pk=config.pk).exists() is False
