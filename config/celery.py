"""The Celery app: configured from the CELERY_* settings; finds each app's tasks.py."""

import os

from celery import Celery
from celery.signals import worker_process_shutdown

# Workers and beat are started in production (`celery -A config worker`), so
# like config.wsgi they default to the production settings; a development
# worker sets DJANGO_SETTINGS_MODULE=config.settings.development.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_shutdown.connect
def _bookkeeping_drain(**kwargs) -> None:
    """Write the call logs and settlements a pool process still holds before it ends.

    Prefork pool processes end with os._exit, which skips the atexit drain:
    a task that made completions would otherwise lose their last rows.
    """
    from usage.bookkeeping import bookkeeping_flush

    bookkeeping_flush()
