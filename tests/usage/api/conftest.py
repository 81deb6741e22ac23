"""Shared API fixtures for these API tests."""

from tests.api.fixtures import (  # noqa: F401
    admin_api,
    admin_user,
    anonymous_api,
    other_tenant,
    service_api,
    service_key,
    tenant,
    viewer_api,
    viewer_user,
)
