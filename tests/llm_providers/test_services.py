"""Provider config, service key and user token writes: validated, encrypted, default
switched atomically."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.utils import timezone

from llm_providers.models import ProviderConfig, ServiceKey, UserToken
from llm_providers.selectors import user_token_for_key
from llm_providers.services import (
    provider_config_create,
    provider_config_delete,
    provider_config_test_connection,
    provider_config_update,
    service_key_create,
    service_key_revoke,
    user_token_create,
    user_token_revoke,
)
from tests.factories import (
    BudgetFactory,
    ProviderConfigFactory,
    RoutingOverrideFactory,
    ServiceKeyFactory,
    TenantFactory,
    UserFactory,
    UserTokenFactory,
)
from tests.unstorable_text import UNSTORABLE_TEXT
from usage.models import Budget

pytestmark = pytest.mark.django_db

KEY = "sk-Zx81Qm0PaL77Tn4Rk3Wq9fQ2"


def test_create_stores_encrypted_key_and_display_parts(raw_column):
    tenant = TenantFactory()
    config = provider_config_create(
        tenant=tenant, name="openai", provider_type="openai", api_key=KEY, default_model="gpt-4o"
    )
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert stored.api_key == KEY
    assert stored.key_mask == "sk-…9fQ2"
    assert KEY not in raw_column(stored, "api_key")


def test_create_without_required_key_saves_nothing():
    tenant = TenantFactory()
    with pytest.raises(ValidationError) as caught:
        provider_config_create(tenant=tenant, name="openai", provider_type="openai")
    assert caught.value.message_dict == {"api_key": ["OpenAI needs an API key."]}
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_create_with_unknown_field_refused():
    with pytest.raises(ValidationError) as caught:
        provider_config_create(tenant=TenantFactory(), name="x", provider_type="fake", colour="red")
    assert caught.value.messages == ["Unknown provider config field: colour."]


def test_create_duplicate_name_says_so():
    existing = ProviderConfigFactory(name="main")
    with pytest.raises(ValidationError) as caught:
        provider_config_create(tenant=existing.tenant, name="main", provider_type="fake")
    assert caught.value.messages == [
        "A provider config with this name already exists in this tenant."
    ]
    assert ProviderConfig.objects.filter(tenant=existing.tenant).count() == 1


def test_create_default_replaces_previous_default():
    old = ProviderConfigFactory(is_default=True)
    new = provider_config_create(
        tenant=old.tenant, name="new", provider_type="fake", is_default=True
    )
    old.refresh_from_db()
    assert (old.is_default, new.is_default) == (False, True)
    assert list(
        ProviderConfig.objects.filter(tenant=old.tenant, is_default=True).values_list(
            "name", flat=True
        )
    ) == ["new"]


def test_update_with_empty_key_keeps_stored_key():
    config = ProviderConfigFactory(provider_type="openai", api_key=KEY)
    provider_config_update(provider_config=config, data={"api_key": "", "priority": 7})
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.api_key, stored.priority, stored.key_mask) == (KEY, 7, "sk-…9fQ2")


def test_update_with_new_key_replaces_key_and_mask():
    config = ProviderConfigFactory(provider_type="openai", api_key=KEY)
    provider_config_update(provider_config=config, data={"api_key": "sk-another-key-0000WXYZ"})
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert stored.api_key == "sk-another-key-0000WXYZ"
    assert stored.key_mask == "sk-…WXYZ"


def test_update_moving_endpoint_without_key_is_refused():
    # Pointing a stored key at another server must not be possible without
    # knowing the key: a connection test would hand it to that server.
    config = ProviderConfigFactory(
        provider_type="openai_compatible", base_url="https://8.8.8.8/v1", api_key=KEY
    )
    with pytest.raises(ValidationError) as caught:
        provider_config_update(provider_config=config, data={"base_url": "https://1.1.1.1/v1"})
    assert "enter the key again" in caught.value.message_dict["api_key"][0]
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.base_url, stored.api_key) == ("https://8.8.8.8/v1", KEY)


def test_update_moving_endpoint_with_key_entered_again_is_saved():
    config = ProviderConfigFactory(
        provider_type="openai_compatible", base_url="https://8.8.8.8/v1", api_key=KEY
    )
    provider_config_update(
        provider_config=config,
        data={"base_url": "https://1.1.1.1/v1", "api_key": "sk-for-the-new-host-0000ABCD"},
    )
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.base_url, stored.api_key) == (
        "https://1.1.1.1/v1",
        "sk-for-the-new-host-0000ABCD",
    )


def test_update_changing_provider_type_without_key_is_refused():
    config = ProviderConfigFactory(provider_type="openai", api_key=KEY)
    with pytest.raises(ValidationError) as caught:
        provider_config_update(provider_config=config, data={"provider_type": "groq"})
    assert "enter the key again" in caught.value.message_dict["api_key"][0]
    assert ProviderConfig.objects.get(pk=config.pk).provider_type == "openai"


@pytest.mark.parametrize("keyless_type", ["ollama", "fake"])
def test_update_switching_to_a_type_that_needs_no_key_drops_the_old_key(keyless_type):
    # given an OpenAI config with its key
    config = ProviderConfigFactory(provider_type="openai", api_key=KEY, default_model="gpt-4o")

    # when it becomes a type that works without a key, and no key is entered
    provider_config_update(
        provider_config=config,
        data={"provider_type": keyless_type, "base_url": "https://8.8.8.8/v1"},
    )

    # then it is saved without the key, which never reaches the new endpoint
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.provider_type, stored.api_key, stored.key_mask) == (keyless_type, None, "")


def test_update_switching_to_a_type_that_needs_no_key_keeps_a_key_entered_with_it():
    config = ProviderConfigFactory(provider_type="openai", api_key=KEY, default_model="gpt-4o")

    provider_config_update(
        provider_config=config,
        data={
            "provider_type": "ollama",
            "base_url": "https://8.8.8.8/v1",
            "api_key": "sk-for-the-proxy-0000ABCD",
        },
    )

    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.provider_type, stored.api_key) == ("ollama", "sk-for-the-proxy-0000ABCD")


def test_update_switching_to_bedrock_drops_the_old_api_key():
    config = ProviderConfigFactory(provider_type="openai", api_key=KEY)
    provider_config_update(
        provider_config=config,
        data={
            "provider_type": "bedrock",
            "aws_region": "eu-west-1",
            "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        },
    )
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert stored.api_key is None
    assert stored.aws_access_key_id == "AKIAIOSFODNN7EXAMPLE"


def test_update_invalid_base_url_leaves_row_unchanged():
    config = ProviderConfigFactory(provider_type="openai_compatible", base_url="https://8.8.8.8/")
    with pytest.raises(ValidationError) as caught:
        provider_config_update(provider_config=config, data={"base_url": "http://169.254.169.254/"})
    assert "link-local address" in caught.value.message_dict["base_url"][0]
    assert ProviderConfig.objects.get(pk=config.pk).base_url == "https://8.8.8.8/"


def test_update_keeps_unreadable_key_untouched(raw_column):
    config = ProviderConfigFactory(provider_type="openai", api_key=KEY)
    before = raw_column(config, "api_key")
    with override_settings(SALT_KEY=["other-salt"]):
        stored = ProviderConfig.objects.get(pk=config.pk)
        provider_config_update(provider_config=stored, data={"priority": 3})
    assert raw_column(config, "api_key") == before
    assert ProviderConfig.objects.get(pk=config.pk).priority == 3


def test_delete_removes_unreferenced_config():
    config = ProviderConfigFactory()
    assert provider_config_delete(provider_config=config) is True
    assert not ProviderConfig.objects.filter(pk=config.pk).exists()


def test_delete_deactivates_config_a_budget_is_scoped_to():
    config = ProviderConfigFactory()
    budget = BudgetFactory(tenant=config.tenant, provider_config=config, action="block")

    assert provider_config_delete(provider_config=config) is False

    assert ProviderConfig.objects.get(pk=config.pk).is_active is False
    assert Budget.objects.get(pk=budget.pk).provider_config_id == config.pk


def test_delete_deactivates_config_used_by_override():
    override = RoutingOverrideFactory(provider_config__is_default=True)
    config = override.provider_config
    assert provider_config_delete(provider_config=config) is False
    config.refresh_from_db()
    assert (config.is_active, config.is_default) == (False, False)


def test_connection_test_records_ok():
    config = ProviderConfigFactory()
    updated_at = config.updated_at
    check = provider_config_test_connection(provider_config=config)
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert check.ok is True
    assert check.models == ["fake-small", "fake-large"]
    assert stored.last_test_status == "ok"
    assert stored.last_test_error == ""
    assert stored.last_test_latency_ms is not None and stored.last_test_latency_ms >= 0
    assert stored.last_tested_at is not None
    assert stored.updated_at == updated_at


def test_connection_test_records_authentication_failure():
    config = ProviderConfigFactory(options={"failure": "authentication"})
    check = provider_config_test_connection(provider_config=config)
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert check.ok is False
    assert stored.last_test_status == "error"
    assert stored.last_test_error == "provider_authentication: Fake provider rejected the key."


def test_connection_test_reports_unreadable_key_without_ciphertext(raw_column):
    config = ProviderConfigFactory(name="legacy", api_key="fake-key-0123456789")
    ciphertext = raw_column(config, "api_key")
    with override_settings(SALT_KEY=["other-salt"]):
        stored = ProviderConfig.objects.get(pk=config.pk)
        check = provider_config_test_connection(provider_config=stored)
    assert check.ok is False
    assert check.error.startswith("secret_unreadable: The API key of provider config “legacy”")
    assert ciphertext not in check.error
    assert ProviderConfig.objects.get(pk=config.pk).last_test_status == "error"


def test_connection_test_refuses_ollama_default_endpoint_once_private_urls_off(settings):
    # given an Ollama config saved while private addresses were allowed
    settings.PROVIDER_ALLOW_PRIVATE_URLS = True
    config = provider_config_create(tenant=TenantFactory(), name="local", provider_type="ollama")
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False

    check = provider_config_test_connection(provider_config=config)

    # then no connection is tried: the refusal is the check's whole answer
    assert (check.ok, check.latency_ms, check.models) == (False, 0, [])
    assert check.error == (
        "Ollama needs a base URL on a public address: its default endpoint "
        "(http://localhost:11434/v1) is not public. Enter one, or turn on "
        "PROVIDER_ALLOW_PRIVATE_URLS to allow private addresses."
    )
    assert ProviderConfig.objects.get(pk=config.pk).last_test_status == "error"


def test_service_key_create_returns_secret_once_and_stores_hash():
    tenant = TenantFactory()
    service_key, secret = service_key_create(tenant=tenant, name="billing")
    stored = ServiceKey.objects.get(pk=service_key.pk)
    assert secret.startswith(stored.prefix + ".")
    assert secret not in stored.hashed_key
    assert ServiceKey.objects.get_from_key(secret) == stored
    assert stored.tenant_id == tenant.pk


def test_service_key_create_without_name_refused():
    with pytest.raises(ValidationError) as caught:
        service_key_create(tenant=TenantFactory(), name="")
    assert caught.value.message_dict == {
        "name": ["Name the service key, e.g. after the program using it."]
    }
    assert ServiceKey.objects.count() == 0


def test_service_key_revoke_makes_key_unusable():
    service_key = ServiceKeyFactory()
    assert service_key_revoke(service_key=service_key) is True
    assert ServiceKey.objects.is_valid(service_key.secret) is False
    assert service_key_revoke(service_key=service_key) is False


def test_user_token_create_returns_token_once_and_stores_hash():
    user = UserFactory(username="alice")

    user_token, token = user_token_create(user=user, name="  nightly report  ")

    stored = UserToken.objects.get(pk=user_token.pk)
    assert (stored.user, stored.name, stored.revoked, stored.expiry_date) == (
        user,
        "nightly report",
        False,
        None,
    )
    assert token.startswith(stored.prefix + ".")
    assert stored.hashed_key == UserToken.objects.key_generator.hash(token)
    assert user_token_for_key(key=token) == stored


@pytest.mark.parametrize(
    ("name", "expiry", "errors"),
    [
        ("", None, {"name": ["Name the token, e.g. after the program using it."]}),
        ("ci", timedelta(minutes=-1), {"expiry_date": ["The expiry date must be in the future."]}),
    ],
    ids=["no-name", "past-expiry"],
)
def test_user_token_create_refused_without_name_or_with_past_expiry(name, expiry, errors):
    expiry_date = timezone.now() + expiry if expiry else None

    with pytest.raises(ValidationError) as caught:
        user_token_create(user=UserFactory(), name=name, expiry_date=expiry_date)

    assert caught.value.message_dict == errors
    assert UserToken.objects.count() == 0


def test_user_token_revoke_makes_token_unusable_once():
    user_token = UserTokenFactory()

    assert user_token_revoke(user_token=user_token) is True
    assert user_token_revoke(user_token=user_token) is False
    assert UserToken.objects.get(pk=user_token.pk).revoked is True


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["name", "default_model", "aws_region"])
@UNSTORABLE_TEXT
def test_provider_config_create_refuses_text_postgresql_cannot_store(field, value, message):
    # A Python caller's value the database would refuse is a ValidationError
    # on its field, not a DataError, and a NULL is not reported as the name
    # being taken.
    tenant = TenantFactory()
    arguments = {"name": "main", "provider_type": "fake", field: value}

    with pytest.raises(ValidationError) as raised:
        provider_config_create(tenant=tenant, **arguments)

    assert raised.value.message_dict == {field: [message]}
    assert not ProviderConfig.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("create", ["service_key", "user_token"])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ci\x00", "Must not contain NUL characters."),
        ("ci\ud83d", "Must not contain unpaired surrogates (such as \\ud800)."),
    ],
    ids=["nul", "surrogate"],
)
def test_key_create_refuses_a_name_postgresql_cannot_store(create, name, message):
    with pytest.raises(ValidationError) as raised:
        if create == "service_key":
            service_key_create(tenant=TenantFactory(), name=name)
        else:
            user_token_create(user=UserFactory(), name=name)

    assert raised.value.message_dict == {"name": [message]}
    assert (ServiceKey.objects.count(), UserToken.objects.count()) == (0, 0)
