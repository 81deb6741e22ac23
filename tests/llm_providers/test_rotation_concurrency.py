"""Key rotation racing the admin and the API: a value saved meanwhile is never lost."""

from __future__ import annotations

import io
import threading
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings

from llm_providers import rotation
from llm_providers.models import ProviderConfig
from llm_providers.services import provider_config_update
from tests.factories import BudgetFactory, ProviderConfigFactory, TenantFactory
from tests.threads import thread_start
from usage.models import Budget
from usage.services import budget_update

OLD_SALT = "old-salt"
NEW_SALT = "new-salt"
BOTH = [NEW_SALT, OLD_SALT]
KEYS = [f"sk-proj-Race{n:02d}Rotation0123456789abcdef" for n in range(4)]
NEW_KEY = "sk-proj-EnteredDuringRotation9876543210zyx"
NEW_BASE_URL = "http://127.0.0.1:9/v1"


def _configs_under_old_salt() -> list[ProviderConfig]:
    with override_settings(SALT_KEY=[OLD_SALT]):
        tenant = TenantFactory()
        return [
            ProviderConfigFactory(
                tenant=tenant, name=f"openai-{n}", provider_type="openai", api_key=key
            )
            for n, key in enumerate(KEYS)
        ]


def _before_write_of(raw_value: str, monkeypatch, action) -> list[str]:
    """Run `action` once, after the rotation has read `raw_value` and before it writes
    that row; returns the raw values the rotation judged, in order."""
    judged = []
    real = rotation._value_state

    def judging(column, raw, newest, every):
        judged.append(raw)
        if raw == raw_value:
            action()
        return real(column, raw, newest, every)

    monkeypatch.setattr(rotation, "_value_state", judging)
    return judged


def _rotate() -> str:
    out = io.StringIO()
    with override_settings(SALT_KEY=BOTH):
        call_command("rotate_keys", "--no-progress", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _stored_with_new_salt_only(config: ProviderConfig) -> dict:
    with override_settings(SALT_KEY=[NEW_SALT]):
        stored = ProviderConfig.objects.get(pk=config.pk)
        return {
            "api_key": stored.api_key,
            "name": stored.name,
            "base_url": stored.base_url,
            "is_default": stored.is_default,
            "key_mask": stored.key_mask,
        }


def _update_key_name_url_and_default(config: ProviderConfig) -> None:
    # The rotation's settings (both salts, the new one first) are the process's.
    with transaction.atomic():
        stored = ProviderConfig.objects.get(pk=config.pk)
        provider_config_update(
            provider_config=stored,
            data={
                "api_key": NEW_KEY,
                "name": "renamed",
                "base_url": NEW_BASE_URL,
                "is_default": True,
            },
        )


EXPECTED_UPDATED = {
    "api_key": NEW_KEY,
    "name": "renamed",
    "base_url": NEW_BASE_URL,
    "is_default": True,
    "key_mask": "sk-proj-…0zyx",
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_key_saved_between_rotation_read_and_write_is_kept(
    allow_private_urls, monkeypatch, raw_column
):
    # given four configs under the old salt
    configs = _configs_under_old_salt()
    target = configs[1]

    # when, after the rotation has read the second config and before it writes
    # it, the API saves a new key, name, base URL and default flag on it
    def save_meanwhile():
        writer = thread_start(lambda: _update_key_name_url_and_default(target))
        writer.join(30)
        assert not writer.is_alive() and writer.failures == []

    judged = _before_write_of(raw_column(target, "api_key"), monkeypatch, save_meanwhile)
    out = _rotate()

    # then the rotation left that row alone and counted it
    assert len(judged) == 4
    assert (
        "Re-encrypted: 3; already current: 0; unreadable: 0; "
        "changed by another writer meanwhile: 1." in out
    )
    # and the row holds everything the update saved, readable without the old salt
    assert _stored_with_new_salt_only(target) == EXPECTED_UPDATED
    # and every other row keeps its own key
    assert [_stored_with_new_salt_only(c)["api_key"] for c in configs] == [
        KEYS[0],
        NEW_KEY,
        KEYS[2],
        KEYS[3],
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rotation_waiting_on_an_uncommitted_key_change_keeps_the_change(
    allow_private_urls, monkeypatch, raw_column
):
    # given four configs under the old salt
    configs = _configs_under_old_salt()
    target = configs[2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        rotation_pid = cursor.fetchone()[0]
    written, release = threading.Event(), threading.Event()

    def update_held_open():
        with transaction.atomic():
            _update_key_name_url_and_default(target)
            written.set()
            assert release.wait(30)

    def release_once_rotation_waits():
        # The rotation's UPDATE of the row waits on the writer's row lock.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                    [rotation_pid],
                )
                if cursor.fetchone()[0] == "Lock":
                    break
            time.sleep(0.01)
        release.set()

    threads = []

    def hold_the_row_uncommitted():
        threads.append(thread_start(update_held_open))
        assert written.wait(30)
        threads.append(thread_start(release_once_rotation_waits))

    # when the API's change of the row is uncommitted, and holds the row, as the
    # rotation goes to write it, and commits once the rotation waits for it
    _before_write_of(raw_column(target, "api_key"), monkeypatch, hold_the_row_uncommitted)
    out = _rotate()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive() and thread.failures == []

    # then the rotation did not write over the committed change
    assert (
        "Re-encrypted: 3; already current: 0; unreadable: 0; "
        "changed by another writer meanwhile: 1." in out
    )
    assert _stored_with_new_salt_only(target) == EXPECTED_UPDATED
    assert [_stored_with_new_salt_only(c)["api_key"] for c in configs] == [
        KEYS[0],
        KEYS[1],
        NEW_KEY,
        KEYS[3],
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_webhook_url_saved_between_rotation_read_and_write_is_kept(
    allow_private_urls, monkeypatch, raw_column
):
    # given two budgets whose webhook URLs are under the old salt
    with override_settings(SALT_KEY=[OLD_SALT]):
        tenant = TenantFactory()
        budgets = [
            BudgetFactory(
                tenant=tenant,
                name=f"budget-{n}",
                webhook_url=f"http://127.0.0.1:8123/hooks/old-token-{n}",
            )
            for n in range(2)
        ]
    target = budgets[0]
    new_url = "http://127.0.0.1:8123/hooks/new-token-entered-meanwhile"

    # when its webhook URL and limit are changed between the rotation's read and write
    def save_meanwhile():
        def change():
            with transaction.atomic():
                stored = Budget.objects.get(pk=target.pk)
                budget_update(
                    budget=stored, data={"webhook_url": new_url, "limit_usd": Decimal("77")}
                )

        writer = thread_start(change)
        writer.join(30)
        assert not writer.is_alive() and writer.failures == []

    _before_write_of(raw_column(target, "webhook_url"), monkeypatch, save_meanwhile)
    with override_settings(SALT_KEY=BOTH):
        report = rotation.encrypted_values_rotate(model_list=[Budget])

    # then the new URL and limit stand, readable without the old salt
    assert (report.reencrypted, report.current, report.changed_meanwhile) == (1, 0, 1)
    with override_settings(SALT_KEY=[NEW_SALT]):
        stored = {
            b.name: (b.webhook_url, b.limit_usd) for b in Budget.objects.filter(tenant=tenant)
        }
    assert stored == {
        "budget-0": (new_url, Decimal("77.0000")),
        "budget-1": ("http://127.0.0.1:8123/hooks/old-token-1", budgets[1].limit_usd),
    }


@pytest.mark.django_db(transaction=True)
def test_rotation_interrupted_mid_batch_then_run_again_loses_nothing(monkeypatch, raw_column):
    # given four configs under the old salt, in the order the rotation visits them
    configs = sorted(_configs_under_old_salt(), key=lambda c: c.pk)
    keys = [c.api_key for c in configs]
    before = [raw_column(c, "api_key") for c in configs]

    # when the rotation, two rows per transaction, fails on the fourth row,
    # after it has rewritten the third in the same transaction
    judged = []
    real = rotation._value_state

    def failing_on_fourth(column, raw, newest, every):
        judged.append(raw)
        if len(judged) == 4:
            raise ConnectionError("connection to the database lost")
        return real(column, raw, newest, every)

    monkeypatch.setattr(rotation, "_value_state", failing_on_fourth)
    with override_settings(SALT_KEY=BOTH), pytest.raises(ConnectionError):
        call_command("rotate_keys", "--no-progress", "--batch-size", "2", stdout=io.StringIO())
    monkeypatch.setattr(rotation, "_value_state", real)

    # then the first transaction stands and the second left no trace
    after = [raw_column(c, "api_key") for c in configs]
    assert [a != b for a, b in zip(after, before, strict=True)] == [True, True, False, False]
    with override_settings(SALT_KEY=[NEW_SALT]):
        assert [ProviderConfig.objects.get(pk=c.pk).api_key for c in configs[:2]] == keys[:2]

    # and a dry run counts what is left and writes nothing
    with override_settings(SALT_KEY=BOTH):
        out = io.StringIO()
        call_command("rotate_keys", "--dry-run", "--no-progress", stdout=out)
    assert "Would re-encrypt: 2; already current: 2; unreadable: 0." in out.getvalue()
    assert [raw_column(c, "api_key") for c in configs] == after

    # and running it again finishes the work, without touching the rows done
    out = _rotate()
    assert "Re-encrypted: 2; already current: 2; unreadable: 0." in out
    assert [raw_column(c, "api_key") for c in configs][:2] == after[:2]
    assert [_stored_with_new_salt_only(c)["api_key"] for c in configs] == keys


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_new_default_saved_while_a_rotation_batch_holds_the_old_default(monkeypatch, raw_column):
    # given two configs under the old salt, the first in primary key order the default
    with override_settings(SALT_KEY=[OLD_SALT]):
        tenant = TenantFactory()
        first, second = sorted(
            (
                ProviderConfigFactory(
                    tenant=tenant, name=f"openai-{n}", provider_type="openai", api_key=KEYS[n]
                )
                for n in range(2)
            ),
            key=lambda c: c.pk,
        )
        ProviderConfig.objects.filter(pk=first.pk).update(is_default=True)
    threads, writer_pid = [], []

    def make_second_default():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            writer_pid.append(cursor.fetchone()[0])
        stored = ProviderConfig.objects.get(pk=second.pk)
        provider_config_update(provider_config=stored, data={"is_default": True})

    def writer_waiting_on_the_batch():
        # The rotation has rewritten the first row in its open transaction; the
        # update making the second the default waits for that row, holding nothing
        # the rotation needs next.
        threads.append(thread_start(make_second_default))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with connection.cursor() as cursor:
                # In the batch's transaction: statistics are read afresh only when asked.
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                    [writer_pid[0] if writer_pid else 0],
                )
                if (cursor.fetchone() or [None])[0] == "Lock":
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the update never waited for the rotation's batch")

    # when the update starts as the rotation, in one batch, goes to write the second row
    _before_write_of(raw_column(second, "api_key"), monkeypatch, writer_waiting_on_the_batch)
    out = _rotate()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive() and thread.failures == []

    # then both finished: every value rotated, the second is the only default
    assert "Re-encrypted: 2; already current: 0; unreadable: 0." in out
    with override_settings(SALT_KEY=[NEW_SALT]):
        stored = {
            c.name: (c.api_key, c.is_default) for c in ProviderConfig.objects.filter(tenant=tenant)
        }
    assert stored == {first.name: (first.api_key, False), second.name: (second.api_key, True)}
