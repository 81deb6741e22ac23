"""Credentials at rest: ciphertext only, never handed on as a key, keys from settings."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core import serializers
from django.test import override_settings

from llm_providers.encryption import (
    UnreadableSecret,
    encrypted_fields_reset_keys,
    secret_display_parts,
    secret_mask,
)
from llm_providers.exceptions import SecretUnreadableError
from llm_providers.models import ProviderConfig
from tests.factories import ProviderConfigFactory

pytestmark = pytest.mark.django_db

KEY = "sk-proj-9fQ2LmZx81Wq0PaL77Tn4Rk3"


def _fernet(secret_key: str, salt: str) -> Fernet:
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt.encode(), iterations=100_000)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(secret_key.encode())))


@pytest.fixture
def config():
    return ProviderConfigFactory(name="prod-openai", provider_type="openai", api_key=KEY)


def test_raw_column_holds_ciphertext_only(config, raw_column, settings):
    raw = raw_column(config, "api_key")
    assert raw.startswith("gAAAAA")
    assert KEY not in raw
    assert not any(KEY[i : i + 8] in raw for i in range(len(KEY) - 7))
    plain = _fernet(settings.SECRET_KEY, settings.SALT_KEY[0]).decrypt(raw.encode()).decode()
    assert plain == KEY


def test_key_reads_back_as_plaintext(config):
    assert ProviderConfig.objects.get(pk=config.pk).api_key == KEY


def test_empty_key_stored_as_null(raw_column):
    config = ProviderConfigFactory(provider_type="fake")
    assert raw_column(config, "api_key") is None


def test_wrong_salt_reads_as_unreadable_not_ciphertext(config, raw_column):
    with override_settings(SALT_KEY=["some-other-salt"]):
        stored = ProviderConfig.objects.get(pk=config.pk)
        assert isinstance(stored.api_key, UnreadableSecret)
        assert not isinstance(stored.api_key, str)
        assert stored.key_unreadable is True
        assert stored.key_mask == "key unreadable — enter it again"
        assert raw_column(config, "api_key") not in repr(stored.api_key)


def test_wrong_key_credentials_raise_error_naming_config(config, raw_column):
    with override_settings(SALT_KEY=["some-other-salt"]):
        stored = ProviderConfig.objects.get(pk=config.pk)
        with pytest.raises(SecretUnreadableError) as caught:
            stored.credentials()
    message = str(caught.value)
    assert message == (
        f"The API key of provider config “prod-openai” ({config.pk}) cannot be decrypted with "
        "the configured SECRET_KEY/SALT_KEY: restore the old key or enter the API key again."
    )
    assert caught.value.extra == {"provider_config_id": str(config.pk), "field": "api_key"}
    assert raw_column(config, "api_key") not in message


def test_saving_unreadable_config_keeps_ciphertext(config, raw_column):
    before = raw_column(config, "api_key")
    with override_settings(SALT_KEY=["some-other-salt"]):
        stored = ProviderConfig.objects.get(pk=config.pk)
        stored.priority = 5
        stored.full_clean()
        stored.save()
    assert raw_column(config, "api_key") == before
    assert ProviderConfig.objects.get(pk=config.pk).api_key == KEY


def test_old_salt_still_decrypts_when_listed_second(config, settings):
    with override_settings(SALT_KEY=["new-salt", settings.SALT_KEY[0]]):
        assert ProviderConfig.objects.get(pk=config.pk).api_key == KEY


def test_new_writes_use_first_salt(settings, raw_column):
    with override_settings(SALT_KEY=["new-salt", settings.SALT_KEY[0]]):
        config = ProviderConfigFactory(provider_type="openai", api_key=KEY)
    raw = raw_column(config, "api_key").encode()
    assert _fernet(settings.SECRET_KEY, "new-salt").decrypt(raw).decode() == KEY


def test_secret_key_fallbacks_decrypt_old_values(config, settings):
    old_secret = settings.SECRET_KEY
    with override_settings(
        SECRET_KEY="a-new-secret-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[old_secret]
    ):
        assert ProviderConfig.objects.get(pk=config.pk).api_key == KEY
    with override_settings(SECRET_KEY="a-new-secret-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[]):
        assert isinstance(ProviderConfig.objects.get(pk=config.pk).api_key, UnreadableSecret)


def test_reset_keys_forgets_keys_cached_on_fields():
    field = ProviderConfig._meta.get_field("api_key")
    cached = field.keys
    assert field.f.decrypt(field.f.encrypt(b"x")) == b"x"
    assert field.__dict__["keys"] is cached
    encrypted_fields_reset_keys()
    assert "keys" not in field.__dict__
    assert "f" not in field.__dict__


def test_changed_salt_setting_replaces_cached_keys():
    field = ProviderConfig._meta.get_field("api_key")
    before = list(field.keys)
    with override_settings(SALT_KEY=["another-salt"]):
        during = list(field.keys)
    assert during != before
    assert list(field.keys) == before


def test_serialisation_never_writes_the_key(config):
    dumped = serializers.serialize("json", [ProviderConfig.objects.get(pk=config.pk)])
    assert KEY not in dumped
    assert '"api_key": "<secret>"' in dumped


def test_unreadable_secret_repr_hides_ciphertext():
    secret = UnreadableSecret("gAAAAA-not-shown")
    assert repr(secret) == "<UnreadableSecret>"
    assert str(secret) == "<UnreadableSecret>"


@pytest.mark.parametrize(
    ("secret", "parts", "mask"),
    [
        ("sk-ant-api03-abcdefghijkl-WXYZ", ("sk-ant-", "WXYZ"), "sk-ant-…WXYZ"),
        ("gsk_0123456789abcdefQRST", ("gsk_", "QRST"), "gsk_…QRST"),
        ("0123456789ab", ("", "89ab"), "…89ab"),
        ("0123456789a", ("", ""), "••••"),
        # Only what follows the public prefix counts: four of four would be the whole key.
        ("sk-proj-wxyz", ("sk-proj-", ""), "••••"),
        ("sk-proj-0123456789a", ("sk-proj-", ""), "••••"),
        ("sk-proj-0123456789ab", ("sk-proj-", "89ab"), "sk-proj-…89ab"),
    ],
)
def test_display_parts_and_mask(secret, parts, mask):
    assert secret_display_parts(secret) == parts
    assert secret_mask(*parts) == mask


def test_migration_hides_last_four_stored_under_the_old_rule():
    import importlib

    from django.apps import apps

    migration = importlib.import_module(
        "llm_providers.migrations.0002_key_last4_after_public_prefix"
    )
    short = ProviderConfigFactory(provider_type="openai", api_key="sk-proj-wxyz")
    long = ProviderConfigFactory(provider_type="openai", api_key=KEY)
    # given the last four a short key was stored with before
    ProviderConfig.objects.filter(pk=short.pk).update(key_last4="wxyz")

    migration._key_display_recompute(apps, None)

    short.refresh_from_db()
    long.refresh_from_db()
    assert (short.key_prefix, short.key_last4, short.key_mask) == ("sk-proj-", "", "••••")
    assert (long.key_last4, long.key_mask) == ("4Rk3", "sk-proj-…4Rk3")
