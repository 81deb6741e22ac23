"""WSGI entry point (gunicorn config.wsgi; runserver serves it too)."""

import os

from django.core.wsgi import get_wsgi_application

from config.embedded_beat import embedded_beat_start

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()

# Without a broker the serving process also runs the beat schedule.
embedded_beat_start()
