"""Routing overrides: which provider and model serve a customer and a service."""
