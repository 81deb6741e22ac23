"""Configuration changed while calls are in flight or between them."""

import pytest
from django.db import connections

from llm_providers.completion import complete
from llm_providers.models import ProviderConfig
from llm_providers.services import provider_config_create, provider_config_delete
from tests.factories import TenantFactory
from usage.models import CallLog

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
