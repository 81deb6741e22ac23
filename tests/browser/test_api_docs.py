"""The interactive API docs in Chromium, with the network cut."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_api_docs_render_and_call_the_api_with_nothing_but_the_server(browser_page):
    page = browser_page.page

    browser_page.open("/api/docs/")
    page.wait_for_selector(".opblock", timeout=15_000)

    assert "LLM Provider Layer API" in page.inner_text(".information-container")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/api/v1/completions/", "/api/v1/providers/", "/api/v1/usage/summary/"} <= {
        path.replace("\u200b", "") for path in paths
    }

    # "Try it out" on the health check runs it from the page against the server.
    health = page.locator(".opblock", has=page.locator("[data-path='/api/v1/health/']"))
    health.locator(".opblock-summary").click()
    health.locator(".try-out__btn").click()
    with page.expect_response(lambda response: response.url.endswith("/api/v1/health/")) as answer:
        health.locator(".execute").click()
    assert answer.value.status == 200
    shown = health.locator(".live-responses-table tbody .response-col_status").first.inner_text()
    assert shown.strip() == str(answer.value.status)
    report = json.loads(answer.value.text())
    assert report["status"] == "ok"
    assert set(report["components"]) == {"database", "cache", "broker"}

    assert browser_page.foreign_requests == []
    assert browser_page.errors == []
