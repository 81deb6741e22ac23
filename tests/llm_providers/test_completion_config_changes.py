"""Configuration changed while calls are in flight or between them."""

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections, transaction

from llm_providers.clients import adapters_clear
from llm_providers.completion import complete
from llm_providers.config_cache import config_local_cache, config_version, config_version_bump
from llm_providers.models import ProviderConfig
from llm_providers.services import (
    provider_config_create,
    provider_config_delete,
    provider_config_update,
)
from overrides.models import RoutingOverride
from overrides.routing import route_resolve
from overrides.services import routing_override_create, routing_override_delete
from tests.api.fixtures import token_client
from tests.factories import (
    BudgetFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    TenantFactory,
    TenantMembershipFactory,
    UserFactory,
)
from tests.upstreams.openai import OpenAIUpstream
from usage.bookkeeping import bookkeeping_flush
from usage.budget import BudgetExceeded, budget_release, budget_reserve
from usage.models import Budget, CallLog
from usage.services import budget_create

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


class _Undo(Exception):
    """Raised inside a transaction to roll its change back."""


@pytest.mark.django_db
def test_route_resolved_inside_a_rolled_back_change_is_not_served_afterwards():
    # given a tenant whose default config is "primary"
    tenant = TenantFactory()
    primary = ProviderConfigFactory(tenant=tenant, name="primary", is_default=True)
    other = ProviderConfigFactory(tenant=tenant, name="other")
    assert route_resolve(tenant=tenant).primary.provider_config.pk == primary.pk

    # when a transaction switches the default, routes a call, and is rolled back
    with pytest.raises(_Undo), transaction.atomic():
        provider_config_update(provider_config=other, data={"is_default": True})
        assert route_resolve(tenant=tenant).primary.provider_config.pk == other.pk
        raise _Undo

    # then calls are routed by what is stored: the switch never happened
    assert route_resolve(tenant=tenant).primary.provider_config.pk == primary.pk


@pytest.mark.django_db
def test_budget_of_a_rolled_back_transaction_refuses_no_call():
    # given a tenant without budgets
    tenant = TenantFactory()
    reserve = dict(
        tenant=tenant,
        provider_config_id=None,
        service_name="s",
        customer_id="c",
        amount_usd=Decimal("5"),
        request_id=None,
    )
    budget_release(reservation=budget_reserve(**{**reserve, "request_id": uuid.uuid4()}))

    # when a blocking budget is created, refuses a call, and its transaction rolls back
    with pytest.raises(_Undo), transaction.atomic():
        budget_create(tenant=tenant, name="cap", limit_usd=Decimal("1"), action=Budget.Action.BLOCK)
        with pytest.raises(BudgetExceeded):
            budget_reserve(**{**reserve, "request_id": uuid.uuid4()})
        raise _Undo

    # then no budget exists and none refuses the next call
    assert not Budget.objects.filter(tenant=tenant).exists()
    budget_release(reservation=budget_reserve(**{**reserve, "request_id": uuid.uuid4()}))


@pytest.mark.django_db
def test_change_in_a_transaction_is_announced_to_other_processes_when_committed(
    django_capture_on_commit_callbacks,
):
    # given a tenant whose version other processes read from the shared cache
    tenant = TenantFactory()
    primary = ProviderConfigFactory(tenant=tenant, name="primary", is_default=True)
    other = ProviderConfigFactory(tenant=tenant, name="other")
    config_version(tenant.pk)
    shared_key = f"cfgver:{tenant.pk}"
    shared_before = cache.get(shared_key)
    assert route_resolve(tenant=tenant).primary.provider_config.pk == primary.pk

    with django_capture_on_commit_callbacks(execute=True):
        provider_config_update(provider_config=other, data={"is_default": True})
        # while uncommitted, other processes keep the version of what they can read
        assert cache.get(shared_key) == shared_before
        assert route_resolve(tenant=tenant).primary.provider_config.pk == other.pk

    # once committed, every process gets a new version
    assert cache.get(shared_key) not in (None, shared_before)
    assert route_resolve(tenant=tenant).primary.provider_config.pk == other.pk


# Another thread reads while a write transaction is open: SQLite locks the table.
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_uncommitted_change_routes_no_call_of_another_thread():
    # given a tenant whose default config is "primary"
    tenant = TenantFactory()
    primary = ProviderConfigFactory(tenant=tenant, name="primary", is_default=True)
    other = ProviderConfigFactory(tenant=tenant, name="other")
    routed = {}

    def route_elsewhere():
        routed["other thread"] = route_resolve(tenant=tenant).primary.provider_config.pk
        connections.close_all()

    # when a transaction switches the default and routes a call, and another
    # thread routes one before it commits
    with transaction.atomic():
        provider_config_update(provider_config=other, data={"is_default": True})
        routed["this thread"] = route_resolve(tenant=tenant).primary.provider_config.pk
        elsewhere = threading.Thread(target=route_elsewhere)
        elsewhere.start()
        elsewhere.join(10)

    # then each routes by what it can read, and after the commit both by the change
    assert routed == {"this thread": other.pk, "other thread": primary.pk}
    elsewhere = threading.Thread(target=route_elsewhere)
    elsewhere.start()
    elsewhere.join(10)
    assert routed["other thread"] == other.pk


# --- changes made while calls flow --------------------------------------------------

OLD_SALT = "soak-old-salt"
DEFAULT_KEY = "sk-proj-SoakDefault0123456789ab"
OVERRIDE_KEY = "sk-proj-SoakOverride012345678ab"
NEW_SALT = "soak-new-salt"


def _answer_as_asked(upstream):
    """A default reply naming the model the request asked for."""

    def reply(request):
        return upstream.chat_reply("ok", model=(request.json or {}).get("model", "?"))

    return reply


def _authorizations_by_model(upstream) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for request in upstream.requests:
        model = (request.json or {}).get("model", "?")
        seen.setdefault(model, set()).add(request.headers.get("authorization", ""))
    return seen


def _rotate_keys_elsewhere(salts: list[str], *args: str, calls_per_batch: int) -> str:
    """`manage.py rotate_keys` in a process of its own, on this test's database, with
    `salts`; after each batch it waits until `calls_per_batch` more calls were logged.
    Its output."""
    db = connection.settings_dict
    url = (
        f"postgres://{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}"
        f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    script = f"""
import time
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from llm_providers.management.commands import rotate_keys
from usage.models import CallLog
settings.SALT_KEY = {salts!r}
rotate = rotate_keys.encrypted_values_rotate
def paced(*, on_progress, **options):
    def after_batch(rows):
        on_progress(rows)
        wanted = CallLog.objects.count() + {calls_per_batch}
        deadline = time.monotonic() + 60
        while CallLog.objects.count() < wanted and time.monotonic() < deadline:
            time.sleep(0.005)
    return rotate(on_progress=after_batch, **options)
rotate_keys.encrypted_values_rotate = paced
call_command("rotate_keys", *{list(args)!r})
"""
    finished = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(settings.BASE_DIR),
        env={
            **os.environ,
            "DATABASE_URL": url,
            "DJANGO_SETTINGS_MODULE": os.environ.get(
                "DJANGO_SETTINGS_MODULE", "config.settings.test"
            ),
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


class _Callers:
    """Threads calling worker(n), n = 0, 1, 2 ..., until stopped and at least `least` calls made."""

    def __init__(self, worker, *, threads: int = 4, least: int = 0):
        self.outcomes: dict[int, object] = {}
        self._worker = worker
        self._least = least
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() and self._next >= self._least:
                return None
            self._next += 1
            return self._next - 1

    def _run(self) -> None:
        try:
            while (n := self._take()) is not None:
                try:
                    outcome = self._worker(n)
                except Exception as exc:  # noqa: BLE001 - recorded and asserted on
                    outcome = exc
                with self._lock:
                    self.outcomes[n] = outcome
        finally:
            connections.close_all()

    def made(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def stop(self) -> list:
        """Stop, wait for the calls under way, and return every outcome in call order."""
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
            assert not thread.is_alive()
        return [self.outcomes[n] for n in sorted(self.outcomes)]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_keys_rotated_by_another_process_while_calls_flow(
    settings, allow_private_urls, openai_upstream
):
    # given 12 configs written under the old salt, each serving one service with a key of its own
    settings.SALT_KEY = [OLD_SALT]
    tenant = TenantFactory()
    keys = [f"sk-proj-Soak{n:02d}Rotation0123456789abcdef" for n in range(12)]
    configs = []
    for n, key in enumerate(keys):
        config = provider_config_create(
            tenant=tenant,
            name=f"openai-{n}",
            provider_type="openai",
            api_key=key,
            base_url=openai_upstream.base_url,
            default_model=f"m-{n}",
            is_default=n == 0,
        )
        with transaction.atomic():
            routing_override_create(tenant=tenant, provider_config=config, service_name=f"s{n}")
        configs.append(config)
    openai_upstream.set_default(_answer_as_asked(openai_upstream))
    # the calling processes know both salts, the new one first
    settings.SALT_KEY = [NEW_SALT, OLD_SALT]

    def call(n):
        # each call first reads the routes again from the rows, as after any other change
        config_version_bump(tenant.pk)
        if n % 5 == 0:
            # and now and then one of the first four configs is saved (its key
            # written under the new salt, its adapter rebuilt), maybe while it is rotated
            stored = ProviderConfig.objects.get(pk=configs[n % 4].pk)
            provider_config_update(provider_config=stored, data={"priority": n})
        return complete(tenant=tenant, messages=HELLO, service_name=f"s{n % 12}")

    # when another process rotates the keys, one row per transaction, while calls flow
    callers = _Callers(call, least=60)
    rotated = _rotate_keys_elsewhere(
        [NEW_SALT, OLD_SALT], "--no-progress", "--batch-size", "1", calls_per_batch=3
    )
    outcomes = callers.stop()

    # then the rotation found every value readable and left none behind
    counts = re.search(r"Re-encrypted: (\d+); already current: (\d+); unreadable: 0", rotated)
    assert counts is not None, rotated
    meanwhile = re.search(r"changed by another writer meanwhile: (\d+)", rotated)
    assert int(counts[1]) + int(counts[2]) + int(meanwhile[1] if meanwhile else 0) == 12
    # the other eight were written under the old salt by nobody but the rotation
    assert int(counts[1]) >= 8
    # no call failed; each reached the provider with exactly its config's plaintext key
    failures = [o for o in outcomes if not hasattr(o, "content")]
    assert failures == []
    assert [o.content for o in outcomes] == ["ok"] * len(outcomes)
    assert len(openai_upstream.requests) == len(outcomes)
    assert _authorizations_by_model(openai_upstream) == {
        f"m-{n}": {f"Bearer {key}"} for n, key in enumerate(keys)
    }
    assert CallLog.objects.filter(tenant=tenant).count() == len(outcomes)
    assert set(CallLog.objects.filter(tenant=tenant).values_list("status", flat=True)) == {"ok"}
    # and with the old salt removed, every row decrypts and serves its calls
    settings.SALT_KEY = [NEW_SALT]
    config_local_cache.clear()
    adapters_clear()
    assert [ProviderConfig.objects.get(pk=c.pk).api_key for c in configs] == keys
    openai_upstream.requests.clear()
    for n in range(12):
        assert complete(tenant=tenant, messages=HELLO, service_name=f"s{n}").content == "ok"
    assert _authorizations_by_model(openai_upstream) == {
        f"m-{n}": {f"Bearer {key}"} for n, key in enumerate(keys)
    }


def _upstream_serving(upstreams: dict, n: int) -> list[tuple[str, str, str]]:
    """(upstream name, Authorization, model) of each request call `n` made."""
    found = []
    for name, upstream in upstreams.items():
        for request in list(upstream.requests):
            body = request.json or {}
            if body.get("messages", [{}])[-1].get("content") == f"call {n}":
                found.append((name, request.headers.get("authorization", ""), body.get("model")))
    return found


def _allowed_phases(start: float, end: float, changes: list[tuple[float, float]], window: float):
    """Phases a call running from `start` to `end` may see: from the last change
    committed a config-cache window before it began to the last one begun before it ended."""
    lowest = max((k for k, (_, done) in enumerate(changes, 1) if done + window <= start), default=0)
    highest = max((k for k, (begun, _) in enumerate(changes, 1) if begun <= end), default=0)
    return range(lowest, highest + 1)


def _redis_counts(pattern: str) -> dict[str, int]:
    """Integer values of the cache's keys matching `pattern` (rate-limit buckets)."""
    client = cache.client.get_client(write=True)
    return {key: int(client.get(cache.make_key(key)) or 0) for key in cache.keys(pattern)}


def _budget_state(budget: Budget) -> dict:
    """Settled dollars, reserved nano-dollars and reservations held of a budget's Redis counters."""
    client = redis.Redis.from_url(settings.USAGE_BUDGET_REDIS_URL)
    try:
        [key] = client.keys(f"llmpl:budget:{budget.pk}:*:h")
        fields = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    finally:
        client.close()
    settled = Decimal(fields.get("s", "0")) / 10**9 + Decimal(fields.get("f", "0")) / 10**12
    held = sorted(k for k in fields if k.startswith("r:"))
    return {"settled": settled, "reserved": int(fields.get("t", "0")), "held": held}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_provider_config_changed_through_api_and_orm_while_calls_flow(
    allow_private_urls, openai_upstream
):
    # given config "a" serving service "svc" through an override that falls back
    # to the tenant's default "b", each rate limited, under a blocking budget
    with OpenAIUpstream() as second, OpenAIUpstream() as third:
        upstreams = {"one": openai_upstream, "two": second, "three": third}
        for upstream in upstreams.values():
            upstream.set_default(_answer_as_asked(upstream))
        tenant = TenantFactory()
        admin = UserFactory()
        TenantMembershipFactory(user=admin, tenant=tenant, role="admin")
        api = token_client(admin, tenant=tenant)
        keys = [f"sk-proj-Soak{n}ConfigChange0123456789abcd" for n in range(4)]
        a = provider_config_create(
            tenant=tenant, name="a", provider_type="openai", api_key=keys[0],
            base_url=openai_upstream.base_url, default_model="m-a",
            rpm_limit=100_000, tpm_limit=10_000_000,
        )  # fmt: skip
        b = provider_config_create(
            tenant=tenant, name="b", provider_type="openai", api_key=keys[3],
            base_url=second.base_url, default_model="m-b", is_default=True,
            rpm_limit=100_000, tpm_limit=10_000_000,
        )  # fmt: skip
        with transaction.atomic():
            routing_override_create(
                tenant=tenant, provider_config=a, service_name="svc", fallbacks=[(b, "")]
            )
        for model in ("m-a", "m-a2", "m-b"):
            ModelPriceFactory(
                provider_type="openai", model=model, input_per_mtok="1000", output_per_mtok="2000"
            )
        budget = BudgetFactory(tenant=tenant, action=Budget.Action.BLOCK, limit_usd=Decimal("1000"))
        window = settings.CONFIG_VERSION_LOCAL_SECONDS
        # what each phase's calls reach: upstream, Authorization, model
        phases = [
            ("one", f"Bearer {keys[0]}", "m-a"),
            ("one", f"Bearer {keys[1]}", "m-a"),
            ("three", f"Bearer {keys[2]}", "m-a"),
            ("three", f"Bearer {keys[2]}", "m-a2"),
            ("two", f"Bearer {keys[3]}", "m-b"),
        ]

        def call(n):
            started = time.monotonic()
            result = complete(
                tenant=tenant,
                messages=[{"role": "user", "content": f"call {n}"}],
                service_name="svc",
                max_tokens=50,
            )
            return started, time.monotonic(), result

        def patched(data):
            answer = api.patch(f"/api/v1/providers/{a.pk}", data, format="json")
            assert answer.status_code == 200, answer.content

        def model_saved():
            # the ORM save path (scripts, shell, data migrations)
            stored = ProviderConfig.objects.get(pk=a.pk)
            stored.default_model = "m-a2"
            stored.save()

        changes_to_make = [
            lambda: patched({"api_key": keys[1]}),
            lambda: patched({"base_url": third.base_url, "api_key": keys[2]}),
            model_saved,
            lambda: patched({"is_active": False}),
        ]

        # when the config is changed four times while calls flow
        callers = _Callers(call)
        changes = []
        for change in changes_to_make:
            wanted = callers.made() + 12
            while callers.made() < wanted:
                time.sleep(0.01)
            begun = time.monotonic()
            change()
            changes.append((begun, time.monotonic()))
            time.sleep(window)
        wanted = callers.made() + 12
        while callers.made() < wanted:
            time.sleep(0.01)
        outcomes = callers.stop()
        assert bookkeeping_flush()

        # then no call failed, and each reached the provider once, as a phase
        # it may see (by when it ran) has it
        assert [o for o in outcomes if not isinstance(o, tuple)] == []
        seen_phases = set()
        for n, (started, ended, _) in enumerate(outcomes):
            [served] = _upstream_serving(upstreams, n)
            allowed = [phases[k] for k in _allowed_phases(started, ended, changes, window)]
            assert served in allowed, (n, served, allowed)
            seen_phases.add(phases.index(served))
        assert seen_phases == set(range(len(phases)))
        # every attempt has exactly one call log, naming the config and rule that served it
        logs = CallLog.objects.filter(tenant=tenant)
        assert logs.count() == len(outcomes)
        by_request = {log.request_id: log for log in logs}
        for n, (_, _, result) in enumerate(outcomes):
            log = by_request[result.request_id]
            [(upstream, _, model)] = _upstream_serving(upstreams, n)
            expected = (b.pk, "default") if upstream == "two" else (a.pk, "service")
            assert (log.provider_config_id, log.route_rule) == expected
            assert (log.status, log.attempt, log.model_requested) == ("ok", 1, model)
        # the rate limits counted each call sent and its real tokens, the budget each cost
        for config in (a, b):
            served = logs.filter(provider_config=config)
            assert sum(_redis_counts(f"rl:{config.pk}:rpm:*").values()) == served.count()
            assert sum(_redis_counts(f"rl:{config.pk}:tpm:*").values()) == sum(
                log.input_tokens + log.output_tokens for log in served
            )
        assert _budget_state(budget) == {
            "settled": sum(log.cost_usd for log in logs),
            "reserved": 0,
            "held": [],
        }


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_routing_override_created_and_deleted_while_calls_flow(allow_private_urls, openai_upstream):
    # given a tenant whose default config "d" serves service "svc" until an override sends it to "o"
    with OpenAIUpstream() as second:
        upstreams = {"one": openai_upstream, "two": second}
        for upstream in upstreams.values():
            upstream.set_default(_answer_as_asked(upstream))
        tenant = TenantFactory()
        admin = UserFactory()
        TenantMembershipFactory(user=admin, tenant=tenant, role="admin")
        api = token_client(admin, tenant=tenant)
        d = provider_config_create(
            tenant=tenant, name="d", provider_type="openai", api_key=DEFAULT_KEY,
            base_url=openai_upstream.base_url, default_model="m-d", is_default=True,
        )  # fmt: skip
        o = provider_config_create(
            tenant=tenant, name="o", provider_type="openai", api_key=OVERRIDE_KEY,
            base_url=second.base_url, default_model="m-o",
        )  # fmt: skip
        window = settings.CONFIG_VERSION_LOCAL_SECONDS
        by_default = ("one", f"Bearer {DEFAULT_KEY}", "m-d")
        by_override = ("two", f"Bearer {OVERRIDE_KEY}", "m-o")
        created = []

        def created_through_api():
            answer = api.post(
                "/api/v1/overrides",
                {
                    "service_name": "svc",
                    "provider_config": o.pk,
                    "fallbacks": [{"provider_config": d.pk}],
                },
                format="json",
            )
            assert answer.status_code == 201, answer.content
            created.append(answer.json()["id"])

        def deleted_through_api():
            answer = api.delete(f"/api/v1/overrides/{created[-1]}")
            assert answer.status_code == 204, answer.content

        def created_through_service():
            with transaction.atomic():
                override = routing_override_create(
                    tenant=tenant, provider_config=o, service_name="svc", fallbacks=[(d, "")]
                )
            created.append(override.pk)

        def deleted_through_service():
            routing_override_delete(override=RoutingOverride.objects.get(pk=created[-1]))

        changes_to_make = [
            created_through_api,
            deleted_through_api,
            created_through_service,
            deleted_through_service,
        ] * 2
        phases = [by_default, by_override] * 4 + [by_default]

        def call(n):
            started = time.monotonic()
            result = complete(
                tenant=tenant,
                messages=[{"role": "user", "content": f"call {n}"}],
                service_name="svc",
            )
            return started, time.monotonic(), result

        # when an override is created and deleted four times each while calls flow
        callers = _Callers(call)
        changes = []
        for change in changes_to_make:
            wanted = callers.made() + 8
            while callers.made() < wanted:
                time.sleep(0.01)
            begun = time.monotonic()
            change()
            changes.append((begun, time.monotonic()))
        wanted = callers.made() + 8
        while callers.made() < wanted:
            time.sleep(0.01)
        outcomes = callers.stop()
        assert bookkeeping_flush()

        # then no call failed; each was served by the route before or after a
        # change it overlapped, and its call log names that route's rule and config
        assert [o for o in outcomes if not isinstance(o, tuple)] == []
        logs = {log.request_id: log for log in CallLog.objects.filter(tenant=tenant)}
        assert len(logs) == len(outcomes)
        served_by = set()
        for n, (started, ended, result) in enumerate(outcomes):
            [served] = _upstream_serving(upstreams, n)
            allowed = {phases[k] for k in _allowed_phases(started, ended, changes, window)}
            assert served in allowed, (n, served, allowed)
            served_by.add(served)
            log = logs[result.request_id]
            expected = (o.pk, "service") if served == by_override else (d.pk, "default")
            assert (log.provider_config_id, log.route_rule, log.attempt) == (*expected, 1)
        assert served_by == {by_default, by_override}
        assert not RoutingOverride.objects.filter(tenant=tenant).exists()
