"""A real browser (Debian's Chromium, driven by Playwright) against the live server.

Every page a test opens is cut off from the network: any request that does
not go to the live server is aborted and recorded, so a page that needs a CDN
shows it. Console errors and uncaught exceptions are recorded too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

CHROMIUM = os.environ.get("LLM_TESTS_CHROMIUM", "/usr/bin/chromium")


def chromium_available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


@pytest.fixture(scope="module")
def chromium(django_db_setup):
    """One browser per test module.

    Playwright's synchronous API keeps its event loop marked as running in
    this thread while the browser is open, and Django refuses ORM calls
    beside a running loop: the module's tests (and their database set-up
    and flushes) may make them, as they run one at a time in this thread.
    The test database exists before the loop starts, and the modules after
    this one run without it. The live server answers from its own thread.
    """
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            yield browser
            browser.close()


@dataclass
class BrowserPage:
    """A page of its own browser context, with what it tried to reach elsewhere."""

    page: object
    base_url: str
    foreign_requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, path: str):
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        return response

    def log_in(self, username: str, password: str) -> None:
        self.open("/admin/login/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        with self.page.expect_navigation():
            self.page.click("input[type=submit]")
        assert "/admin/login/" not in self.page.url, self.page.inner_text("body")


@pytest.fixture
def browser_page(chromium, live_server):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    wrapper = BrowserPage(page=page, base_url=live_server.url)

    def route(route):
        if route.request.url.startswith(live_server.url + "/"):
            route.continue_()
        else:
            wrapper.foreign_requests.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and wrapper.errors.append(m.text))
    page.on("pageerror", lambda exc: wrapper.errors.append(str(exc)))
    yield wrapper
    context.close()
