"""Routing overrides per customer and/or service, with ordered fallbacks."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from llm_providers.chat_input import scope_fields_clean
from llm_providers.json_values import model_name_validate
from llm_providers.models import ProviderConfig, Tenant


class RoutingOverride(models.Model):
    """Send a customer's and/or a service's calls to a provider config and model.

    An empty customer_id or service_name matches any. Resolution prefers
    customer+service, then customer, then service, then the tenant default.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="routing_overrides")
    customer_id = models.CharField(
        max_length=200,
        blank=True,
        help_text="The customer id sent with a call. Empty matches any customer.",
    )
    service_name = models.CharField(
        max_length=200,
        blank=True,
        help_text="The service name sent with a call. Empty matches any service.",
    )
    # RESTRICT, not PROTECT: a config in use cannot be deleted on its own, but
    # deleting the tenant takes its overrides and configs together.
    provider_config = models.ForeignKey(
        ProviderConfig,
        on_delete=models.RESTRICT,
        related_name="routing_overrides",
        help_text="Where the matching calls go first.",
    )
    # A call that names a model replaces the primary target's model
    # (llm_providers.completion): this one serves only the calls that name none.
    model = models.CharField(
        max_length=200,
        blank=True,
        validators=[model_name_validate],
        help_text="For the calls that name no model; empty: the provider config's default "
        "model. A call that names a model keeps it (it must be allowed on the provider config).",
    )
    is_active = models.BooleanField(
        default=True,
        help_text="An inactive override routes nothing: its calls follow the next rule that "
        "matches.",
    )
    note = models.CharField(max_length=300, blank=True, help_text="For people; routing ignores it.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "customer_id", "service_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "customer_id", "service_name"],
                name="routing_override_unique_scope",
                violation_error_message="An override for this customer and service already "
                "exists in this tenant.",
            ),
            models.CheckConstraint(
                condition=~models.Q(customer_id="", service_name=""),
                name="routing_override_has_scope",
                violation_error_message=(
                    "An override needs a customer, a service or both; the tenant-wide route "
                    "is the default provider config."
                ),
            ),
        ]

    def __str__(self) -> str:
        customer = self.customer_id or "any customer"
        service = self.service_name or "any service"
        return f"{customer} / {service} → {self.provider_config.name}"

    @property
    def rule(self) -> str:
        if self.customer_id and self.service_name:
            return "customer_service"
        return "customer" if self.customer_id else "service"

    def clean(self) -> None:
        super().clean()
        errors = scope_fields_clean(self, consequence="this override would never match.")
        config = self.provider_config if self.provider_config_id else None
        if config is not None:
            if self.tenant_id and config.tenant_id != self.tenant_id:
                errors["provider_config"] = "Choose a provider config of the same tenant."
            elif self.is_active:
                # An inactive override routes nothing, so only an active one must
                # name a usable target: an override can be switched off (or kept
                # off) after its config was retired or narrowed.
                errors.update(self._target_errors(config))
        if errors:
            raise ValidationError(errors)

    def _target_errors(self, config) -> dict[str, str]:
        if not config.is_active:
            return {
                "provider_config": f"The provider config “{config.name}” is inactive: choose an "
                "active one, or deactivate this override."
            }
        if self.model and not config.model_is_allowed(self.model):
            return {
                "model": f"The model “{self.model}” is not among the allowed models of "
                f"“{config.name}”."
            }
        if not self.model and not config.default_model:
            return {
                "model": f"Name a model: the provider config “{config.name}” has no default model."
            }
        return {}


class RoutingFallback(models.Model):
    """The next provider config and model to try when the override's target fails."""

    override = models.ForeignKey(
        RoutingOverride, on_delete=models.CASCADE, related_name="fallbacks"
    )
    position = models.PositiveSmallIntegerField(
        default=0,
        help_text="Fallbacks are tried from the lowest position up; ties in the order added.",
    )
    provider_config = models.ForeignKey(
        ProviderConfig, on_delete=models.RESTRICT, related_name="routing_fallbacks"
    )
    model = models.CharField(
        max_length=200,
        blank=True,
        validators=[model_name_validate],
        help_text="Empty: the provider config's default model.",
    )

    class Meta:
        ordering = ["override", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["override", "provider_config", "model"],
                name="routing_fallback_unique_target",
            )
        ]

    def __str__(self) -> str:
        return f"fallback {self.position}: {self.provider_config.name} {self.model}".strip()

    def clean(self) -> None:
        super().clean()
        if not self.provider_config_id:
            return
        try:
            # Also set (unsaved) while an override and its fallbacks are validated together.
            override = self.override
        except RoutingOverride.DoesNotExist:
            return
        config = self.provider_config
        if config.tenant_id != override.tenant_id:
            raise ValidationError(
                {"provider_config": "Choose a provider config of the same tenant."}
            )
        if not override.is_active:
            # Like the override's own target: nothing is routed here.
            return
        if not config.is_active:
            # Routing skips it: the override would seem to have a fallback it never tries.
            raise ValidationError(
                {
                    "provider_config": f"The provider config “{config.name}” is inactive: choose "
                    "an active one, or deactivate this override."
                }
            )
        if (self.provider_config_id, self.model) == (override.provider_config_id, override.model):
            # The route would only try its own target again: it is never used.
            raise ValidationError(
                {
                    "provider_config": f"“{config.name}” / “{self.model or 'default model'}” is "
                    "the override's own target, not a fallback."
                }
            )
        if self.model and not config.model_is_allowed(self.model):
            raise ValidationError(
                {"model": f"The model “{self.model}” is not allowed on “{config.name}”."}
            )
        if not self.model and not config.default_model:
            raise ValidationError({"model": f"Name a model: “{config.name}” has no default model."})
