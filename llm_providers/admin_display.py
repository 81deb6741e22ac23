"""How the admin pages write times and prices, and the provider configs their forms offer."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.contrib import admin

# How every admin page writes an empty value: Django's columns and read-only
# fields (the site's empty_value_display) and the columns written here alike.
EMPTY_VALUE = "—"


def utc_display(moment: datetime | None) -> str:
    """A time in UTC, the server's zone and the one the admin's date filters
    count in, zone named: 2026-11-22 17:51:03 UTC. The admin's own format
    reads "Nov. 22, 2026, 5:51 p.m." in no stated zone."""
    if moment is None:
        return EMPTY_VALUE
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def utc_field_display(field_name: str, description: str):
    """An admin column or read-only field writing the time field `field_name`
    with utc_display, labelled "description (UTC)" and sorted by the field."""

    @admin.display(description=f"{description} (UTC)", ordering=field_name)
    def shown(model_admin, obj):
        return utc_display(getattr(obj, field_name))

    return shown


def price_rate_display(rate: Decimal) -> str:
    """A price per million tokens with the decimals it has, at least cents:
    0.075, 2.50, 10.00 (the column stores six places: 0.075000, 10.000000)."""
    if rate == rate.quantize(Decimal("0.01")):
        return f"{rate.quantize(Decimal('0.01')):f}"
    return f"{rate.normalize():f}"


def provider_config_choice(config) -> str:
    """A provider config as a form offers it: an inactive one stays choosable
    where a form allows it (a budget on a retired config, an override's
    current target), and says what it is: "old (OpenAI, inactive)"."""
    if config.is_active:
        return str(config)
    return f"{config.name} ({config.get_provider_type_display()}, inactive)"


def provider_config_choices_labelled(formfield):
    """Label a provider config field's choices with provider_config_choice."""
    if formfield is not None and hasattr(formfield, "label_from_instance"):
        formfield.label_from_instance = provider_config_choice
    return formfield
