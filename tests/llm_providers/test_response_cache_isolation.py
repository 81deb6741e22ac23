"""The response cache serves an answer only to the request it belongs to:
`complete()` and `stream()` through the OpenAI SDK to a loopback upstream,
counting what reached it."""

import pytest
from django.core.cache import cache

from llm_providers.completion import complete, stream
from llm_providers.services import provider_config_create, provider_config_update
from overrides.services import routing_override_create, routing_override_update
from tests.factories import TenantFactory
from usage.models import CallLog

pytestmark = pytest.mark.django_db

OPENAI_KEY = "sk-proj-Ca1Ch2Ek3Ey4Is5Ol6At7Io8N9q0R1s2"
OTHER_KEY = "sk-proj-Ot1He2Ra3Cc4Ou5Nt6Ke7Y8z9A0b1C2d3"
QUESTION = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What colour is the sky?"},
]


def _tool(name, **properties):
    schema = {"type": "object", "properties": properties}
    return {"type": "function", "function": {"name": name, "parameters": schema}}


def _tool_step(call_id):
    return [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny"},
    ]


def _parts(*texts):
    return [{"role": "user", "content": [{"type": "text", "text": text} for text in texts]}]


CITY = {"type": "string"}
# Pairs of requests that differ in one thing that can change the answer.
DIFFERING = {
    "system prompt": (
        {"messages": QUESTION},
        {"messages": [{"role": "system", "content": "Answer in French."}, QUESTION[1]]},
    ),
    "role": (
        {"messages": QUESTION},
        {"messages": [{"role": "user", "content": QUESTION[0]["content"]}, QUESTION[1]]},
    ),
    "user content": (
        {"messages": QUESTION},
        {"messages": [QUESTION[0], {"role": "user", "content": "What colour is grass?"}]},
    ),
    "content parts": ({"messages": _parts("a", "b")}, {"messages": _parts("a", "b", "c")}),
    "message name": (
        {"messages": [{**QUESTION[1], "name": "ann"}]},
        {"messages": [{**QUESTION[1], "name": "bob"}]},
    ),
    "tool call ids": ({"messages": _tool_step("call_1")}, {"messages": _tool_step("call_2")}),
    "model": ({"messages": QUESTION}, {"messages": QUESTION, "model": "gpt-4o-mini"}),
    "max_tokens": (
        {"messages": QUESTION, "max_tokens": 8},
        {"messages": QUESTION, "max_tokens": 9},
    ),
    "temperature": (
        {"messages": QUESTION, "temperature": 0},
        {"messages": QUESTION, "temperature": 0.5},
    ),
    "top_p": ({"messages": QUESTION, "top_p": 0.5}, {"messages": QUESTION, "top_p": 0.9}),
    "stop": ({"messages": QUESTION, "stop": ["x"]}, {"messages": QUESTION, "stop": ["y"]}),
    "tools order": (
        {"messages": QUESTION, "tools": [_tool("a", city=CITY), _tool("b", city=CITY)]},
        {"messages": QUESTION, "tools": [_tool("b", city=CITY), _tool("a", city=CITY)]},
    ),
    "tool schema": (
        {"messages": QUESTION, "tools": [_tool("a", city=CITY)]},
        {"messages": QUESTION, "tools": [_tool("a", city={"type": "integer"})]},
    ),
    "json_mode": (
        {"messages": [{"role": "user", "content": "Sky colour as JSON?"}]},
        {"messages": [{"role": "user", "content": "Sky colour as JSON?"}], "json_mode": True},
    ),
}


@pytest.fixture
def tenant(allow_private_urls):
    return TenantFactory(response_cache_ttl_seconds=300)


@pytest.fixture
def config(tenant, openai_upstream):
    openai_upstream.set_default(
        lambda request: (
            openai_upstream.chat_stream_reply(["Blue"])(request)
            if request.json.get("stream")
            else openai_upstream.chat_reply("Blue")
        )
    )
    return provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key=OPENAI_KEY,
        base_url=openai_upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
    )


@pytest.mark.parametrize("first, second", DIFFERING.values(), ids=DIFFERING.keys())
@pytest.mark.parametrize("call", ["complete", "stream"])
def test_a_request_differing_in_one_parameter_is_not_served_the_others_answer(
    tenant, config, openai_upstream, call, first, second
):
    def ask(parameters):
        if call == "complete":
            return complete(tenant=tenant, **parameters)
        chunks = stream(tenant=tenant, **parameters)
        list(chunks)
        return chunks.result

    # (asked twice, the first request is served from the cache)
    assert [ask(first).cached, ask(first).cached] == [False, True]

    assert ask(second).cached is False
    assert len(openai_upstream.requests) == 2
    # and each is its own cache entry from then on
    assert [ask(second).cached, ask(first).cached] == [True, True]
    assert len(openai_upstream.requests) == 2


def test_customers_and_services_of_a_tenant_routed_alike_share_its_answers(
    tenant, config, openai_upstream
):
    first = complete(tenant=tenant, messages=QUESTION, customer_id="ann", service_name="chat")

    other = complete(tenant=tenant, messages=QUESTION, customer_id="bob", service_name="mail")

    assert (first.cached, other.cached, other.content) == (False, True, "Blue")
    assert len(openai_upstream.requests) == 1
    [row] = CallLog.objects.filter(request_id=other.request_id)
    assert (row.status, row.customer_id, row.service_name) == ("cached", "bob", "mail")


def _new_key(tenant, config, upstream):
    provider_config_update(provider_config=config, data={"api_key": OTHER_KEY})


def _new_base_url(tenant, config, upstream):
    # (the same loopback under another path: another endpoint, which needs its key again)
    moved = upstream.base_url.replace("/v1", "/moved/v1")
    provider_config_update(provider_config=config, data={"base_url": moved, "api_key": OTHER_KEY})


def _new_default_model(tenant, config, upstream):
    provider_config_update(provider_config=config, data={"default_model": "gpt-4o-mini"})


def _override_to_another_model(tenant, config, upstream):
    routing_override_create(
        tenant=tenant, provider_config=config, customer_id="acme", model="gpt-4o-mini"
    )


def _override_to_another_config(tenant, config, upstream):
    side = provider_config_create(
        tenant=tenant,
        name="side",
        provider_type="openai",
        api_key=OPENAI_KEY,
        base_url=upstream.base_url,
        default_model="gpt-4o",
    )
    routing_override_create(tenant=tenant, provider_config=side, customer_id="acme")


CHANGES = {
    "api key": _new_key,
    "base url": _new_base_url,
    "default model": _new_default_model,
    "override to another model": _override_to_another_model,
    "override to another config": _override_to_another_config,
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_an_answer_is_not_served_once_the_route_or_its_config_changed(
    tenant, config, openai_upstream, change
):
    def ask():
        return complete(tenant=tenant, messages=QUESTION, customer_id="acme")

    # given an answer cached by the default route
    assert [ask().cached, ask().cached] == [False, True]

    # when what would serve the request changes
    change(tenant, config, openai_upstream)
    again = ask()

    # then the provider answers it again, with the key now in force
    assert again.cached is False
    assert len(openai_upstream.requests) == 2
    sent = openai_upstream.requests[-1].headers["authorization"]
    assert sent == f"Bearer {OTHER_KEY if change in (_new_key, _new_base_url) else OPENAI_KEY}"


def test_an_override_changed_to_another_model_is_not_served_the_former_models_answer(
    tenant, config, openai_upstream
):
    override = routing_override_create(
        tenant=tenant, provider_config=config, customer_id="acme", model="gpt-4o"
    )
    complete(tenant=tenant, messages=QUESTION, customer_id="acme")

    routing_override_update(override=override, data={"model": "gpt-4o-mini"})
    again = complete(tenant=tenant, messages=QUESTION, customer_id="acme")

    assert again.cached is False
    assert [r.json["model"] for r in openai_upstream.requests] == ["gpt-4o", "gpt-4o-mini"]


@pytest.mark.parametrize(
    "reply, cached",
    [
        ({"content": "Blu", "finish_reason": "length"}, True),
        ({"content": None, "tool_calls": [{"id": "c1", "name": "a", "arguments": "{}"}]}, True),
    ],
    ids=["truncated", "tool calls"],
)
def test_truncated_and_tool_call_answers_are_served_again_as_they_were(
    tenant, config, openai_upstream, reply, cached
):
    openai_upstream.set_default(lambda request: openai_upstream.chat_reply(**reply))
    tools = [_tool("a", city=CITY)]
    first = complete(tenant=tenant, messages=QUESTION, tools=tools, max_tokens=1)

    again = complete(tenant=tenant, messages=QUESTION, tools=tools, max_tokens=1)

    assert again.cached is cached
    assert (again.content, again.finish_reason, again.tool_calls) == (
        first.content,
        first.finish_reason,
        first.tool_calls,
    )


def test_a_failed_call_is_not_cached(tenant, config, openai_upstream):
    openai_upstream.enqueue_error(status=400, message="Bad request")
    with pytest.raises(Exception):  # noqa: B017 - any refusal; the next call is what is checked
        complete(tenant=tenant, messages=QUESTION)

    again = complete(tenant=tenant, messages=QUESTION)

    assert (again.cached, again.content) == (False, "Blue")
    assert len(openai_upstream.requests) == 2


def test_a_streamed_cache_hit_is_logged_as_a_cached_stream_at_no_cost(
    tenant, config, openai_upstream
):
    complete(tenant=tenant, messages=QUESTION)

    chunks = stream(tenant=tenant, messages=QUESTION)

    assert list(chunks) == ["Blue"]
    assert (chunks.result.cached, chunks.result.cost_usd) == (True, 0)
    [row] = CallLog.objects.filter(request_id=chunks.result.request_id)
    assert (row.status, row.streamed, row.cost_usd, row.input_tokens) == ("cached", True, 0, 0)


@pytest.mark.redis
def test_the_cache_holds_neither_the_provider_key_nor_the_prompt(tenant, config):
    prompt = "Quarterly figures of Zanzibar Widgets, confidential"
    complete(tenant=tenant, messages=[{"role": "user", "content": prompt}])

    client = cache.client.get_client(write=True)
    keys = list(client.scan_iter(count=1000))
    stored = b"\n".join([*keys, *(client.get(key) or b"" for key in keys)])
    assert any(b"resp:" in key for key in keys)
    for secret in (OPENAI_KEY, OPENAI_KEY[8:-4], "Zanzibar"):
        assert secret.encode() not in stored
