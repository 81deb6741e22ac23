"""The response cache: keyed by tenant, config, model and request; never by a secret."""

import uuid

from django.core.cache import cache

from llm_providers.adapters.types import ChatRequest, ChatResult, ToolCall, Usage
from llm_providers.models import ProviderConfig
from llm_providers.response_cache import (
    _cache_key,
    provider_endpoint,
    request_fingerprint,
    response_cache_get,
    response_cache_set,
)

RESULT = ChatResult(
    content="hello",
    usage=Usage(input_tokens=10, output_tokens=2, cache_read_tokens=4),
    model="fake-small",
    finish_reason="tool_calls",
    tool_calls=[
        ToolCall(
            id="c1",
            name="lookup",
            arguments='{"q": 1}',
            extra_content={"google": {"thought_signature": "CiQBjz1rX+9w=="}},
        ),
        ToolCall(id="c2", name="lookup", arguments='{"q": 2}'),
    ],
)


def _request(**overrides):
    values = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    values.update(overrides)
    return ChatRequest(**values)


def test_request_fingerprint_changes_with_parameters():
    base = request_fingerprint(_request())

    assert request_fingerprint(_request()) == base
    assert request_fingerprint(_request(temperature=0.5)) != base
    assert request_fingerprint(_request(messages=[{"role": "user", "content": "ho"}])) != base
    assert request_fingerprint(_request(json_mode=True)) != base


def test_response_cache_round_trips_result():
    tenant_id, config_id = uuid.uuid4(), uuid.uuid4()
    key = {"tenant_id": tenant_id, "provider_config_id": config_id, "endpoint": "e", "model": "m"}
    response_cache_set(**key, fingerprint="f", result=RESULT, ttl_seconds=60)

    assert response_cache_get(**key, fingerprint="f") == RESULT


def test_response_cache_is_separate_per_tenant():
    config_id = uuid.uuid4()
    writer = uuid.uuid4()
    response_cache_set(
        tenant_id=writer,
        provider_config_id=config_id,
        endpoint="e",
        model="m",
        fingerprint="f",
        result=RESULT,
        ttl_seconds=60,
    )
    same = {"provider_config_id": config_id, "endpoint": "e", "model": "m", "fingerprint": "f"}

    found = response_cache_get(tenant_id=uuid.uuid4(), **same)

    assert found is None
    # The entry is there for the tenant that wrote it: the miss above is the tenant's.
    assert response_cache_get(tenant_id=writer, **same) == RESULT


def test_response_cache_set_with_zero_ttl_stores_nothing():
    key = {
        "tenant_id": uuid.uuid4(),
        "provider_config_id": uuid.uuid4(),
        "endpoint": "e",
        "model": "m",
    }

    response_cache_set(**key, fingerprint="f", result=RESULT, ttl_seconds=0)

    assert response_cache_get(**key, fingerprint="f") is None


def test_endpoint_of_a_bedrock_config_names_its_region():
    # Another region is another endpoint: its answers are not the old region's.
    east = ProviderConfig(provider_type="bedrock", aws_region="us-east-1", options={})
    west = ProviderConfig(provider_type="bedrock", aws_region="us-west-2", options={})

    assert provider_endpoint(east) != provider_endpoint(west)
    assert "us-west-2" in provider_endpoint(west)


def test_endpoint_of_a_bedrock_config_names_its_credentials_not_them():
    # Another access key is another account: its answers are not the old one's.
    configs = []
    for access_key_id in ("AKIAOLDACCOUNT000001", "AKIANEWACCOUNT000002"):
        config = ProviderConfig(provider_type="bedrock", aws_region="us-east-1", options={})
        config.set_aws_credentials(
            access_key_id=access_key_id, secret_access_key=f"Sec{access_key_id}Ret/0123456789"
        )
        configs.append(config)

    old, new = (provider_endpoint(config) for config in configs)

    assert old != new
    assert "0001" in old
    assert "OLDACCOUNT" not in old and "Ret/0123456789" not in old


def test_response_cache_reads_an_entry_stored_before_tool_calls_kept_extra_content():
    key = {"tenant_id": uuid.uuid4(), "provider_config_id": uuid.uuid4(), "endpoint": "e"}
    stored = {
        "content": "",
        "usage": {"input_tokens": 10, "output_tokens": 2},
        "model": "m",
        "finish_reason": "tool_calls",
        "tool_calls": [{"id": "c1", "name": "lookup", "arguments": "{}"}],
        "usage_estimated": False,
    }
    cache.set(_cache_key(**key, model="m", fingerprint="f"), stored, 60)

    found = response_cache_get(**key, model="m", fingerprint="f")

    assert found.tool_calls == [ToolCall(id="c1", name="lookup", arguments="{}")]
    assert found.tool_calls[0].extra_content is None


def test_response_cache_misses_an_entry_older_than_the_age_asked_for():
    key = {"tenant_id": uuid.uuid4(), "provider_config_id": uuid.uuid4(), "endpoint": "e"}
    response_cache_set(**key, model="m", fingerprint="f", result=RESULT, ttl_seconds=3600)
    stored = cache.get(_cache_key(**key, model="m", fingerprint="f"))
    # (as if stored ten minutes ago)
    stored["stored_at"] -= 600
    cache.set(_cache_key(**key, model="m", fingerprint="f"), stored, 3600)

    assert response_cache_get(**key, model="m", fingerprint="f", max_age_seconds=300) is None
    assert response_cache_get(**key, model="m", fingerprint="f", max_age_seconds=900) == RESULT


def test_response_cache_serves_an_entry_stored_before_entries_kept_their_time():
    key = {"tenant_id": uuid.uuid4(), "provider_config_id": uuid.uuid4(), "endpoint": "e"}
    stored = {
        "content": "hello",
        "usage": {"input_tokens": 10, "output_tokens": 2},
        "model": "m",
        "finish_reason": "stop",
        "tool_calls": [],
        "usage_estimated": False,
    }
    cache.set(_cache_key(**key, model="m", fingerprint="f"), stored, 60)

    found = response_cache_get(**key, model="m", fingerprint="f", max_age_seconds=1)

    assert (found.content, found.usage.input_tokens) == ("hello", 10)


# The usage figures every process version reads from a cached answer.
STORED_USAGE_FIELDS = {
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
}


def test_response_cache_stores_only_the_token_counts_every_process_reads():
    # given an answer whose usage names its 1-hour cache writes and its tier,
    # which a cache hit does not pay for
    key = {"tenant_id": uuid.uuid4(), "provider_config_id": uuid.uuid4(), "endpoint": "e"}
    usage = Usage(
        input_tokens=1700,
        output_tokens=300,
        cache_read_tokens=1000,
        cache_write_tokens=500,
        cache_write_1h_tokens=200,
        service_tier="priority",
    )
    result = ChatResult(content="hi", usage=usage, model="m")

    response_cache_set(**key, model="m", fingerprint="f", result=result, ttl_seconds=60)

    # then the entry keeps the token counts a process of the previous release
    # can read back, and a hit reports them
    stored = cache.get(_cache_key(**key, model="m", fingerprint="f"))
    assert stored["usage"] == {
        "input_tokens": 1700,
        "output_tokens": 300,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 500,
        "reasoning_tokens": 0,
    }
    assert set(stored["usage"]) == STORED_USAGE_FIELDS
    found = response_cache_get(**key, model="m", fingerprint="f")
    assert found.usage == Usage(
        input_tokens=1700, output_tokens=300, cache_read_tokens=1000, cache_write_tokens=500
    )


def test_response_cache_reads_an_entry_whose_usage_names_figures_it_does_not_know():
    key = {"tenant_id": uuid.uuid4(), "provider_config_id": uuid.uuid4(), "endpoint": "e"}
    stored = {
        "content": "hi",
        "usage": {"input_tokens": 10, "output_tokens": 2, "audio_tokens": 7},
        "model": "m",
        "finish_reason": "stop",
        "tool_calls": [],
        "usage_estimated": False,
    }
    cache.set(_cache_key(**key, model="m", fingerprint="f"), stored, 60)

    found = response_cache_get(**key, model="m", fingerprint="f")

    assert (found.content, found.usage) == ("hi", Usage(input_tokens=10, output_tokens=2))
