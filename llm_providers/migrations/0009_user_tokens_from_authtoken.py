"""Carry DRF authtoken's plaintext tokens over as hashed user tokens, then drop its table.

`rest_framework.authtoken` is no longer installed, so its table, when this
database has one, is read with SQL. Each token keeps working: its first 8
characters become its prefix and only its SHA-512 hash is stored. The table
is then dropped and authtoken's migrations forgotten, as `migrate authtoken
zero` would have left them. The admin's history shows a token as its key
(DRF's `Token.__str__`); those entries are rewritten to name the user instead.
"""

from django.db import migrations
from django.db.migrations.recorder import MigrationRecorder
from rest_framework_api_key.crypto import Sha512ApiKeyHasher

LEGACY_APP = "authtoken"
LEGACY_TABLE = "authtoken_token"
LEGACY_NAME = "token from before hashing"
PREFIX_LENGTH = 8


def user_tokens_from_authtoken(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    UserToken = apps.get_model("llm_providers", "UserToken")
    LogEntry = apps.get_model("admin", "LogEntry")
    hasher = Sha512ApiKeyHasher()
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote('key')}, {quote('user_id')}, {quote('created')} "
            f"FROM {quote(LEGACY_TABLE)}"
        )
        rows = cursor.fetchall()
    tokens = []
    for key, user_id, created in rows:
        prefix = key[:PREFIX_LENGTH]
        hashed_key = hasher.encode(key, "")
        tokens.append(
            UserToken(
                id=f"{prefix}.{hashed_key}",
                prefix=prefix,
                hashed_key=hashed_key,
                user_id=user_id,
                name=LEGACY_NAME,
            )
        )
    UserToken.objects.bulk_create(tokens)
    # `created` is set on insert; keep the token's own date.
    for token, (_, _, created) in zip(tokens, rows, strict=True):
        UserToken.objects.filter(pk=token.pk).update(created=created)
    LogEntry.objects.filter(content_type__app_label=LEGACY_APP).update(
        object_repr="token (key no longer stored)"
    )
    schema_editor.execute(f"DROP TABLE {quote(LEGACY_TABLE)}")
    MigrationRecorder(connection).migration_qs.filter(app=LEGACY_APP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("llm_providers", "0008_user_token"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    # The plaintext is gone once this has run: going back keeps the hashes only.
    operations = [migrations.RunPython(user_tokens_from_authtoken, migrations.RunPython.noop)]
