"""The API's router: every URL answers with or without its trailing slash."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """`/providers` and `/providers/` are one resource (POST included, no redirect)."""

    def __init__(self):
        super().__init__(trailing_slash=True)
        self.trailing_slash = "/?"
