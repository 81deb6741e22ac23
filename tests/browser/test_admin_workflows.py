"""Tenant admins and viewers at work in Chromium: budgets, and routing overrides with fallbacks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from llm_providers.models import Tenant
from overrides.models import RoutingOverride
from tests.factories import ProviderConfigFactory, TenantMembershipFactory, UserFactory
from usage.models import Budget

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-test-123"


@pytest.fixture
def acme(db):
    tenant = Tenant.objects.create(name="Acme", slug="acme")
    admin_user = UserFactory(username="acme-admin")
    viewer = UserFactory(username="acme-viewer")
    TenantMembershipFactory(user=admin_user, tenant=tenant, role="admin")
    TenantMembershipFactory(user=viewer, tenant=tenant, role="viewer")
    return tenant


def _save(page, button: str = "_save") -> None:
    with page.expect_navigation():
        page.click(f"input[name={button}]")


def _errors(page) -> list[str]:
    return [e.inner_text() for e in page.query_selector_all(".errorlist li")]


def test_budget_added_corrected_edited_and_deleted_by_its_admin_and_only_read_by_a_viewer(
    browser_page, acme
):
    page = browser_page.page
    browser_page.log_in("acme-admin", PASSWORD)

    # the admin adds a daily blocking budget of one service from the admin's index
    browser_page.open("/admin/")
    with page.expect_navigation():
        page.click("tr.model-budget a.addlink")
    page.fill("#id_name", "Chat daily cap")
    page.select_option("#id_period", "daily")
    page.fill("#id_limit_usd", "-5")
    page.select_option("#id_action", "block")
    page.fill("#id_service_name", "chat")
    page.fill("#id_alert_percentages", "50, 80,100")
    _save(page)

    # a negative limit is refused beside its field, and nothing typed is lost
    assert _errors(page) == ["Ensure this value is greater than or equal to 0.0001."]
    assert page.locator(".field-limit_usd .errorlist").count() == 1
    assert page.input_value("#id_name") == "Chat daily cap"
    assert page.input_value("#id_service_name") == "chat"
    assert page.input_value("#id_alert_percentages") == "50, 80,100"
    assert page.input_value("#id_period") == "daily"
    assert page.input_value("#id_action") == "block"

    page.fill("#id_limit_usd", "25.5")
    _save(page)
    row = page.inner_text("#result_list tbody tr")
    assert "Chat daily cap" in row and "service chat" in row and "$25.50" in row
    assert "Daily" in row and "Block calls over the limit" in row
    budget = Budget.objects.get(tenant=acme)
    assert budget.alert_percentages == [50, 80, 100]
    assert budget.limit_usd == Decimal("25.5")

    # the admin edits it: a 0 % alert is refused, then 90 % is saved
    with page.expect_navigation():
        page.click("#result_list a:text('Chat daily cap')")
    assert page.input_value("#id_alert_percentages") == "50, 80, 100"
    page.fill("#id_alert_percentages", "0, 90")
    _save(page, "_continue")
    assert _errors(page) == [
        "Alert percentages must be whole numbers between 1 and 1000, e.g. 50, 80, 100."
    ]
    page.fill("#id_alert_percentages", "90")
    page.fill("#id_limit_usd", "30")
    _save(page, "_continue")
    assert "was changed successfully" in page.inner_text(".messagelist")
    budget.refresh_from_db()
    assert (budget.alert_percentages, budget.limit_usd) == ([90], Decimal("30"))

    # a viewer sees the budget as the admin typed it, and can change nothing
    viewer = browser_page.page.context.browser.new_context()
    viewer_page = viewer.new_page()
    viewer_page.goto(browser_page.base_url + "/admin/login/")
    viewer_page.fill("#id_username", "acme-viewer")
    viewer_page.fill("#id_password", PASSWORD)
    with viewer_page.expect_navigation():
        viewer_page.click("input[type=submit]")
    viewer_page.goto(browser_page.base_url + reverse("admin:usage_budget_change", args=[budget.pk]))
    content = viewer_page.inner_text("#content-main")
    assert "$30.00" in content and "90" in content
    assert viewer_page.locator("#content-main input[type=text]").count() == 0
    assert viewer_page.locator("a.deletelink").count() == 0
    assert viewer_page.locator("tr.model-budget a.addlink").count() == 0
    viewer.close()

    # the admin deletes it
    with page.expect_navigation():
        page.click("a.deletelink")
    with page.expect_navigation():
        page.click("input[type=submit]")
    assert "was deleted successfully" in page.inner_text(".messagelist")
    assert not Budget.objects.exists()
    assert browser_page.errors == []


def test_override_with_ordered_fallbacks_added_and_edited_in_the_browser(browser_page, acme):
    # given three active provider configs, a retired one and another tenant's
    primary = ProviderConfigFactory(tenant=acme, name="primary")
    backup_a = ProviderConfigFactory(tenant=acme, name="backup-a")
    backup_b = ProviderConfigFactory(tenant=acme, name="backup-b")
    ProviderConfigFactory(tenant=acme, name="retired", is_active=False)
    ProviderConfigFactory(tenant=Tenant.objects.create(name="Globex", slug="globex"), name="theirs")
    page = browser_page.page
    browser_page.log_in("acme-admin", PASSWORD)

    # when the admin adds an override of the "chat" service with two fallbacks, in reverse order
    browser_page.open(reverse("admin:overrides_routingoverride_add"))
    page.fill("#id_service_name", "chat")
    page.select_option("#id_provider_config", str(primary.pk))
    for _ in range(2):
        page.click(".inline-group .add-row a")
    offered = page.eval_on_selector_all(
        "#id_fallbacks-0-provider_config option", "os => os.map(o => o.textContent.trim())"
    )
    page.fill("#id_fallbacks-0-position", "2")
    page.select_option("#id_fallbacks-0-provider_config", str(backup_a.pk))
    page.fill("#id_fallbacks-1-position", "1")
    page.select_option("#id_fallbacks-1-provider_config", str(backup_b.pk))
    page.fill("#id_fallbacks-1-model", "fake-large")
    _save(page, "_continue")

    # then only the tenant's active configs were offered, and the fallbacks run by position
    assert sorted(o.split(" (")[0] for o in offered) == [
        "---------",
        "backup-a",
        "backup-b",
        "primary",
    ]
    assert "was added successfully" in page.inner_text(".messagelist")
    override = RoutingOverride.objects.get(tenant=acme)
    assert [(f.position, f.provider_config.name, f.model) for f in override.fallbacks.all()] == [
        (1, "backup-b", "fake-large"),
        (2, "backup-a", ""),
    ]
    assert page.input_value("#id_fallbacks-0-provider_config") == str(backup_b.pk)
    assert page.input_value("#id_fallbacks-1-provider_config") == str(backup_a.pk)

    # when a stored fallback is added again, the page says so and keeps the rows
    page.click(".inline-group .add-row a")
    page.fill("#id_fallbacks-2-position", "3")
    page.select_option("#id_fallbacks-2-provider_config", str(backup_a.pk))
    _save(page, "_continue")
    assert _errors(page) == [
        "A provider config and model may be a fallback of this override once only: "
        "this one is a fallback of it already."
    ]
    assert page.input_value("#id_fallbacks-2-provider_config") == str(backup_a.pk)
    assert override.fallbacks.count() == 2

    # when the repeated row is dropped and the first fallback deleted
    page.click("#fallbacks-2 .inline-deletelink")
    page.check("#id_fallbacks-0-DELETE")
    _save(page)

    # then one fallback is left, and the list counts it
    assert [f.provider_config.name for f in override.fallbacks.all()] == ["backup-a"]
    row = page.inner_text("#result_list tbody tr")
    assert "chat" in row and "primary" in row
    assert page.inner_text("#result_list tbody tr td.field-fallback_count") == "1"
    assert browser_page.foreign_requests == []
    assert browser_page.errors == []
