"""`seed_demo`: the demo `make run` serves, created once, with logins that work."""

from __future__ import annotations

import io
import json
import re
import stat
from decimal import Decimal

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

from llm_providers.models import ModelPrice, ProviderConfig, ServiceKey, Tenant, TenantMembership

pytestmark = pytest.mark.django_db

LOGIN = re.compile(r"user '([^']+)'  password '([^']+)'")


@pytest.fixture
def secrets_file(tmp_path):
    return tmp_path / "var" / "demo-credentials.json"


@pytest.fixture
def seed(settings, secrets_file):
    settings.DEBUG = True

    def run(*args) -> str:
        out = io.StringIO()
        call_command("seed_demo", "--secrets-file", str(secrets_file), *args, stdout=out)
        return out.getvalue()

    return run


def _logins(output: str) -> dict[str, str]:
    return dict(LOGIN.findall(output))


def _snapshot() -> dict:
    users = get_user_model().objects.order_by("username")
    return {
        "users": list(users.values_list("username", "password", "is_staff", "is_superuser")),
        "tenants": list(Tenant.objects.values_list("slug", "name")),
        "memberships": list(TenantMembership.objects.values_list("user__username", "role")),
        "configs": list(
            ProviderConfig.objects.order_by("name").values_list(
                "name", "is_default", "priority", "updated_at"
            )
        ),
        "prices": list(
            ModelPrice.objects.values_list("model", "input_per_mtok", "output_per_mtok")
        ),
        "service_keys": list(ServiceKey.objects.values_list("prefix", "hashed_key")),
    }


def test_refused_when_debug_off(settings, secrets_file):
    settings.DEBUG = False
    with pytest.raises(CommandError) as caught:
        call_command("seed_demo", "--secrets-file", str(secrets_file), stdout=io.StringIO())
    assert str(caught.value) == (
        "seed_demo creates users whose passwords it prints; it runs only with DEBUG on. "
        "Pass --force to seed anyway."
    )
    assert not Tenant.objects.exists()
    assert not secrets_file.exists()


def test_force_seeds_when_debug_off(settings, secrets_file):
    settings.DEBUG = False
    call_command("seed_demo", "--secrets-file", str(secrets_file), "--force", stdout=io.StringIO())
    assert Tenant.objects.filter(slug="demo").exists()


def test_creates_users_tenant_and_membership(seed):
    output = seed()
    admin = get_user_model().objects.get(username="admin")
    tenant_admin = get_user_model().objects.get(username="demo-admin")
    assert (admin.is_superuser, admin.is_staff) == (True, True)
    assert (tenant_admin.is_superuser, tenant_admin.is_staff) == (False, True)
    membership = TenantMembership.objects.get(user=tenant_admin)
    assert (membership.tenant.slug, membership.role) == ("demo", "admin")
    assert "Log in at http://127.0.0.1:8000/admin/" in output


def test_printed_credentials_log_in(seed, client):
    logins = _logins(seed())
    assert set(logins) == {"admin", "demo-admin"}
    for username, password in logins.items():
        assert authenticate(username=username, password=password) is not None
        assert client.login(username=username, password=password) is True
        assert client.get("/admin/").status_code == 200


def test_creates_default_and_fallback_fake_configs(seed):
    seed()
    configs = ProviderConfig.objects.filter(tenant__slug="demo").order_by("priority")
    assert [
        (c.name, c.provider_type, c.is_default, c.default_model, c.priority) for c in configs
    ] == [
        ("fake-default", "fake", True, "fake-small", 10),
        ("fake-backup", "fake", False, "fake-large", 20),
    ]


def test_creates_global_prices_of_fake_models(seed):
    seed()
    prices = {
        p.model: (p.input_per_mtok, p.output_per_mtok)
        for p in ModelPrice.objects.filter(tenant=None, provider_type="fake")
    }
    assert prices == {
        "fake-small": (Decimal("0.150000"), Decimal("0.600000")),
        "fake-large": (Decimal("2.500000"), Decimal("10.000000")),
    }


def test_printed_service_key_is_valid_for_demo_tenant(seed):
    output = seed()
    secret = re.search(r"Service key of the “demo” tenant \(API\): (\S+)", output).group(1)
    service_key = ServiceKey.objects.get_from_key(secret)
    assert service_key.tenant.slug == "demo"


def test_second_run_changes_nothing_and_prints_same_logins(seed, secrets_file):
    first = seed()
    before = _snapshot()
    saved = secrets_file.read_text()
    second = seed()
    assert _snapshot() == before
    assert secrets_file.read_text() == saved
    assert "The demo data is already in place; nothing changed." in second
    assert _logins(second) == _logins(first)
    for username, password in _logins(second).items():
        assert authenticate(username=username, password=password) is not None
    assert re.search(r"\(API\): (\S+)", second).group(1) == re.search(
        r"\(API\): (\S+)", first
    ).group(1)


def test_secrets_file_readable_by_owner_only(seed, secrets_file):
    seed()
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600


def test_changed_password_kept_and_reported(seed):
    seed()
    user = get_user_model().objects.get(username="demo-admin")
    user.set_password("chosen-by-the-user-123")
    user.save()
    output = seed()
    assert "user 'demo-admin': password changed since the demo was seeded" in output
    assert "demo-admin" not in _logins(output)
    assert authenticate(username="demo-admin", password="chosen-by-the-user-123") is not None


def test_reset_passwords_gives_working_password(seed):
    seed()
    user = get_user_model().objects.get(username="demo-admin")
    user.set_password("chosen-by-the-user-123")
    user.save()
    output = seed("--reset-passwords")
    password = _logins(output)["demo-admin"]
    assert authenticate(username="demo-admin", password=password) is not None


def test_existing_default_of_demo_tenant_kept(seed):
    tenant = Tenant.objects.create(slug="demo", name="Demo")
    ProviderConfig.objects.create(tenant=tenant, name="mine", provider_type="fake", is_default=True)
    seed()
    assert list(
        ProviderConfig.objects.filter(tenant=tenant, is_default=True).values_list("name", flat=True)
    ) == ["mine"]


def test_unreadable_secrets_file_is_a_command_error(settings, tmp_path):
    # given: a directory where the secrets file should be
    settings.DEBUG = True

    # when
    with pytest.raises(CommandError) as caught:
        call_command("seed_demo", "--secrets-file", str(tmp_path), stdout=io.StringIO())

    # then
    assert str(caught.value) == (
        f"Cannot read the demo passwords from {tmp_path}: Is a directory. "
        "Pass --secrets-file with a file path this user can read and write."
    )
    assert not Tenant.objects.exists()


@pytest.mark.parametrize(
    "content", ["[1, 2]", '{"name": "app", "scripts": {"test": "x"}}', "not json"]
)
def test_secrets_file_of_other_content_is_refused_and_kept(seed, secrets_file, content):
    # given: --secrets-file names a file that is not the demo's
    secrets_file.parent.mkdir()
    secrets_file.write_text(content)

    # when
    with pytest.raises(CommandError) as caught:
        seed()

    # then: it is left as it was, and nothing is seeded
    assert str(caught.value) == (
        f"{secrets_file} is not a file of demo passwords (a JSON object of names and "
        "strings). Nothing was seeded; move it away or pass --secrets-file with another path."
    )
    assert secrets_file.read_text() == content
    assert not get_user_model().objects.exists()


def test_empty_secrets_file_counts_as_none(seed, secrets_file):
    secrets_file.parent.mkdir()
    secrets_file.write_text("")

    output = seed()

    assert set(_logins(output)) == {"admin", "demo-admin"}
    assert set(json.loads(secrets_file.read_text())) == {"admin", "demo-admin", "service_key"}


def test_unwritable_secrets_file_seeds_nothing(settings, tmp_path):
    # given: a link to a file in a folder that does not exist, so it reads as
    # absent but cannot be written (even by root)
    settings.DEBUG = True
    secrets_file = tmp_path / "demo-credentials.json"
    secrets_file.symlink_to(tmp_path / "missing" / "demo-credentials.json")

    # when
    with pytest.raises(CommandError) as caught:
        call_command("seed_demo", "--secrets-file", str(secrets_file), stdout=io.StringIO())

    # then: no user exists whose password nobody was told
    assert str(caught.value) == (
        f"Cannot write the demo passwords to {secrets_file}: No such file or directory. "
        "Nothing was seeded; pass --secrets-file with a file path this user can write."
    )
    assert not get_user_model().objects.exists()
    assert not Tenant.objects.exists()


def test_output_does_not_call_fake_default_the_default_when_another_is(seed):
    tenant = Tenant.objects.create(slug="demo", name="Demo")
    ProviderConfig.objects.create(tenant=tenant, name="mine", provider_type="fake", is_default=True)

    output = seed()

    assert "provider config “fake-default” (Fake; “mine” stays the default)" in output
    assert "(Fake, default)" not in output
