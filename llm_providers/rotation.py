"""Re-encrypt every encrypted column under the newest key (SECRET_KEY × first SALT_KEY).

Values are read and written with SQL, below the model fields, so each one is
judged by the key that actually decrypts it: already under the newest key,
under an older key (re-encrypted), or under none (reported and left as it is;
it may become readable again once its key is restored).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from enum import Enum

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.db import connection, models, transaction
from encrypted_fields.fields import EncryptedFieldMixin

# Rows per transaction: small enough to keep locks short, large enough that a
# table of a million secrets rotates in minutes.
DEFAULT_BATCH_SIZE = 500


class _State(Enum):
    CURRENT = "current"
    ROTATED = "rotated"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class EncryptedColumn:
    model: type[models.Model]
    field: models.Field

    @property
    def label(self) -> str:
        return f"{self.model._meta.label}.{self.field.name}"


@dataclass(frozen=True)
class UnreadableValue:
    model: str
    pk: str
    field: str

    def __str__(self) -> str:
        return f"{self.model} pk={self.pk} field={self.field}"


@dataclass
class RotationReport:
    reencrypted: int = 0
    current: int = 0
    # Rows changed by someone else between our read and our write: they were
    # written under the newest key by that writer, so nothing is left to do.
    changed_meanwhile: int = 0
    unreadable: list[UnreadableValue] = field(default_factory=list)
    dry_run: bool = False

    @property
    def total(self) -> int:
        return self.reencrypted + self.current + self.changed_meanwhile + len(self.unreadable)


def encrypted_columns(
    model_list: Iterable[type[models.Model]] | None = None,
) -> list[EncryptedColumn]:
    """Every encrypted field (any `EncryptedFieldMixin`) of the given or all installed models."""
    found = []
    for model in apps.get_models() if model_list is None else model_list:
        opts = model._meta
        if opts.proxy or opts.swapped or not opts.managed:
            continue
        for model_field in opts.concrete_fields:
            if isinstance(model_field, EncryptedFieldMixin):
                found.append(EncryptedColumn(model, model_field))
    return found


def _is_json(column: EncryptedColumn) -> bool:
    return isinstance(column.field, models.JSONField)


def _fernets(column: EncryptedColumn) -> tuple[Fernet, MultiFernet]:
    keys = column.field.keys
    return Fernet(keys[0]), MultiFernet([Fernet(key) for key in keys])


def _token_state(token: str, newest: Fernet, every: MultiFernet) -> tuple[_State, str]:
    data = token.encode("utf-8")
    with suppress(InvalidToken):
        newest.decrypt(data)
        return _State.CURRENT, token
    try:
        return _State.ROTATED, every.rotate(data).decode("utf-8")
    except InvalidToken:
        return _State.UNREADABLE, token


def _json_state(document, newest: Fernet, every: MultiFernet) -> tuple[_State, object]:
    """EncryptedJSONField encrypts every leaf of the document separately."""
    if isinstance(document, dict):
        parts = {key: _json_state(value, newest, every) for key, value in document.items()}
        states = {state for state, _ in parts.values()}
        value = {key: new for key, (_, new) in parts.items()}
    elif isinstance(document, list):
        items = [_json_state(value, newest, every) for value in document]
        states = {state for state, _ in items}
        value = [new for _, new in items]
    elif isinstance(document, str):
        return _token_state(document, newest, every)
    else:
        return _State.UNREADABLE, document
    if _State.UNREADABLE in states:
        return _State.UNREADABLE, document
    if _State.ROTATED in states:
        return _State.ROTATED, value
    return _State.CURRENT, document


def _value_state(column: EncryptedColumn, raw, newest, every) -> tuple[_State, object]:
    if not _is_json(column):
        return _token_state(raw, newest, every)
    try:
        document = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError:
        return _State.UNREADABLE, raw
    state, value = _json_state(document, newest, every)
    return state, json.dumps(value) if state is _State.ROTATED else raw


def _sql(column: EncryptedColumn) -> tuple[str, str, str, str]:
    quote = connection.ops.quote_name
    opts = column.model._meta
    return quote(opts.db_table), quote(opts.pk.column), quote(column.field.column), opts.pk.column


def encrypted_value_count(columns: Iterable[EncryptedColumn]) -> int:
    """How many stored (non-NULL) values the columns hold."""
    total = 0
    with connection.cursor() as cursor:
        for column in columns:
            table, _, value, _ = _sql(column)
            cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE {value} IS NOT NULL")
            total += cursor.fetchone()[0]
    return total


def _batches(column: EncryptedColumn, batch_size: int):
    """(pk, raw value) rows in primary key order, one batch at a time."""
    table, pk, value, _ = _sql(column)
    last = None
    while True:
        with connection.cursor() as cursor:
            if last is None:
                cursor.execute(
                    f"SELECT {pk}, {value} FROM {table} WHERE {value} IS NOT NULL "
                    f"ORDER BY {pk} LIMIT %s",
                    [batch_size],
                )
            else:
                cursor.execute(
                    f"SELECT {pk}, {value} FROM {table} WHERE {value} IS NOT NULL "
                    f"AND {pk} > %s ORDER BY {pk} LIMIT %s",
                    [last, batch_size],
                )
            rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def encrypted_values_rotate(
    *,
    model_list: Iterable[type[models.Model]] | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> RotationReport:
    """Rewrite every encrypted value that an older key decrypts under the newest key.

    Idempotent; values no configured key decrypts are listed in the report and
    never written. A row is only rewritten if it still holds the value read
    (compare-and-set), so a concurrent save is never overwritten.
    """
    report = RotationReport(dry_run=dry_run)
    for column in encrypted_columns(model_list):
        newest, every = _fernets(column)
        table, pk, value, _ = _sql(column)
        for rows in _batches(column, batch_size):
            with transaction.atomic():
                for row_pk, raw in rows:
                    if raw in ("", b""):
                        report.current += 1
                        continue
                    state, new = _value_state(column, raw, newest, every)
                    if state is _State.CURRENT:
                        report.current += 1
                    elif state is _State.UNREADABLE:
                        report.unreadable.append(
                            UnreadableValue(
                                model=column.model._meta.label,
                                pk=str(column.model._meta.pk.to_python(row_pk)),
                                field=column.field.name,
                            )
                        )
                    elif dry_run:
                        report.reencrypted += 1
                    else:
                        with connection.cursor() as cursor:
                            cursor.execute(
                                f"UPDATE {table} SET {value} = %s WHERE {pk} = %s AND {value} = %s",
                                [new, row_pk, raw],
                            )
                            if cursor.rowcount == 1:
                                report.reencrypted += 1
                            else:
                                report.changed_meanwhile += 1
            if on_progress is not None:
                on_progress(len(rows))
    return report
