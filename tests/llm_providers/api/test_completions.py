"""POST /completions and /embeddings end to end over HTTP: the Fake provider and the loopback
OpenAI upstream through the official SDK, JSON and server-sent events, the call log row of
every call (cost to the micro-dollar), and each error code mapped to its HTTP answer."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from decimal import Decimal
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections

from llm_providers.rate_limiting import rate_limit_admit
from llm_providers.services import provider_config_create
from tests.api.fixtures import http_at_once
from tests.factories import (
    BudgetFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    RoutingOverrideFactory,
)
from tests.upstreams.openai import thought_signature
from usage.models import CallLog

pytestmark = pytest.mark.django_db

COMPLETIONS = "/api/v1/completions/"
EMBEDDINGS = "/api/v1/embeddings/"
HELLO = [{"role": "user", "content": "hi"}]
# The Fake provider counts "hi" as 8 input tokens and answers "Echo: hi" (3 tokens);
# at $1 / $2 per million input / output tokens that is 8 + 6 = 14 micro-dollars.
HELLO_COST = "0.000014000000"
DEADLINE_RANGE = "deadline must be a number of seconds from 1 to 600."
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
OPENAI_KEY = "sk-proj-Hq7Lm2Np9Rs4Tv6Wx8Yz1Ab3Cd5Ef7Gh"
# OpenAI gpt-4o: $2.50 input, $1.25 cached input, $10 output per million.
# 1,200 prompt tokens of which 1,000 cached, 300 completion tokens of which 200
# reasoning: 200 x 2.50 + 1,000 x 1.25 + 300 x 10 = 4,750 per million.
OPENAI_GOLDEN = Decimal("0.00475")
OPENAI_USAGE = {
    "model": "gpt-4o-2024-08-06",
    "prompt_tokens": 1200,
    "cached_tokens": 1000,
    "completion_tokens": 300,
    "reasoning_tokens": 200,
}


@pytest.fixture
def fake(tenant):
    ModelPriceFactory(model="fake-small", input_per_mtok="1", output_per_mtok="2")
    return ProviderConfigFactory(tenant=tenant, name="fake-main", is_default=True)


@pytest.fixture
def openai(tenant, allow_private_urls, openai_upstream):
    return provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key=OPENAI_KEY,
        base_url=openai_upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
    )


def _events(response) -> list[tuple[str, dict]]:
    """Parse a text/event-stream body: blank-line separated blocks of `event:` and `data:`."""
    assert response["Content-Type"] == "text/event-stream"
    text = b"".join(response.streaming_content).decode("ascii")
    assert text.endswith("\n\n")
    events = []
    for block in text.removesuffix("\n\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert sorted(fields) == ["data", "event"], block
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def _log(request_id) -> CallLog:
    [log] = CallLog.objects.filter(request_id=request_id)
    return log


# --- JSON ------------------------------------------------------------------------


def test_completion_answers_json_priced_from_openai_upstream(service_api, openai, openai_upstream):
    openai_upstream.enqueue_chat("Hi", **OPENAI_USAGE)

    response = service_api.post(
        COMPLETIONS,
        {"messages": HELLO, "customer_id": "acme-corp", "service_name": "summarizer",
         "max_tokens": 400, "temperature": 0.2, "top_p": 0.9, "stop": ["END"]},
    )  # fmt: skip

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["content"] == "Hi"
    assert body["usage"] == {
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 0,
        "reasoning_tokens": 200,
    }
    assert (body["cost_usd"], body["price_source"]) == ("0.004750000000", "genai_prices")
    assert (body["provider"], body["provider_config"], body["provider_type"]) == (
        "openai",
        str(openai.pk),
        "openai",
    )
    assert (body["model"], body["cached"], body["finish_reason"]) == (
        "gpt-4o-2024-08-06",
        False,
        "stop",
    )
    assert response["X-Request-Id"] == body["request_id"]
    log = _log(body["request_id"])
    assert (log.cost_usd, log.status, log.streamed) == (OPENAI_GOLDEN, "ok", False)
    assert (log.customer_id, log.service_name, log.model_answered) == (
        "acme-corp",
        "summarizer",
        "gpt-4o-2024-08-06",
    )
    sent = openai_upstream.requests[0].json
    assert (sent["model"], sent["max_completion_tokens"], sent["stop"]) == ("gpt-4o", 400, ["END"])
    assert (sent["temperature"], sent["top_p"]) == (0.2, 0.9)


def test_completion_answers_json_priced_from_fake_provider(admin_api, fake):
    response = admin_api.post(COMPLETIONS, {"messages": HELLO})

    assert response.status_code == 200
    body = response.json()
    assert (body["content"], body["cost_usd"], body["provider"]) == (
        "Echo: hi",
        HELLO_COST,
        "fake-main",
    )
    assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == (8, 3)
    assert (body["route_rule"], body["attempts"], body["tool_calls"]) == ("default", 1, [])
    assert _log(body["request_id"]).cost_usd == Decimal(HELLO_COST)


def test_completion_returns_tool_calls(service_api, fake):
    response = service_api.post(COMPLETIONS, {"messages": HELLO, "tools": [TOOL]})

    body = response.json()
    assert (body["content"], body["finish_reason"]) == ("", "tool_calls")
    [call] = body["tool_calls"]
    assert (call["name"], call["arguments"]) == ("lookup", '{"input": "fake"}')


def test_completion_answers_one_json_object_in_json_mode(service_api, fake):
    response = service_api.post(COMPLETIONS, {"messages": HELLO, "json_mode": True})

    assert json.loads(response.json()["content"]) == {"echo": "hi"}


def test_completion_uses_the_customers_override(service_api, tenant, fake):
    special = ProviderConfigFactory(tenant=tenant, name="special", default_model="fake-large")
    RoutingOverrideFactory(tenant=tenant, customer_id="vip", provider_config=special)

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "customer_id": "vip"})

    body = response.json()
    assert (body["provider"], body["model"], body["route_rule"]) == (
        "special",
        "fake-large",
        "customer",
    )


def test_completion_accepts_json_when_client_asks_for_event_stream(service_api, fake):
    response = service_api.post(COMPLETIONS, {"messages": HELLO}, HTTP_ACCEPT="text/event-stream")

    assert (response.status_code, response["Content-Type"]) == (200, "application/json")
    assert response.json()["content"] == "Echo: hi"


# --- server-sent events ----------------------------------------------------------


def test_completion_streams_events_priced_from_openai_upstream(
    service_api, openai, openai_upstream
):
    openai_upstream.enqueue_chat_stream(["Hel", "lo", "!"], **OPENAI_USAGE)

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "stream": True})

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-cache"
    events = _events(response)
    assert events[:3] == [("chunk", {"text": "Hel"}), ("chunk", {"text": "lo"}),
                          ("chunk", {"text": "!"})]  # fmt: skip
    name, done = events[3]
    assert (name, len(events)) == ("done", 4)
    assert (done["cost_usd"], done["model"], done["provider"]) == (
        "0.004750000000",
        "gpt-4o-2024-08-06",
        "openai",
    )
    assert done["usage"]["cache_read_tokens"] == 1000
    assert (done["usage_estimated"], done["finish_reason"]) == (False, "stop")
    assert "content" not in done
    assert response["X-Request-Id"] == done["request_id"]
    log = _log(done["request_id"])
    assert (log.cost_usd, log.streamed, log.status) == (OPENAI_GOLDEN, True, "ok")
    assert openai_upstream.requests[0].json["stream_options"] == {"include_usage": True}


def test_completion_streams_fake_provider_text_then_done(admin_api, fake):
    response = admin_api.post(COMPLETIONS, {"messages": HELLO, "stream": True})

    events = _events(response)
    texts = [data["text"] for name, data in events if name == "chunk"]
    assert "".join(texts) == "Echo: hi"
    assert len(texts) == 2
    name, done = events[-1]
    assert (name, done["cost_usd"], done["usage"]["output_tokens"]) == ("done", HELLO_COST, 3)
    assert _log(done["request_id"]).cost_usd == Decimal(HELLO_COST)


def test_completion_stream_cache_hit_keeps_the_answers_estimated_usage_flag(
    service_api, tenant, allow_private_urls, openai_upstream
):
    # Mistral streams are not asked for usage: the loopback sends none, so it is estimated.
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    provider_config_create(
        tenant=tenant,
        name="mistral",
        provider_type="mistral",
        api_key=OPENAI_KEY,
        base_url=openai_upstream.base_url,
        default_model="mistral-small-latest",
        is_default=True,
    )
    openai_upstream.enqueue_chat_stream(["Hel", "lo"])
    body = {"messages": HELLO, "stream": True}

    first = _events(service_api.post(COMPLETIONS, body))[-1][1]
    again = _events(service_api.post(COMPLETIONS, body))[-1][1]
    as_json = service_api.post(COMPLETIONS, {"messages": HELLO}).json()

    assert (first["cached"], first["usage_estimated"]) == (False, True)
    assert (again["cached"], again["usage"]) == (True, first["usage"])
    assert (again["cost_usd"], again["price_source"]) == ("0.000000000000", "none")
    assert (as_json["cached"], as_json["usage"]) == (True, first["usage"])
    # The tokens of a hit are the original answer's estimate, and say so.
    assert (again["usage_estimated"], as_json["usage_estimated"]) == (True, True)
    assert len(openai_upstream.requests) == 1


def test_completion_stream_broken_upstream_sends_error_event_then_done(
    service_api, openai, openai_upstream
):
    openai_upstream.enqueue_chat_stream(["alpha ", "beta ", "gamma"], break_after=3)

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "stream": True})

    assert response.status_code == 200
    events = _events(response)
    assert [name for name, _ in events] == ["chunk", "chunk", "error", "done"]
    error = events[2][1]["error"]
    assert (error["code"], sorted(error)) == (
        "upstream_unavailable",
        ["code", "extra", "fields", "message"],
    )
    done = events[3][1]
    assert (done["usage_estimated"], done["finish_reason"]) == (True, "error")
    log = _log(done["request_id"])
    assert (log.status, log.error_code, log.usage_estimated) == (
        "error",
        "upstream_unavailable",
        True,
    )
    # "alpha beta " is 11 characters: 4 estimated output tokens.
    assert (done["usage"]["output_tokens"], log.output_tokens) == (4, 4)
    assert done["cost_usd"] == f"{log.cost_usd:.12f}"


def test_completion_stream_failing_before_first_chunk_answers_json_error(admin_api, tenant):
    ProviderConfigFactory(tenant=tenant, is_default=True, options={"failure": "timeout"})

    response = admin_api.post(
        COMPLETIONS, {"messages": HELLO, "stream": True}, HTTP_ACCEPT="text/event-stream"
    )

    assert (response.status_code, response["Content-Type"]) == (504, "application/json")
    assert response.json()["error"]["code"] == "provider_timeout"


def test_completion_stream_closed_by_client_records_what_was_sent(
    service_key, openai, openai_upstream
):
    openai_upstream.enqueue_chat_stream(["one ", "two ", "three"], chunk_delay=0.05)
    body = json.dumps({"messages": HELLO, "stream": True}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": COMPLETIONS,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Api-Key {service_key.secret}",
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    statuses = []

    # As a WSGI server does: read the first event, then the client is gone and
    # the server closes the response. Django closes "old" database connections
    # when a request starts and ends; the test's own connection must stay.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        events = get_wsgi_application()(environ, lambda status, headers: statuses.append(status))
        first = next(iter(events))
        events.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)

    assert statuses == ["200 OK"]
    assert first == b'event: chunk\ndata: {"text":"one "}\n\n'
    log = CallLog.objects.get()
    assert (log.status, log.error_code, log.usage_estimated) == ("ok", "client_closed", True)
    assert log.output_tokens == 2


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        ("timeout", 504, "provider_timeout"),
        ("unavailable", 502, "upstream_unavailable"),
        ("authentication", 502, "provider_authentication"),
        ("bad_request", 400, "provider_bad_request"),
        ("context_too_long", 400, "context_too_long"),
        ("refused", 422, "content_refused"),
    ],
)
def test_completion_maps_provider_failure_to_http(service_api, tenant, failure, status, code):
    ProviderConfigFactory(tenant=tenant, is_default=True, options={"failure": failure})

    response = service_api.post(COMPLETIONS, {"messages": HELLO})

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert CallLog.objects.filter(tenant=tenant, error_code=code).exists()


def test_completion_error_names_the_request_id_of_its_call_logs(service_api, tenant, settings):
    settings.LLM_RETRY_ATTEMPTS = 2
    ProviderConfigFactory(tenant=tenant, is_default=True, options={"failure": "unavailable"})

    response = service_api.post(COMPLETIONS, {"messages": HELLO})

    assert response.status_code == 502
    request_id = response.json()["error"]["extra"]["request_id"]
    assert response["X-Request-Id"] == request_id
    logs = CallLog.objects.filter(tenant=tenant)
    assert [(str(log.request_id), log.attempt) for log in logs.order_by("attempt")] == [
        (request_id, 1),
        (request_id, 2),
    ]


def test_streamed_completion_failing_before_text_names_its_request_id(service_api, tenant):
    ProviderConfigFactory(tenant=tenant, is_default=True, options={"failure": "unavailable"})

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "stream": True})

    assert response.status_code == 502
    request_id = response.json()["error"]["extra"]["request_id"]
    assert response["X-Request-Id"] == request_id
    assert {str(log.request_id) for log in CallLog.objects.filter(tenant=tenant)} == {request_id}


def test_streamed_completion_breaking_after_text_names_its_request_id_in_the_error_event(
    service_api, openai, openai_upstream
):
    openai_upstream.enqueue_chat_stream(["alpha ", "beta ", "gamma"], break_after=3)

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "stream": True})

    events = dict(_events(response))
    request_id = response["X-Request-Id"]
    assert events["error"]["error"]["extra"] == {"request_id": request_id}
    assert events["done"]["request_id"] == request_id
    assert str(_log(request_id).request_id) == request_id


def test_completion_blocked_by_budget_names_the_request_id_of_its_blocked_row(
    service_api, tenant, fake
):
    BudgetFactory(tenant=tenant, action="block", limit_usd=Decimal("0.0001"), period="daily")

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "max_tokens": 1000})

    assert response.status_code == 429
    request_id = response.json()["error"]["extra"]["request_id"]
    assert str(CallLog.objects.get(status="blocked").request_id) == request_id
    assert response["X-Request-Id"] == request_id


def test_completion_maps_provider_rate_limit_to_429_with_retry_after(service_api, fake, settings):
    settings.LLM_RETRY_ATTEMPTS = 1

    response = service_api.post(
        COMPLETIONS, {"messages": [{"role": "user", "content": "hi [fake:rate_limited]"}]}
    )

    assert (response.status_code, response["Retry-After"]) == (429, "1")
    error = response.json()["error"]
    assert (error["code"], error["extra"]["retry_after_seconds"]) == ("provider_rate_limited", 1)


def test_completion_answers_429_rate_limited_beyond_the_configs_rpm(service_api, tenant):
    ProviderConfigFactory(tenant=tenant, is_default=True, rpm_limit=1)

    first = service_api.post(COMPLETIONS, {"messages": HELLO})
    second = service_api.post(COMPLETIONS, {"messages": HELLO})

    assert first.status_code == 200
    assert second.status_code == 429
    error = second.json()["error"]
    assert error["code"] == "rate_limited"
    assert second["Retry-After"] == str(error["extra"]["retry_after_seconds"])
    assert int(second["Retry-After"]) >= 1
    assert CallLog.objects.filter(status="blocked", error_code="rate_limited").count() == 1


def test_completion_failing_everywhere_says_how_each_target_failed(
    service_api, tenant, allow_private_urls, openai_upstream
):
    # given a primary OpenAI upstream that answers too late, and a backup whose
    # one request a minute is already used
    primary = provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key=OPENAI_KEY,
        base_url=openai_upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
        priority=1,
        options={"timeout": 0.3},
    )
    backup = ProviderConfigFactory(tenant=tenant, name="backup", priority=2, rpm_limit=1)
    rate_limit_admit(provider_config_id=backup.pk, rpm_limit=1, tpm_limit=None, tokens=1)
    openai_upstream.enqueue_chat(delay=3, times=2)

    # when a completion is asked for
    response = service_api.post(COMPLETIONS, {"messages": HELLO})

    # then it is refused by the backup's limit, with when to retry, and the
    # caller also learns that the primary timed out
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert response["Retry-After"] == str(error["extra"]["retry_after_seconds"])
    failures = error["extra"]["failures"]
    assert [(f["provider"], f["provider_config"], f["model"], f["code"]) for f in failures] == [
        ("openai", str(primary.pk), "gpt-4o", "provider_timeout"),
        ("backup", str(backup.pk), "fake-small", "rate_limited"),
    ]
    assert failures[1]["message"] == error["message"]
    assert OPENAI_KEY[-8:] not in json.dumps(error)


def test_completion_over_every_targets_tpm_limit_alone_is_not_told_to_retry(service_api, tenant):
    # given a config allowing 1,000 tokens a minute, and a request counting more
    ProviderConfigFactory(tenant=tenant, is_default=True, tpm_limit=1000)

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "max_tokens": 2000})

    # then no wait would admit it: no 429, no Retry-After, but what to change
    assert response.status_code == 400
    assert "Retry-After" not in response
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert "retry_after_seconds" not in error["extra"]
    assert (error["extra"]["limit_kind"], error["extra"]["limit"]) == ("tpm", 1000)
    assert "lower max_tokens or raise the limit" in error["message"]
    assert CallLog.objects.get().status == "blocked"


def test_completion_answers_429_budget_exceeded_under_a_blocking_budget(service_api, tenant, fake):
    # Any call may cost more than $0.0001: the budget gate refuses it before the provider.
    BudgetFactory(tenant=tenant, action="block", limit_usd=Decimal("0.0001"), period="daily")

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "max_tokens": 1000})

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert response["Retry-After"] == str(error["extra"]["retry_after_seconds"])
    assert CallLog.objects.filter(status="blocked", error_code="budget_exceeded").count() == 1


def test_completion_answers_422_when_no_route(service_api, tenant):
    response = service_api.post(COMPLETIONS, {"messages": HELLO, "customer_id": "nobody"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["extra"]["customer_id"]) == ("no_route", "nobody")
    assert not CallLog.objects.exists()


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"messages": ["This field is required."]}),
        ({"messages": []}, {"messages": ["This list may not be empty."]}),
        (
            {"messages": [{"role": "robot", "content": "hi"}]},
            {
                "messages[0].role": [
                    "messages[0].role must be one of assistant, system, tool, user."
                ]
            },
        ),
        (
            {"messages": [{"role": ["user"], "content": "hi"}]},
            {
                "messages[0].role": [
                    "messages[0].role must be one of assistant, system, tool, user."
                ]
            },
        ),
        (
            {"messages": [{"role": {"name": "user"}, "content": "hi"}]},
            {
                "messages[0].role": [
                    "messages[0].role must be one of assistant, system, tool, user."
                ]
            },
        ),
        (
            {"messages": [{"role": "system", "content": "be brief"}]},
            {"messages": ["messages need at least one non-system message."]},
        ),
        (
            {"messages": HELLO, "temperature": 3},
            {"temperature": ["Ensure this value is less than or equal to 2."]},
        ),
        (
            {"messages": HELLO, "max_tokens": 0},
            {"max_tokens": ["Ensure this value is greater than or equal to 1."]},
        ),
        (
            {"messages": HELLO, "max_tokens": 1_000_001},
            {"max_tokens": ["Ensure this value is less than or equal to 1000000."]},
        ),
        ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, {"stop": ["At most 4 items."]}),
        ({"messages": HELLO, "deadline": 0.5}, {"deadline": [DEADLINE_RANGE]}),
        ({"messages": HELLO, "deadline": 601}, {"deadline": [DEADLINE_RANGE]}),
        ({"messages": HELLO, "deadline": "soon"}, {"deadline": [DEADLINE_RANGE]}),
        ({"messages": HELLO, "deadline": True}, {"deadline": [DEADLINE_RANGE]}),
        (
            {"messages": HELLO, "tools": [TOOL, TOOL]},
            {"tools[1]": ["Tool name “lookup” is used twice."]},
        ),
        (
            {
                "messages": HELLO,
                "tools": [{"type": "function", "function": {"name": "look up", "parameters": {}}}],
            },
            {
                "tools[0].function.name": [
                    "Tool name “look up” must be 1 to 64 letters, digits, underscores or dashes."
                ]
            },
        ),
        (
            {"messages": [{"role": "user", "content": "a\x00b"}]},
            {"messages": ["Text must not contain NUL characters or unpaired surrogates."]},
        ),
        (
            {"messages": HELLO, "model": "fake\nsmall"},
            {"model": ["model must not contain control characters."]},
        ),
    ],
    ids=[
        "no-messages",
        "empty",
        "bad-role",
        "role-list",
        "role-object",
        "only-system",
        "temperature",
        "max-tokens",
        "max-tokens-over-limit",
        "stops",
        "deadline-zero",
        "deadline-over-limit",
        "deadline-text",
        "deadline-boolean",
        "tool",
        "tool-name",
        "nul",
        "model-line-break",
    ],  # fmt: skip
)
def test_completion_answers_400_naming_the_bad_field(service_api, fake, body, fields):
    response = service_api.post(COMPLETIONS, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == ("validation_error", fields)
    assert not CallLog.objects.exists()


def test_completion_deadline_longer_than_a_budget_reservation_lasts_answers_400(
    service_api, fake, settings
):
    # given a server whose budget reservations last 300 s, a minute of it to settle a call
    settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS = 300

    # when a call asks for more than the 240 s left
    response = service_api.post(COMPLETIONS, {"messages": HELLO, "deadline": 240.5})

    # then it is refused naming the longest deadline it may ask for, and why
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "deadline": [
            "deadline must be a number of seconds from 1 to 240 (budget reservations on this "
            "server last 300 s, 60 s of which are kept for settling the call)."
        ]
    }
    assert not CallLog.objects.exists()
    # and a call asking for all of it is answered
    assert service_api.post(COMPLETIONS, {"messages": HELLO, "deadline": 240}).status_code == 200


@pytest.mark.parametrize("field", ["messages", "tools"])
def test_completion_answers_400_when_json_nested_too_deep(service_api, fake, field):
    # 850 levels: the decoder accepts them, a recursive walk of them would not
    depth = 850
    nested = "[" * depth + '"hi"' + "]" * depth
    body = {
        "messages": '{"messages": [{"role": "user", "content": ' + nested + "}]}",
        "tools": '{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
        '"function", "function": {"name": "f", "parameters": ' + nested + "}}]}",
    }[field]

    response = service_api.post(COMPLETIONS, body, content_type="application/json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == (
        "validation_error",
        {field: ["Must not be nested more than 64 levels deep."]},
    )
    assert not CallLog.objects.exists()


def _tool_call_step(extra_content) -> list[dict]:
    """A conversation whose assistant step calls `lookup` with this extra_content."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": "{}"},
        "extra_content": extra_content,
    }
    return [
        {"role": "user", "content": "Look it up."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Found."},
    ]


@pytest.mark.parametrize(
    ("extra_content", "message"),
    [
        (
            "CiQBjz1rX",
            "messages[1].tool_calls[0].extra_content must be a JSON object, as the tool call "
            "was answered with, or null.",
        ),
        (
            {"google": {"thought_signature": ["CiQBjz1rX"]}},
            "messages[1].tool_calls[0].extra_content.google.thought_signature must be a "
            "non-empty string.",
        ),
        (
            {"google": {"thought_signature": "C" * 70_000}},
            "messages[1].tool_calls[0].extra_content is larger than 65,536 bytes as JSON.",
        ),
    ],
    ids=["text", "signature-list", "too-large"],
)
def test_completion_answers_400_when_a_tool_calls_extra_content_is_of_a_bad_shape(
    service_api, fake, extra_content, message
):
    response = service_api.post(COMPLETIONS, {"messages": _tool_call_step(extra_content)})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == (
        "validation_error",
        {"messages[1].tool_calls[0].extra_content": [message]},
    )
    assert not CallLog.objects.exists()


GEMINI_KEY = "AIzaSyTestKey1234567890"
PARIS = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
OSLO = {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
QUESTION = [{"role": "user", "content": "Weather in Paris and Oslo?"}]


@pytest.fixture
def gemini3(tenant, allow_private_urls, openai_upstream):
    """A gemini config on the loopback upstream answering as Gemini 3 does."""
    openai_upstream.requires_thought_signatures = True
    return provider_config_create(
        tenant=tenant,
        name="gemini",
        provider_type="gemini",
        api_key=GEMINI_KEY,
        base_url=openai_upstream.base_url,
        default_model="gemini-3-flash-preview",
        is_default=True,
    )


def _signature_of(call: dict) -> dict:
    signature = thought_signature(call["id"], call["name"], call["arguments"])
    return {"google": {"thought_signature": signature}}


def _next_step(tool_calls: list[dict]) -> list[dict]:
    """The conversation a caller sends next: the answer's tool calls, as the
    API returned them, then their results."""
    calls = [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]},
            "extra_content": call["extra_content"],
        }
        for call in tool_calls
    ]
    results = [{"role": "tool", "tool_call_id": call["id"], "content": "Sunny"} for call in calls]
    return [*QUESTION, {"role": "assistant", "content": None, "tool_calls": calls}, *results]


def test_completion_returns_the_thought_signature_gemini_gave_and_sends_it_back(
    service_api, gemini3, openai_upstream
):
    openai_upstream.enqueue_chat(
        None, model="gemini-3-flash-preview", tool_calls=[PARIS, OSLO], finish_reason="stop"
    )
    openai_upstream.enqueue_chat("Sunny in both.", model="gemini-3-flash-preview")

    first = service_api.post(COMPLETIONS, {"messages": QUESTION, "tools": [WEATHER]})

    assert first.status_code == 200, first.content
    body = first.json()
    assert body["finish_reason"] == "tool_calls"
    assert body["tool_calls"] == [
        {**PARIS, "extra_content": _signature_of(PARIS)},
        {**OSLO, "extra_content": None},
    ]

    second = service_api.post(
        COMPLETIONS, {"messages": _next_step(body["tool_calls"]), "tools": [WEATHER]}
    )

    assert second.status_code == 200, second.content
    assert second.json()["content"] == "Sunny in both."
    # The signature Gemini gave goes back, not the placeholder.
    sent = openai_upstream.last_request.json["messages"][1]["tool_calls"]
    assert sent[0]["extra_content"] == _signature_of(PARIS)
    assert "extra_content" not in sent[1]


def test_completion_stream_returns_the_thought_signature_in_its_done_event(
    service_api, gemini3, openai_upstream
):
    openai_upstream.enqueue_chat_stream(
        ["Checking."], model="gemini-3-flash-preview", tool_calls=[PARIS, OSLO]
    )
    openai_upstream.enqueue_chat_stream(["Sunny", " in both."], model="gemini-3-flash-preview")

    events = _events(
        service_api.post(COMPLETIONS, {"messages": QUESTION, "tools": [WEATHER], "stream": True})
    )

    name, done = events[-1]
    assert (name, done["finish_reason"]) == ("done", "tool_calls")
    assert done["tool_calls"] == [
        {**PARIS, "extra_content": _signature_of(PARIS)},
        {**OSLO, "extra_content": None},
    ]

    again = _events(
        service_api.post(
            COMPLETIONS,
            {"messages": _next_step(done["tool_calls"]), "tools": [WEATHER], "stream": True},
        )
    )

    assert [data["text"] for name, data in again if name == "chunk"] == ["Sunny", " in both."]
    sent = openai_upstream.last_request.json["messages"][1]["tool_calls"]
    assert sent[0]["extra_content"] == _signature_of(PARIS)


def test_completion_cache_hit_returns_the_thought_signature_of_the_answer(
    service_api, tenant, gemini3, openai_upstream
):
    tenant.response_cache_ttl_seconds = 60
    tenant.save()
    openai_upstream.enqueue_chat(None, model="gemini-3-flash-preview", tool_calls=[PARIS])
    request = {"messages": QUESTION, "tools": [WEATHER]}

    first = service_api.post(COMPLETIONS, request).json()
    again = service_api.post(COMPLETIONS, request).json()
    streamed = _events(service_api.post(COMPLETIONS, {**request, "stream": True}))[-1][1]

    assert (first["cached"], again["cached"], streamed["cached"]) == (False, True, True)
    expected = [{**PARIS, "extra_content": _signature_of(PARIS)}]
    assert first["tool_calls"] == again["tool_calls"] == streamed["tool_calls"] == expected
    assert len(openai_upstream.requests) == 1


def test_completion_answers_400_when_model_not_allowed(service_api, tenant):
    ProviderConfigFactory(
        tenant=tenant, name="strict", is_default=True, allowed_models=["fake-small"]
    )

    response = service_api.post(COMPLETIONS, {"messages": HELLO, "model": "fake-huge"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["fields"] == {
        "model": [
            "The model “fake-huge” is not allowed on provider config “strict”; allowed: fake-small."
        ]
    }
    assert error["message"] == error["fields"]["model"][0]


def test_completion_error_never_shows_the_provider_key(service_api, openai, openai_upstream):
    openai_upstream.enqueue_invalid_key(OPENAI_KEY)

    response = service_api.post(COMPLETIONS, {"messages": HELLO})

    assert response.status_code == 502
    body = response.content.decode()
    assert response.json()["error"]["code"] == "provider_authentication"
    secret = OPENAI_KEY.removeprefix("sk-proj-")
    leaked = {secret[i : i + 6] for i in range(len(secret) - 5)} & {
        body[i : i + 6] for i in range(len(body) - 5)
    }
    assert leaked == set()


# --- embeddings ------------------------------------------------------------------


def test_embedding_answers_vectors_usage_and_cost_from_fake(service_api, fake):
    ModelPriceFactory(model="fake-embed", input_per_mtok="0.5", output_per_mtok="0")

    response = service_api.post(
        EMBEDDINGS,
        {"inputs": ["alpha", "beta"], "model": "fake-embed", "service_name": "search"},
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert [len(vector) for vector in body["vectors"]] == [8, 8]
    assert (body["model"], body["provider"], body["usage"]["input_tokens"]) == (
        "fake-embed",
        "fake-main",
        4,
    )
    # 4 tokens at $0.50 per million.
    assert body["cost_usd"] == "0.000002000000"
    log = _log(body["request_id"])
    assert (log.operation, log.service_name, log.cost_usd) == (
        "embed",
        "search",
        Decimal("0.000002"),
    )


def test_embedding_answers_vectors_from_openai_upstream(service_api, openai, openai_upstream):
    openai_upstream.enqueue_embeddings([[0.25, -0.5], [1.0, 0.0]], prompt_tokens=50_000)

    response = service_api.post(
        EMBEDDINGS, {"inputs": ["alpha", "beta"], "model": "text-embedding-3-small"}
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["vectors"] == [[0.25, -0.5], [1.0, 0.0]]
    assert (body["usage"]["input_tokens"], body["usage_estimated"]) == (50_000, False)
    # text-embedding-3-small: $0.02 per million tokens.
    assert body["cost_usd"] == "0.001000000000"
    assert _log(body["request_id"]).cost_usd == Decimal("0.001")
    assert openai_upstream.requests[0].json["input"] == ["alpha", "beta"]


def test_embedding_says_when_its_usage_is_estimated(service_api, openai, openai_upstream):
    # given a compatible server that answers embeddings without usage
    openai_upstream.enqueue_embeddings([[0.25, -0.5]], prompt_tokens=None)

    # when
    response = service_api.post(
        EMBEDDINGS, {"inputs": ["alpha beta gamma"], "model": "text-embedding-3-small"}
    )

    # then the answer says its tokens are estimated, as its call log row does
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["usage_estimated"] is True
    assert body["usage"]["input_tokens"] > 0
    assert _log(body["request_id"]).usage_estimated is True


def test_embedding_accepts_one_text(service_api, fake):
    response = service_api.post(EMBEDDINGS, {"inputs": "alpha", "model": "fake-embed"})

    assert len(response.json()["vectors"]) == 1


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"inputs": ["a"]}, {"model": ["This field is required."]}),
        ({"inputs": [1, 2], "model": "m"}, {"inputs": ["Must be a string or a list of strings."]}),
        (
            {"inputs": [], "model": "m"},
            {"inputs": ["inputs must be a non-empty string or list of strings."]},
        ),
        ({"inputs": ["a"], "model": "m", "deadline": -1}, {"deadline": [DEADLINE_RANGE]}),
    ],
    ids=["no-model", "numbers", "empty", "deadline"],
)
def test_embedding_answers_400_naming_the_bad_field(service_api, fake, body, fields):
    response = service_api.post(EMBEDDINGS, body)

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == fields


def test_embedding_answers_413_when_the_body_is_too_large(service_api, fake, settings):
    # 2,048 inputs of 2 KB each: within the item limit, over the body size limit.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000_000
    body = {"inputs": ["a" * 2_000] * 2_048, "model": "fake-embed"}

    response = service_api.post(EMBEDDINGS, body)

    assert response.status_code == 413
    error = response.json()["error"]
    assert (error["code"], error["extra"]) == ("request_too_large", {"max_bytes": 1_000_000})
    assert "1,000,000 bytes" in error["message"]
    assert not CallLog.objects.exists()


def test_embedding_maps_provider_timeout_to_504(service_api, tenant):
    ProviderConfigFactory(tenant=tenant, is_default=True, options={"failure": "timeout"})

    response = service_api.post(EMBEDDINGS, {"inputs": "alpha", "model": "fake-embed"})

    assert (response.status_code, response.json()["error"]["code"]) == (504, "provider_timeout")


@pytest.mark.usefixtures("openai_sdk_warm")
def test_completion_deadline_answers_504_when_the_provider_is_too_slow(
    service_api, openai, openai_upstream
):
    # given a provider that answers after 5 s
    openai_upstream.enqueue_chat("late", delay=5, times=3)

    # when the call may take 1 s
    started = time.perf_counter()
    response = service_api.post(COMPLETIONS, {"messages": HELLO, "deadline": 1})

    # then it answers 504 within reach of that, saying why
    assert time.perf_counter() - started < 3
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "provider_timeout"
    assert error["message"].startswith("The call's deadline of 1 s was reached after 1 attempt")
    assert error["extra"]["deadline_seconds"] == 1
    assert [f["code"] for f in error["extra"]["failures"]] == ["provider_timeout"]
    assert _log(error["extra"]["request_id"]).error_code == "provider_timeout"


@pytest.mark.usefixtures("openai_sdk_warm")
def test_streamed_completion_deadline_answers_504_before_the_first_chunk(
    service_api, openai, openai_upstream
):
    openai_upstream.enqueue_chat_stream(["late"], delay=5, times=3)

    started = time.perf_counter()
    response = service_api.post(COMPLETIONS, {"messages": HELLO, "stream": True, "deadline": 1.5})

    assert time.perf_counter() - started < 3.5
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["message"].startswith("The call's deadline of 1.5 s was reached")


@pytest.mark.usefixtures("openai_sdk_warm")
def test_embedding_deadline_answers_504_when_the_provider_is_too_slow(
    service_api, openai, openai_upstream
):
    openai_upstream.enqueue_embeddings([[0.1, 0.2]], delay=5, times=3)

    started = time.perf_counter()
    response = service_api.post(
        EMBEDDINGS, {"inputs": "alpha", "model": "text-embedding-3-small", "deadline": 1}
    )

    assert time.perf_counter() - started < 3
    assert response.status_code == 504
    assert response.json()["error"]["message"].startswith("The call's deadline of 1 s")


# --- a busy customer, end to end ---------------------------------------------------

LIMITED_KEY = "sk-Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz"
FALLBACK_KEY = "sk-Zx2Cv4Bn6Mm8Lk0Jh2Gf4Ds6Aq8Wp"
GLOBEX_KEY = "sk-Po9Iu7Yt5Re3Wq1Lk9Jh7Gf5Xc3Vb"
RPM_LIMIT = 6
CAPPED = "capped-corp"
# Every answer: 8 prompt tokens (fewer than the offline estimate of any
# question below, as a real tokenizer counts) and 20 completion tokens
# (max_tokens), streamed or not; an embedding: 7 tokens per text. Prices have
# six decimals per million tokens, so costs are finer than a nano-dollar: a
# chat answer costs 8 x 1.234567 + 20 x 3.456789 = 79.012316 micro-dollars.
CHAT_PROMPT, CHAT_COMPLETION, EMBED_TOKENS = 8, 20, 7


def _busy_upstream(openai_upstream):
    """Answers every chat (streamed or not) and embedding call with fixed usage,
    except the first attempt of every fifth question, which fails with a 503
    (retried, and answered the second time)."""
    failed: set[str] = set()
    lock = threading.Lock()

    def answer(request):
        body = request.json or {}
        if request.route == "embeddings":
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return openai_upstream.embeddings_reply(
                [[0.5, 0.25]] * len(texts),
                model=body["model"],
                prompt_tokens=EMBED_TOKENS * len(texts),
            )
        question = body["messages"][-1]["content"]
        with lock:
            first = question not in failed
            failed.add(question)
        if first and question.startswith("question") and int(question.split()[1]) % 5 == 0:
            return openai_upstream.error_reply(503, message="Overloaded; try again.")
        usage = {
            "model": body["model"],
            "prompt_tokens": CHAT_PROMPT,
            "completion_tokens": CHAT_COMPLETION,
        }
        if body.get("stream"):
            return openai_upstream.chat_stream_reply(["Busy ", "day"], **usage)(request)
        return openai_upstream.chat_reply("Busy day", **usage)

    openai_upstream.set_default(answer)


def _post_all(base_url, key_secret, jobs, responses):
    """One client of one internal app: its requests in order, on its own session."""
    import requests

    with requests.Session() as session:
        session.headers["Authorization"] = f"Api-Key {key_secret}"
        for path, payload in jobs:
            reply = session.post(base_url + path, json=payload, timeout=30)
            text = reply.text
            responses.append(
                (key_secret, path, payload, reply.status_code, dict(reply.headers), text)
            )


def _request_id(headers, text):
    if headers.get("Content-Type") == "text/event-stream":
        done = [
            json.loads(block.split("data: ", 1)[1])
            for block in text.split("\n\n")
            if block.startswith("event: done")
        ]
        return done[0]["request_id"] if done else None
    body = json.loads(text)
    return body.get("request_id") or body.get("error", {}).get("extra", {}).get("request_id")


@pytest.fixture
def background_writer(settings, monkeypatch):
    """Call logs and settlements written after the call by a fresh background
    writer, as in production."""
    from django.db import connections

    from usage import bookkeeping

    settings.CALL_LOG_ASYNC = True
    monkeypatch.setattr(bookkeeping, "_writer", None)
    yield
    # The writer thread's own connections close, so the test database can be dropped.
    bookkeeping.bookkeeping_submit(connections.close_all, label="close connections")
    assert bookkeeping.bookkeeping_flush(timeout=5)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("background_writer", "allow_private_urls")
def test_busy_tenants_over_http_keep_every_count_exact(
    live_server, openai_upstream, assert_secret_absent
):
    from datetime import timedelta

    import redis
    from django.conf import settings as django_settings
    from django.db.models import Count, Q, Sum
    from django.utils import timezone

    from llm_providers.models import ProviderConfig
    from tests.factories import ServiceKeyFactory, TenantFactory
    from usage.aggregation import daily_usage_recompute
    from usage.bookkeeping import bookkeeping_flush
    from usage.budget import ReservationEntry, budget_definition_of
    from usage.budget_counters import settled_from_call_logs
    from usage.models import Budget, DailyUsage
    from usage.money import usd_to_nano_and_pico
    from usage.periods import period_containing

    # given two tenants, each with a service key, behind one loopback upstream
    _busy_upstream(openai_upstream)
    acme = TenantFactory(slug="acme-busy", name="Acme busy")
    globex = TenantFactory(slug="globex-busy", name="Globex busy", response_cache_ttl_seconds=300)
    acme_key = ServiceKeyFactory(tenant=acme, name="acme-app")
    globex_key = ServiceKeyFactory(tenant=globex, name="globex-app")
    common = {"provider_type": "openai_compatible", "base_url": openai_upstream.base_url}
    limited = provider_config_create(
        tenant=acme, name="limited", api_key=LIMITED_KEY, default_model="house-chat",
        is_default=True, priority=0, rpm_limit=RPM_LIMIT, tpm_limit=100_000,
        allowed_models=["house-chat", "house-embed"], **common,
    )  # fmt: skip
    fallback = provider_config_create(
        tenant=acme, name="fallback", api_key=FALLBACK_KEY, default_model="house-chat",
        priority=1, allowed_models=["house-chat", "house-embed"], **common,
    )  # fmt: skip
    globex_main = provider_config_create(
        tenant=globex, name="main", api_key=GLOBEX_KEY, default_model="house-chat",
        is_default=True, allowed_models=["house-chat", "house-embed"], **common,
    )  # fmt: skip
    for model in ("house-chat", "house-embed"):
        ModelPriceFactory(
            provider_type="openai_compatible", model=model,
            input_per_mtok="1.234567", output_per_mtok="3.456789",
        )  # fmt: skip
    # The worst case of a capped call (input estimate + 20 output) fits about
    # four times; the $5 budgets never refuse.
    capped = BudgetFactory(
        tenant=acme, name="capped", customer_id=CAPPED, action=Budget.Action.BLOCK,
        period=Budget.Period.DAILY, limit_usd=Decimal("0.0004"),
    )  # fmt: skip
    acme_wide = BudgetFactory(tenant=acme, name="acme-wide", limit_usd=Decimal("5"))
    globex_wide = BudgetFactory(tenant=globex, name="globex-wide", limit_usd=Decimal("5"))

    def chat(n, customer, service, *, stream=False, repeat=False):
        text = "hello again" if repeat else f"question {n} from {customer}"
        return (
            COMPLETIONS,
            {"messages": [{"role": "user", "content": text}], "customer_id": customer,
             "service_name": service, "max_tokens": CHAT_COMPLETION, "stream": stream},
        )  # fmt: skip

    def embedding(n, customer, service):
        return (
            EMBEDDINGS,
            {"inputs": [f"doc {n} a", f"doc {n} b"], "model": "house-embed",
             "customer_id": customer, "service_name": service},
        )  # fmt: skip

    plans = []
    for worker in range(24):
        tenant_key = acme_key if worker % 3 else globex_key
        customer = (
            (CAPPED, "beta-inc", "gamma-llc")[(worker // 3) % 3]
            if tenant_key is acme_key
            else ("beta-inc", "delta-co")[worker % 2]
        )
        service = ("summarizer", "search")[worker % 2]
        jobs = []
        for step in range(4):
            n = worker * 10 + step
            if step == 3 and worker % 4 == 0:
                jobs.append(embedding(n, customer, service))
            else:
                jobs.append(
                    chat(n, customer, service, stream=step % 2 == 1,
                         repeat=tenant_key is globex_key and step == 0)
                )  # fmt: skip
        plans.append((tenant_key.secret, jobs))

    # (one answer of Globex's already in its response cache)
    responses: list = []
    _post_all(live_server.url, globex_key.secret, [chat(0, "beta-inc", "search", repeat=True)],
              responses)  # fmt: skip
    assert responses[0][3] == 200, responses
    assert bookkeeping_flush(timeout=30)

    # when 24 clients send 96 requests at once
    threads = [
        threading.Thread(target=_post_all, args=(live_server.url, secret, jobs, responses))
        for secret, jobs in plans
    ]
    started = timezone.now()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(responses) == 97
    assert bookkeeping_flush(timeout=30)
    today = timezone.localdate(started)
    daily_usage_recompute(first_day=today - timedelta(days=1), last_day=today + timedelta(days=1))

    # then nothing failed as a bug and every answer names its call's rows
    assert [r for r in responses if r[3] >= 500] == []
    tenant_of = {acme_key.secret: acme, globex_key.secret: globex}
    request_ids = []
    for secret, path, payload, status, headers, text in responses:
        request_id = _request_id(headers, text)
        assert request_id and headers.get("X-Request-Id") == request_id, (status, text)
        rows = CallLog.objects.filter(request_id=request_id)
        assert {row.tenant_id for row in rows} == {tenant_of[secret].pk}, (status, text)
        request_ids.append(request_id)
        if status != 200:
            # Refused: the capped customer by its budget, an embedding (which
            # never falls back) by the limited config's rpm limit.
            code = json.loads(text)["error"]["code"]
            assert status == 429, text
            if code == "rate_limited":
                assert path == EMBEDDINGS, text
            else:
                assert (code, payload["customer_id"]) == ("budget_exceeded", CAPPED), text
    assert len(set(request_ids)) == 97
    logs = CallLog.objects.filter(tenant__in=[acme, globex])
    assert logs.count() >= 97

    # the upstream saw exactly the attempts logged as reaching it, per key
    reached = Q(status__in=["ok", "error"]) & ~Q(error_code__in=["budget_exceeded", "rate_limited"])
    keys = {LIMITED_KEY: limited, FALLBACK_KEY: fallback, GLOBEX_KEY: globex_main}
    seen = {secret: 0 for secret in keys}
    for request in openai_upstream.requests:
        seen[request.headers["authorization"].removeprefix("Bearer ")] += 1
    assert seen == {
        secret: logs.filter(reached, provider_config=config).count()
        for secret, config in keys.items()
    }, list(logs.filter(reached, status="error").values_list("error_code", "error_message"))
    assert sum(seen.values()) == logs.filter(reached).count()

    # the rpm limit admitted no more than its limit in any minute
    cache_client = redis.Redis.from_url(django_settings.REDIS_URL)
    buckets = {
        key: int(cache_client.get(key)) for key in cache_client.scan_iter(f"*rl:{limited.pk}:rpm:*")
    }
    assert buckets and max(buckets.values()) <= RPM_LIMIT, buckets
    assert sum(buckets.values()) == logs.filter(reached, provider_config=limited).count()
    assert logs.filter(provider_config=limited, status="blocked", error_code="rate_limited")

    # the capped customer spent no more than its limit, and its refusals are logged
    capped_logs = logs.filter(tenant=acme, customer_id=CAPPED)
    capped_spend = capped_logs.aggregate(total=Sum("cost_usd"))["total"]
    assert Decimal(0) < capped_spend <= capped.limit_usd
    refused = capped_logs.filter(status="blocked")
    # A call its budget admitted may still find the limited config at its rpm limit.
    assert set(refused.values_list("error_code", flat=True)) == {"budget_exceeded", "rate_limited"}
    assert not refused.filter(cost_usd__gt=0).exists()
    for *_, status, headers, text in responses:
        if status == 429 and json.loads(text)["error"]["code"] == "budget_exceeded":
            rows = logs.filter(request_id=headers["X-Request-Id"])
            assert rows.filter(status="blocked", error_code="budget_exceeded").exists()
            assert not rows.filter(cost_usd__gt=0).exists()

    # DailyUsage adds up to CallLog exactly, per tenant
    for tenant in (acme, globex):
        of_tenant = logs.filter(tenant=tenant)
        expected = of_tenant.aggregate(
            requests=Count("pk"),
            errors=Count("pk", filter=Q(status="error")),
            blocked=Count("pk", filter=Q(status="blocked")),
            cached=Count("pk", filter=Q(status="cached")),
            input=Sum("input_tokens"),
            output=Sum("output_tokens"),
            cost=Sum("cost_usd"),
        )
        assert (
            DailyUsage.objects.filter(tenant=tenant).aggregate(
                requests=Sum("request_count"),
                errors=Sum("error_count"),
                blocked=Sum("blocked_count"),
                cached=Sum("cached_count"),
                input=Sum("input_tokens"),
                output=Sum("output_tokens"),
                cost=Sum("cost_usd"),
            )
            == expected
        )
    assert logs.filter(tenant=globex, status="cached").exists()
    assert logs.filter(status="error").exists()

    # no tenant's rows name another tenant's config
    assert set(logs.filter(tenant=acme).values_list("provider_config", flat=True)) <= {
        limited.pk,
        fallback.pk,
    }
    assert set(logs.filter(tenant=globex).values_list("provider_config", flat=True)) <= {
        globex_main.pk
    }
    for secret, _, _, status, headers, text in responses:
        if status == 200 and headers["Content-Type"] == "application/json":
            answered_by = ProviderConfig.objects.get(pk=json.loads(text)["provider_config"])
            assert answered_by.tenant == tenant_of[secret]

    # the live budget counters hold exactly the settled CallLog cost, nothing reserved
    counters = redis.Redis.from_url(django_settings.USAGE_BUDGET_REDIS_URL)
    for budget in (capped, acme_wide, globex_wide):
        budget.refresh_from_db()
        definition = budget_definition_of(budget)
        period = period_containing(budget.period, timezone.now(), budget.tenant.timezone)
        entry = ReservationEntry(budget=definition, period=period)
        [counter] = counters.keys(f"llmpl:budget:{budget.pk}:*:h")
        assert int(counters.hget(counter, "t")) == 0, budget.name
        nano, pico = counters.hmget(counter, "s", "f")
        assert (int(nano), int(pico or 0)) == usd_to_nano_and_pico(settled_from_call_logs(entry)), (
            budget.name
        )

    # no provider key anywhere in the rows or the answers
    everything = "".join(text + json.dumps(headers) for *_, headers, text in responses)
    for row in logs.values():
        everything += json.dumps(row, default=str)
    for secret in keys:
        assert_secret_absent(everything, secret)


# --- streams given up by their clients, under load -----------------------------------

STEADY_KEY = "sk-Mn4Bv6Cx8Za0Sd2Fg4Hj6Kl8Qw0Er2"
FLAKY_KEY = "sk-ant-api03-Ty5Ui7Op9As1Df3Gh5Jk7Lz9Xc1Vb3"
STREAM_PIECES = [f"piece {n} " for n in range(20)]
STREAM_PRICE = {"input_per_mtok": "1.234567", "output_per_mtok": "3.456789"}


def _slow_upstreams(openai_upstream, anthropic_upstream):
    """Both stream twenty pieces 40 ms apart (8 prompt, 20 completion tokens).
    Anthropic breaks the first attempt of questions 4 and 13 before any text
    (retried), and the streams of 5 and 12 after two pieces of text."""
    tried: set[int] = set()
    lock = threading.Lock()

    def openai_answer(request):
        return openai_upstream.chat_stream_reply(
            STREAM_PIECES, model=request.json["model"], prompt_tokens=CHAT_PROMPT,
            completion_tokens=CHAT_COMPLETION, chunk_delay=0.04,
        )(request)  # fmt: skip

    def anthropic_answer(request):
        body = request.json
        content = body["messages"][-1]["content"]
        number = int((content if isinstance(content, str) else content[0]["text"]).split()[1])
        with lock:
            first = number not in tried
            tried.add(number)
        break_after = None
        if number in (4, 13) and first:
            break_after = 2  # message_start and ping
        elif number in (5, 12):
            break_after = 5  # and the text block's start and two pieces
        return anthropic_upstream.message_stream_reply(
            STREAM_PIECES, model=body["model"], input_tokens=CHAT_PROMPT,
            output_tokens=CHAT_COMPLETION, chunk_delay=0.04, break_after=break_after,
        )  # fmt: skip

    openai_upstream.set_default(openai_answer)
    anthropic_upstream.set_default(anthropic_answer)


def _raw_post(base_url, secret, payload) -> tuple[socket.socket, bytes]:
    """Send a POST on a plain socket, so that a client can drop it whenever it likes."""
    host, port = base_url.removeprefix("http://").split(":")
    body = json.dumps(payload).encode()
    head = (
        f"POST {COMPLETIONS} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Api-Key {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    client = socket.create_connection((host, int(port)), timeout=15)
    client.sendall(head + body)
    return client, b""


def _stream_client(base_url, secret, payload, mode, outcomes):
    """`read`: the whole answer; `early`: drop the connection after the first
    chunk event or two; `gone`: drop it before reading anything."""
    client, received = _raw_post(base_url, secret, payload)
    try:
        wanted = 1 + payload["messages"][0]["content"].count("x") % 2
        while mode != "gone":
            data = client.recv(65536)
            if not data:
                break
            received += data
            if mode == "early" and received.count(b"event: chunk") >= wanted:
                break
    finally:
        client.close()
    outcomes.append((mode, payload, received.decode("utf-8", "replace")))


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("background_writer", "allow_private_urls")
def test_streams_dropped_by_their_clients_under_load_settle_every_count(
    live_server, openai_upstream, anthropic_upstream, assert_secret_absent, caplog
):
    import logging

    import redis
    from django.conf import settings as django_settings
    from django.db.models import Q
    from django.utils import timezone

    from llm_providers.adapters.base import estimate_message_tokens
    from llm_providers.clients import adapters_clear
    from tests.factories import ServiceKeyFactory, TenantFactory
    from usage.bookkeeping import bookkeeping_flush
    from usage.budget import ReservationEntry, budget_definition_of
    from usage.budget_counters import settled_from_call_logs
    from usage.models import Budget
    from usage.money import usd_to_nano_and_pico
    from usage.periods import period_containing

    caplog.set_level(logging.WARNING)
    # given a tenant whose customers stream through a rate limited config, a
    # flaky Anthropic one (by override, and the fallback) and a blocking
    # budget, behind slow upstreams
    upstreams = (openai_upstream, anthropic_upstream)
    _slow_upstreams(*upstreams)
    acme = TenantFactory(slug="acme-streams", name="Acme streams", store_prompt_previews=True)
    key = ServiceKeyFactory(tenant=acme, name="acme-app")
    steady = provider_config_create(
        tenant=acme, name="steady", provider_type="openai_compatible", api_key=STEADY_KEY,
        base_url=openai_upstream.base_url, default_model="house-chat",
        allowed_models=["house-chat"], is_default=True, rpm_limit=5, tpm_limit=1_000_000,
    )  # fmt: skip
    flaky = provider_config_create(
        tenant=acme, name="flaky", provider_type="anthropic", api_key=FLAKY_KEY,
        base_url=anthropic_upstream.base_url, default_model="house-claude",
        allowed_models=["house-claude"], priority=1, rpm_limit=1000, tpm_limit=1_000_000,
    )  # fmt: skip
    RoutingOverrideFactory(tenant=acme, provider_config=flaky, customer_id="flaky-co")
    ModelPriceFactory(provider_type="openai_compatible", model="house-chat", **STREAM_PRICE)
    ModelPriceFactory(provider_type="anthropic", model="house-claude", **STREAM_PRICE)
    # About two worst cases fit in the capped customer's day.
    capped = BudgetFactory(
        tenant=acme, name="capped", customer_id=CAPPED, action=Budget.Action.BLOCK,
        period=Budget.Period.DAILY, limit_usd=Decimal("0.0002"),
    )  # fmt: skip
    beta = BudgetFactory(tenant=acme, name="beta", customer_id="beta-inc", limit_usd=Decimal("5"))
    wide = BudgetFactory(tenant=acme, name="acme-wide", limit_usd=Decimal("5"))
    customers = (CAPPED, "beta-inc", "flaky-co", "gamma-llc")
    plans = [
        (
            ("read", "early", "gone")[n % 3],
            {
                "messages": [{"role": "user", "content": f"question {n} " + "x" * (n % 4)}],
                "customer_id": customers[n // 2 % 4],
                "service_name": "chat",
                "max_tokens": CHAT_COMPLETION,
                "stream": True,
            },
        )
        for n in range(16)
    ]
    # when 16 clients stream at once, a third of them dropping the connection
    outcomes: list = []
    clients = [
        threading.Thread(
            target=_stream_client, args=(live_server.url, key.secret, payload, mode, outcomes)
        )
        for mode, payload in plans
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=30)
    assert len(outcomes) == 16
    # (the server finishes each request once it finds its client gone)
    httpd = live_server.thread.httpd

    def serving():
        return [
            thread for thread in threading.enumerate()
            if getattr(getattr(thread, "_target", None), "__self__", None) is httpd
        ]  # fmt: skip

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and serving():
        time.sleep(0.05)
    assert serving() == []
    assert bookkeeping_flush(timeout=10)
    logs = CallLog.objects.filter(tenant=acme)

    # then every request has its rows, one per attempt, the abandoned ones as the docs say
    price_in, price_out = (
        Decimal(STREAM_PRICE[side]) for side in ("input_per_mtok", "output_per_mtok")
    )
    for mode, payload, text in outcomes:
        rows = list(logs.filter(prompt_preview__contains=payload["messages"][0]["content"]))
        assert rows, (mode, payload, text)
        assert len({row.request_id for row in rows}) == 1, rows
        assert sorted(row.attempt for row in rows) == list(range(1, len(rows) + 1))
        last = max(rows, key=lambda row: row.attempt)
        for row in rows:
            if row is not last and row.status == "blocked":
                assert row.error_code in ("budget_exceeded", "rate_limited"), row.error_code
            elif row is not last:
                assert (row.status, row.error_code, row.output_tokens, row.cost_usd or 0) == (
                    "error",
                    "upstream_unavailable",
                    0,
                    0,
                ), row.error_message
        if last.status == "blocked":
            assert (last.error_code, last.cost_usd or 0) == ("budget_exceeded", 0), text
            assert mode == "gone" or " 429 " in text.split("\r\n", 1)[0], text
            continue
        assert (
            last.cost_usd
            == (last.input_tokens * price_in + last.output_tokens * price_out) / 1_000_000
        ), (mode, last.error_code)
        if last.error_code == "client_closed":
            assert mode != "read", text
            assert (last.status, last.usage_estimated) == ("ok", True)
            if last.provider_config_id == flaky.pk:
                # Anthropic reported the prompt's usage before the end: kept.
                assert last.input_tokens == CHAT_PROMPT
        elif last.status == "error":
            assert payload["customer_id"] == "flaky-co", last.error_message
            assert (last.error_code, last.usage_estimated) == ("upstream_unavailable", True)
        else:
            assert (last.status, last.error_code, last.usage_estimated) == ("ok", "", False)
            assert (last.input_tokens, last.output_tokens) == (CHAT_PROMPT, CHAT_COMPLETION)
        if mode == "read":
            head, _, body = text.partition("\r\n\r\n")
            assert f"X-Request-Id: {last.request_id}" in head, head
            events = [
                (block.split("\n")[0].removeprefix("event: "), block.split("data: ", 1)[1])
                for block in body.removesuffix("\n\n").split("\n\n")
            ]
            kinds = [kind for kind, _ in events]
            done = json.loads(events[-1][1])
            pieces = "".join(json.loads(data)["text"] for kind, data in events if kind == "chunk")
            assert (done["request_id"], done["attempts"]) == (str(last.request_id), len(rows))
            assert Decimal(done["cost_usd"]) == last.cost_usd
            assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (
                last.input_tokens, last.output_tokens
            )  # fmt: skip
            if last.status == "error":
                assert kinds[-2:] == ["error", "done"], kinds
                assert (done["finish_reason"], done["usage_estimated"]) == ("error", True)
                assert pieces == "".join(STREAM_PIECES[:2])
            else:
                assert kinds == ["chunk"] * len(STREAM_PIECES) + ["done"], kinds
                assert (done["finish_reason"], pieces) == ("stop", "".join(STREAM_PIECES))
        elif mode == "early" and " 200 " in text.split("\r\n", 1)[0]:
            assert f"X-Request-Id: {last.request_id}" in text, text
    assert logs.filter(error_code="client_closed").exists()
    assert logs.filter(status="error", error_code="upstream_unavailable").exists()

    # the upstream saw the attempts logged as reaching it, and the rate limits counted them
    reached = Q(status__in=["ok", "error"])
    cache_client = redis.Redis.from_url(django_settings.REDIS_URL)
    for config, upstream in zip((steady, flaky), upstreams, strict=True):
        of_config = logs.filter(reached, provider_config=config)
        assert len(upstream.requests) == of_config.count(), config.name

        def counted(kind, config=config):
            return sum(
                int(cache_client.get(name))
                for name in cache_client.scan_iter(f"*rl:{config.pk}:{kind}:*")
            )

        assert counted("rpm") == of_config.count(), config.name
        # An attempt that failed before any output keeps its worst case (the docs).
        tokens = sum(
            row.input_tokens + row.output_tokens
            if row.input_tokens
            else estimate_message_tokens([{"role": "user", "content": row.prompt_preview}])
            + CHAT_COMPLETION
            for row in of_config
        )
        assert counted("tpm") == tokens, config.name

    # no reservation outstanding; each counter holds its scope's CallLog cost exactly
    counters = redis.Redis.from_url(django_settings.USAGE_BUDGET_REDIS_URL)
    for budget in (capped, beta, wide):
        budget.refresh_from_db()
        period = period_containing(budget.period, timezone.now(), budget.tenant.timezone)
        entry = ReservationEntry(budget=budget_definition_of(budget), period=period)
        [counter] = counters.keys(f"llmpl:budget:{budget.pk}:*:h")
        fields = {name.decode(): value for name, value in counters.hgetall(counter).items()}
        assert int(fields["t"]) == 0, (budget.name, fields)
        assert [name for name in fields if name.startswith("r:")] == [], budget.name
        assert counters.zcard(counter.removesuffix(b":h") + b":z") == 0, budget.name
        assert (int(fields["s"]), int(fields.get("f", 0))) == usd_to_nano_and_pico(
            settled_from_call_logs(entry)
        ), budget.name

    # nothing is left running: replies, connections to the upstream
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(u.replies_in_progress for u in upstreams):
        time.sleep(0.05)
    assert [upstream.replies_in_progress for upstream in upstreams] == [0, 0]
    # Every stream given up stopped its upstream reply before the end (but
    # those the upstream broke off itself first).
    given_up = logs.filter(error_code="client_closed").values_list("prompt_preview", flat=True)
    assert sum(upstream.streams_cut for upstream in upstreams) == len(
        [text for text in given_up if int(text.split()[1]) not in (5, 12)]
    )
    # Idle kept-alive connections close with their clients; none was left in use.
    adapters_clear()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(u.open_connections for u in upstreams):
        time.sleep(0.05)
    assert [upstream.open_connections for upstream in upstreams] == [0, 0]

    # no server error logged, no provider key anywhere
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    everything = "".join(text for *_, text in outcomes)
    everything += "".join(record.getMessage() for record in caplog.records)
    for row in logs.values():
        everything += json.dumps(row, default=str)
    for secret in (STEADY_KEY, FLAKY_KEY):
        assert_secret_absent(everything, secret)


# --- one question asked many times at once -----------------------------------------

ACME_MAIN_KEY = "sk-Ac1Me2Ma3In4Ke5Yx6Wv7Ut8Sr9Qp0"
ACME_SIDE_KEY = "sk-Ac9Me8Si7De6Ke5Yz4Xw3Vu2Ts1Rq0"
GLOBEX_CHAT_KEY = "sk-Gl1Ob2Ex3Ch4At5Ke6Yn7Mo8Pq9Rs0"


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("background_writer", "allow_private_urls")
def test_one_question_asked_at_once_is_cached_per_tenant_and_provider_only(
    live_server, openai_upstream, assert_secret_absent
):
    import redis
    from django.conf import settings as django_settings

    from tests.factories import ServiceKeyFactory, TenantFactory
    from usage.bookkeeping import bookkeeping_flush

    # given: two tenants caching answers for five minutes, Acme with a second
    # config for one customer, all three configs on one upstream with one model;
    # each answer names the key it was asked with and is numbered
    label = {ACME_MAIN_KEY: "acme-main", ACME_SIDE_KEY: "acme-side", GLOBEX_CHAT_KEY: "globex"}
    numbered = iter(range(1, 1000))
    lock = threading.Lock()

    def answer(request):
        with lock:
            n = next(numbered)
        key = request.headers["authorization"].removeprefix("Bearer ")
        if request.route == "embeddings":
            return openai_upstream.embeddings_reply([[0.5, 0.25]], model="house-embed")
        return openai_upstream.chat_reply(
            f"{label[key]} answer {n}", model="house-chat", prompt_tokens=9,
            completion_tokens=4, delay=0.2,
        )  # fmt: skip

    openai_upstream.set_default(answer)
    acme = TenantFactory(slug="acme-cache", name="Acme cache", response_cache_ttl_seconds=300)
    globex = TenantFactory(slug="globex-cache", name="Globex cache", response_cache_ttl_seconds=300)
    common = {
        "provider_type": "openai_compatible",
        "base_url": openai_upstream.base_url,
        "default_model": "house-chat",
        "allowed_models": ["house-chat", "house-embed"],
    }
    configs = {
        "acme-main": provider_config_create(
            tenant=acme, name="main", api_key=ACME_MAIN_KEY, is_default=True, **common
        ),
        "acme-side": provider_config_create(
            tenant=acme, name="side", api_key=ACME_SIDE_KEY, **common
        ),
        "globex": provider_config_create(
            tenant=globex, name="main", api_key=GLOBEX_CHAT_KEY, is_default=True, **common
        ),
    }
    RoutingOverrideFactory(tenant=acme, customer_id="side-co", provider_config=configs["acme-side"])
    ModelPriceFactory(
        provider_type="openai_compatible", model="house-chat",
        input_per_mtok="1.234567", output_per_mtok="3.456789",
    )  # fmt: skip
    acme_key = ServiceKeyFactory(tenant=acme)
    globex_key = ServiceKeyFactory(tenant=globex)
    question = {"messages": [{"role": "user", "content": "What is the answer?"}], "max_tokens": 8}
    groups = {
        "acme-main": (acme_key.secret, question),
        "acme-side": (acme_key.secret, {**question, "customer_id": "side-co"}),
        "globex": (globex_key.secret, question),
    }
    jobs = [
        (f"Api-Key {secret}", COMPLETIONS, payload)
        for secret, payload in groups.values()
        for _ in range(6)
    ]
    # (embeddings are never served from the cache)
    document = {"inputs": ["What is the answer?"], "model": "house-embed"}
    jobs += [(f"Api-Key {acme_key.secret}", EMBEDDINGS, document)] * 4

    # when: each group asks the same question six times at once, then again
    first = http_at_once(live_server.url, jobs)
    assert bookkeeping_flush(timeout=30)
    upstream_after_first = len(openai_upstream.requests)
    second = http_at_once(live_server.url, jobs)
    assert bookkeeping_flush(timeout=30)

    # then: every answer came from its own tenant's and config's provider or cache
    group_of = {(secret, json.dumps(payload)): name for name, (secret, payload) in groups.items()}
    answered = {name: [] for name in groups}
    for (authorization, path, payload), status, _, body in first + second:
        assert status == 200, body
        secret = authorization.removeprefix("Api-Key ")
        if path == EMBEDDINGS:
            [row] = CallLog.objects.filter(request_id=body["request_id"])
            assert (row.tenant_id, row.status, row.operation) == (acme.pk, "ok", "embed")
            continue
        name = group_of[(secret, json.dumps(payload))]
        assert body["provider_config"] == str(configs[name].pk)
        assert body["content"].startswith(f"{name} answer "), (name, body["content"])
        rows = list(CallLog.objects.filter(request_id=body["request_id"]))
        assert [(row.tenant_id, row.provider_config_id) for row in rows] == [
            (configs[name].tenant_id, configs[name].pk)
        ], [(row.attempt, row.status, row.error_code, row.error_message) for row in rows]
        [row] = rows
        assert row.status == ("cached" if body["cached"] else "ok")
        if body["cached"]:
            # a hit: nothing consumed, nothing charged, the stored answer's usage
            assert (row.input_tokens, row.output_tokens, row.cost_usd) == (0, 0, Decimal(0))
            assert (body["cost_usd"], body["price_source"]) == ("0.000000000000", "none")
        else:
            assert (row.input_tokens, row.output_tokens) == (9, 4)
            assert (
                row.cost_usd
                == Decimal("9") * Decimal("1.234567") / 10**6
                + Decimal("4") * Decimal("3.456789") / 10**6
            )
            assert Decimal(body["cost_usd"]) == row.cost_usd
        assert body["usage"]["input_tokens"] == 9 and body["usage"]["output_tokens"] == 4
        answered[name].append((body["cached"], body["content"]))

    # the upstream was asked exactly by the calls logged as asking it, with each config's key
    asked = {}
    for request in openai_upstream.requests:
        if request.route == "chat":
            key = request.headers["authorization"].removeprefix("Bearer ")
            asked[label[key]] = asked.get(label[key], 0) + 1
    logged = {
        name: CallLog.objects.filter(
            provider_config=config, status="ok", operation="complete"
        ).count()
        for name, config in configs.items()
    }
    assert asked == logged
    chats_after_first = openai_upstream.requests[:upstream_after_first]
    assert sum(r.route == "chat" for r in openai_upstream.requests) == sum(
        r.route == "chat" for r in chats_after_first
    )
    assert sum(r.route == "embeddings" for r in openai_upstream.requests) == 8
    for name, answers in answered.items():
        # the second round was served from the cache, one stored answer of its own group
        again = answers[6:]
        assert [cached for cached, _ in again] == [True] * 6, name
        assert len({content for _, content in again}) == 1
        assert again[0][1] in {content for cached, content in answers[:6] if not cached}
        assert sum(1 for cached, _ in answers if not cached) == logged[name]
    assert CallLog.objects.filter(status="cached").count() == 36 - sum(logged.values())

    # no cache key or entry holds a provider key
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    entries = [key for key in client.scan_iter("*resp:*")]
    assert len(entries) == 3
    stored = b"".join(entries + [client.get(key) or b"" for key in entries])
    for secret in label:
        assert_secret_absent(stored.decode("latin-1"), secret)


# --- each caller's own tokens and prices, many at once ------------------------------

ACME_PRICED_KEY = "sk-Pr1Ac2Me3Ke4Yx5Ab6Cd7Ef8Gh9Ij0"
GLOBEX_PRICED_KEY = "sk-Pr9Gl8Ob7Ex6Ke5Yk4Lm3No2Pq1Rs0"
# Each tenant has prices of its own, six decimals per million tokens, so a
# cost is exact only in Decimal and another tenant's price shows at once.
TENANT_PRICES = {
    "acme-priced": (Decimal("1.111113"), Decimal("2.222229")),
    "globex-priced": (Decimal("3.333337"), Decimal("4.444441")),
}


def _numbered_upstream(openai_upstream):
    """Usage that only its own request has: question n is answered with 20 + n
    prompt and 1 + n % 7 completion tokens; the embedding of inputs numbered n
    with 3 + n tokens per input. The first attempt of every fourth request
    fails with a 503 (retried)."""
    failed: set[int] = set()
    lock = threading.Lock()

    def answer(request):
        body = request.json
        if request.route == "embeddings":
            number = int(body["input"][0].split()[1])
        else:
            number = int(body["messages"][-1]["content"].split()[1])
        with lock:
            first = number not in failed
            failed.add(number)
        if first and number % 4 == 0:
            return openai_upstream.error_reply(503, message="Overloaded; try again.")
        if request.route == "embeddings":
            return openai_upstream.embeddings_reply(
                [[0.5, 0.25]] * len(body["input"]), model=body["model"],
                prompt_tokens=(3 + number) * len(body["input"]),
            )  # fmt: skip
        return openai_upstream.chat_reply(
            f"answer {number}", model=body["model"], prompt_tokens=20 + number,
            completion_tokens=1 + number % 7,
        )  # fmt: skip

    openai_upstream.set_default(answer)


def _expected_usage(path, number, inputs):
    if path == EMBEDDINGS:
        return (3 + number) * inputs, 0
    return 20 + number, 1 + number % 7


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("background_writer", "allow_private_urls")
def test_calls_at_once_are_each_charged_their_own_tokens_at_their_tenants_prices(
    live_server, openai_upstream
):
    from datetime import timedelta

    from django.db.models import Count, Q, Sum
    from django.utils import timezone

    from tests.factories import ServiceKeyFactory, TenantFactory
    from usage.aggregation import daily_usage_recompute
    from usage.bookkeeping import bookkeeping_flush
    from usage.models import DailyUsage

    # given: two tenants on one upstream, one model name each for chat and
    # embeddings, priced differently for each tenant
    _numbered_upstream(openai_upstream)
    tenants, keys = {}, {}
    for slug, provider_key in (
        ("acme-priced", ACME_PRICED_KEY),
        ("globex-priced", GLOBEX_PRICED_KEY),
    ):
        tenant = tenants[slug] = TenantFactory(slug=slug, name=slug)
        provider_config_create(
            tenant=tenant, name="main", provider_type="openai_compatible", api_key=provider_key,
            base_url=openai_upstream.base_url, default_model="house-chat", is_default=True,
            allowed_models=["house-chat", "house-embed"],
        )  # fmt: skip
        for model in ("house-chat", "house-embed"):
            ModelPriceFactory(
                tenant=tenant, provider_type="openai_compatible", model=model,
                input_per_mtok=TENANT_PRICES[slug][0], output_per_mtok=TENANT_PRICES[slug][1],
            )  # fmt: skip
        keys[slug] = ServiceKeyFactory(tenant=tenant)
    jobs = {slug: [] for slug in tenants}
    for number in range(1, 41):
        slug = ("acme-priced", "globex-priced")[number % 2]
        if number % 3 == 0:
            inputs = 1 + number % 3
            payload = {
                "inputs": [f"doc {number} part {k}" for k in range(inputs)],
                "model": "house-embed", "service_name": f"svc-{number % 5}",
            }  # fmt: skip
            jobs[slug].append((EMBEDDINGS, payload, number, inputs))
        else:
            payload = {
                "messages": [{"role": "user", "content": f"question {number}"}],
                "max_tokens": 10, "customer_id": f"cust-{number % 3}",
            }  # fmt: skip
            jobs[slug].append((COMPLETIONS, payload, number, 1))

    # when: eight clients per tenant send their requests at the same time
    import requests

    start = threading.Barrier(16)
    answers = []

    def client(slug, share):
        with requests.Session() as session:
            session.headers["Authorization"] = f"Api-Key {keys[slug].secret}"
            start.wait()
            for path, payload, number, inputs in share:
                reply = session.post(live_server.url + path, json=payload, timeout=30)
                answers.append((slug, path, number, inputs, reply.status_code, reply.json()))

    threads = [
        threading.Thread(target=client, args=(slug, jobs[slug][worker::8]))
        for slug in tenants
        for worker in range(8)
    ]
    started = timezone.now()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 40
    assert bookkeeping_flush(timeout=30)

    # then: every answer and its rows carry its own tokens at its tenant's prices
    for slug, path, number, inputs, status, body in answers:
        assert status == 200, body
        tenant = tenants[slug]
        input_tokens, output_tokens = _expected_usage(path, number, inputs)
        input_price, output_price = TENANT_PRICES[slug]
        cost = (input_tokens * input_price + output_tokens * output_price) / 10**6
        assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == (
            input_tokens,
            output_tokens,
        ), (slug, path, number)
        assert Decimal(body["cost_usd"]) == cost, (slug, path, number)
        if path == COMPLETIONS:
            assert body["content"] == f"answer {number}"
        else:
            assert len(body["vectors"]) == inputs
        rows = CallLog.objects.filter(request_id=body["request_id"]).order_by("attempt")
        # (a failed attempt the provider charged nothing for is not priced)
        expected_rows = [("error", 0, 0, None)] * (number % 4 == 0) + [
            ("ok", input_tokens, output_tokens, cost)
        ]
        assert [
            (row.status, row.input_tokens, row.output_tokens, row.cost_usd) for row in rows
        ] == expected_rows, (slug, path, number)
        assert {row.tenant_id for row in rows} == {tenant.pk}
        assert [row.attempt for row in rows] == list(range(1, len(expected_rows) + 1))
    assert CallLog.objects.count() == 40 + 10

    # and after an aggregation, DailyUsage equals CallLog in every group of every tenant
    today = timezone.localdate(started)
    daily_usage_recompute(first_day=today - timedelta(days=1), last_day=today + timedelta(days=1))
    sums = {
        "requests": ("pk", "request_count"),
        "input": ("input_tokens", "input_tokens"),
        "output": ("output_tokens", "output_tokens"),
        "cost": ("cost_usd", "cost_usd"),
    }
    for tenant in tenants.values():
        for model in ("house-chat", "house-embed"):
            logs = CallLog.objects.filter(tenant=tenant, model_requested=model)
            expected = logs.aggregate(
                errors=Count("pk", filter=Q(status="error")),
                requests=Count("pk"),
                **{name: Sum(column) for name, (column, _) in sums.items() if name != "requests"},
            )
            stored = DailyUsage.objects.filter(tenant=tenant, model=model).aggregate(
                errors=Sum("error_count"),
                requests=Sum("request_count"),
                **{name: Sum(field) for name, (_, field) in sums.items() if name != "requests"},
            )
            assert stored == expected, (tenant.slug, model)
            assert expected["requests"] > 0
        answered = sum(
            (Decimal(body["cost_usd"]) for slug, *_, body in answers if slug == tenant.slug),
            Decimal(0),
        )
        assert DailyUsage.objects.filter(tenant=tenant).aggregate(total=Sum("cost_usd")) == {
            "total": answered
        }
