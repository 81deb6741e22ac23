"""Work run in a thread of its own, on a database connection of its own."""

from __future__ import annotations

import threading

from django.db import connections


def thread_start(work) -> threading.Thread:
    """Start `work` in a thread of its own; what it raises is kept in `.failures`."""
    failures = []

    def run():
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            failures.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.failures = failures
    thread.start()
    return thread


def thread_run(work, timeout: float = 30) -> None:
    """Run `work` to its end in a thread of its own, raising what it raised."""
    thread = thread_start(work)
    thread.join(timeout)
    assert not thread.is_alive()
    if thread.failures:
        raise thread.failures[0]
