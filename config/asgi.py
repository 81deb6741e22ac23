"""ASGI entry point."""

import os

from django.core.asgi import get_asgi_application

from config.embedded_beat import embedded_beat_start

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_asgi_application()

# Without a broker the serving process also runs the beat schedule.
embedded_beat_start()
