"""Writes on provider configs (create, update, delete, test the connection) and service keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction
from django.db.models import Q
from django.template.defaultfilters import pluralize
from django.utils import timezone

from .adapters.errors import scrub_secrets
from .adapters.types import ConnectionCheck
from .exceptions import ApplicationError
from .json_values import text_error, text_fields_errors
from .models import ProviderConfig, ServiceKey, Tenant, UserToken
from .selectors import provider_config_is_referenced

# Fields a caller may set directly; secrets go through their own arguments.
PROVIDER_CONFIG_FIELDS = frozenset(
    {
        "name",
        "provider_type",
        "aws_region",
        "base_url",
        "options",
        "allowed_models",
        "default_model",
        "is_active",
        "is_default",
        "priority",
        "rpm_limit",
        "tpm_limit",
    }
)
SECRET_FIELDS = frozenset({"api_key", "aws_access_key_id", "aws_secret_access_key"})


def _apply_secrets(config: ProviderConfig, secrets: dict[str, str | None]) -> None:
    """Set the secrets that were given; an empty or missing value leaves a secret unchanged."""
    api_key = secrets.get("api_key")
    if api_key:
        config.set_api_key(api_key)
    access_key_id = secrets.get("aws_access_key_id")
    secret_access_key = secrets.get("aws_secret_access_key")
    if access_key_id or secret_access_key:
        config.set_aws_credentials(
            access_key_id=access_key_id or config.aws_access_key_id or "",
            secret_access_key=secret_access_key or config.aws_secret_access_key or "",
        )


NAME_TAKEN = "A provider config with this name already exists in this tenant."


def _name_taken(config: ProviderConfig) -> bool:
    return (
        ProviderConfig.objects.filter(tenant_id=config.tenant_id, name=config.name)
        .exclude(pk=config.pk)
        .exists()
    )


def _save_validated(config: ProviderConfig) -> ProviderConfig:
    """Validate and save; a new default replaces the tenant's previous one atomically.

    Every invalid field is reported at once; a name already used in the
    tenant is reported on `name` (the model's constraint would report it on
    no field, since the tenant is part of it).
    """
    unstorable = text_fields_errors(config)
    if unstorable:
        # Before the name's lookup, which the database would fail on too.
        raise ValidationError(unstorable)
    with transaction.atomic():
        # Serialise default switching and naming per tenant: two concurrent
        # writes must not both pass validation.
        Tenant.objects.select_for_update().filter(pk=config.tenant_id).first()
        if config.is_default:
            ProviderConfig.objects.filter(tenant_id=config.tenant_id, is_default=True).exclude(
                pk=config.pk
            ).update(is_default=False)
        errors: dict[str, list[str]] = {}
        try:
            # The one-default constraint holds after the switch above; the name is checked below.
            config.full_clean(validate_constraints=False)
        except ValidationError as exc:
            errors = exc.message_dict
        if config.name and _name_taken(config):
            errors.setdefault("name", []).append(NAME_TAKEN)
        if errors:
            raise ValidationError(errors)
        try:
            with transaction.atomic():
                config.save()
        except IntegrityError as exc:
            raise ValidationError({"name": NAME_TAKEN}) from exc
    return config


def provider_config_create(
    *,
    tenant: Tenant,
    name: str,
    provider_type: str,
    api_key: str = "",
    aws_access_key_id: str = "",
    aws_secret_access_key: str = "",
    **fields: Any,
) -> ProviderConfig:
    """Create a provider config for `tenant`; raises ValidationError saying what is wrong."""
    unknown = set(fields) - PROVIDER_CONFIG_FIELDS
    if unknown:
        raise ValidationError(
            f"Unknown provider config field{pluralize(unknown)}: {', '.join(sorted(unknown))}."
        )
    config = ProviderConfig(tenant=tenant, name=name, provider_type=provider_type, **fields)
    _apply_secrets(
        config,
        {
            "api_key": api_key,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
        },
    )
    return _save_validated(config)


def provider_config_update(
    *, provider_config: ProviderConfig, data: dict[str, Any]
) -> ProviderConfig:
    """Update the given fields. Secrets left empty or absent keep their stored value.

    The tenant of a config never changes.
    """
    unknown = set(data) - PROVIDER_CONFIG_FIELDS - SECRET_FIELDS
    if unknown:
        raise ValidationError(
            f"Unknown provider config field{pluralize(unknown)}: {', '.join(sorted(unknown))}."
        )
    with transaction.atomic():
        _stored_state_take(provider_config, given={f for f in data if f in PROVIDER_CONFIG_FIELDS})
        for field, value in data.items():
            if field in PROVIDER_CONFIG_FIELDS:
                setattr(provider_config, field, value)
        new_secrets = {k: data.get(k) for k in SECRET_FIELDS}
        if provider_config_endpoint_changed(provider_config=provider_config):
            provider_config_new_endpoint_secrets_check(
                provider_config=provider_config, secrets=new_secrets
            )
            _stored_secrets_clear(provider_config)
        _apply_secrets(provider_config, new_secrets)
        return _save_validated(provider_config)


def _stored_state_take(config: ProviderConfig, *, given: set[str]) -> None:
    """Lock the config's row and give `config` its stored value of every field the
    update does not set.

    The instance was read before the update began; saving it as read would put
    back what others saved since (a key entered in the admin or the API, a
    connection test's outcome). Locked are the tenant, as by every write
    (`_save_validated`), then the row and the tenant's default that a new default
    replaces, in primary key order: `rotate_keys` locks rows in that order too,
    so neither waits for the other in a cycle.
    """
    Tenant.objects.select_for_update().filter(pk=config.tenant_id).first()
    locked = ProviderConfig.objects.select_for_update().filter(
        Q(pk=config.pk) | Q(tenant_id=config.tenant_id, is_default=True)
    )
    stored = next((row for row in locked.order_by("pk") if row.pk == config.pk), None)
    if stored is None:
        raise ValidationError("This provider config was deleted meanwhile.")
    for field in ProviderConfig._meta.concrete_fields:
        if not field.primary_key and field.name not in given:
            setattr(config, field.attname, getattr(stored, field.attname))


def provider_config_endpoint_changed(*, provider_config: ProviderConfig) -> bool:
    """Whether the (unsaved) config now points at another base URL or provider type."""
    if provider_config._state.adding:
        return False
    stored = (
        ProviderConfig.objects.filter(pk=provider_config.pk)
        .values("base_url", "provider_type")
        .first()
    )
    return stored is not None and (
        stored["base_url"] != provider_config.base_url
        or stored["provider_type"] != provider_config.provider_type
    )


def provider_config_new_endpoint_secrets_check(
    *, provider_config: ProviderConfig, secrets: dict
) -> None:
    """A stored key is only ever sent to the endpoint it was entered for.

    Otherwise anyone allowed to edit the config could point it at a server of
    their own, test the connection and receive the key. When the base URL or
    the provider type changes, the stored secrets must be entered again.
    Raises ValidationError naming the field to fill in.
    """
    config = provider_config
    had_secret = any(
        getattr(config, name) for name in ("api_key", "aws_access_key_id", "aws_secret_access_key")
    )
    if not had_secret:
        return
    spec = config.spec
    if not (spec.requires_api_key or spec.requires_aws_credentials) and _type_changed(config):
        # A type that works without a key (Ollama, a compatible endpoint, Fake):
        # the stored secrets are dropped, never sent on, and none is needed.
        return
    needed = (
        ("aws_access_key_id", "aws_secret_access_key")
        if config.spec.requires_aws_credentials
        else ("api_key",)
    )
    missing = [name for name in needed if not secrets.get(name)]
    if missing:
        raise ValidationError(
            {
                missing[0]: "The endpoint or provider type changed: enter the key again. A "
                "stored key is only sent to the endpoint it was entered for."
            }
        )


def _type_changed(config: ProviderConfig) -> bool:
    stored = ProviderConfig.objects.filter(pk=config.pk).values_list("provider_type", flat=True)
    return stored.first() not in (None, config.provider_type)


def _stored_secrets_clear(config: ProviderConfig) -> None:
    # No stored secret travels to a new endpoint: those it needs were entered
    # again (provider_config_new_endpoint_secrets_check) and are applied next.
    config.set_api_key("")
    config.set_aws_credentials(access_key_id="", secret_access_key="")


def provider_config_delete(*, provider_config: ProviderConfig) -> bool:
    """Delete the config, or deactivate it when call logs, overrides or budgets refer to it.

    Call logs keep their history, so a config that served calls is never
    removed. Returns True when the row was deleted, False when deactivated.

    The config is locked as its delete locks it before looking for what
    refers to it: a call log written meanwhile either lands first, and the
    config is deactivated, or waits and, the config deleted, is kept without it.
    """
    with transaction.atomic():
        ProviderConfig.rows_lock_for_delete(
            router.db_for_write(ProviderConfig, instance=provider_config), [provider_config.pk]
        )
        if provider_config_is_referenced(provider_config=provider_config):
            if provider_config.is_active or provider_config.is_default:
                provider_config.is_active = False
                provider_config.is_default = False
                provider_config.save(update_fields=["is_active", "is_default", "updated_at"])
            return False
        provider_config.delete()
    return True


def provider_config_test_connection(*, provider_config: ProviderConfig) -> ConnectionCheck:
    """Authenticate against the provider and list its models; record status,
    latency and a scrubbed error on the config. Never raises for provider failures."""
    from .clients import adapter_for_config

    try:
        check = adapter_for_config(provider_config).test_connection()
    except ApplicationError as exc:
        check = ConnectionCheck(ok=False, latency_ms=0, error=f"{exc.code}: {exc.message}")
    except ValidationError as exc:
        check = ConnectionCheck(ok=False, latency_ms=0, error="; ".join(exc.messages))
    except Exception as exc:  # noqa: BLE001 - e.g. an SDK refusing its arguments
        # The type only: an SDK's message could quote what it was given.
        check = ConnectionCheck(
            ok=False,
            latency_ms=0,
            error=f"The client could not be built ({type(exc).__name__}); check the settings.",
        )
    error = check.error
    if error:
        secrets = [
            s
            for s in (
                provider_config.api_key,
                provider_config.aws_access_key_id,
                provider_config.aws_secret_access_key,
            )
            if isinstance(s, str)
        ]
        error = scrub_secrets(error, secrets)
        check = ConnectionCheck(
            ok=check.ok, latency_ms=check.latency_ms, models=check.models, error=error
        )
    provider_config.last_test_status = (
        ProviderConfig.TestStatus.OK if check.ok else ProviderConfig.TestStatus.ERROR
    )
    provider_config.last_tested_at = timezone.now()
    provider_config.last_test_latency_ms = check.latency_ms
    provider_config.last_test_error = error[:500]
    # Test results are not configuration: do not touch updated_at, so the
    # cached adapter and routes stay valid.
    ProviderConfig.objects.filter(pk=provider_config.pk).update(
        last_test_status=provider_config.last_test_status,
        last_tested_at=provider_config.last_tested_at,
        last_test_latency_ms=provider_config.last_test_latency_ms,
        last_test_error=provider_config.last_test_error,
    )
    return check


def _key_name_and_expiry_check(*, what: str, name: str, expiry_date: datetime | None) -> str:
    name = name.strip()
    if not name:
        raise ValidationError({"name": f"Name the {what}, e.g. after the program using it."})
    unstorable = text_error(name)
    if unstorable:
        raise ValidationError({"name": unstorable})
    if expiry_date is not None and expiry_date <= timezone.now():
        raise ValidationError({"expiry_date": "The expiry date must be in the future."})
    return name


def service_key_create(
    *, tenant: Tenant, name: str, expiry_date: datetime | None = None
) -> tuple[ServiceKey, str]:
    """Create a key for `tenant`; returns the key row and the full secret, which is
    stored only as a hash and cannot be shown again."""
    name = _key_name_and_expiry_check(what="service key", name=name, expiry_date=expiry_date)
    service_key = ServiceKey(tenant=tenant, name=name, expiry_date=expiry_date)
    secret = ServiceKey.objects.assign_key(service_key)
    service_key.full_clean(exclude=["id", "prefix", "hashed_key"])
    service_key.save()
    return service_key, secret


def service_key_revoke(*, service_key: ServiceKey) -> bool:
    """Revoke the key for good; returns False when it was revoked already."""
    if service_key.revoked:
        return False
    service_key.revoked = True
    service_key.save(update_fields=["revoked"])
    return True


def user_token_create(
    *, user, name: str, expiry_date: datetime | None = None
) -> tuple[UserToken, str]:
    """Create an API token for `user`; returns the row and the full token
    (`<prefix>.<secret>`), which is stored only as a hash and cannot be shown again."""
    name = _key_name_and_expiry_check(what="token", name=name, expiry_date=expiry_date)
    user_token = UserToken(user=user, name=name, expiry_date=expiry_date)
    token = UserToken.objects.assign_key(user_token)
    user_token.full_clean(exclude=["id", "prefix", "hashed_key", "user"])
    user_token.save()
    return user_token, token


def user_token_revoke(*, user_token: UserToken) -> bool:
    """Revoke the token for good; returns False when it was revoked already."""
    if user_token.revoked:
        return False
    user_token.revoked = True
    user_token.save(update_fields=["revoked"])
    return True
