"""The demo `make run` seeds (users, a tenant, Fake providers, prices); a rerun changes nothing."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from .models import ModelPrice, ProviderConfig, ServiceKey, Tenant, TenantMembership
from .provider_types import ProviderType
from .services import provider_config_create, service_key_create

DEMO_TENANT_SLUG = "demo"
DEMO_TENANT_NAME = "Demo"
SUPERUSER_USERNAME = "admin"
TENANT_ADMIN_USERNAME = "demo-admin"
SERVICE_KEY_NAME = "demo"
DEFAULT_CONFIG_NAME = "fake-default"
BACKUP_CONFIG_NAME = "fake-backup"
# USD per million tokens (input, output): the Fake models cost what small and
# large hosted models cost, so demo usage shows realistic figures.
FAKE_PRICES = {
    "fake-small": (Decimal("0.150000"), Decimal("0.600000")),
    "fake-large": (Decimal("2.500000"), Decimal("10.000000")),
}
# A fixed date, so that a second run finds the same rows.
FAKE_PRICES_EFFECTIVE_FROM = date(2024, 1, 1)


@dataclass
class DemoLogin:
    username: str
    role: str
    # None when the password is not known (changed since seeding).
    password: str | None


@dataclass
class DemoSeedResult:
    created: list[str] = field(default_factory=list)
    logins: list[DemoLogin] = field(default_factory=list)
    service_key: str | None = None


class DemoSecretsFileForeign(ValueError):
    """The secrets file holds something else than the demo's passwords."""


def demo_secrets_load(path: Path) -> dict[str, str]:
    """The passwords and service key of an earlier seed, or {} when there was none.

    A missing or empty file counts as none. A file that holds anything else
    than a JSON object of strings is not the demo's and raises
    DemoSecretsFileForeign, so that it is never overwritten; one that cannot
    be read (a directory, no permission) raises OSError.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise DemoSecretsFileForeign(str(path)) from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DemoSecretsFileForeign(str(path)) from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DemoSecretsFileForeign(str(path))
    return data


def demo_secrets_save(path: Path, values: dict[str, str]) -> None:
    """Keep the demo's passwords for the next run, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2, sort_keys=True)


def _new_password() -> str:
    return secrets.token_urlsafe(12)


def _user_seed(
    *,
    username: str,
    role: str,
    superuser: bool,
    known: dict[str, str],
    reset_password: bool,
    result: DemoSeedResult,
):
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is None:
        password = _new_password()
        user = user_model(
            username=username,
            email=f"{username}@example.com",
            is_staff=True,
            is_superuser=superuser,
        )
        user.set_password(password)
        user.save()
        result.created.append(f"user “{username}”")
    else:
        password = known.get(username)
        if reset_password and not (password and user.check_password(password)):
            password = _new_password()
            user.set_password(password)
            user.save(update_fields=["password"])
            result.created.append(f"a new password for “{username}”")
        elif not (password and user.check_password(password)):
            password = None
    if password:
        known[username] = password
    result.logins.append(DemoLogin(username=username, role=role, password=password))
    return user


def demo_seed(*, known: dict[str, str], reset_passwords: bool = False) -> DemoSeedResult:
    """Create what is missing of the demo; `known` holds (and receives) the demo's secrets."""
    result = DemoSeedResult()
    with transaction.atomic():
        _user_seed(
            username=SUPERUSER_USERNAME,
            role="superuser: every tenant",
            superuser=True,
            known=known,
            reset_password=reset_passwords,
            result=result,
        )
        tenant, created = Tenant.objects.get_or_create(
            slug=DEMO_TENANT_SLUG, defaults={"name": DEMO_TENANT_NAME}
        )
        if created:
            result.created.append(f"tenant “{DEMO_TENANT_SLUG}”")
        tenant_admin = _user_seed(
            username=TENANT_ADMIN_USERNAME,
            role=f"admin of the “{DEMO_TENANT_SLUG}” tenant only",
            superuser=False,
            known=known,
            reset_password=reset_passwords,
            result=result,
        )
        _, created = TenantMembership.objects.get_or_create(
            user=tenant_admin, tenant=tenant, defaults={"role": TenantMembership.Role.ADMIN}
        )
        if created:
            result.created.append(f"“{TENANT_ADMIN_USERNAME}” as admin of “{DEMO_TENANT_SLUG}”")

        _configs_seed(tenant=tenant, result=result)
        _prices_seed(result=result)
        result.service_key = _service_key_seed(tenant=tenant, known=known, result=result)
    return result


def _configs_seed(*, tenant: Tenant, result: DemoSeedResult) -> None:
    existing = set(
        ProviderConfig.objects.filter(
            tenant=tenant, name__in=[DEFAULT_CONFIG_NAME, BACKUP_CONFIG_NAME]
        ).values_list("name", flat=True)
    )
    if DEFAULT_CONFIG_NAME not in existing:
        current_default = ProviderConfig.objects.filter(tenant=tenant, is_default=True).first()
        provider_config_create(
            tenant=tenant,
            name=DEFAULT_CONFIG_NAME,
            provider_type=ProviderType.FAKE,
            default_model="fake-small",
            is_default=current_default is None,
            priority=10,
        )
        role = (
            "Fake, default"
            if current_default is None
            else f"Fake; “{current_default.name}” stays the default"
        )
        result.created.append(f"provider config “{DEFAULT_CONFIG_NAME}” ({role})")
    if BACKUP_CONFIG_NAME not in existing:
        provider_config_create(
            tenant=tenant,
            name=BACKUP_CONFIG_NAME,
            provider_type=ProviderType.FAKE,
            default_model="fake-large",
            priority=20,
        )
        result.created.append(f"provider config “{BACKUP_CONFIG_NAME}” (Fake, fallback)")


def _prices_seed(*, result: DemoSeedResult) -> None:
    for model, (input_price, output_price) in FAKE_PRICES.items():
        _, created = ModelPrice.objects.get_or_create(
            tenant=None,
            provider_type=ProviderType.FAKE,
            model=model,
            effective_from=FAKE_PRICES_EFFECTIVE_FROM,
            defaults={"input_per_mtok": input_price, "output_per_mtok": output_price},
        )
        if created:
            result.created.append(f"global price of {model}")


def _service_key_seed(
    *, tenant: Tenant, known: dict[str, str], result: DemoSeedResult
) -> str | None:
    saved = known.get("service_key")
    existing = ServiceKey.objects.filter(tenant=tenant, name=SERVICE_KEY_NAME, revoked=False)
    if (
        saved
        and existing.filter(prefix=saved.partition(".")[0]).exists()
        and ServiceKey.objects.is_valid(saved)
    ):
        return saved
    if existing.exists():
        # A key exists whose secret is not known here; it is not replaced.
        return None
    _, secret = service_key_create(tenant=tenant, name=SERVICE_KEY_NAME)
    known["service_key"] = secret
    result.created.append(f"service key “{SERVICE_KEY_NAME}”")
    return secret
