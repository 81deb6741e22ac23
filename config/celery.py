"""The Celery app: configured from the CELERY_* settings; finds each app's tasks.py."""

import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_shutdown

# Workers and beat are started in production (`celery -A config worker`), so
# like config.wsgi they default to the production settings; a development
# worker sets DJANGO_SETTINGS_MODULE=config.settings.development.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_handlers_redact(logger, **kwargs) -> None:
    """Give the handlers a worker installs the filter the project's own carry.

    `celery worker` replaces the root logger's handlers with its own (and
    gives task loggers theirs): without this, what a worker logs would not
    pass through the credential redaction of llm_providers/log_redaction.py.
    """
    from llm_providers.log_redaction import SecretRedactingFilter

    for handler in logger.handlers:
        if not any(isinstance(f, SecretRedactingFilter) for f in handler.filters):
            handler.addFilter(SecretRedactingFilter())


@worker_process_shutdown.connect
def _bookkeeping_drain(**kwargs) -> None:
    """Write the call logs and settlements a pool process still holds before it ends.

    Prefork pool processes end with os._exit, which skips the atexit drain:
    a task that made completions would otherwise lose their last rows.
    """
    from usage.bookkeeping import bookkeeping_flush

    bookkeeping_flush()
