"""Route resolution: which provider config and model serve a customer and a service.

Precedence: customer+service override > customer override > service override
> the tenant's default provider config > a clear "no route" error. The route
lists the primary target and its ordered fallbacks, and names the rule that
matched so every call log can record it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, Q

from llm_providers.config_cache import config_local_cache, config_version
from llm_providers.exceptions import ApplicationError
from llm_providers.models import ProviderConfig, Tenant

from .models import RoutingFallback, RoutingOverride


class NoRouteError(ApplicationError):
    code = "no_route"
    http_status = 422


class Rule:
    CUSTOMER_SERVICE = "customer_service"
    CUSTOMER = "customer"
    SERVICE = "service"
    DEFAULT = "default"


# Most specific first.
_RULE_ORDER = {Rule.CUSTOMER_SERVICE: 0, Rule.CUSTOMER: 1, Rule.SERVICE: 2}


@dataclass(frozen=True, slots=True)
class RouteTarget:
    provider_config: ProviderConfig
    model: str


@dataclass(frozen=True, slots=True)
class Route:
    rule: str
    targets: tuple[RouteTarget, ...]
    override_id: int | None = None

    @property
    def primary(self) -> RouteTarget:
        return self.targets[0]

    @property
    def fallbacks(self) -> tuple[RouteTarget, ...]:
        return self.targets[1:]

    def explain(self) -> str:
        primary = self.primary
        via = {
            Rule.CUSTOMER_SERVICE: "the customer+service override",
            Rule.CUSTOMER: "the customer override",
            Rule.SERVICE: "the service override",
            Rule.DEFAULT: "the tenant's default provider config",
        }[self.rule]
        return f"{primary.provider_config.name} / {primary.model}, chosen by {via}"


def _target(config: ProviderConfig, model: str, tenant_id) -> RouteTarget | None:
    """The target, or None when it cannot serve: a config of another tenant, an
    inactive config, no model, or a model the config no longer allows (its
    allowed models narrowed after the override or fallback was saved)."""
    model = model or config.default_model
    if config.tenant_id != tenant_id:
        # Never route to another tenant's key, whatever a row says.
        return None
    if not config.is_active or not model or not config.model_is_allowed(model):
        return None
    return RouteTarget(provider_config=config, model=model)


def _route_from_override(override: RoutingOverride) -> Route | None:
    primary = _target(override.provider_config, override.model, override.tenant_id)
    if primary is None:
        return None
    targets = [primary]
    for fallback in override.fallbacks.all():
        target = _target(fallback.provider_config, fallback.model, override.tenant_id)
        if target is not None and target not in targets:
            targets.append(target)
    return Route(rule=override.rule, targets=tuple(targets), override_id=override.pk)


def _default_route(tenant: Tenant) -> Route | None:
    configs = list(
        ProviderConfig.objects.filter(tenant=tenant, is_active=True).order_by(
            "-is_default", "priority", "name"
        )
    )
    if not configs or not configs[0].is_default:
        return None
    targets = [t for t in (_target(c, "", tenant.pk) for c in configs) if t is not None]
    if not targets or targets[0].provider_config.pk != configs[0].pk:
        return None
    return Route(rule=Rule.DEFAULT, targets=tuple(targets))


def _route_compute(tenant: Tenant, customer_id: str, service_name: str) -> Route:
    scope = (
        Q(customer_id=customer_id, service_name=service_name)
        if customer_id and service_name
        else Q(pk__in=[])
    )
    if customer_id:
        scope |= Q(customer_id=customer_id, service_name="")
    if service_name:
        scope |= Q(customer_id="", service_name=service_name)
    overrides = (
        RoutingOverride.objects.filter(scope, tenant=tenant, is_active=True)
        .select_related("provider_config")
        .prefetch_related(
            Prefetch(
                "fallbacks",
                queryset=RoutingFallback.objects.select_related("provider_config").order_by(
                    "position", "id"
                ),
            )
        )
    )
    for override in sorted(overrides, key=lambda o: _RULE_ORDER[o.rule]):
        route = _route_from_override(override)
        if route is not None:
            return route
    route = _default_route(tenant)
    if route is None:
        raise NoRouteError(
            f"No route for customer “{customer_id or '-'}” and service “{service_name or '-'}” "
            f"in tenant “{tenant.slug}”: no active override matches and the tenant has no "
            "active default provider config with a default model.",
            extra={"customer_id": customer_id, "service_name": service_name},
        )
    return route


def route_resolve(
    *, tenant: Tenant, customer_id: str = "", service_name: str = "", version: str | None = None
) -> Route:
    """The route for this customer and service, cached under the tenant's config version."""
    if not tenant.is_active:
        # complete() refuses such calls: no route serves them.
        raise NoRouteError(
            f"The tenant “{tenant.slug}” is inactive: its calls are refused.",
            extra={"customer_id": customer_id, "service_name": service_name},
        )
    if version is None:
        version = config_version(tenant.pk)
    return config_local_cache.get_or_compute(
        ("route", tenant.pk, version, customer_id, service_name),
        lambda: _route_compute(tenant, customer_id, service_name),
    )
