"""After-call bookkeeping — call log rows, then budget settlements — off the caller's path.

A completion is answered as soon as the provider has answered; writing its
CallLog row and settling its budget reservation happen right after, in
submission order, on one background thread per process. Order matters: a
row is written before the settlement that follows it, so a Redis budget
counter rebuilt from CallLog meanwhile over-counts (the reservation is still
held) and never under-counts; a database counter leaves the calls still
holding a reservation out of its rebuild, and counts each once.

With CALL_LOG_ASYNC off (SQLite, tests), work runs inline in the caller, and
a failure raises there. When the queue holds BOOKKEEPING_QUEUE_SIZE items the
caller waits for room (backpressure instead of unbounded memory, order kept);
only if the writer makes no room within a second, because it is stuck
retrying, does the caller run its item itself.
On the background thread a write that fails for a transient reason (a lost
connection, a database restart, budget counters out of reach) is retried
with backoff on fresh connections, so an outage delays logs instead of
failing calls the caller has already paid for; a write the database refuses
is reported at once. A budget settlement may be sent twice this way (a reply
lost after it landed): its cost still counts once (usage.budget_counters). The queue is
drained at interpreter exit and when a Celery pool process ends (config.celery);
only a killed process loses what it still held.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

# Retries of one item: 0.1 s doubling to 6.4 s, about 13 s in all, which rides
# out a database failover; then the item is reported and dropped.
_RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
# How long exit waits for the queue to drain.
_EXIT_FLUSH_SECONDS = 10.0
# How long a caller waits for room in a full queue before writing inline.
_FULL_QUEUE_WAIT_SECONDS = 1.0


class _Item:
    __slots__ = ("fn", "kwargs", "label")

    def __init__(self, fn: Callable, kwargs: dict, label: str):
        self.fn = fn
        self.kwargs = kwargs
        self.label = label


def _transient(exc: Exception) -> bool:
    """Failures that a retry on a fresh connection can cure (a restart, a
    dropped connection), as opposed to a write the database refuses."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from .budget_counters import BudgetBackendError

    return isinstance(
        exc,
        OperationalError
        | InterfaceError
        | RedisConnectionError
        | RedisTimeoutError
        | OSError
        | BudgetBackendError,
    )


def _run_with_retries(item: _Item) -> None:
    for attempt, delay in enumerate((0.0, *_RETRY_DELAYS)):
        if delay:
            time.sleep(delay)
        try:
            item.fn(**item.kwargs)
            return
        except Exception as exc:  # noqa: BLE001 - reported below, never raised
            # The next try starts on fresh connections (this thread's own:
            # Django connections are per thread).
            for connection in connections.all(initialized_only=True):
                connection.close()
            if not _transient(exc) or attempt == len(_RETRY_DELAYS):
                logger.error("bookkeeping gave up on %s: %s", item.label, type(exc).__name__)
                return
            logger.warning("bookkeeping retrying %s after %s", item.label, type(exc).__name__)


class _Writer:
    """One queue and one daemon thread, per process (restarted after a fork)."""

    def __init__(self):
        self.pid = os.getpid()
        self.queue: queue.Queue[_Item | None] = queue.Queue(maxsize=settings.BOOKKEEPING_QUEUE_SIZE)
        self.thread = threading.Thread(target=self._loop, name="bookkeeping", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is not None:
                    _run_with_retries(item)
            finally:
                self.queue.task_done()

    def submit(self, item: _Item) -> bool:
        try:
            self.queue.put(item, timeout=_FULL_QUEUE_WAIT_SECONDS)
            return True
        except queue.Full:
            return False


_writer: _Writer | None = None
_writer_lock = threading.Lock()


def _current_writer() -> _Writer:
    global _writer
    writer = _writer
    if writer is None or writer.pid != os.getpid():
        with _writer_lock:
            writer = _writer
            if writer is None or writer.pid != os.getpid():
                writer = _Writer()
                _writer = writer
    return writer


def bookkeeping_submit(fn: Callable, /, *, label: str, **kwargs) -> None:
    """Run `fn(**kwargs)` after the call: in order on the background writer, or
    inline when CALL_LOG_ASYNC is off or the writer is stuck."""
    if settings.CALL_LOG_ASYNC and _current_writer().submit(_Item(fn, kwargs, label)):
        return
    fn(**kwargs)


def bookkeeping_flush(timeout: float = _EXIT_FLUSH_SECONDS) -> bool:
    """Wait until everything submitted so far is done; False on timeout."""
    writer = _writer
    if writer is None or writer.pid != os.getpid():
        return True
    # The queue is first in, first out: when this marker runs, all before it ran.
    done = threading.Event()
    if not writer.submit(_Item(done.set, {}, "flush marker")):
        return False
    return done.wait(timeout)


atexit.register(bookkeeping_flush)
