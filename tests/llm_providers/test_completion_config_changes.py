"""Configuration changed while calls are in flight or between them."""

import threading
import uuid
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connections, transaction

from llm_providers.completion import complete
from llm_providers.config_cache import config_version
from llm_providers.models import ProviderConfig
from llm_providers.services import (
    provider_config_create,
    provider_config_delete,
    provider_config_update,
)
from overrides.routing import route_resolve
from tests.factories import ProviderConfigFactory, TenantFactory
from usage.budget import BudgetExceeded, budget_release, budget_reserve
from usage.models import Budget, CallLog
from usage.services import budget_create

HELLO = [{"role": "user", "content": "hello"}]
OPENAI_KEY = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"


@pytest.mark.postgres
def test_call_whose_config_is_deleted_mid_call_is_still_logged(
    transactional_db, allow_private_urls, openai_upstream
):
    # given a config that has served no call yet, so deleting it removes the row
    tenant = TenantFactory()
    config = provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key=OPENAI_KEY,
        base_url=openai_upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
    )
    deleted = []

    def delete_then_answer(request):
        # an admin deletes the config while the provider is answering
        stored = ProviderConfig.objects.get(pk=config.pk)
        deleted.append(provider_config_delete(provider_config=stored))
        connections.close_all()
        return openai_upstream.chat_reply("Hi", model="gpt-4o")

    openai_upstream.enqueue(delete_then_answer)

    result = complete(tenant=tenant, messages=HELLO)

    assert result.content == "Hi"
    assert deleted == [True]
    [log] = CallLog.objects.filter(request_id=result.request_id)
    assert log.provider_config_id is None
    assert (log.status, log.provider_type, log.model_requested) == ("ok", "openai", "gpt-4o")
    assert log.cost_usd is not None and log.cost_usd > 0


class _Undo(Exception):
    """Raised inside a transaction to roll its change back."""


@pytest.mark.django_db
def test_route_resolved_inside_a_rolled_back_change_is_not_served_afterwards():
    # given a tenant whose default config is "primary"
    tenant = TenantFactory()
    primary = ProviderConfigFactory(tenant=tenant, name="primary", is_default=True)
    other = ProviderConfigFactory(tenant=tenant, name="other")
    assert route_resolve(tenant=tenant).primary.provider_config.pk == primary.pk

    # when a transaction switches the default, routes a call, and is rolled back
    with pytest.raises(_Undo), transaction.atomic():
        provider_config_update(provider_config=other, data={"is_default": True})
        assert route_resolve(tenant=tenant).primary.provider_config.pk == other.pk
        raise _Undo

    # then calls are routed by what is stored: the switch never happened
    assert route_resolve(tenant=tenant).primary.provider_config.pk == primary.pk


@pytest.mark.django_db
def test_budget_of_a_rolled_back_transaction_refuses_no_call():
    # given a tenant without budgets
    tenant = TenantFactory()
    reserve = dict(
        tenant=tenant,
        provider_config_id=None,
        service_name="s",
        customer_id="c",
        amount_usd=Decimal("5"),
        request_id=None,
    )
    budget_release(reservation=budget_reserve(**{**reserve, "request_id": uuid.uuid4()}))

    # when a blocking budget is created, refuses a call, and its transaction rolls back
    with pytest.raises(_Undo), transaction.atomic():
        budget_create(tenant=tenant, name="cap", limit_usd=Decimal("1"), action=Budget.Action.BLOCK)
        with pytest.raises(BudgetExceeded):
            budget_reserve(**{**reserve, "request_id": uuid.uuid4()})
        raise _Undo

    # then no budget exists and none refuses the next call
    assert not Budget.objects.filter(tenant=tenant).exists()
    budget_release(reservation=budget_reserve(**{**reserve, "request_id": uuid.uuid4()}))


@pytest.mark.django_db
def test_change_in_a_transaction_is_announced_to_other_processes_when_committed(
    django_capture_on_commit_callbacks,
):
    # given a tenant whose version other processes read from the shared cache
    tenant = TenantFactory()
    primary = ProviderConfigFactory(tenant=tenant, name="primary", is_default=True)
    other = ProviderConfigFactory(tenant=tenant, name="other")
    config_version(tenant.pk)
    shared_key = f"cfgver:{tenant.pk}"
    shared_before = cache.get(shared_key)
    assert route_resolve(tenant=tenant).primary.provider_config.pk == primary.pk

    with django_capture_on_commit_callbacks(execute=True):
        provider_config_update(provider_config=other, data={"is_default": True})
        # while uncommitted, other processes keep the version of what they can read
        assert cache.get(shared_key) == shared_before
        assert route_resolve(tenant=tenant).primary.provider_config.pk == other.pk

    # once committed, every process gets a new version
    assert cache.get(shared_key) not in (None, shared_before)
    assert route_resolve(tenant=tenant).primary.provider_config.pk == other.pk


# Another thread reads while a write transaction is open: SQLite locks the table.
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_uncommitted_change_routes_no_call_of_another_thread():
    # given a tenant whose default config is "primary"
    tenant = TenantFactory()
    primary = ProviderConfigFactory(tenant=tenant, name="primary", is_default=True)
    other = ProviderConfigFactory(tenant=tenant, name="other")
    routed = {}

    def route_elsewhere():
        routed["other thread"] = route_resolve(tenant=tenant).primary.provider_config.pk
        connections.close_all()

    # when a transaction switches the default and routes a call, and another
    # thread routes one before it commits
    with transaction.atomic():
        provider_config_update(provider_config=other, data={"is_default": True})
        routed["this thread"] = route_resolve(tenant=tenant).primary.provider_config.pk
        elsewhere = threading.Thread(target=route_elsewhere)
        elsewhere.start()
        elsewhere.join(10)

    # then each routes by what it can read, and after the commit both by the change
    assert routed == {"this thread": other.pk, "other thread": primary.pk}
    elsewhere = threading.Thread(target=route_elsewhere)
    elsewhere.start()
    elsewhere.join(10)
    assert routed["other thread"] == other.pk
