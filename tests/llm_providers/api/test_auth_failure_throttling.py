"""Failed authentication is throttled per client address, before any credential is checked."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.test import APIClient

from llm_providers.api.authentication import ServiceKeyAuthentication
from tests.api.fixtures import service_key_client
from tests.factories import ServiceKeyFactory

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"
ATTACKER = "203.0.113.9"
NEIGHBOUR = "198.51.100.4"


@pytest.fixture
def auth_failure_rate(settings):
    """Sets the `auth_failure` rate, the other scopes left unthrottled."""

    def set_rate(rate: str) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                "user": None,
                "service_key": None,
                "anon": None,
                "auth_failure": rate,
            },
        }

    return set_rate


def _bad_key(service_key) -> str:
    """A key with a real key's prefix and a wrong secret."""
    return f"{service_key.prefix}.{'x' * 32}"


def _get(authorization: str, address: str = ATTACKER, **extra):
    return APIClient().get(
        PROVIDERS, HTTP_AUTHORIZATION=authorization, REMOTE_ADDR=address, **extra
    )


def test_bad_service_keys_from_one_address_are_refused_with_429_beyond_the_rate(
    auth_failure_rate, service_key
):
    auth_failure_rate("3/min")

    statuses = [_get(f"Api-Key {_bad_key(service_key)}").status_code for _ in range(3)]
    refused = _get(f"Api-Key {_bad_key(service_key)}")

    assert statuses == [401, 401, 401]
    assert refused.status_code == 429
    seconds = int(refused["Retry-After"])
    assert 55 <= seconds <= 60
    assert refused.json()["error"] == {
        "code": "auth_throttled",
        "message": "Too many failed authentication attempts from this address; retry later.",
        "fields": {},
        "extra": {"retry_after_seconds": seconds},
    }


def test_bad_user_tokens_count_as_failures_too(auth_failure_rate, db):
    auth_failure_rate("2/min")

    statuses = [_get(f"Token badtoken.{n:032d}").status_code for n in range(3)]

    assert statuses == [401, 401, 429]


def test_malformed_credentials_count_as_failures(auth_failure_rate, db):
    auth_failure_rate("2/min")

    statuses = [_get(header).status_code for header in ("Token", "Api-Key a b", "Token x")]

    assert statuses == [401, 401, 429]


def test_valid_key_from_a_throttled_address_is_refused_without_being_checked(
    auth_failure_rate, service_key
):
    # given: an address that has used up its failures
    auth_failure_rate("2/min")
    for _ in range(2):
        _get(f"Api-Key {_bad_key(service_key)}")

    # when: the right key comes from it
    with CaptureQueriesContext(connection) as queries:
        response = _get(f"Api-Key {service_key.secret}")

    # then: refused as the guesses are, and no key was looked up to answer it
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "auth_throttled"
    assert not [q for q in queries.captured_queries if "servicekey" in q["sql"]]


def test_other_addresses_are_not_affected(auth_failure_rate, service_key):
    auth_failure_rate("2/min")
    for _ in range(3):
        _get(f"Api-Key {_bad_key(service_key)}")

    assert _get(f"Api-Key {service_key.secret}", address=NEIGHBOUR).status_code == 200
    assert _get(f"Api-Key {_bad_key(service_key)}", address=NEIGHBOUR).status_code == 401
    assert _get(f"Api-Key {_bad_key(service_key)}").status_code == 429


def test_successful_authentications_do_not_count(auth_failure_rate, service_key):
    auth_failure_rate("2/min")
    for _ in range(5):
        assert _get(f"Api-Key {service_key.secret}").status_code == 200

    statuses = [_get(f"Api-Key {_bad_key(service_key)}").status_code for _ in range(3)]

    assert statuses == [401, 401, 429]


def test_requests_without_credentials_are_not_counted(auth_failure_rate, service_key):
    auth_failure_rate("1/min")
    for _ in range(3):
        assert APIClient().get(PROVIDERS, REMOTE_ADDR=ATTACKER).status_code == 401

    assert _get(f"Api-Key {service_key.secret}").status_code == 200


def test_an_address_is_let_through_again_once_its_failures_leave_the_window(
    auth_failure_rate, service_key
):
    # given: a one-second window, used up
    auth_failure_rate("2/sec")
    for _ in range(2):
        _get(f"Api-Key {_bad_key(service_key)}")
    refused = _get(f"Api-Key {service_key.secret}")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "1"

    # when: the window has passed
    time.sleep(1.1)

    # then: credentials are checked again
    assert _get(f"Api-Key {service_key.secret}").status_code == 200
    assert _get(f"Api-Key {_bad_key(service_key)}").status_code == 401


def test_behind_a_proxy_the_forwarded_client_address_is_counted(
    auth_failure_rate, settings, service_key
):
    auth_failure_rate("2/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = "10.0.0.2"

    for _ in range(2):
        _get(f"Api-Key {_bad_key(service_key)}", proxy, HTTP_X_FORWARDED_FOR=ATTACKER)

    throttled = _get(f"Api-Key {service_key.secret}", proxy, HTTP_X_FORWARDED_FOR=ATTACKER)
    neighbour = _get(f"Api-Key {service_key.secret}", proxy, HTTP_X_FORWARDED_FOR=NEIGHBOUR)
    assert (throttled.status_code, neighbour.status_code) == (429, 200)


def test_forged_forwarded_for_does_not_escape_without_a_proxy(auth_failure_rate, service_key):
    auth_failure_rate("2/min")

    statuses = [
        _get(f"Api-Key {_bad_key(service_key)}", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}").status_code
        for n in range(3)
    ]

    assert statuses == [401, 401, 429]


@pytest.mark.redis
def test_failures_are_kept_by_address_only(auth_failure_rate, service_key, caplog):
    # given: failures and refusals with a real key's prefix and a guessed secret
    auth_failure_rate("2/min")
    guess = _bad_key(service_key)
    caplog.set_level(logging.DEBUG)
    answers = [_get(f"Api-Key {guess}") for _ in range(2)]
    answers.append(_get(f"Api-Key {service_key.secret}"))
    answers.append(_get(f"Token {service_key.secret}"))

    # then: the cache holds one history, named by the address, with no part of a key
    redis = cache.client.get_client()
    names = {name.decode() for name in redis.keys("*")}
    assert names == {cache.make_key(f"throttle_auth_failure_{ATTACKER}")}
    members = b" ".join(redis.zrange(cache.make_key(f"throttle_auth_failure_{ATTACKER}"), 0, -1))
    assert redis.zcard(cache.make_key(f"throttle_auth_failure_{ATTACKER}")) == 2
    secret_part = service_key.secret.partition(".")[2]
    for text in (str(names), members.decode(), caplog.text, *(a.content.decode() for a in answers)):
        assert service_key.prefix not in text
        assert secret_part not in text
        assert guess.partition(".")[2] not in text


def test_failures_pass_unthrottled_when_the_cache_is_unreachable(
    auth_failure_rate, settings, service_key, caplog
):
    auth_failure_rate("1/min")
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }

    statuses = [_get(f"Api-Key {_bad_key(service_key)}").status_code for _ in range(3)]

    assert statuses == [401, 401, 401]
    assert _get(f"Api-Key {service_key.secret}").status_code == 200
    assert "Authentication failure throttle not enforced: cache unavailable" in caplog.text


def _authenticate_bad_key(outcomes: list, start: threading.Barrier) -> None:
    # A key no row can match (its prefix is not a generated one): refused without a query.
    factory = RequestFactory(REMOTE_ADDR=ATTACKER, HTTP_AUTHORIZATION="Api-Key no-such.key")
    request = Request(factory.get(PROVIDERS))
    start.wait()
    try:
        ServiceKeyAuthentication().authenticate(request)
    except exceptions.APIException as exc:
        outcomes.append(exc.get_codes())


@pytest.mark.redis
def test_concurrent_failures_of_one_address_never_pass_beyond_the_rate(auth_failure_rate):
    # given: twenty bad keys from one address (rate 5/min), each checked on its
    # own connection to Redis, as requests in separate processes are
    auth_failure_rate("5/min")
    start = threading.Barrier(20)
    outcomes: list = []
    threads = [
        threading.Thread(target=_authenticate_bad_key, args=(outcomes, start)) for _ in range(20)
    ]

    # when: they arrive at the same moment
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then: exactly the rate is checked, the rest refused before any check
    assert Counter(outcomes) == {"authentication_failed": 5, "auth_throttled": 15}


def test_a_valid_key_from_elsewhere_is_unaffected_after_a_burst_of_failures(
    auth_failure_rate, tenant
):
    auth_failure_rate("1/min")
    key = ServiceKeyFactory(tenant=tenant)
    for n in range(4):
        _get(f"Api-Key {_bad_key(key)}", address=f"192.0.2.{n}")

    assert service_key_client(key).get(PROVIDERS, REMOTE_ADDR=NEIGHBOUR).status_code == 200


ADMIN_LOGIN = "/admin/login/"
API_LOGIN = "/api/auth/login/"


def _log_in(path: str, username: str, password: str, address: str = ATTACKER):
    from django.test import Client

    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": username, "password": password})
    return response, client


@pytest.mark.parametrize("path", [ADMIN_LOGIN, API_LOGIN])
def test_login_form_refuses_an_address_beyond_its_failed_logins(auth_failure_rate, superuser, path):
    # given: an address that has used up its failed logins
    auth_failure_rate("2/min")
    for _ in range(2):
        failed, _ = _log_in(path, superuser.username, "wrong-password")
        assert failed.status_code == 200
        assert "correct username and password" in failed.content.decode()

    # when: the right password comes from it
    response, client = _log_in(path, superuser.username, "pw-test-123")

    # then: the form refuses it, saying why, and nobody is logged in
    assert response.status_code == 200
    assert "Too many failed login attempts from this address" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # and another address logs in
    elsewhere, other = _log_in(path, superuser.username, "pw-test-123", address=NEIGHBOUR)
    assert elsewhere.status_code == 302
    assert other.session["_auth_user_id"] == str(superuser.pk)


def test_successful_logins_do_not_count(auth_failure_rate, superuser):
    auth_failure_rate("1/min")
    for _ in range(3):
        assert _log_in(ADMIN_LOGIN, superuser.username, "pw-test-123")[0].status_code == 302

    failed = _log_in(ADMIN_LOGIN, superuser.username, "wrong-password")[0].content.decode()
    refused = _log_in(ADMIN_LOGIN, superuser.username, "pw-test-123")[0].content.decode()

    assert "correct username and password" in failed
    assert "Too many failed login attempts from this address" in refused


def test_addresses_of_one_ipv6_network_share_one_failure_budget(auth_failure_rate, service_key):
    # given: failures spread over addresses of one /64, as one host can hold
    auth_failure_rate("2/min")
    for host in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"):
        assert _get(f"Api-Key {_bad_key(service_key)}", address=host).status_code == 401

    # then: a third address of that network is refused, one of the next network is not
    assert _get(f"Api-Key {service_key.secret}", address="2001:db8:1:2::abcd").status_code == 429
    assert _get(f"Api-Key {service_key.secret}", address="2001:db8:1:3::1").status_code == 200


def test_an_ipv4_client_seen_through_an_ipv6_socket_is_counted_as_its_ipv4_address(
    auth_failure_rate, service_key
):
    auth_failure_rate("2/min")
    for _ in range(2):
        _get(f"Api-Key {_bad_key(service_key)}", address=f"::ffff:{ATTACKER}")

    assert _get(f"Api-Key {service_key.secret}").status_code == 429
    assert _get(f"Api-Key {service_key.secret}", address=NEIGHBOUR).status_code == 200
