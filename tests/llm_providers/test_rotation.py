"""Key rotation: every encrypted value ends up under the newest key, none is lost."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, models
from django.test import override_settings
from django.test.signals import setting_changed
from django.test.utils import isolate_apps
from encrypted_fields.fields import EncryptedCharField, EncryptedJSONField

from llm_providers.encryption import UnreadableSecret
from llm_providers.models import ProviderConfig
from llm_providers.rotation import encrypted_columns, encrypted_values_rotate
from tests.factories import ProviderConfigFactory

pytestmark = pytest.mark.django_db

OLD_SALT = "old-salt"
NEW_SALT = "new-salt"
KEYS = [f"sk-rotation-key-{n:02d}-Abc123XyZ" for n in range(5)]
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYrotation"


def _rotate(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("rotate_keys", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def old_rows():
    """Five OpenAI configs and one Bedrock config written under the old salt."""
    with override_settings(SALT_KEY=[OLD_SALT]):
        configs = [
            ProviderConfigFactory(name=f"openai-{n}", provider_type="openai", api_key=key)
            for n, key in enumerate(KEYS)
        ]
        bedrock = ProviderConfigFactory.build(
            tenant=configs[0].tenant,
            name="bedrock",
            provider_type="bedrock",
            aws_region="us-east-1",
        )
        bedrock.set_aws_credentials(
            access_key_id="AKIAROTATIONEXAMPLE1", secret_access_key=AWS_SECRET
        )
        bedrock.save()
    return configs, bedrock


def test_rotation_leaves_every_value_readable_without_old_salt(old_rows, raw_column):
    configs, bedrock = old_rows
    with override_settings(SALT_KEY=[NEW_SALT, OLD_SALT]):
        out, err = _rotate()
    assert "Re-encrypted: 7; already current: 0; unreadable: 0." in out
    assert "7/7" in err  # the progress bar
    with override_settings(SALT_KEY=[NEW_SALT]):
        assert [ProviderConfig.objects.get(pk=c.pk).api_key for c in configs] == KEYS
        stored = ProviderConfig.objects.get(pk=bedrock.pk)
        assert stored.credentials() == {
            "aws_access_key_id": "AKIAROTATIONEXAMPLE1",
            "aws_secret_access_key": AWS_SECRET,
        }
    assert all(KEYS[n] not in raw_column(c, "api_key") for n, c in enumerate(configs))


def test_rotation_is_idempotent(old_rows, raw_column):
    configs, _ = old_rows
    with override_settings(SALT_KEY=[NEW_SALT, OLD_SALT]):
        _rotate("--no-progress")
        after_first = [raw_column(c, "api_key") for c in configs]
        out, _ = _rotate("--no-progress")
    assert "Re-encrypted: 0; already current: 7; unreadable: 0." in out
    assert [raw_column(c, "api_key") for c in configs] == after_first


def test_dry_run_writes_nothing(old_rows, raw_column):
    configs, _ = old_rows
    before = [raw_column(c, "api_key") for c in configs]
    with override_settings(SALT_KEY=[NEW_SALT, OLD_SALT]):
        out, _ = _rotate("--dry-run", "--no-progress")
    assert "Would re-encrypt: 7; already current: 0; unreadable: 0." in out
    assert [raw_column(c, "api_key") for c in configs] == before
    with override_settings(SALT_KEY=[NEW_SALT]):
        assert isinstance(ProviderConfig.objects.get(pk=configs[0].pk).api_key, UnreadableSecret)


def test_unreadable_value_reported_and_left_untouched(old_rows, raw_column):
    configs, _ = old_rows
    with override_settings(SALT_KEY=["lost-salt"]):
        lost = ProviderConfigFactory(
            tenant=configs[0].tenant,
            name="lost",
            provider_type="openai",
            api_key="sk-lost-0000abcd",
        )
    lost_raw = raw_column(lost, "api_key")
    with override_settings(SALT_KEY=[NEW_SALT, OLD_SALT]):
        out = io.StringIO()
        with pytest.raises(CommandError) as caught:
            call_command("rotate_keys", "--no-progress", stdout=out, stderr=io.StringIO())
    assert "Re-encrypted: 7; already current: 0; unreadable: 1." in out.getvalue()
    assert (
        f"unreadable, left untouched: llm_providers.ProviderConfig pk={lost.pk} field=api_key"
        in out.getvalue()
    )
    assert str(caught.value).startswith(
        "1 value decrypts with none of the configured keys and was left untouched. Keep the "
        "old SECRET_KEY/SALT_KEY until it is entered again or its key is restored."
    )
    assert raw_column(lost, "api_key") == lost_raw
    with override_settings(SALT_KEY=["lost-salt"]):
        assert ProviderConfig.objects.get(pk=lost.pk).api_key == "sk-lost-0000abcd"


def test_secret_key_rotation_through_fallbacks(settings):
    old_secret = settings.SECRET_KEY
    new_secret = "rotated-secret-key-" + "k" * 40
    config = ProviderConfigFactory(provider_type="openai", api_key=KEYS[0])
    with override_settings(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[old_secret]):
        out, _ = _rotate("--no-progress")
    assert "Re-encrypted: 1; already current: 0; unreadable: 0." in out
    with override_settings(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[]):
        assert ProviderConfig.objects.get(pk=config.pk).api_key == KEYS[0]


def test_installed_encrypted_columns_found():
    labels = [column.label for column in encrypted_columns()]
    assert {
        "llm_providers.ProviderConfig.api_key",
        "llm_providers.ProviderConfig.aws_access_key_id",
        "llm_providers.ProviderConfig.aws_secret_access_key",
    } <= set(labels)


def test_batches_cover_every_row(old_rows):
    with override_settings(SALT_KEY=[NEW_SALT, OLD_SALT]):
        seen = []
        report = encrypted_values_rotate(batch_size=2, on_progress=seen.append)
    assert report.reencrypted == 7
    assert sum(seen) == 7
    assert max(seen) == 2


@pytest.mark.django_db(transaction=True)
@isolate_apps("llm_providers")
def test_other_encrypted_field_kinds_rotated():
    class Webhook(models.Model):
        url = EncryptedCharField(max_length=500, null=True)
        headers = EncryptedJSONField(null=True)

        class Meta:
            app_label = "llm_providers"
            db_table = "test_rotation_webhook"

        def __str__(self) -> str:
            return f"webhook {self.pk}"

    def forget_keys(**kwargs):
        # The suite's reset hook covers installed models; this one is not installed.
        for field in Webhook._meta.concrete_fields:
            field.__dict__.pop("keys", None)
            field.__dict__.pop("f", None)

    setting_changed.connect(forget_keys)
    with connection.schema_editor() as editor:
        editor.create_model(Webhook)
    try:
        with override_settings(SALT_KEY=[OLD_SALT]):
            hook = Webhook.objects.create(
                url="https://hooks.example.com/T000/B000/secret",
                headers={"Authorization": "Bearer abc", "retries": ["1", "2"]},
            )
            empty = Webhook.objects.create(url=None, headers=None)
        with override_settings(SALT_KEY=[NEW_SALT, OLD_SALT]):
            report = encrypted_values_rotate(model_list=[Webhook])
            again = encrypted_values_rotate(model_list=[Webhook])
        assert (report.reencrypted, report.current, report.unreadable) == (2, 0, [])
        assert (again.reencrypted, again.current) == (0, 2)
        with override_settings(SALT_KEY=[NEW_SALT]):
            stored = Webhook.objects.get(pk=hook.pk)
            assert stored.url == "https://hooks.example.com/T000/B000/secret"
            assert stored.headers == {"Authorization": "Bearer abc", "retries": ["1", "2"]}
            assert Webhook.objects.get(pk=empty.pk).url is None
    finally:
        setting_changed.disconnect(forget_keys)
        with connection.schema_editor() as editor:
            editor.delete_model(Webhook)
