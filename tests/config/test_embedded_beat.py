"""The beat schedule that the serving process runs when there is no broker."""

import os
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.db.models import Sum

from config import embedded_beat
from config.celery import app as celery_app
from config.embedded_beat import embedded_beat_start
from llm_providers.completion import complete
from tests.factories import BudgetFactory, ModelPriceFactory, ProviderConfigFactory, TenantFactory
from usage.models import AlertDelivery, CallLog, CostAlert, DailyUsage

_FAILURES = []


@celery_app.task(name="tests.config.scheduled_failure")
def scheduled_failure():
    _FAILURES.append(time.monotonic())
    raise RuntimeError("scheduled task broke")


def _beat_threads():
    return [thread for thread in threading.enumerate() if thread.name == "embedded-beat"]


def _wait_for(condition, seconds=15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def embedded_settings(settings, monkeypatch):
    """The embedded defaults (no broker, eager tasks), every schedule interval 0.2 s."""
    settings.CELERY_BROKER_URL = "memory://"
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.EMBEDDED_BEAT = True
    settings.CELERY_BEAT_SCHEDULE = {
        name: {**entry, "schedule": 0.2, "options": {**entry["options"], "expires": 0.2}}
        for name, entry in django_settings.CELERY_BEAT_SCHEDULE.items()
    }
    monkeypatch.setattr(embedded_beat, "_beat", None)
    yield settings
    beat = embedded_beat._beat
    if beat is not None:
        beat.stop()
        beat.join(timeout=10)


@pytest.fixture
def priced_tenant():
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, is_default=True)
    # $1 a token in, nothing out: a short prompt costs a few dollars.
    ModelPriceFactory(model="fake-small", input_per_mtok="1000000", output_per_mtok="0")
    BudgetFactory(tenant=tenant, limit_usd=Decimal("1.0000"), alert_percentages=[50, 100])
    return tenant


def test_no_beat_runs_in_the_test_process():
    assert _beat_threads() == []


# The schedule's thread writes while the test's does: SQLite's in-memory test
# database (shared cache) refuses a second connection's write at once instead
# of waiting, as the embedded default's file database does (WAL, immediate
# transactions: test_settings.test_embedded_database_serves_concurrent_calls_and_roll_ups).
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_embedded_beat_rolls_up_a_completion_and_delivers_budget_alerts_without_a_read(
    embedded_settings, priced_tenant
):
    # given the schedule started as the serving process starts it
    beat = embedded_beat_start()
    assert beat is not None and beat.is_alive()

    # when a program makes a completion that passes the whole budget, and nobody reads usage
    result = complete(
        tenant=priced_tenant,
        messages=[{"role": "user", "content": "hi"}],
        service_name="scheduled",
    )
    assert result.cost_usd >= Decimal("1")

    # then the call log is rolled up into DailyUsage
    logged = CallLog.objects.filter(tenant=priced_tenant).aggregate(cost=Sum("cost_usd"))["cost"]
    assert logged == result.cost_usd
    assert _wait_for(
        lambda: (
            DailyUsage.objects.filter(tenant=priced_tenant).aggregate(cost=Sum("cost_usd"))["cost"]
            == logged
        )
    )
    # and both thresholds raised an alert, each emailed to the budget's recipients
    assert _wait_for(
        lambda: (
            AlertDelivery.objects.filter(
                alert__tenant=priced_tenant, delivered_at__isnull=False
            ).count()
            == 2
        )
    )
    alerts = CostAlert.objects.filter(tenant=priced_tenant).order_by("percent")
    assert [alert.percent for alert in alerts] == [50, 100]
    assert sorted(message.to for message in mail.outbox) == [["finance@example.com"]] * 2


@pytest.mark.postgres  # two connections writing at once, as above
@pytest.mark.django_db(transaction=True)
def test_embedded_beat_goes_on_after_a_task_raises(embedded_settings, priced_tenant, caplog):
    # given a schedule with an entry whose task raises every time
    embedded_settings.CELERY_BEAT_SCHEDULE = {
        **embedded_settings.CELERY_BEAT_SCHEDULE,
        "broken": {"task": "tests.config.scheduled_failure", "schedule": 0.1},
    }
    _FAILURES.clear()
    embedded_beat_start()

    # when the task has failed more than once
    assert _wait_for(lambda: len(_FAILURES) >= 2)
    complete(tenant=priced_tenant, messages=[{"role": "user", "content": "hi"}])

    # then the failures were logged, and the other entries still run
    assert _wait_for(lambda: DailyUsage.objects.filter(tenant=priced_tenant).exists())
    assert _beat_threads()[0].is_alive()
    failed = [r for r in caplog.records if r.name == "config.embedded_beat" and r.exc_info]
    assert failed and failed[0].getMessage() == (
        "Scheduled task broken (tests.config.scheduled_failure) failed; "
        "it runs again at its next interval."
    )
    assert "scheduled task broke" in str(failed[0].exc_info[1])


def test_embedded_beat_starts_once_per_process(embedded_settings):
    first = embedded_beat_start()
    second = embedded_beat_start()

    assert first is second
    assert _beat_threads() == [first]


@pytest.mark.parametrize(
    "changes",
    [
        {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/13"},
        {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/13", "CELERY_TASK_ALWAYS_EAGER": True},
        {"EMBEDDED_BEAT": False},
        {"CELERY_TASK_ALWAYS_EAGER": False},
    ],
    ids=["broker", "broker-and-eager", "turned-off", "not-eager"],
)
def test_embedded_beat_does_not_start_with_a_broker_or_when_turned_off(embedded_settings, changes):
    for name, value in changes.items():
        setattr(embedded_settings, name, value)

    assert embedded_beat_start() is None
    assert _beat_threads() == []


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _embedded_environment(tmp_path):
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER"}
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings.development",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return environment


_STARTED = "No broker: this process runs the beat schedule"


def test_runserver_runs_the_schedule_in_its_serving_process_only(tmp_path):
    # given `make run`'s server, with its autoreloader (a watching parent, a serving child)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"],
        cwd=django_settings.BASE_DIR,
        env=_embedded_environment(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "stderr", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    try:
        # when it serves
        def serving():
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        assert _wait_for(serving, seconds=60)
        time.sleep(1)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)

    # then exactly one process started the schedule
    output = (tmp_path / "stderr").read_text()
    assert output.count(_STARTED) == 1, output[-3000:]


def test_management_commands_do_not_run_the_schedule(tmp_path):
    shown = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "import threading, time; time.sleep(1); "
            "print(sorted(t.name for t in threading.enumerate()))",
        ],
        cwd=django_settings.BASE_DIR,
        env=_embedded_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.splitlines()[-1] == "['MainThread']"
    assert _STARTED not in shown.stderr


@pytest.mark.parametrize("server_module", ["config.wsgi", "config.asgi"])
def test_production_server_never_runs_the_schedule(tmp_path, server_module):
    # given production settings whose broker is set to memory:// (tasks eager),
    # as gunicorn loads them in each of its worker processes
    environment = _embedded_environment(tmp_path)
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="q3Zt8vK1mW9xR2pL6nB4cY7hJ0sD5fG8aE1uI3oT6yV9wQ2zX4kM7rN0bH5jC8lP",
        SALT_KEY="salt-2025",
        ALLOWED_HOSTS="llm.example.com",
        REDIS_URL="redis://127.0.0.1:6379/14",
        CELERY_BROKER_URL="memory://",
    )

    # when the server's application is loaded
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import threading, time, {server_module}; time.sleep(0.5); "
            "print(sorted(t.name for t in threading.enumerate()))",
        ],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # then no process of it runs a schedule of its own: production's is `celery beat`'s
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.splitlines()[-1] == "['MainThread']"
    assert _STARTED not in shown.stderr
