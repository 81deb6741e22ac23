"""The Celery app: worker processes drain the after-call queue before they end."""

import time
from pathlib import Path

from billiard.pool import Pool
from celery.concurrency.prefork import process_destructor

from usage.bookkeeping import bookkeeping_submit


def _write_later(path: str, seconds: float) -> None:
    time.sleep(seconds)
    Path(path).write_text("written")


def _queue_a_slow_write(path: str) -> None:
    # Longer than the second billiard waits between a child's shutdown and its os._exit.
    bookkeeping_submit(_write_later, label="slow write", path=path, seconds=1.5)


def test_worker_process_writes_queued_bookkeeping_before_it_exits(settings, tmp_path):
    # given: a prefork child, ended as a Celery worker ends it (os._exit, no atexit)
    settings.CALL_LOG_ASYNC = True
    target = tmp_path / "row"
    pool = Pool(processes=1, on_process_exit=process_destructor)

    # when: a task queues after-call work and the pool shuts down right away
    pool.apply(_queue_a_slow_write, (str(target),))
    pool.close()
    pool.join()

    # then: the work was done before the process went
    assert target.read_text() == "written"
