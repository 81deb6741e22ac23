"""The admin in Chromium: log in, the usage dashboard, a provider config's page."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from llm_providers.completion import complete
from llm_providers.demo import TENANT_ADMIN_USERNAME, demo_seed
from llm_providers.models import ProviderConfig, ServiceKey, Tenant
from llm_providers.provider_types import ProviderType
from tests.factories import (
    BudgetFactory,
    ProviderConfigFactory,
    TenantMembershipFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KEY = "sk-proj-Q7vLm2Xc9RtY4bN8wK3hJ6pD1sF5gA0zE"


def _demo_with_completions(count: int) -> tuple[Tenant, str]:
    known: dict[str, str] = {}
    demo_seed(known=known)
    tenant = Tenant.objects.get(slug="demo")
    for number in range(count):
        complete(
            tenant=tenant,
            messages=[{"role": "user", "content": f"Question {number}?"}],
            service_name="browser-check",
        )
    return tenant, known[TENANT_ADMIN_USERNAME]


def test_demo_admin_sees_todays_completions_on_the_dashboard_with_the_network_cut(
    browser_page, settings
):
    # given the embedded defaults (no beat: pages roll the call logs up) and three completions
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant, password = _demo_with_completions(3)
    browser_page.log_in(TENANT_ADMIN_USERNAME, password)
    page = browser_page.page

    # when the tenant admin follows the admin's links to the dashboard
    page.click("text=Usage dashboard")
    page.wait_for_url(f"**/{tenant.pk}/")

    # then the figures, the drawn charts and no request beyond the server
    totals = page.inner_text(".usage-totals")
    assert "3 requests" in totals and "0 errors" in totals
    assert "browser-check" in page.inner_text("#content-main")
    bars = page.locator("svg.usage-daily rect.usage-bar")
    heights = [box["height"] for box in (bars.nth(i).bounding_box() for i in range(bars.count()))]
    assert max(heights) > 10  # today's bar is drawn, in pixels on the screen
    assert page.locator("svg.usage-bars").count() >= 4  # provider, model, service, customer
    assert browser_page.foreign_requests == []
    assert browser_page.errors == []


def test_dashboard_fits_a_phone_screen(browser_page, settings):
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant, password = _demo_with_completions(1)
    BudgetFactory(tenant=tenant, name="Monthly cap")
    browser_page.page.set_viewport_size({"width": 375, "height": 800})
    browser_page.log_in(TENANT_ADMIN_USERNAME, password)

    browser_page.open(reverse("admin:usage_usagedashboard_tenant", args=[tenant.pk]))

    page = browser_page.page
    # Nothing on the page is wider than the screen: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    charts = page.locator("#content-main svg")
    assert charts.count() == 6  # the daily chart, four breakdowns, the budget's gauge
    for index in range(charts.count()):
        box = charts.nth(index).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, box


def test_every_admin_page_of_a_tenant_admin_fits_a_phone_screen(browser_page, settings):
    # given the demo with usage and a budget, seen on a 375-pixel screen
    settings.USAGE_ROLL_UP_ON_READ = True
    tenant, password = _demo_with_completions(2)
    BudgetFactory(tenant=tenant, name="Monthly cap")
    page = browser_page.page
    page.set_viewport_size({"width": 375, "height": 800})
    browser_page.log_in(TENANT_ADMIN_USERNAME, password)

    # when every page linked from the admin's index, and the first object of each list, opens
    browser_page.open("/admin/")
    pages = set(page.eval_on_selector_all("#content-main a", "as => as.map(a => a.pathname)"))
    for listing in sorted(p for p in pages if not p.endswith("/add/")):
        browser_page.open(listing)
        first = page.eval_on_selector_all(
            "#result_list tbody th a", "as => as.slice(0, 1).map(a => a.pathname)"
        )
        pages.update(first)

    # then none is wider than the screen (tables scroll inside their own box)
    too_wide = {}
    for path in sorted(pages):
        browser_page.open(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 375:
            too_wide[path] = width
    assert len(pages) >= 25
    assert too_wide == {}
    assert browser_page.foreign_requests == []
    assert browser_page.errors == []


@pytest.fixture
def acme_admin(db):
    user = UserFactory(username="acme-admin")
    tenant = Tenant.objects.create(name="Acme", slug="acme")
    TenantMembershipFactory(user=user, tenant=tenant, role="admin")
    return user, tenant


def test_provider_key_is_masked_and_kept_when_saved_with_the_field_empty(
    browser_page, acme_admin, assert_secret_absent
):
    user, tenant = acme_admin
    config = ProviderConfigFactory(
        tenant=tenant, name="openai-main", provider_type=ProviderType.OPENAI, api_key=KEY
    )
    browser_page.log_in(user.username, "pw-test-123")
    page = browser_page.page

    browser_page.open(reverse("admin:llm_providers_providerconfig_change", args=[config.pk]))

    key_input = page.locator("#id_api_key")
    assert key_input.get_attribute("type") == "password"
    assert key_input.input_value() == ""
    assert config.key_mask == "sk-proj-…A0zE"
    assert config.key_mask in page.inner_text("#content-main")
    assert_secret_absent(page.content(), KEY)

    # Saving with the key field left empty keeps the stored key.
    page.fill("#id_default_model", "gpt-4o-mini")
    with page.expect_navigation():
        page.click("input[name=_save]")
    assert "was changed successfully" in page.inner_text(".messagelist")
    assert_secret_absent(page.content(), KEY)
    config = ProviderConfig.objects.get(pk=config.pk)
    assert config.default_model == "gpt-4o-mini"
    assert config.api_key == KEY


def test_provider_type_shows_only_the_fields_it_uses(browser_page, acme_admin):
    user, _ = acme_admin
    browser_page.log_in(user.username, "pw-test-123")
    page = browser_page.page
    browser_page.open(reverse("admin:llm_providers_providerconfig_add"))

    def visible(name: str) -> bool:
        return page.locator(f".form-row.field-{name}").is_visible()

    page.select_option("#id_provider_type", ProviderType.BEDROCK)
    assert visible("aws_access_key_id") and visible("aws_secret_access_key")
    assert visible("aws_region") and not visible("api_key")

    page.select_option("#id_provider_type", ProviderType.ANTHROPIC)
    assert visible("api_key") and not visible("aws_access_key_id")

    page.select_option("#id_provider_type", ProviderType.FAKE)
    assert not visible("api_key") and not visible("aws_region")
    assert browser_page.errors == []


def test_test_connection_button_reports_on_the_config_page(browser_page, acme_admin):
    user, tenant = acme_admin
    config = ProviderConfigFactory(tenant=tenant, name="fake-main")
    browser_page.log_in(user.username, "pw-test-123")
    page = browser_page.page
    browser_page.open(reverse("admin:llm_providers_providerconfig_change", args=[config.pk]))

    with page.expect_navigation():
        page.click("#test-connection")

    message = page.inner_text(".messagelist")
    assert "“fake-main”: connection OK in" in message and "offered" in message
    config.refresh_from_db()
    assert config.last_test_status == ProviderConfig.TestStatus.OK


def test_reloading_a_new_service_keys_page_adds_no_second_key(browser_page, acme_admin):
    # given a service key added in the browser, its secret on the page
    user, tenant = acme_admin
    browser_page.log_in(user.username, "pw-test-123")
    page = browser_page.page
    browser_page.open(reverse("admin:llm_providers_servicekey_add"))
    page.fill("#id_name", "billing-job")
    with page.expect_navigation():
        page.click("input[name=_save]")
    secret = page.input_value("#created-secret")

    # when the page showing the secret is reloaded (Chromium sends the form again)
    page.reload()

    # then the browser lands on the key the form added, its secret not shown again
    service_key = ServiceKey.objects.get(tenant=tenant)
    assert page.url.endswith(f"/servicekey/{quote(service_key.pk)}/change/")
    assert "This form was sent already" in page.inner_text(".messagelist")
    assert secret not in page.content()
    assert service_key.prefix in secret
