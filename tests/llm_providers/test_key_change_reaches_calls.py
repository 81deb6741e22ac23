"""A provider key changed in the admin or the API is the one the very next call sends."""

from __future__ import annotations

import json
import logging

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.urls import reverse

from llm_providers.completion import complete
from llm_providers.services import provider_config_create
from tests.api.fixtures import token_client
from tests.factories import TenantFactory, TenantMembershipFactory, UserFactory

HELLO = [{"role": "user", "content": "hello"}]
KEYS = [
    "sk-proj-First0Key1Nq7Rv2Lx9Tb4Wc8Hd3Jf6Ms",
    "sk-proj-Second0Key2Kz5Pq1Vy7Gx3Rb9Tn4Wd6",
    "sk-proj-Third0Key3Hm2Cs8Lw5Xq1Fz7Bv4Nr9J",
]


def _admin_form(config, **overrides) -> dict:
    data = {
        "name": config.name,
        "provider_type": config.provider_type,
        "default_model": config.default_model,
        "allowed_models": "",
        "base_url": config.base_url,
        "aws_region": "",
        "options": json.dumps(config.options or {}),
        "is_active": "on",
        "is_default": "on",
        "priority": str(config.priority),
        "rpm_limit": "",
        "tpm_limit": "",
        "api_key": "",
        "aws_access_key_id": "",
        "aws_secret_access_key": "",
    }
    data.update(overrides)
    return data


def _cached_text() -> str:
    """Every key and value the shared cache holds, as text."""
    client = cache.client.get_client(write=True)
    parts = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        parts.append(key.decode("utf-8", "replace"))
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [v for pair in client.hgetall(key).items() for v in pair]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = client.zrange(key, 0, -1)
        else:
            values = []
        parts.extend(v.decode("utf-8", "replace") for v in values if v is not None)
    return "\n".join(parts)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_key_changed_in_admin_or_api_is_sent_by_the_next_call(
    allow_private_urls, openai_upstream, caplog
):
    # given a tenant whose default config has served a call with its first key
    tenant = TenantFactory()
    admin = UserFactory()
    TenantMembershipFactory(user=admin, tenant=tenant, role="admin")
    config = provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key=KEYS[0],
        base_url=openai_upstream.base_url,
        default_model="gpt-4o-mini",
        is_default=True,
    )
    openai_upstream.set_default(lambda request: openai_upstream.chat_reply("ok"))
    for name in ("", "django.db.backends", "openai", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    connection.force_debug_cursor = True
    browser = Client()
    browser.force_login(admin)
    api = token_client(admin, tenant=tenant)
    change_url = reverse("admin:llm_providers_providerconfig_change", args=[config.pk])
    sent = []

    def call() -> None:
        assert complete(tenant=tenant, messages=HELLO).content == "ok"
        sent.append(openai_upstream.requests[-1].headers["authorization"])

    try:
        call()
        # when the key is replaced in the admin, then through the API, then
        # something else is changed in the admin with the key field left empty
        answer = browser.post(change_url, _admin_form(config, api_key=KEYS[1]))
        assert answer.status_code == 302
        call()
        answer = api.patch(f"/api/v1/providers/{config.pk}", {"api_key": KEYS[2]}, format="json")
        assert answer.status_code == 200, answer.content
        call()
        answer = browser.post(change_url, _admin_form(config, priority="7"))
        assert answer.status_code == 302
        call()
    finally:
        connection.force_debug_cursor = False

    # then each call after a change sent the key in force, and the last kept it
    assert sent == [f"Bearer {KEYS[n]}" for n in (0, 1, 2, 2)]
    # and no key is in the cache or in what was logged (SQL included)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "UPDATE" in logged
    cached = _cached_text()
    assert cached
    for key in KEYS:
        assert key[8:-4] not in cached
        assert key[8:-4] not in logged
