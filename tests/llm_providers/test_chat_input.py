"""Checks on what a call carries, shared by complete(), the API and the admin."""

import pytest

from llm_providers.chat_input import (
    MAX_TOOL_CALL_EXTRA_CONTENT_BYTES,
    InvalidRequest,
    messages_validate,
    parameters_validate,
    scope_validate,
)
from llm_providers.completion import complete, embed, stream
from llm_providers.services import provider_config_create
from tests.factories import ProviderConfigFactory, RoutingOverrideFactory, TenantFactory
from usage.models import CallLog


def test_scope_validate_trims_spaces_as_the_api_and_the_admin_do():
    assert scope_validate(customer_id=" acme\u00a0", service_name="chat ") == ("acme", "chat")


def test_scope_validate_counts_length_after_trimming():
    assert scope_validate(customer_id=" " * 10 + "a" * 200, service_name="") == ("a" * 200, "")
    with pytest.raises(InvalidRequest, match="customer_id is longer than 200 characters."):
        scope_validate(customer_id="a" * 201, service_name="")


def test_scope_validate_refuses_half_of_a_surrogate_pair():
    with pytest.raises(InvalidRequest) as refused:
        scope_validate(customer_id="acme", service_name="chat\ud83d")

    assert (refused.value.field, refused.value.message) == (
        "service_name",
        "service_name must be valid Unicode text: it holds half of a surrogate pair.",
    )


@pytest.mark.parametrize("timeout", [0, -1, 600.5, True])
def test_parameters_validate_refuses_a_timeout_outside_its_range_saying_which(timeout):
    with pytest.raises(InvalidRequest) as refused:
        parameters_validate(
            max_tokens=None, temperature=None, top_p=None, stop=None, timeout=timeout
        )

    assert (refused.value.field, refused.value.message) == (
        "timeout",
        "timeout must be a number of seconds greater than 0 and at most 600.",
    )


@pytest.mark.parametrize("timeout", [0.001, 600])
def test_parameters_validate_accepts_a_timeout_at_the_edges_of_its_range(timeout):
    assert (
        parameters_validate(
            max_tokens=None, temperature=None, top_p=None, stop=None, timeout=timeout
        )
        is None
    )


@pytest.mark.django_db
def test_complete_for_a_customer_id_holding_half_an_emoji_is_refused_before_routing():
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, name="default", is_default=True)

    with pytest.raises(InvalidRequest, match="customer_id must be valid Unicode text"):
        complete(tenant=tenant, messages=[{"role": "user", "content": "hi"}], customer_id="\ud83d")

    assert not CallLog.objects.exists()


@pytest.mark.django_db
def test_complete_for_a_customer_id_with_spaces_takes_its_override_and_logs_it_trimmed():
    # given an override for customer "acme", saved through a form that trims
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, name="default", is_default=True)
    override = RoutingOverrideFactory(tenant=tenant, customer_id="acme", model="fake-small")

    # when a program passes the id with a trailing space
    result = complete(
        tenant=tenant, messages=[{"role": "user", "content": "hi"}], customer_id="acme "
    )

    # then the override routes the call, and the row names the customer as stored
    log = CallLog.objects.get(request_id=result.request_id)
    assert (log.provider_config_id, log.route_rule) == (override.provider_config_id, "customer")
    assert log.customer_id == "acme"


def _tool_call_step(extra_content) -> list[dict]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        "extra_content": extra_content,
    }
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]


@pytest.mark.parametrize(
    "extra_content",
    [None, {"google": {"thought_signature": "CiQBjz1rX" * 100}}, {"other": [1, "two"]}],
    ids=["null", "thought-signature", "other-provider"],
)
def test_messages_validate_takes_the_extra_content_a_tool_call_was_answered_with(extra_content):
    messages = _tool_call_step(extra_content)

    assert messages_validate(messages) is messages


@pytest.mark.parametrize(
    ("extra_content", "message"),
    [
        (
            "CiQBjz1rX",
            "messages[1].tool_calls[0].extra_content must be a JSON object, as the tool call "
            "was answered with, or null.",
        ),
        (
            ["CiQBjz1rX"],
            "messages[1].tool_calls[0].extra_content must be a JSON object, as the tool call "
            "was answered with, or null.",
        ),
        (
            {"google": "CiQBjz1rX"},
            "messages[1].tool_calls[0].extra_content.google must be a JSON object.",
        ),
        (
            {"google": {"thought_signature": 12}},
            "messages[1].tool_calls[0].extra_content.google.thought_signature must be a "
            "non-empty string.",
        ),
        (
            {"google": {"thought_signature": ""}},
            "messages[1].tool_calls[0].extra_content.google.thought_signature must be a "
            "non-empty string.",
        ),
        (
            {"google": {"thought_signature": "x" * MAX_TOOL_CALL_EXTRA_CONTENT_BYTES}},
            "messages[1].tool_calls[0].extra_content is larger than 65,536 bytes as JSON.",
        ),
    ],
    ids=["text", "list", "google-text", "signature-number", "signature-empty", "too-large"],
)
def test_messages_validate_refuses_extra_content_of_a_bad_shape(extra_content, message):
    with pytest.raises(InvalidRequest) as refused:
        messages_validate(_tool_call_step(extra_content))

    assert (refused.value.field, refused.value.message) == (
        "messages[1].tool_calls[0].extra_content",
        message,
    )


@pytest.mark.parametrize("role", [["user"], {"name": "user"}, 1, None], ids=str)
def test_messages_validate_refuses_a_role_that_is_not_text(role):
    with pytest.raises(InvalidRequest) as refused:
        messages_validate([{"role": role, "content": "hi"}])

    assert (refused.value.field, refused.value.message) == (
        "messages[0].role",
        "messages[0].role must be one of assistant, system, tool, user.",
    )


def test_extra_content_limit_counts_the_bytes_of_its_json():
    # 4 bytes of UTF-8 per emoji: the limit is of what is stored and sent.
    emoji = "\U0001f600"
    fits = {"s": emoji * ((MAX_TOOL_CALL_EXTRA_CONTENT_BYTES - 10) // 4)}
    over = {"s": emoji * (MAX_TOOL_CALL_EXTRA_CONTENT_BYTES // 4)}

    assert messages_validate(_tool_call_step(fits))
    with pytest.raises(InvalidRequest, match="larger than 65,536 bytes"):
        messages_validate(_tool_call_step(over))


@pytest.mark.django_db
def test_complete_with_extra_content_of_a_bad_shape_is_refused_before_routing():
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, name="default", is_default=True)

    with pytest.raises(InvalidRequest, match=r"extra_content must be a JSON object"):
        complete(tenant=tenant, messages=_tool_call_step(True))

    assert not CallLog.objects.exists()


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("extra_content", "message"),
    [
        (
            {"google": {"thought_signature": "Ci\ud800"}},
            "must not contain unpaired surrogates (such as \\ud800).",
        ),
        ({"deep": _nested(70)}, "must not be nested more than 64 levels deep."),
        ({"at": float("nan")}, "must hold JSON values only."),
        ({"at": {1, 2}}, "must hold JSON values only."),
    ],
    ids=["surrogate", "too-deep", "nan", "set"],
)
def test_messages_validate_refuses_extra_content_a_complete_caller_cannot_send(
    extra_content, message
):
    # complete() is called from Python too: what JSON cannot carry is refused
    # rather than failing later in the cache or the SDK.
    with pytest.raises(InvalidRequest) as refused:
        messages_validate(_tool_call_step(extra_content))

    assert refused.value.field == "messages[1].tool_calls[0].extra_content"
    assert message in refused.value.message


def _call(operation: str, tenant, **arguments):
    """Run one call of `operation` to its end (a stream read through)."""
    if operation == "embed":
        return embed(tenant=tenant, inputs=["hi"], **arguments)
    if operation == "stream":
        chunks = stream(tenant=tenant, messages=[{"role": "user", "content": "hi"}], **arguments)
        "".join(chunks)
        return chunks.result
    return complete(tenant=tenant, messages=[{"role": "user", "content": "hi"}], **arguments)


@pytest.mark.django_db
@pytest.mark.parametrize("operation", ["complete", "stream", "embed"])
@pytest.mark.parametrize(
    ("model", "message"),
    [
        (5, "model must be a string."),
        ("m" * 201, "model is longer than 200 characters."),
        ("\u00e9" * 201, "model is longer than 200 characters."),
        ("fake\x00small", "model must not contain control characters."),
        ("fake\nsmall", "model must not contain control characters."),
        ("fake\ud83d", "model must be valid Unicode text: it holds half of a surrogate pair."),
    ],
    ids=["number", "too-long", "too-long-multibyte", "nul", "line-break", "surrogate"],
)
def test_a_model_no_call_log_can_hold_is_refused_before_routing(operation, model, message):
    # given a route to a provider that would answer any model name
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, name="default", is_default=True)

    # when a program names a model that the call log's column cannot record
    with pytest.raises(InvalidRequest) as refused:
        _call(operation, tenant, model=model)

    # then it is refused naming the field, before any provider was paid
    assert (refused.value.field, refused.value.message) == ("model", message)
    assert not CallLog.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("operation", ["complete", "stream", "embed"])
def test_a_model_is_trimmed_as_the_api_trims_it_and_logged_whole_up_to_200_characters(operation):
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant, name="default", is_default=True)
    longest = "\u00e9" * 200

    trimmed = _call(operation, tenant, model=" fake-small\u00a0")
    whole = _call(operation, tenant, model=longest)

    assert trimmed.model == "fake-small"
    assert CallLog.objects.get(request_id=trimmed.request_id).model_requested == "fake-small"
    assert CallLog.objects.get(request_id=whole.request_id).model_requested == longest


def _openai_default(tenant, upstream):
    return provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key="sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6",
        base_url=upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
    )


_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.mark.django_db
@pytest.mark.parametrize("operation", ["complete", "stream"])
@pytest.mark.parametrize(
    ("arguments", "field", "message"),
    [
        (
            {"messages": [{"role": "user", "content": "half an emoji \ud83d"}]},
            "messages[0]",
            "messages[0] must not contain unpaired surrogates (such as \\ud800).",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\x00\ud800"}]}]},
            "messages[0]",
            "messages[0] must not contain unpaired surrogates (such as \\ud800).",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [
                    _TOOL,
                    {"type": "function", "function": {"name": "f", "description": "\udc00"}},
                ],
            },
            "tools[1]",
            "tools[1] must not contain unpaired surrogates (such as \\ud800).",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "stop": ["\ud800"]},
            "stop",
            "stop must not contain unpaired surrogates (such as \\ud800).",
        ),
    ],
    ids=["content-surrogate", "text-part-surrogate-after-nul", "tool-surrogate", "stop-surrogate"],
)
def test_text_no_request_can_carry_is_refused_before_the_provider(
    allow_private_urls, openai_upstream, operation, arguments, field, message
):
    # given a tenant whose calls go to OpenAI, whose SDK cannot encode half an emoji
    tenant = TenantFactory()
    _openai_default(tenant, openai_upstream)
    call = complete if operation == "complete" else stream

    # when a program sends text holding one
    with pytest.raises(InvalidRequest) as refused:
        "".join(call(tenant=tenant, **arguments)) if operation == "stream" else call(
            tenant=tenant, **arguments
        )

    # then the call is refused naming the place, as the API refuses it, before
    # any provider attempt or log row
    assert (refused.value.field, refused.value.message) == (field, message)
    assert openai_upstream.requests == []
    assert not CallLog.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["\ud800", "a\x00\udfff"], ids=["surrogate", "after-nul"])
def test_embedding_input_no_request_can_carry_is_refused_before_the_provider(
    allow_private_urls, openai_upstream, text
):
    tenant = TenantFactory()
    _openai_default(tenant, openai_upstream)

    with pytest.raises(InvalidRequest) as refused:
        embed(tenant=tenant, inputs=["fine", text], model="text-embedding-3-small")

    assert (refused.value.field, refused.value.message) == (
        "inputs",
        "inputs[1] must not contain unpaired surrogates (such as \\ud800).",
    )
    assert openai_upstream.requests == []
    assert not CallLog.objects.exists()
