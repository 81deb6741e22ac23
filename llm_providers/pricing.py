"""Prices and costs: ModelPrice overrides first, then genai-prices; never a silent $0.

A price is looked up once per (tenant, provider type, model, day) and cached
in the process under the tenant's config version, so saving a ModelPrice
takes effect at once. Costs are exact `Decimal` USD. A model without a known
price costs `None` with source `unknown`, which shows up as unpriced usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from django.db.models import Q
from genai_prices import Usage as GenaiUsage
from genai_prices import data_snapshot

from .adapters.types import Usage
from .config_cache import config_local_cache
from .models import ModelPrice
from .provider_types import provider_type_spec

_PER_MILLION = Decimal(1_000_000)
# Costs are kept to the pico-dollar, as CallLog stores them: genai-prices has
# rates finer than a micro-dollar per million tokens, whose costs would
# otherwise differ between a call's result and its log row. A half rounds
# away from zero, as PostgreSQL rounds it.
_PICO_DOLLAR = Decimal("1e-12")
# Google names its models "models/<id>" in its OpenAI-compatible models
# list, which is where tenants copy names from; genai-prices knows the id.
_GOOGLE_MODEL_PREFIX = "models/"
ZERO = Decimal(0)


class PriceSource:
    GENAI_PRICES = "genai_prices"
    OVERRIDE = "override"
    SELF_HOSTED = "self_hosted"
    NONE = "none"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. `genai_model` is set when genai-prices prices it
    (it knows tiers such as long-context rates); the flat fields otherwise."""

    source: str
    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    genai_model: object | None = None

    @property
    def known(self) -> bool:
        return self.source != PriceSource.UNKNOWN


UNKNOWN_PRICE = Price(source=PriceSource.UNKNOWN)
FREE_PRICE = Price(
    source=PriceSource.SELF_HOSTED,
    input_per_mtok=ZERO,
    output_per_mtok=ZERO,
    cache_read_per_mtok=ZERO,
    cache_write_per_mtok=ZERO,
)


def _override_price(tenant_id, provider_type: str, names: list[str], on: date) -> Price | None:
    """The newest ModelPrice in effect on `on` for the first of `names` that has one:
    the tenant's own rows first (for every name), then global ones."""
    rows = ModelPrice.objects.filter(
        Q(tenant_id=tenant_id) | Q(tenant__isnull=True),
        provider_type=provider_type,
        model__in=names,
        effective_from__lte=on,
    ).order_by("-effective_from")
    newest: dict[tuple[bool, str], ModelPrice] = {}
    for row in rows:
        newest.setdefault((row.tenant_id is not None, row.model), row)
    best = next(
        (newest[(own, name)] for own in (True, False) for name in names if (own, name) in newest),
        None,
    )
    if best is None:
        return None
    return Price(
        source=PriceSource.OVERRIDE,
        input_per_mtok=best.input_per_mtok,
        output_per_mtok=best.output_per_mtok,
        cache_read_per_mtok=best.cache_read_per_mtok,
        cache_write_per_mtok=best.cache_write_per_mtok,
    )


def _genai_price(provider_type: str, model: str, base_url: str) -> Price | None:
    spec = provider_type_spec(provider_type)
    if spec.price_provider_id == "google":
        model = model.removeprefix(_GOOGLE_MODEL_PREFIX)
    snapshot = data_snapshot.get_snapshot()
    try:
        if spec.price_provider_id:
            _, model_info = snapshot.find_provider_model(model, None, spec.price_provider_id, None)
        elif base_url:
            # An OpenAI-compatible endpoint: genai-prices knows many by their URL.
            _, model_info = snapshot.find_provider_model(model, None, None, base_url)
        else:
            return None
    except LookupError:
        return None
    return Price(source=PriceSource.GENAI_PRICES, genai_model=model_info)


def _price_compute(
    tenant_id, provider_type: str, model: str, requested_model: str, on: date, base_url: str
) -> Price:
    names = [model, requested_model] if requested_model else [model]
    override = _override_price(tenant_id, provider_type, names, on)
    if override is not None:
        return override
    if provider_type_spec(provider_type).self_hosted:
        return FREE_PRICE
    for name in names:
        price = _genai_price(provider_type, name, base_url)
        if price is not None:
            return price
    return UNKNOWN_PRICE


def price_lookup(
    *,
    tenant_id,
    provider_type: str,
    model: str,
    version: str,
    on: date | None = None,
    base_url: str = "",
    requested_model: str = "",
) -> Price:
    """The price of `model` at this provider type for this tenant on a day (default today).

    `requested_model`, when the provider answered with another name than the
    one asked for (`gpt-4o` answered as `gpt-4o-2024-08-06`), is priced too:
    a ModelPrice of either name beats genai-prices, so a negotiated rate set
    for the name the tenant routes to applies whatever the answer is called.
    """
    on = on or datetime.now(UTC).date()
    if requested_model == model:
        requested_model = ""
    return config_local_cache.get_or_compute(
        ("price", tenant_id, version, provider_type, model, requested_model, on, base_url),
        lambda: _price_compute(tenant_id, provider_type, model, requested_model, on, base_url),
    )


def _flat_cost(usage: Usage, price: Price) -> Decimal:
    cache_read_rate = (
        price.cache_read_per_mtok if price.cache_read_per_mtok is not None else price.input_per_mtok
    )
    cache_write_rate = (
        price.cache_write_per_mtok
        if price.cache_write_per_mtok is not None
        else price.input_per_mtok
    )
    uncached_input = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    total = (
        uncached_input * price.input_per_mtok
        + usage.cache_read_tokens * cache_read_rate
        + usage.cache_write_tokens * cache_write_rate
        + usage.output_tokens * price.output_per_mtok
    )
    return total / _PER_MILLION


def cost_for_usage(*, usage: Usage, price: Price, at: datetime | None = None) -> Decimal | None:
    """USD cost of `usage` at `price`, exact to the pico-dollar; None when the price is unknown."""
    if not price.known:
        return None
    return _cost(usage, price, at).quantize(_PICO_DOLLAR, rounding=ROUND_HALF_UP)


def _cost(usage: Usage, price: Price, at: datetime | None) -> Decimal:
    if price.genai_model is None:
        return _flat_cost(usage, price)
    at = at or datetime.now(UTC)
    # The tier the provider served the call at selects its rates (OpenAI's
    # priority tier costs more than the default one, flex less).
    context = {"service_tier": usage.service_tier} if usage.service_tier else None
    model_price = price.genai_model.get_prices(at, context)
    # genai-prices counts input and output the way adapters.types.Usage does
    # (cache parts inside input, reasoning inside output). A server that counts
    # cached tokens outside its input reports more of them than input tokens,
    # which genai-prices refuses: every input token is then a cached one, as
    # in _flat_cost. The 1-hour part of the cache writes is priced at its own
    # rate where genai-prices has one (the cache write rate otherwise).
    genai_usage = GenaiUsage(
        input_tokens=max(usage.input_tokens, usage.cache_read_tokens + usage.cache_write_tokens),
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
    )
    return model_price.calc_price(genai_usage)["total_price"]


def cost_worst_case(*, price: Price, input_tokens: int, max_output_tokens: int) -> Decimal | None:
    """What a call can cost at most: its counted input plus max_tokens of output
    (rounded up to the pico-dollar, being a bound)."""
    if not price.known:
        return None
    usage = Usage(input_tokens=input_tokens, output_tokens=max_output_tokens)
    return _cost(usage, price, None).quantize(_PICO_DOLLAR, rounding=ROUND_CEILING)
