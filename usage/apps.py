"""App configuration for usage."""

from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage, budgets and alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import invalidation  # noqa: F401  (connects the budget and time zone receivers)
