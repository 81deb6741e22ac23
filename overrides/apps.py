"""App configuration for overrides."""

from django.apps import AppConfig


class OverridesConfig(AppConfig):
    name = "overrides"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import invalidation  # noqa: F401  (connects cache invalidation receivers)
