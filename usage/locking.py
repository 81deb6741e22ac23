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
