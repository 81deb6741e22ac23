"""Fixtures of the usage tests: budget counter backends."""

import pytest


@pytest.fixture(
    params=["database", pytest.param("redis", marks=pytest.mark.redis)],
)
def counters(request, settings):
    """Run the test once with database counters and once with Redis counters."""
    settings.USAGE_BUDGET_BACKEND = request.param
    return request.param
