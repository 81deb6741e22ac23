"""Keep-alive comments of streamed completions over a real HTTP server: a
stream whose provider is silent gets comment lines and is otherwise unchanged;
a client that leaves during a silence has its upstream request cut and logged
as stopped by the caller; the thread reading the stream ends with it. Many
clients at once, some leaving at any point, leave every other call whole and
the budgets, rate limits and database connections as they should be."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from decimal import Decimal

import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from django_redis import get_redis_connection

from llm_providers.adapters.base import estimate_message_tokens
from llm_providers.services import provider_config_create
from tests.factories import BudgetFactory, ModelPriceFactory, ServiceKeyFactory, TenantFactory
from usage.budget import ReservationEntry, budget_definition_of
from usage.budget_counters import settled_from_call_logs
from usage.models import CallLog
from usage.money import usd_to_nano_and_pico
from usage.periods import period_containing

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("allow_private_urls"),
]

COMPLETIONS = "/api/v1/completions/"
KEEPALIVE = b": keep-alive\n\n"
# A silence the tests never wait out: a stream still waiting when they end
# was not cut.
LONG_SILENCE = 60.0
# $2 / $8 per million input / output tokens.
PRICE = {"input_per_mtok": "2", "output_per_mtok": "8"}


@pytest.fixture
def keepalive(settings):
    settings.STREAM_KEEPALIVE_SECONDS = 0.2
    return settings


@pytest.fixture
def acme():
    tenant = TenantFactory(slug="acme-keepalive", name="Acme keep-alive")
    return tenant, ServiceKeyFactory(tenant=tenant, name="acme-app")


def _openai(tenant, upstream):
    ModelPriceFactory(provider_type="openai", model="gpt-4o", **PRICE)
    return provider_config_create(
        tenant=tenant,
        name="openai",
        provider_type="openai",
        api_key="sk-proj-Kq2Lm7Np4Rs9Tv1Wx6Yz3Ab8Cd0Ef5Gh",
        base_url=upstream.base_url,
        default_model="gpt-4o",
        is_default=True,
    )


def _anthropic(tenant, upstream):
    ModelPriceFactory(provider_type="anthropic", model="claude-sonnet-4-6-20260217", **PRICE)
    return provider_config_create(
        tenant=tenant,
        name="anthropic",
        provider_type="anthropic",
        api_key="sk-ant-api03-Rt5Yu8Io1Pa4Sd7Fg0Hj3Kl6Zx9Cv2Bn5Mq8We1",
        base_url=upstream.base_url,
        default_model="claude-sonnet-4-6-20260217",
        is_default=True,
    )


def _bedrock(tenant, upstream):
    ModelPriceFactory(
        provider_type="bedrock", model="anthropic.claude-3-5-sonnet-20240620-v1:0", **PRICE
    )
    return provider_config_create(
        tenant=tenant,
        name="bedrock",
        provider_type="bedrock",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        aws_region="us-east-1",
        base_url=upstream.url,
        default_model="anthropic.claude-3-5-sonnet-20240620-v1:0",
        is_default=True,
    )


def _post(base_url, secret, payload) -> socket.socket:
    """Send a POST on a plain socket, so that the client can drop it whenever it likes."""
    host, port = base_url.removeprefix("http://").split(":")
    body = json.dumps(payload).encode()
    head = (
        f"POST {COMPLETIONS} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Api-Key {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    client = socket.create_connection((host, int(port)), timeout=30)
    client.sendall(head + body)
    return client


def _read_all(client: socket.socket) -> bytes:
    received = b""
    while data := client.recv(65536):
        received += data
    client.close()
    return received


def _dechunk(body: bytes) -> bytes:
    """The body of a response sent with chunked transfer encoding."""
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            return out
        out, body = out + rest[:length], rest[length + 2 :]


def _body(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    return _dechunk(body) if b"transfer-encoding: chunked" in head.lower() else body


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("completion stream ")]


def _wait_until(condition, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.02)
    return condition()


def test_silent_provider_gets_keep_alive_comments_then_the_answer(
    keepalive, acme, live_server, openai_upstream
):
    # given a provider that answers after 1 s of silence
    tenant, key = acme
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_chat_stream(
        ["Hel", "lo"], prompt_tokens=12, completion_tokens=2, delay=1.0
    )

    # when a client streams the answer
    client = _post(
        live_server.url,
        key.secret,
        {"messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    response = _read_all(client)

    # then comments came first, then the events as without them
    assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
    body = _body(response)
    comments = 0
    while body.startswith(KEEPALIVE):
        body, comments = body.removeprefix(KEEPALIVE), comments + 1
    assert comments >= 2, response
    blocks = body.decode("ascii").removesuffix("\n\n").split("\n\n")
    events = [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("data: ", 1)[1]))
        for block in blocks
    ]
    assert events[:2] == [("chunk", {"text": "Hel"}), ("chunk", {"text": "lo"})]
    kind, done = events[2]
    assert (kind, len(events)) == ("done", 3)
    assert done["usage"]["input_tokens"] == 12
    assert done["usage"]["output_tokens"] == 2
    # 12 x $2 + 2 x $8 per million
    assert Decimal(done["cost_usd"]) == Decimal("0.000040")
    assert (done["finish_reason"], done["usage_estimated"]) == ("stop", False)
    log = CallLog.objects.get(tenant=tenant)
    assert (log.status, log.error_code, log.cost_usd) == ("ok", "", Decimal("0.000040"))
    assert str(log.request_id) == done["request_id"]
    # and the thread that read the stream has ended
    assert _wait_until(lambda: _stream_threads() == [])


def test_failure_after_the_first_keep_alive_is_an_error_event(
    keepalive, acme, live_server, openai_upstream, settings
):
    # given a provider that fails after 1 s of silence, without retries
    settings.LLM_RETRY_ATTEMPTS = 1
    tenant, key = acme
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_error(
        400, message="Bad prompt.", type="invalid_request_error", delay=1.0
    )

    # when a client streams
    client = _post(
        live_server.url,
        key.secret,
        {"messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    response = _read_all(client)

    # then the answer had started: the failure is an error event after comments
    assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
    body = _body(response)
    assert body.startswith(KEEPALIVE), body
    event = body.replace(KEEPALIVE, b"").decode("ascii")
    name, data = event.removesuffix("\n\n").split("\n")
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))["error"]
    assert error["code"] == "provider_bad_request"
    log = CallLog.objects.get(tenant=tenant)
    assert (log.status, log.error_code) == ("error", "provider_bad_request")
    assert error["extra"]["request_id"] == str(log.request_id)
    assert _wait_until(lambda: _stream_threads() == [])


def test_failure_within_the_keep_alive_interval_is_a_json_error(
    keepalive, acme, live_server, openai_upstream, settings
):
    settings.LLM_RETRY_ATTEMPTS = 1
    settings.STREAM_KEEPALIVE_SECONDS = 5.0
    tenant, key = acme
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_error(400, message="Bad prompt.", type="invalid_request_error")

    client = _post(
        live_server.url,
        key.secret,
        {"messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    response = _read_all(client)

    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n"), response
    assert json.loads(_body(response))["error"]["code"] == "provider_bad_request"
    assert _wait_until(lambda: _stream_threads() == [])


@pytest.mark.parametrize(
    ("provider", "upstream_fixture", "enqueue"),
    [
        ("openai", "openai_upstream", "enqueue_chat_stream"),
        ("anthropic", "anthropic_upstream", "enqueue_message_stream"),
        ("bedrock", "bedrock_upstream", "enqueue_converse_stream"),
    ],
)
def test_client_leaving_during_a_silence_stops_the_upstream_request(
    keepalive, acme, live_server, request, provider, upstream_fixture, enqueue
):
    # given a provider that starts its answer, then is silent for a minute
    # before any text, and a budget the stream reserves from
    tenant, key = acme
    upstream = request.getfixturevalue(upstream_fixture)
    {"openai": _openai, "anthropic": _anthropic, "bedrock": _bedrock}[provider](tenant, upstream)
    getattr(upstream, enqueue)(["Hel", "lo"], chunk_delay=LONG_SILENCE)
    budget = BudgetFactory(tenant=tenant, name="acme-wide", limit_usd=Decimal("5"))

    # when the client leaves once the answer has started and the provider
    # has the request
    client = _post(
        live_server.url,
        key.secret,
        {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 100},
    )
    received = b""
    while KEEPALIVE not in received:
        data = client.recv(65536)
        assert data, received
        received += data
    assert _wait_until(lambda: len(upstream.requests) == 1)
    client.close()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received
    assert b"event:" not in received

    # then the upstream request is cut long before the provider would speak
    # again: the call is logged as stopped by the caller, once
    assert _wait_until(lambda: CallLog.objects.filter(tenant=tenant).exists())

    assert _wait_until(lambda: _stream_threads() == [])
    [log] = CallLog.objects.filter(tenant=tenant)
    assert (log.status, log.error_code, log.usage_estimated) == ("ok", "client_closed", True)
    assert log.output_tokens == 0
    assert log.latency_ms < LONG_SILENCE * 1000 / 2
    assert log.cost_usd == (log.input_tokens * Decimal(2)) / 1_000_000
    # and the budget holds no reservation, only the logged cost
    counters = redis.Redis.from_url(django_settings.USAGE_BUDGET_REDIS_URL)
    period = period_containing(budget.period, timezone.now(), budget.tenant.timezone)
    entry = ReservationEntry(budget=budget_definition_of(budget), period=period)
    [counter] = counters.keys(f"llmpl:budget:{budget.pk}:*:h")
    fields = {name.decode(): value for name, value in counters.hgetall(counter).items()}
    assert int(fields["t"]) == 0, fields
    assert [name for name in fields if name.startswith("r:")] == []
    assert (int(fields["s"]), int(fields.get("f", 0))) == usd_to_nano_and_pico(
        settled_from_call_logs(entry)
    )
    assert settled_from_call_logs(entry) == log.cost_usd


def test_client_leaving_while_the_call_waits_to_retry_stops_it_there(
    keepalive, acme, live_server, openai_upstream
):
    # given a provider that refuses at once, asking to be retried in 5 s, and
    # a budget the stream reserves from
    tenant, key = acme
    _openai(tenant, openai_upstream)
    openai_upstream.enqueue_error(
        429, type="requests", code="rate_limit_exceeded", headers={"Retry-After": "5"}
    )
    openai_upstream.enqueue_chat_stream(["Hel", "lo"])
    budget = BudgetFactory(tenant=tenant, name="acme-wide", limit_usd=Decimal("5"))

    # when the client leaves during that wait
    client = _post(
        live_server.url,
        key.secret,
        {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 100},
    )
    received = b""
    while KEEPALIVE not in received:
        data = client.recv(65536)
        assert data, received
        received += data
    assert _wait_until(lambda: CallLog.objects.filter(tenant=tenant).exists())
    client.close()
    left = time.monotonic()

    # then the stream ends well before the wait would have: the retry is never
    # sent, the refusal is the one attempt logged, and nothing stays reserved
    assert _wait_until(lambda: _stream_threads() == [])
    assert time.monotonic() - left < 3.0
    assert len(openai_upstream.requests) == 1
    [log] = CallLog.objects.filter(tenant=tenant)
    assert (log.status, log.error_code, log.cost_usd) == ("error", "provider_rate_limited", None)
    counters = redis.Redis.from_url(django_settings.USAGE_BUDGET_REDIS_URL)
    [counter] = counters.keys(f"llmpl:budget:{budget.pk}:*:h")
    fields = {name.decode(): value for name, value in counters.hgetall(counter).items()}
    assert int(fields["t"]) == 0, fields
    assert [name for name in fields if name.startswith("r:")] == []


# --- many clients at once -----------------------------------------------------------

# What each upstream reply does: (seconds before its headers, seconds between
# its chunks). Keep-alives come every 0.05 s in the soak, so a silence of
# 0.25 s carries several of them.
_SOAK_UPSTREAMS = {
    "fast": (0.0, 0.0),
    "silent-between": (0.0, 0.25),
    "silent-headers": (0.25, 0.02),
    "refused": (0.0, 0.0),
    "refused-late": (0.25, 0.0),
}
# What each client does: read to the end, or leave before the answer's
# head, after the first keep-alive comment, or after the first text.
_SOAK_CLIENTS = ("read", "read", "read", "before-head", "at-keep-alive", "mid-text")
_SOAK_PIECES = ["Alpha ", "beta ", "gamma ", "delta"]


def _soak_plan(rounds: int, clients: int) -> list[list[tuple[str, str]]]:
    """A fixed mix of (upstream, client) pairs per round, the same on every run."""
    pairs = [
        (upstream, client)
        for upstream in _SOAK_UPSTREAMS
        for client in _SOAK_CLIENTS
        if not (client == "at-keep-alive" and upstream in ("fast", "refused"))
        and not (client == "mid-text" and upstream.startswith("refused"))
    ]
    return [[pairs[(r * 7 + n * 5) % len(pairs)] for n in range(clients)] for r in range(rounds)]


# The customer id in a request's body; longer kinds first ("refused-late").
_SOAK_KINDS = "|".join(sorted(_SOAK_UPSTREAMS, key=len, reverse=True))
_SOAK_CUSTOMER = re.compile(rb"\d+-(\d+)-(" + _SOAK_KINDS.encode() + rb")")


def _soak_answer(provider, upstream, n, delay, chunk_delay):
    """`_SOAK_PIECES`, with 100 + n input and 7 output tokens, in the provider's wire format."""
    if provider == "openai":
        return upstream.chat_stream_reply(
            _SOAK_PIECES, prompt_tokens=100 + n, completion_tokens=7, delay=delay,
            chunk_delay=chunk_delay,
        )  # fmt: skip
    if provider == "anthropic":
        return upstream.message_stream_reply(
            _SOAK_PIECES, input_tokens=100 + n, output_tokens=7, delay=delay,
            chunk_delay=chunk_delay,
        )  # fmt: skip
    return upstream.converse_stream_reply(
        _SOAK_PIECES, input_tokens=100 + n, output_tokens=7, delay=delay, chunk_delay=chunk_delay
    )


def _soak_refusal(provider, upstream, delay):
    """A 400 refusal of the prompt in the provider's wire format."""
    if provider == "bedrock":
        return upstream.error_reply(400, "ValidationException", "Bad prompt.", delay=delay)
    return upstream.error_reply(
        400, message="Bad prompt.", type="invalid_request_error", delay=delay
    )


def _soak_reply(provider, upstream):
    """The reply to each request, chosen by its prompt: the caller's customer
    id, `<round>-<n>-<kind>`."""

    def build(request):
        found = _SOAK_CUSTOMER.search(request.body)
        n, kind = int(found[1]), found[2].decode()
        delay, chunk_delay = _SOAK_UPSTREAMS[kind]
        if kind.startswith("refused"):
            script = _soak_refusal(provider, upstream, delay)
        else:
            script = _soak_answer(provider, upstream, n, delay, chunk_delay)
        return script(request) if callable(script) else script

    return build


def _soak_client(base_url, secret, customer, behaviour, outcomes):
    client = _post(
        base_url,
        secret,
        {
            "messages": [{"role": "user", "content": customer}],
            "stream": True,
            "max_tokens": 50,
            "customer_id": customer,
        },
    )
    if behaviour == "read":
        outcomes[customer] = _read_all(client)
        return
    wanted = {"before-head": b"", "at-keep-alive": KEEPALIVE, "mid-text": b"event: chunk"}
    received = b""
    while wanted[behaviour] not in received:
        data = client.recv(65536)
        if not data:
            break
        received += data
    client.close()
    outcomes[customer] = None


def _database_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    ("provider", "upstream_fixture"),
    [
        ("openai", "openai_upstream"),
        ("anthropic", "anthropic_upstream"),
        ("bedrock", "bedrock_upstream"),
    ],
)
def test_many_clients_leaving_at_any_point_break_no_other_call(
    keepalive, acme, live_server, settings, request, provider, upstream_fixture
):
    # given a provider whose answers are quick, silent between chunks, or
    # slow to start, or refused; a budget; and no retries, so that any
    # attempt broken by another call's cut would show as a failed row
    settings.STREAM_KEEPALIVE_SECONDS = 0.05
    settings.LLM_RETRY_ATTEMPTS = 1
    tenant, key = acme
    upstream = request.getfixturevalue(upstream_fixture)
    config = {"openai": _openai, "anthropic": _anthropic, "bedrock": _bedrock}[provider](
        tenant, upstream
    )
    config.rpm_limit, config.tpm_limit = 10_000, 10_000_000
    config.save(update_fields=["rpm_limit", "tpm_limit"])
    upstream.set_default(_soak_reply(provider, upstream))
    budget = BudgetFactory(tenant=tenant, name="acme-wide", limit_usd=Decimal("50"))
    connections_before = _database_connections()
    plan = _soak_plan(rounds=3, clients=16)

    # when rounds of clients stream at once, some of them leaving early
    outcomes: dict[str, bytes | None] = {}
    for number, round_plan in enumerate(plan):
        clients = [
            threading.Thread(
                target=_soak_client,
                args=(live_server.url, key.secret, f"{number}-{n}-{kind}", behaviour, outcomes),
            )
            for n, (kind, behaviour) in enumerate(round_plan)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(30)
        logged = 16 * (number + 1)
        assert _wait_until(
            lambda logged=logged: CallLog.objects.filter(tenant=tenant).count() == logged
        ), CallLog.objects.filter(tenant=tenant).count()

    # then every call was sent once and logged once, and the threads that
    # read the streams have ended
    calls = 16 * len(plan)
    assert len(outcomes) == calls
    assert _wait_until(lambda: _stream_threads() == [])
    assert len(upstream.requests) == calls
    assert upstream.unanswered == []
    logs = {log.customer_id: log for log in CallLog.objects.filter(tenant=tenant)}
    assert len(logs) == calls
    for customer, response in outcomes.items():
        log = logs[customer]
        _, n, kind = customer.split("-", 2)
        n = int(n)
        if kind.startswith("refused"):
            # no call is broken by another's cut: only the refusals failed
            assert (log.status, log.error_code, log.cost_usd) == (
                "error",
                "provider_bad_request",
                None,
            ), customer
            if response is not None:
                body = _body(response).replace(KEEPALIVE, b"")
                assert b'"code":"provider_bad_request"' in body, response
            continue
        # 100 + n input tokens at $2, 7 output tokens at $8 per million
        full_cost = (Decimal(100 + n) * 2 + 7 * 8) / 1_000_000
        if response is None:
            # a client that left: its call was stopped, or had ended already
            assert log.status == "ok", customer
            if log.error_code == "client_closed":
                assert log.usage_estimated, customer
                assert log.cost_usd == (log.input_tokens * 2 + log.output_tokens * 8) / Decimal(
                    1_000_000
                ), customer
            else:
                assert (log.error_code, log.cost_usd) == ("", full_cost), customer
            continue
        # a client that read to the end got the whole answer and its exact cost
        assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
        blocks = _body(response).replace(KEEPALIVE, b"").decode().removesuffix("\n\n")
        events = [
            (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("data: ", 1)[1]))
            for block in blocks.split("\n\n")
        ]
        assert [name for name, _ in events] == ["chunk"] * len(_SOAK_PIECES) + ["done"], customer
        assert "".join(data["text"] for _, data in events[:-1]) == "".join(_SOAK_PIECES)
        done = events[-1][1]
        assert Decimal(done["cost_usd"]) == full_cost, customer
        assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (100 + n, 7)
        assert done["request_id"] == str(log.request_id)
        assert (log.status, log.error_code, log.cost_usd) == ("ok", "", full_cost), customer
    # and connections were reused among the calls, none of them broken
    ports = {request.client_port for request in upstream.requests}
    assert len(ports) < calls
    # and the budget holds no reservation, only the logged costs
    counters = redis.Redis.from_url(django_settings.USAGE_BUDGET_REDIS_URL)
    period = period_containing(budget.period, timezone.now(), budget.tenant.timezone)
    entry = ReservationEntry(budget=budget_definition_of(budget), period=period)
    [counter] = counters.keys(f"llmpl:budget:{budget.pk}:*:h")
    fields = {name.decode(): value for name, value in counters.hgetall(counter).items()}
    assert int(fields["t"]) == 0, fields
    assert [name for name in fields if name.startswith("r:")] == []
    logged = sum(log.cost_usd for log in logs.values() if log.cost_usd is not None)
    assert settled_from_call_logs(entry) == logged
    assert (int(fields["s"]), int(fields.get("f", 0))) == usd_to_nano_and_pico(logged)
    # and the rate limit counted each call once, with the tokens it used (a
    # refused one keeps its worst case: its prompt's estimate and max_tokens)
    client = get_redis_connection("default")
    counts = {"rpm": 0, "tpm": 0}
    for name in counts:
        for counter in client.keys(cache.make_key(f"rl:{config.pk}:{name}:*")):
            counts[name] += int(client.get(counter))
    refused_worst = sum(
        estimate_message_tokens([{"role": "user", "content": customer}]) + 50
        for customer, log in logs.items()
        if log.status == "error"
    )
    used = sum(log.input_tokens + log.output_tokens for log in logs.values())
    assert counts == {"rpm": calls, "tpm": used + refused_worst}
    # and no database connection is left open by the threads that ended
    assert _wait_until(lambda: _database_connections() <= connections_before), (
        _database_connections(),
        connections_before,
    )
