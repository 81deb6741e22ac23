"""App configuration for llm_providers."""

from django.apps import AppConfig


class LlmProvidersConfig(AppConfig):
    name = "llm_providers"
    verbose_name = "LLM providers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            invalidation,  # noqa: F401  (connects cache invalidation receivers)
        )
