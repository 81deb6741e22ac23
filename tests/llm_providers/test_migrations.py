"""Data migrations of llm_providers run against the state they were written for."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import pytest
from django.apps import apps
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from rest_framework.test import APIClient

from llm_providers.models import UserToken
from tests.factories import TenantMembershipFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

LEGACY_KEY = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
LEGACY_CREATED = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
# DRF authtoken's table as its migrations 0001-0004 left it.
LEGACY_TABLE_SQL = (
    'CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY, '
    '"created" timestamp with time zone NOT NULL, '
    '"user_id" integer NOT NULL UNIQUE REFERENCES "auth_user" ("id") '
    "DEFERRABLE INITIALLY DEFERRED)"
)


def _migrate():
    migration = importlib.import_module("llm_providers.migrations.0009_user_tokens_from_authtoken")
    with connection.schema_editor() as schema_editor:
        migration.user_tokens_from_authtoken(apps, schema_editor)


@pytest.fixture
def legacy_token(tenant):
    """A member's token as DRF authtoken stored it, with its admin history entry."""
    user = TenantMembershipFactory(tenant=tenant, user=UserFactory(username="alice")).user
    with connection.cursor() as cursor:
        cursor.execute(LEGACY_TABLE_SQL)
        cursor.execute(
            'INSERT INTO "authtoken_token" ("key", "created", "user_id") VALUES (%s, %s, %s)',
            [LEGACY_KEY, LEGACY_CREATED, user.pk],
        )
        # As if written in an earlier transaction: its foreign key is checked.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    MigrationRecorder.Migration.objects.create(app="authtoken", name="0001_initial")
    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[user],
        action_flag=ADDITION,
    )
    LogEntry.objects.update(
        content_type=ContentType.objects.get_or_create(app_label="authtoken", model="tokenproxy")[
            0
        ],
        object_repr=LEGACY_KEY,
    )
    return user


def test_legacy_token_keeps_authenticating_after_migration(tenant, legacy_token):
    _migrate()

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {LEGACY_KEY}")
    response = client.get("/api/v1/providers/")

    assert response.status_code == 200
    assert response.wsgi_request.user == legacy_token
    user_token = UserToken.objects.get(user=legacy_token)
    assert response.wsgi_request.auth == user_token
    assert (user_token.prefix, user_token.name, user_token.created) == (
        LEGACY_KEY[:8],
        "token from before hashing",
        LEGACY_CREATED,
    )


def test_migration_leaves_no_plaintext_token(legacy_token):
    _migrate()

    assert "authtoken_token" not in connection.introspection.table_names()
    with connection.cursor() as cursor:
        cursor.execute("SELECT t::text FROM llm_providers_usertoken t")
        rows = [row for (row,) in cursor.fetchall()]
        cursor.execute("SELECT t::text FROM django_admin_log t")
        history = [row for (row,) in cursor.fetchall()]
    assert len(rows) == 1
    assert LEGACY_KEY not in rows[0]
    assert LEGACY_KEY[8:16] not in rows[0]
    assert history and not [row for row in history if LEGACY_KEY in row]
    assert LogEntry.objects.get().object_repr == "token (key no longer stored)"


def test_migration_forgets_authtoken_migrations(legacy_token):
    _migrate()

    assert not MigrationRecorder.Migration.objects.filter(app="authtoken").exists()


def test_migration_without_authtoken_table_changes_nothing(db):
    _migrate()

    assert UserToken.objects.count() == 0
