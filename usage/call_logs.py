"""Recording call logs: one row per provider attempt, cache hit or refused call.

This runs once per attempt on the completion path, so the row goes in with
one prepared INSERT rather than through the ORM's per-call SQL compilation.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.db import IntegrityError, connections

from llm_providers.adapters.errors import MAX_MESSAGE_LENGTH
from llm_providers.adapters.types import Usage
from llm_providers.models import ProviderConfig

from .models import CallLog

# A prompt preview keeps this many characters (only when the tenant turns previews on).
PREVIEW_LENGTH = 500


# NUL and unpaired surrogates (half of an emoji cut from UTF-16 text).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _text(value: str, length: int) -> str:
    """`value` cut to its column, without the characters PostgreSQL text cannot
    hold: a prompt or a provider's message with one must not cost the row of a
    call that was paid for."""
    return _UNSTORABLE.sub("\ufffd", value)[:length]


# The columns written, in order; `id` comes from the database.
_FIELDS = (
    "tenant",
    "request_id",
    "attempt",
    "operation",
    "provider_config",
    "provider_type",
    "model_requested",
    "model_answered",
    "customer_id",
    "service_name",
    "route_rule",
    "status",
    "error_code",
    "error_message",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "usage_estimated",
    "cost_usd",
    "price_source",
    "latency_ms",
    "time_to_first_token_ms",
    "streamed",
    "input_hash",
    "prompt_preview",
    "created_at",
)


@cache
def _insert_statement(vendor: str, returning: bool) -> tuple[str, tuple, tuple]:
    """The INSERT, the fields written and, for each of its parameters, the
    index of its value among them."""
    meta = CallLog._meta
    fields = tuple(meta.get_field(name) for name in _FIELDS)
    columns = ", ".join(f'"{field.column}"' for field in fields)
    placeholders = ["%s"] * len(fields)
    order = tuple(range(len(fields)))
    if vendor == "postgresql":
        # The rows referred to are locked (FOR KEY SHARE) before the foreign
        # keys are checked, as their deletes lock them (LockedDeleteModel):
        # a delete locks them before collecting the rows referring to them, so
        # either the delete waits and takes this row with it (or sets its
        # config to NULL), or this waits and finds them gone. A tenant gone
        # leaves a NULL tenant (refused); a config gone leaves a NULL config,
        # as deleting it does to the rows it already had. The tenant comes
        # first, as a tenant's delete locks it before it deletes the configs:
        # the config's lookup locks the tenant itself, since PostgreSQL sets
        # no order among the subqueries of a VALUES list.
        tenant = meta.get_field("tenant").related_model._meta
        config = meta.get_field("provider_config").related_model._meta
        tenant_locked = (
            f'(SELECT "{tenant.pk.column}" FROM "{tenant.db_table}" '
            f'WHERE "{tenant.pk.column}" = %s FOR KEY SHARE)'
        )
        tenant_column = config.get_field("tenant").column
        at_tenant, at_config = _FIELDS.index("tenant"), _FIELDS.index("provider_config")
        placeholders[at_tenant] = tenant_locked
        placeholders[at_config] = (
            f'(SELECT "{config.pk.column}" FROM "{config.db_table}" '
            f'WHERE "{tenant_column}" = {tenant_locked} AND "{config.pk.column}" = %s '
            "FOR KEY SHARE)"
        )
        order = (*order[:at_config], at_tenant, *order[at_config:])
    placeholders = ", ".join(placeholders)
    sql = f'INSERT INTO "{meta.db_table}" ({columns}) VALUES ({placeholders})'
    if returning:
        sql += f' RETURNING "{meta.pk.column}"'
    return sql, fields, order


def call_log_record(
    *,
    tenant_id,
    request_id,
    attempt: int,
    status: str,
    created_at: datetime,
    operation: str = "complete",
    provider_config_id=None,
    provider_type: str = "",
    model_requested: str = "",
    model_answered: str = "",
    customer_id: str = "",
    service_name: str = "",
    route_rule: str = "",
    error_code: str = "",
    error_message: str = "",
    usage: Usage | None = None,
    usage_estimated: bool = False,
    cost_usd: Decimal | None = None,
    price_source: str = "",
    latency_ms: int = 0,
    time_to_first_token_ms: int | None = None,
    streamed: bool = False,
    input_hash: str = "",
    prompt_preview: str = "",
) -> int:
    """Write one CallLog row and return its id. Error messages must already be
    scrubbed of secrets.

    The row is committed on its own connection (settings.CALL_LOG_DATABASE),
    independently of any transaction the caller has open. A provider config
    deleted while the call ran is recorded as NULL, as deleting it does to the
    rows it already had, rather than losing the row of a call that was paid for
    (on PostgreSQL within the INSERT itself, see _insert_statement).
    """
    usage = usage or Usage()
    values = (
        tenant_id,
        request_id,
        attempt,
        operation,
        provider_config_id,
        provider_type,
        _text(model_requested, 200),
        _text(model_answered, 200),
        customer_id,
        service_name,
        route_rule,
        status,
        _text(error_code, 64),
        _text(error_message, MAX_MESSAGE_LENGTH),
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        usage_estimated,
        cost_usd,
        price_source,
        max(latency_ms, 0),
        time_to_first_token_ms,
        streamed,
        input_hash,
        _text(prompt_preview, PREVIEW_LENGTH),
        created_at,
    )
    alias = settings.CALL_LOG_DATABASE
    try:
        return _insert(alias, values)
    except IntegrityError:
        if provider_config_id is None or (
            ProviderConfig.objects.using(alias).filter(pk=provider_config_id).exists()
        ):
            raise
    at = _FIELDS.index("provider_config")
    return _insert(alias, (*values[:at], None, *values[at + 1 :]))


def _insert(alias: str, values: tuple) -> int:
    connection = connections[alias]
    returning = connection.features.can_return_columns_from_insert
    sql, fields, order = _insert_statement(connection.vendor, returning)
    if connection.vendor != "postgresql":
        # psycopg adapts UUIDs, Decimals and aware datetimes itself; other
        # backends get Django's conversions.
        values = tuple(
            field.get_db_prep_save(value, connection)
            for field, value in zip(fields, values, strict=True)
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, [values[at] for at in order])
        return cursor.fetchone()[0] if returning else cursor.lastrowid
