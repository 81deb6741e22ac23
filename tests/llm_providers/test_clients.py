"""Adapters built once per provider config version; replaced ones closed only later."""

import socket
import threading

import pytest

from llm_providers import clients
from llm_providers.adapters.types import ChatRequest
from llm_providers.clients import adapter_for_config
from llm_providers.models import ProviderConfig
from llm_providers.services import provider_config_create, provider_config_update
from tests.factories import ProviderConfigFactory, TenantFactory

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


def test_slow_dns_answer_for_one_config_does_not_hold_up_another(settings, monkeypatch):
    # given a config whose host takes long to resolve, and a Fake config
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    slow = ProviderConfigFactory(provider_type="openai", base_url="https://slow-dns.example/v1")
    fake = ProviderConfigFactory(provider_type="fake")
    resolving, answer = threading.Event(), threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "slow-dns.example":
            resolving.set()
            answer.wait(10)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 0))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    built = {}

    def build(name, config):
        built[name] = adapter_for_config(config)

    waiting = threading.Thread(target=build, args=("slow", slow))
    waiting.start()
    assert resolving.wait(5)

    # when the Fake config's adapter is asked for meanwhile
    other = threading.Thread(target=build, args=("fake", fake))
    other.start()
    other.join(3)

    # then it is built without waiting for the other host's DNS answer
    try:
        assert not other.is_alive()
        assert "fake" in built and "slow" not in built
    finally:
        answer.set()
        waiting.join(10)
        other.join(10)
    assert "slow" in built


def test_call_still_holding_the_old_config_does_not_displace_the_new_adapter(config):
    # given the adapter of a config, and a call that read the config before a change
    stale = ProviderConfig.objects.get(pk=config.pk)
    old = adapter_for_config(stale)
    provider_config_update(provider_config=config, data={"options": {"timeout": 30}})
    new = adapter_for_config(config)

    # when that call (a retry, a fallback) asks for its adapter again
    again = adapter_for_config(stale)

    # then it gets the adapter it had, and new calls keep the new one: nothing is rebuilt
    assert again is old
    assert adapter_for_config(config) is new
    assert new.timeout == 30
