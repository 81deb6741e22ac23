"""Writes on budgets: create, update and delete, validated by the model as the admin does."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.template.defaultfilters import pluralize

from llm_providers.json_values import text_fields_errors
from llm_providers.models import ProviderConfig, Tenant

from .models import Budget

# Fields a caller may set on a budget (the webhook URL included: write-only, never read back).
BUDGET_FIELDS = frozenset(
    {
        "name",
        "is_active",
        "period",
        "limit_usd",
        "action",
        "provider_config",
        "service_name",
        "customer_id",
        "alert_percentages",
        "alert_emails",
        "webhook_url",
    }
)


def _name_taken(budget: Budget) -> bool:
    return (
        Budget.objects.filter(tenant_id=budget.tenant_id, name=budget.name)
        .exclude(pk=budget.pk)
        .exists()
    )


def _save_validated(budget: Budget) -> Budget:
    """Validate the whole budget (webhook URL SSRF check included) and save it.

    Every invalid field is reported at once; a name already used in the
    tenant is reported on `name`.
    """
    unstorable = text_fields_errors(budget)
    if unstorable:
        # Before clean(), which trims the scope, and the name's lookup.
        raise ValidationError(unstorable)
    errors: dict[str, list[str]] = {}
    try:
        # The model's own fields, validators and clean(); the name is checked below.
        budget.full_clean(validate_constraints=False)
    except ValidationError as exc:
        errors = exc.message_dict
    if budget.name and _name_taken(budget):
        errors.setdefault("name", []).append(
            f"A budget named “{budget.name}” already exists in this tenant."
        )
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            budget.save()
    except IntegrityError as exc:
        # A concurrent write took the name between the check and the insert.
        raise ValidationError(
            {"name": f"A budget named “{budget.name}” already exists in this tenant."}
        ) from exc
    budget._stored_webhook_url = budget.__dict__.get("webhook_url")
    return budget


def budget_create(
    *,
    tenant: Tenant,
    name: str,
    limit_usd: Decimal,
    period: str = Budget.Period.MONTHLY,
    action: str = Budget.Action.ALERT,
    is_active: bool = True,
    provider_config: ProviderConfig | None = None,
    service_name: str = "",
    customer_id: str = "",
    alert_percentages: list[int] | None = None,
    alert_emails: str = "",
    webhook_url: str | None = None,
) -> Budget:
    """Create a budget of `tenant`.

    Raises ValidationError (with the fields at fault) when a value is invalid:
    a name already used in the tenant, a provider config of another tenant,
    bad percentages or addresses, a webhook URL that is not http(s) or points
    at a private address (unless PROVIDER_ALLOW_PRIVATE_URLS is on).
    """
    budget = Budget(
        tenant=tenant,
        name=name,
        limit_usd=limit_usd,
        period=period,
        action=action,
        is_active=is_active,
        provider_config=provider_config,
        service_name=service_name,
        customer_id=customer_id,
        alert_percentages=list(alert_percentages or []),
        alert_emails=alert_emails,
        webhook_url=webhook_url or None,
    )
    return _save_validated(budget)


def budget_update(*, budget: Budget, data: dict[str, Any]) -> Budget:
    """Set the given fields of `budget` and save it, validated as a whole.

    An empty or None `webhook_url` removes the webhook; a webhook URL that is
    not given stays as it is.
    """
    unknown = sorted(set(data) - BUDGET_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown budget field{pluralize(unknown)}: {', '.join(unknown)}.")
    with transaction.atomic():
        _stored_state_take(budget, given=set(data))
        for name, value in data.items():
            if name == "webhook_url":
                value = value or None
            setattr(budget, name, value)
        return _save_validated(budget)


def _stored_state_take(budget: Budget, *, given: set[str]) -> None:
    """Lock the budget's row and give `budget` its stored value of every field the
    update does not set: saving it as it was read before the update began would
    put back what others saved since (a webhook URL entered elsewhere)."""
    stored = Budget.objects.select_for_update().filter(pk=budget.pk).first()
    if stored is None:
        raise ValidationError("This budget was deleted meanwhile.")
    for field in Budget._meta.concrete_fields:
        if not field.primary_key and field.name not in given:
            setattr(budget, field.attname, getattr(stored, field.attname))
    # Only a URL other than the stored one is checked (and resolved) again.
    budget._stored_webhook_url = stored._stored_webhook_url


def budget_delete(*, budget: Budget) -> None:
    """Delete `budget`; its alerts stay, no longer linked to it."""
    budget.delete()
