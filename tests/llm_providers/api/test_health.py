"""The health probes against the real cache, as several load balancers run them at once."""

from __future__ import annotations

import threading

import pytest

from llm_providers.api.health import STATUS_OK, health_cache


@pytest.mark.redis
def test_cache_probes_running_at_once_all_report_ok():
    statuses: list[str] = []

    def probe_repeatedly():
        for _ in range(50):
            statuses.append(health_cache().status)

    threads = [threading.Thread(target=probe_repeatedly) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [STATUS_OK] * 200
