"""Writes on routing overrides and their fallbacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.template.defaultfilters import pluralize

from llm_providers.json_values import text_fields_errors
from llm_providers.models import ProviderConfig, Tenant

from .models import RoutingFallback, RoutingOverride

OVERRIDE_FIELDS = frozenset(
    {"customer_id", "service_name", "provider_config", "model", "is_active", "note"}
)


def _fallbacks_replace(
    override: RoutingOverride, fallbacks: Sequence[tuple[ProviderConfig, str]]
) -> None:
    override.fallbacks.all().delete()
    seen = set()
    for position, (config, model) in enumerate(fallbacks):
        key = (config.pk, model)
        if key in seen:
            raise ValidationError(
                {"fallbacks": f"“{config.name}” / “{model or 'default model'}” is listed twice."}
            )
        seen.add(key)
        fallback = RoutingFallback(
            override=override, position=position, provider_config=config, model=model
        )
        _fallback_validate(fallback, position)
        fallback.save()


def _fallback_validate(fallback: RoutingFallback, position: int) -> None:
    try:
        unstorable = text_fields_errors(fallback)
        if unstorable:
            raise ValidationError(unstorable)
        fallback.full_clean()
    except ValidationError as exc:
        messages = [f"Fallback {position + 1}: {m}" for m in exc.messages]
        raise ValidationError({"fallbacks": messages}) from exc


def routing_overrides_lock(*, tenant_id) -> None:
    """Serialise the override writes of one tenant until the transaction ends.

    Two writes of the same scope would otherwise both find it free; the
    second would then fail on the unique constraint instead of being told.
    NO KEY: rows that merely refer to the tenant (call logs) are not held up.
    """
    Tenant.objects.select_for_update(no_key=True).filter(pk=tenant_id).first()


def _save_validated(override: RoutingOverride) -> RoutingOverride:
    unstorable = text_fields_errors(override)
    if unstorable:
        raise ValidationError(unstorable)
    routing_overrides_lock(tenant_id=override.tenant_id)
    override.full_clean()
    try:
        with transaction.atomic():
            override.save()
    except IntegrityError as exc:
        raise ValidationError(
            "An override for this customer and service already exists in this tenant."
        ) from exc
    return override


@transaction.atomic
def routing_override_create(
    *,
    tenant: Tenant,
    provider_config: ProviderConfig,
    customer_id: str = "",
    service_name: str = "",
    model: str = "",
    fallbacks: Sequence[tuple[ProviderConfig, str]] = (),
    is_active: bool = True,
    note: str = "",
) -> RoutingOverride:
    """Create an override with its ordered fallbacks, all or nothing."""
    override = _save_validated(
        RoutingOverride(
            tenant=tenant,
            provider_config=provider_config,
            customer_id=customer_id,
            service_name=service_name,
            model=model,
            is_active=is_active,
            note=note,
        )
    )
    _fallbacks_replace(override, fallbacks)
    return override


@transaction.atomic
def routing_override_update(
    *,
    override: RoutingOverride,
    data: dict[str, Any],
    fallbacks: Sequence[tuple[ProviderConfig, str]] | None = None,
) -> RoutingOverride:
    """Update fields; `fallbacks`, when given, replaces the whole ordered list."""
    unknown = set(data) - OVERRIDE_FIELDS
    if unknown:
        raise ValidationError(
            f"Unknown override field{pluralize(unknown)}: {', '.join(sorted(unknown))}."
        )
    for field, value in data.items():
        setattr(override, field, value)
    _save_validated(override)
    if fallbacks is not None:
        _fallbacks_replace(override, fallbacks)
    elif override.is_active:
        # The stored fallbacks must suit an active override as new ones would:
        # one saved while it was off may name a model its config no longer allows.
        stored = override.fallbacks.select_related("provider_config").order_by("position", "id")
        for position, fallback in enumerate(stored):
            _fallback_validate(fallback, position)
    return override


def routing_override_delete(*, override: RoutingOverride) -> None:
    override.delete()
