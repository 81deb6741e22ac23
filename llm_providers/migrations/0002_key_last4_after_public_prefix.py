"""Recompute the stored last four of every key under the rule that counts only
what follows the public prefix: a short key such as `sk-proj-wxyz` was shown whole."""

from django.db import migrations

from llm_providers.encryption import secret_display_parts


def _key_display_recompute(apps, schema_editor):
    ProviderConfig = apps.get_model("llm_providers", "ProviderConfig")
    for config in ProviderConfig.objects.exclude(key_last4="").iterator():
        shown = config.aws_access_key_id if config.provider_type == "bedrock" else config.api_key
        if isinstance(shown, str) and shown:
            prefix, last4 = secret_display_parts(shown)
        else:
            # Unreadable under the current keys: show nothing until it is entered again.
            prefix, last4 = config.key_prefix, ""
        if (prefix, last4) != (config.key_prefix, config.key_last4):
            ProviderConfig.objects.filter(pk=config.pk).update(key_prefix=prefix, key_last4=last4)


class Migration(migrations.Migration):
    dependencies = [("llm_providers", "0001_initial")]

    operations = [migrations.RunPython(_key_display_recompute, migrations.RunPython.noop)]
