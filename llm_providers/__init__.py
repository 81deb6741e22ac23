"""Tenants, encrypted provider configs, prices, adapters and the completion service."""
