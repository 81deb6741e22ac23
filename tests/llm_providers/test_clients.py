"""Adapters built once per provider config version; replaced ones closed only later."""

import pytest

from llm_providers import clients
from llm_providers.adapters.types import ChatRequest
from llm_providers.clients import adapter_for_config
from llm_providers.services import provider_config_create, provider_config_update
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def config(allow_private_urls, openai_upstream):
    return provider_config_create(
        tenant=TenantFactory(),
        name="openai",
        provider_type="openai_compatible",
        base_url=openai_upstream.base_url,
        default_model="house-model",
    )


def test_adapter_for_config_reuses_adapter_while_config_is_unchanged(config):
    assert adapter_for_config(config) is adapter_for_config(config)


def test_adapter_for_config_rebuilds_after_change_and_keeps_old_one_open(config, openai_upstream):
    # given an adapter a call may still be using
    old = adapter_for_config(config)

    # when the config changes
    provider_config_update(provider_config=config, data={"options": {"timeout": 30}})
    new = adapter_for_config(config)

    # then a new adapter serves new calls and the old one still works
    assert new is not old
    assert new.timeout == 30
    openai_upstream.enqueue_chat("still here")
    answer = old.complete(
        ChatRequest(model="house-model", messages=[{"role": "user", "content": "x"}])
    )
    assert answer.content == "still here"


def test_retired_adapter_is_closed_once_no_call_can_still_use_it(config, monkeypatch):
    old = adapter_for_config(config)
    provider_config_update(provider_config=config, data={"options": {"timeout": 30}})
    adapter_for_config(config)
    monkeypatch.setattr(clients, "RETIRED_ADAPTER_CLOSE_SECONDS", 0)

    provider_config_update(provider_config=config, data={"options": {"timeout": 40}})
    adapter_for_config(config)

    assert old._client.is_closed()
