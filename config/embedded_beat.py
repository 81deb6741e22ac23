"""The beat schedule, run inside the serving process when there is no broker.

With the embedded defaults (no CELERY_BROKER_URL, no REDIS_URL) tasks run
eagerly and no `celery beat` process exists, so the process that serves
requests runs CELERY_BEAT_SCHEDULE itself: Celery's own beat service on a
daemon thread, with an in-memory schedule (no schedule file). config.wsgi and
config.asgi start it, so it runs where requests are served (runserver's
child process, or a WSGI/ASGI server) and nowhere else: management commands,
migrations and tests never load those modules.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery.beat import EmbeddedService, Scheduler
from django.conf import settings
from django.db import close_old_connections

from .celery import app

logger = logging.getLogger(__name__)

# The embedded schedule keeps nothing between runs of the process: each entry
# is taken as last run this long ago, i.e. overdue, so it runs once as the
# server starts (catching up what happened while it was down), then at its
# interval, as a `celery beat` with a persisted schedule does after a stop.
_NEVER_RUN = timedelta(days=366)

_lock = threading.Lock()
_beat: threading.Thread | None = None


class EmbeddedScheduler(Scheduler):
    """Celery's in-memory scheduler, running each due task eagerly in its thread."""

    # An eager task never reaches a broker: no connection to open for it.
    producer = None

    def install_default_entries(self, data):
        """Only CELERY_BEAT_SCHEDULE: no result backend to clean up."""

    def setup_schedule(self):
        super().setup_schedule()
        for entry in self.schedule.values():
            entry.last_run_at = entry.default_now() - _NEVER_RUN

    def apply_entry(self, entry, producer=None):
        # The thread lives as long as the server: drop a connection that broke
        # or aged out before and after each task, as a worker does.
        close_old_connections()
        try:
            self.apply_async(entry, producer=None, advance=False)
        except Exception:
            logger.exception(
                "Scheduled task %s (%s) failed; it runs again at its next interval.",
                entry.name,
                entry.task,
            )
        finally:
            close_old_connections()


def embedded_beat_wanted() -> bool:
    """True when tasks run eagerly for want of a broker and EMBEDDED_BEAT is on."""
    return bool(
        settings.EMBEDDED_BEAT
        and settings.CELERY_TASK_ALWAYS_EAGER
        and settings.CELERY_BROKER_URL.startswith("memory://")
    )


def embedded_beat_start() -> threading.Thread | None:
    """Start the schedule on a daemon thread, once per process; None when not wanted.

    With a real broker the schedule is `celery -A config beat`'s, never this one.
    """
    global _beat
    if not embedded_beat_wanted():
        return None
    with _lock:
        if _beat is None:
            _beat = EmbeddedService(app, thread=True, scheduler_cls=EmbeddedScheduler)
            _beat.name = "embedded-beat"
            _beat.start()
            logger.info(
                "No broker: this process runs the beat schedule (%s).",
                ", ".join(
                    f"{entry['task']} every {_seconds(entry['schedule'])}"
                    for entry in settings.CELERY_BEAT_SCHEDULE.values()
                ),
            )
        return _beat


def _seconds(schedule) -> str:
    if isinstance(schedule, timedelta):
        schedule = schedule.total_seconds()
    if isinstance(schedule, int | float):
        return f"{schedule:g} s"
    return str(schedule)
