"""Throttling per credential, on the shared cache."""

from __future__ import annotations

import threading

import pytest
from django.core.cache import cache
from django.test import RequestFactory
from rest_framework.request import Request

from llm_providers.api.throttling import CredentialRateThrottle
from llm_providers.models import ServiceKey
from tests.api.fixtures import http_at_once, service_key_client, token_client
from tests.factories import (
    ModelPriceFactory,
    ProviderConfigFactory,
    ServiceKeyFactory,
    TenantMembershipFactory,
    UserTokenFactory,
)
from usage.models import CallLog

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"


@pytest.fixture
def low_rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "3/min", "service_key": "2/min", "anon": "1/min"},
    }


def test_user_is_throttled_after_rate_with_retry_after(low_rates, admin_api):
    statuses = [admin_api.get(PROVIDERS).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    response = admin_api.get(PROVIDERS)
    assert response.json()["error"]["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60


def test_throttle_counts_each_user_apart(low_rates, admin_api, tenant):
    for _ in range(3):
        admin_api.get(PROVIDERS)
    other = token_client(TenantMembershipFactory(tenant=tenant).user)

    assert admin_api.get(PROVIDERS).status_code == 429
    assert other.get(PROVIDERS).status_code == 200


def test_service_key_has_its_own_scope_and_rate(low_rates, service_api, tenant):
    statuses = [service_api.get(PROVIDERS).status_code for _ in range(3)]
    other_key = service_key_client(ServiceKeyFactory(tenant=tenant))

    assert statuses == [200, 200, 429]
    assert other_key.get(PROVIDERS).status_code == 200


def test_unauthenticated_requests_are_throttled_per_address(low_rates, anonymous_api):
    statuses = [anonymous_api.get("/api/schema/").status_code for _ in range(2)]

    assert statuses == [200, 429]


def test_forged_forwarded_for_does_not_escape_the_anonymous_throttle(low_rates, anonymous_api):
    statuses = [
        anonymous_api.get("/api/schema/", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code
        for n in range(2)
    ]

    assert statuses == [200, 429]


def test_health_is_not_throttled(low_rates, anonymous_api, settings):
    settings.CELERY_BROKER_URL = ""

    statuses = {anonymous_api.get("/api/v1/health/").status_code for _ in range(3)}

    assert statuses == {200}


@pytest.mark.redis
def test_throttle_history_lives_in_shared_cache_keyed_without_secret(low_rates, service_key):
    client = service_key_client(service_key)
    client.get(PROVIDERS)
    client.get(PROVIDERS)

    redis = cache.client.get_client()
    history = redis.zcard(cache.make_key(f"throttle_service_key_{service_key.prefix}"))

    assert history == 2
    assert service_key.secret not in str(cache.client.get_client().keys("*"))


def test_throttled_answer_says_when_to_retry_after_rate_is_lowered(settings, admin_api):
    # given: three requests counted under a generous rate
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "10/min", "service_key": None, "anon": None},
    }
    for _ in range(3):
        admin_api.get(PROVIDERS)
    # when: the rate drops below what was already counted
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "2/min", "service_key": None, "anon": None},
    }
    response = admin_api.get(PROVIDERS)

    # then: the 429 still says when a request will pass again
    assert response.status_code == 429
    seconds = int(response["Retry-After"])
    assert 55 <= seconds <= 60
    assert response.json()["error"]["extra"] == {"retry_after_seconds": seconds}


def test_requests_pass_unthrottled_when_the_cache_is_unreachable(
    low_rates, cache_down, service_key, caplog
):
    # given a provider to complete with, and the cache down
    ModelPriceFactory(model="fake-small", input_per_mtok="1", output_per_mtok="2")
    ProviderConfigFactory(tenant=service_key.tenant, name="fake-main", is_default=True)
    client = service_key_client(service_key)

    # when more requests than the rate allows are made
    responses = [
        client.post("/api/v1/completions/", {"messages": [{"role": "user", "content": "hi"}]})
        for _ in range(3)
    ]

    # then each is answered as without a cache, and the outage is logged
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert {r.json()["content"] for r in responses} == {"Echo: hi"}
    assert CallLog.objects.filter(tenant=service_key.tenant, status="ok").count() == 3
    assert "API throttle not enforced: cache unavailable" in caplog.text


def _service_key_request(prefix: str) -> Request:
    request = Request(RequestFactory().get(PROVIDERS))
    request._auth = ServiceKey(prefix=prefix)
    return request


@pytest.mark.redis
def test_concurrent_requests_of_one_credential_never_pass_beyond_the_rate(low_rates):
    # given: twenty requests of one service key (rate 2/min), each on its own
    # connection to Redis, as requests in separate processes are
    start = threading.Barrier(20)
    allowed = []

    def request_once():
        request = _service_key_request("Conc0001")
        start.wait()
        allowed.append(CredentialRateThrottle().allow_request(request, None))

    # when: they are checked at the same moment
    threads = [threading.Thread(target=request_once) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then: exactly the rate passes, and the refused are told when to retry
    assert allowed.count(True) == 2
    refused = CredentialRateThrottle()
    assert refused.allow_request(_service_key_request("Conc0001"), None) is False
    assert 55 <= refused.wait() <= 60


@pytest.mark.redis
def test_a_request_stamped_before_the_admitted_ones_waits_at_most_the_window(low_rates):
    # given: the rate (2/min) admitted at 1000.5 s, and a concurrent request whose
    # time was read at 1000.0 s, before theirs, checked only after them
    admitted = []
    for _ in range(2):
        throttle = CredentialRateThrottle()
        throttle.timer = lambda: 1000.5
        admitted.append(throttle.allow_request(_service_key_request("Late0001"), None))
    late = CredentialRateThrottle()
    late.timer = lambda: 1000.0

    # when: it is refused
    refused = not late.allow_request(_service_key_request("Late0001"), None)

    # then: it waits the window at most (the admitted ones leave it a minute
    # after their arrival, which is no later than this check), so Retry-After
    # never says more than the window's 60 s
    assert (admitted, refused) == ([True, True], True)
    assert late.wait() == 60.0


def test_a_rate_of_zero_refuses_every_request_with_the_whole_window_to_wait(
    settings, anonymous_api, caplog
):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "anon": "0/min",
        },
    }

    responses = [anonymous_api.get("/api/schema/") for _ in range(2)]

    assert [r.status_code for r in responses] == [429, 429]
    assert [r["Retry-After"] for r in responses] == ["60", "60"]
    assert "not enforced" not in caplog.text


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_concurrent_http_requests_pass_exactly_the_rate_of_each_credential(
    settings, live_server, tenant
):
    # given: two service keys of one tenant at 4 a minute, one of another tenant,
    # and a user at 3 a minute; failed authentications limited far above the load
    from tests.factories import TenantFactory, UserFactory

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "user": "3/min",
            "service_key": "4/min",
            "anon": "1/min",
            "auth_failure": "1000/min",
        },
    }
    ModelPriceFactory(model="fake-small", input_per_mtok="1", output_per_mtok="2")
    ProviderConfigFactory(tenant=tenant, name="fake-main", is_default=True)
    globex = TenantFactory(slug="globex-throttled", name="Globex throttled")
    ProviderConfigFactory(tenant=globex, name="fake-globex", is_default=True)
    first, second = ServiceKeyFactory(tenant=tenant), ServiceKeyFactory(tenant=tenant)
    elsewhere = ServiceKeyFactory(tenant=globex)
    person = TenantMembershipFactory(tenant=tenant, user=UserFactory(username="bob")).user
    token = UserTokenFactory(user=person)
    hello = {"messages": [{"role": "user", "content": "hi"}]}
    load = (
        [(f"Api-Key {first.secret}", "/api/v1/completions/", hello)] * 12
        + [(f"Api-Key {second.secret}", "/api/v1/completions/", hello)] * 8
        + [(f"Api-Key {elsewhere.secret}", "/api/v1/completions/", hello)] * 4
        + [(f"Token {token.secret}", PROVIDERS, None)] * 8
    )

    # when: all of them arrive at once
    answers = http_at_once(live_server.url, load)

    # then: each credential had exactly its rate admitted, whatever the others did
    admitted = {}
    for (authorization, _, _), status, headers, body in answers:
        assert status in (200, 429), body
        admitted[authorization] = admitted.get(authorization, 0) + (status == 200)
        if status == 429:
            # the documented shape, with the wait in the header and in extra: until
            # the oldest admitted request of the burst leaves the minute's window
            seconds = int(headers["Retry-After"])
            assert 40 <= seconds <= 60
            assert body == {
                "error": {
                    "code": "throttled",
                    "message": body["error"]["message"],
                    "fields": {},
                    "extra": {"retry_after_seconds": seconds},
                }
            }
            assert body["error"]["message"]
    assert admitted == {
        f"Api-Key {first.secret}": 4,
        f"Api-Key {second.secret}": 4,
        f"Api-Key {elsewhere.secret}": 4,
        f"Token {token.secret}": 3,
    }
    # and only the admitted completions were called and logged, each for its tenant
    assert CallLog.objects.filter(tenant=tenant, status="ok").count() == 8
    assert CallLog.objects.filter(tenant=globex, status="ok").count() == 4
    assert CallLog.objects.count() == 12
    # the windows hold exactly what was admitted
    redis = cache.client.get_client()
    for key, count in ((first, 4), (second, 4), (elsewhere, 4)):
        assert redis.zcard(cache.make_key(f"throttle_service_key_{key.prefix}")) == count
    assert redis.zcard(cache.make_key(f"throttle_user_{person.pk}")) == 3
    assert redis.zcard(cache.make_key("throttle_auth_failure_127.0.0.1")) == 0
