"""Cache of completion results, per tenant, for identical requests.

The key is a SHA-256 over the tenant, provider config (and its endpoint: type,
base URL, AWS region, options and the key's fingerprint, so an answer from a
config's old endpoint or account is not served after it changed), model,
messages and every parameter that changes the answer; nothing secret goes
into it. Each
tenant sets its TTL (`Tenant.response_cache_ttl_seconds`; 0 turns it off).
An entry keeps the time it was stored, and a lookup serves it only while it
is younger than the tenant's TTL of that moment: entries stored under a
longer TTL stop being served as soon as the tenant lowers it.
An entry keeps the whole answer, its tool calls' `extra_content` (the
provider's data to be sent back with them, such as a Gemini thought
signature) included.

The cache is an optimisation: when it cannot be reached, a lookup misses and
a store is skipped, with a warning, and the call goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from typing import Any

from django.core.cache import cache

from .adapters.types import ChatRequest, ChatResult, ToolCall, Usage

logger = logging.getLogger(__name__)


def request_fingerprint(request: ChatRequest) -> str:
    """SHA-256 of the messages and parameters (the same for every target)."""
    payload = {
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": request.stop,
        "json_mode": request.json_mode,
        "tools": request.tools,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def provider_endpoint(provider_config) -> str:
    """What of a provider config decides where and how its answers come from.

    The credentials are named by what the config shows of them (the key's
    fingerprint, prefix and last four characters; AWS: the access key ID's),
    never the key: another key is another account, whose models, fine-tunes
    or gateway routing may answer otherwise."""
    options = json.dumps(provider_config.options, sort_keys=True, default=str)
    config = provider_config
    credentials = f"{config.key_fingerprint}|{config.key_prefix}|{config.key_last4}"
    return f"{config.provider_type}|{config.base_url}|{config.aws_region}|{options}|{credentials}"


def _cache_key(
    *, tenant_id, provider_config_id, endpoint: str, model: str, fingerprint: str
) -> str:
    scope = f"{tenant_id}|{provider_config_id}|{endpoint}|{model}|{fingerprint}"
    return "resp:" + hashlib.sha256(scope.encode("utf-8")).hexdigest()


# The token counts an entry keeps: what a hit reports (it costs nothing, so
# the figures that only price a call, such as the 1-hour part of the cache
# writes or the service tier, are left out). Entries are read by every
# process sharing the cache, those of the previous release too, which build
# their Usage from these names; fields a reader does not know are skipped.
_STORED_USAGE = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def response_cache_get(
    *,
    tenant_id,
    provider_config_id,
    endpoint: str,
    model: str,
    fingerprint: str,
    max_age_seconds: float | None = None,
) -> ChatResult | None:
    """The stored answer, or None; with `max_age_seconds`, None for an answer stored longer ago."""
    key = _cache_key(
        tenant_id=tenant_id,
        provider_config_id=provider_config_id,
        endpoint=endpoint,
        model=model,
        fingerprint=fingerprint,
    )
    try:
        stored = cache.get(key)
    except Exception as exc:  # noqa: BLE001 - any cache failure is a miss
        logger.warning("response cache lookup failed (%s); treated as a miss", type(exc).__name__)
        return None
    if not stored:
        return None
    stored_at = stored.get("stored_at")
    if (
        max_age_seconds is not None
        and stored_at is not None
        and time.time() - stored_at > max_age_seconds
    ):
        return None
    return ChatResult(
        content=stored["content"],
        usage=Usage(
            **{name: stored["usage"][name] for name in _STORED_USAGE if name in stored["usage"]}
        ),
        model=stored["model"],
        finish_reason=stored["finish_reason"],
        tool_calls=[ToolCall(**call) for call in stored["tool_calls"]],
        usage_estimated=stored.get("usage_estimated", False),
    )


def response_cache_set(
    *,
    tenant_id,
    provider_config_id,
    endpoint: str,
    model: str,
    fingerprint: str,
    result: ChatResult,
    ttl_seconds: int,
) -> None:
    if ttl_seconds <= 0:
        return
    stored: dict[str, Any] = {
        "content": result.content,
        "usage": {name: getattr(result.usage, name) for name in _STORED_USAGE},
        "model": result.model,
        "finish_reason": result.finish_reason,
        "tool_calls": [asdict(call) for call in result.tool_calls],
        "usage_estimated": result.usage_estimated,
        # Wall-clock time, as every process reads the entry.
        "stored_at": time.time(),
    }
    key = _cache_key(
        tenant_id=tenant_id,
        provider_config_id=provider_config_id,
        endpoint=endpoint,
        model=model,
        fingerprint=fingerprint,
    )
    try:
        cache.set(key, stored, ttl_seconds)
    except Exception as exc:  # noqa: BLE001 - a store that fails is skipped
        logger.warning("response cache store failed (%s); skipped", type(exc).__name__)
