"""After-call bookkeeping: ordered on a background thread, inline when asked or full."""

import logging
import threading

import pytest
from django.db import connections

from llm_providers.completion import complete
from tests.factories import ModelPriceFactory, ProviderConfigFactory, TenantFactory
from usage import bookkeeping
from usage.bookkeeping import bookkeeping_flush, bookkeeping_submit
from usage.models import CallLog


@pytest.fixture
def writer(settings, monkeypatch):
    """A fresh background writer for the test, with a small queue."""
    settings.CALL_LOG_ASYNC = True
    settings.BOOKKEEPING_QUEUE_SIZE = 2
    monkeypatch.setattr(bookkeeping, "_writer", None)
    monkeypatch.setattr(bookkeeping, "_RETRY_DELAYS", (0.01, 0.01))
    monkeypatch.setattr(bookkeeping, "_FULL_QUEUE_WAIT_SECONDS", 0.2)
    yield
    # The writer thread's own database connections close with it, so that the
    # test database can be dropped at the end of the run.
    bookkeeping_submit(connections.close_all, label="close connections")
    assert bookkeeping_flush(timeout=5)


def _record(into, value):
    into.append((value, threading.current_thread().name))


def test_bookkeeping_runs_items_in_order_off_the_callers_thread(writer, settings):
    settings.BOOKKEEPING_QUEUE_SIZE = 10
    done = []

    for value in range(5):
        bookkeeping_submit(_record, label=f"item {value}", into=done, value=value)
    assert bookkeeping_flush(timeout=5)

    assert done == [(value, "bookkeeping") for value in range(5)]


def test_bookkeeping_runs_inline_when_async_is_off(settings):
    settings.CALL_LOG_ASYNC = False
    done = []

    bookkeeping_submit(_record, label="inline", into=done, value=1)

    assert done == [(1, threading.current_thread().name)]


def test_bookkeeping_inline_failure_reaches_the_caller(settings):
    settings.CALL_LOG_ASYNC = False

    def broken():
        raise ValueError("no database")

    with pytest.raises(ValueError):
        bookkeeping_submit(broken, label="broken")


def test_bookkeeping_waits_for_room_in_a_full_queue_keeping_order(writer):
    done = []

    # More items than the queue holds: callers wait for room, order is kept.
    for value in range(6):
        bookkeeping_submit(_record, label=f"item {value}", into=done, value=value)
    assert bookkeeping_flush(timeout=5)

    assert [value for value, _ in done] == [0, 1, 2, 3, 4, 5]


def test_bookkeeping_runs_inline_when_writer_is_stuck(writer):
    # given a writer stuck on one item and a full queue behind it
    started, release = threading.Event(), threading.Event()
    done = []

    def stuck():
        started.set()
        release.wait(5)

    bookkeeping_submit(stuck, label="stuck")
    assert started.wait(5)
    bookkeeping_submit(_record, label="queued 1", into=done, value=1)
    bookkeeping_submit(_record, label="queued 2", into=done, value=2)

    # when one more arrives
    bookkeeping_submit(_record, label="overflow", into=done, value=3)

    # then the caller ran it itself after waiting briefly
    assert done == [(3, threading.current_thread().name)]
    release.set()
    assert bookkeeping_flush(timeout=5)
    assert [value for value, _ in done] == [3, 1, 2]


def test_bookkeeping_retries_failed_item_then_goes_on(writer, caplog):
    attempts = []
    done = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("database restarting")

    bookkeeping_submit(flaky, label="flaky")
    bookkeeping_submit(_record, label="next", into=done, value="next")
    assert bookkeeping_flush(timeout=5)

    assert len(attempts) == 3
    assert [value for value, _ in done] == ["next"]
    assert "bookkeeping retrying flaky after ConnectionError" in caplog.text


def test_bookkeeping_does_not_retry_a_refused_write(writer, caplog):
    from django.db import IntegrityError

    attempts = []

    def refused():
        attempts.append(1)
        raise IntegrityError("duplicate key")

    bookkeeping_submit(refused, label="call log 7#1")
    assert bookkeeping_flush(timeout=5)

    assert len(attempts) == 1
    assert "bookkeeping gave up on call log 7#1: IntegrityError" in caplog.text


def test_bookkeeping_reports_item_it_gives_up_on(writer, caplog):
    caplog.set_level(logging.ERROR)

    def broken():
        raise ConnectionError("gone")

    bookkeeping_submit(broken, label="call log 42#1")
    assert bookkeeping_flush(timeout=5)

    assert "bookkeeping gave up on call log 42#1: ConnectionError" in caplog.text


def test_bookkeeping_starts_a_new_writer_after_fork(writer):
    bookkeeping_submit(_record, label="first", into=[], value=1)
    first = bookkeeping._writer
    first.pid = -1  # as seen from a forked child

    bookkeeping_submit(_record, label="second", into=[], value=2)

    assert bookkeeping._writer is not first
    assert bookkeeping_flush(timeout=5)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_complete_in_async_mode_writes_row_after_returning(writer):
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, is_default=True)
    ModelPriceFactory(model="fake-small", input_per_mtok="1", output_per_mtok="2")

    result = complete(tenant=tenant, messages=[{"role": "user", "content": "hi"}])
    assert bookkeeping_flush(timeout=5)

    log = CallLog.objects.get(request_id=result.request_id)
    assert (log.status, log.cost_usd) == ("ok", result.cost_usd)
