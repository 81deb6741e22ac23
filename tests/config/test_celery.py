"""The Celery app: worker processes drain the after-call queue before they end,
and the worker's log handlers redact credentials."""

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from billiard.pool import Pool
from celery.concurrency.prefork import process_destructor
from celery.utils.log import get_task_logger
from django.conf import settings

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


_QUEUE_ONE_TASK = """
import time

import django

django.setup()
from kombu.exceptions import OperationalError

from usage.tasks import send_alert_delivery

started = time.monotonic()
try:
    send_alert_delivery.delay(1)
except OperationalError:
    print("refused after", round(time.monotonic() - started, 1))
"""


def test_queueing_a_task_gives_up_when_the_broker_hangs(silent_server):
    # given a broker that accepts connections and never answers
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "CELERY_BROKER_URL": f"redis://{silent_server}/0",
        "CELERY_TASK_ALWAYS_EAGER": "false",
    }

    # when a task is queued on it (as an admin action or an alert does)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _QUEUE_ONE_TASK],
            env=environment,
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("queueing a task on a hung broker hung")

    # then queueing fails, as it does when the broker refuses connections
    assert done.stdout.startswith("refused after"), done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 30


def test_embedded_defaults_run_a_task_without_a_broker_warning(tmp_path):
    # given: the development settings with nothing set (no broker: tasks run eagerly)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.development",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    script = (
        "import django, logging; django.setup(); logging.basicConfig(); "
        "from django.core.management import call_command; call_command('migrate', verbosity=0); "
        "from usage.tasks import purge_call_logs; "
        "print(purge_call_logs.delay().successful())"
    )

    # when: a task is queued
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # then: it ran in the process, and the console shows no warning about a broker host
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert "WARNING" not in result.stderr


AWS_KEY_ID = "AKIAZ4QH7LMN2VXC9RBY"
OPENAI_KEY = "sk-proj-Vb7QmX2tLp9RwK4sHc6NjE1uYd3FgA8zTo5iMk0"


@pytest.fixture
def worker_logging():
    """Celery's worker log set-up, as `celery worker` runs it (it replaces the
    root logger's handlers), writing to a buffer; the test's logging comes back after."""
    from celery.app.log import Logging

    from config.celery import app

    names = ["", "celery", "celery.task", "celery.redirected"]
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
               logging.getLogger(name).propagate)
        for name in names
    }  # fmt: skip
    setup_before = Logging._setup
    Logging._setup = False
    written = io.StringIO()
    app.log.setup_logging_subsystem(loglevel="DEBUG", logfile=written, colorize=False)
    yield written
    Logging._setup = setup_before
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


def test_worker_log_handlers_redact_credentials(worker_logging):
    # when: a library and a task log a credential in a worker
    logging.getLogger("botocore.endpoint").warning(
        "Sending http request: {'Authorization': b'AWS4-HMAC-SHA256 Credential=%s/20260101/"
        "us-east-1/bedrock/aws4_request'}",
        AWS_KEY_ID,
    )
    get_task_logger("usage.tasks").warning("retrying with %s", OPENAI_KEY)

    # then: the worker's handlers wrote both records, redacted
    written = worker_logging.getvalue()
    assert "Sending http request: {'Authorization': b'[redacted]'}" in written
    assert "retrying with [redacted]" in written
    assert AWS_KEY_ID[4:-4] not in written
    assert OPENAI_KEY[8:-4] not in written
