"""Transactions that run one at a time across processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

from llm_providers.exceptions import ApplicationError


@contextmanager
def exclusive_transaction(key: int, local_lock: threading.Lock) -> Iterator[None]:
    """One transaction that no other holder of `key` runs beside.

    On PostgreSQL a transaction-level advisory lock on `key` (released at
    commit or rollback); on SQLite, which serves one process, `local_lock`.
    """
    if connection.vendor == "postgresql":
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            yield
    elif connection.vendor == "sqlite":
        with local_lock, transaction.atomic():
            yield
    else:
        raise ApplicationError(
            f"Usage bookkeeping supports PostgreSQL and SQLite, not {connection.vendor}."
        )


def rows_key_share(model, pks) -> set:
    """Those of `pks` whose `model` row exists, kept from being deleted until
    this transaction ends.

    For the rows written for them: a delete of such a row locks it before it
    collects the rows referring to it (llm_providers.models.LockedDeleteModel),
    so either the delete waits and takes what this transaction writes with it,
    or this waits and finds the row gone. The foreign keys' own checks come
    at commit, after the delete's collection, and would fail the delete.
    Take them in the order the deletes do: tenants, budgets, provider configs.
    """
    pks = sorted(set(pks))
    if not pks:
        return set()
    meta = model._meta
    placeholders = ", ".join(["%s"] * len(pks))
    suffix = (
        f' ORDER BY "{meta.pk.column}" FOR KEY SHARE' if connection.vendor == "postgresql" else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT "{meta.pk.column}" FROM "{meta.db_table}" '
            f'WHERE "{meta.pk.column}" IN ({placeholders}){suffix}',
            [meta.pk.get_db_prep_value(pk, connection) for pk in pks],
        )
        found = {meta.pk.to_python(row[0]) for row in cursor.fetchall()}
    return {pk for pk in pks if meta.pk.to_python(pk) in found}
