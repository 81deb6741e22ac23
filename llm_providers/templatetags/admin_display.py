"""The admin's way of writing times, for templates: {{ moment|utc_display }}."""

from __future__ import annotations

from django import template

from llm_providers import admin_display

register = template.Library()

register.filter("utc_display", admin_display.utc_display)
