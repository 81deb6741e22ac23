"""The Celery app: configured from the CELERY_* settings; finds each app's tasks.py."""

import os

from celery import Celery

# Workers and beat are started in production (`celery -A config worker`), so
# like config.wsgi they default to the production settings; a development
# worker sets DJANGO_SETTINGS_MODULE=config.settings.development.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
