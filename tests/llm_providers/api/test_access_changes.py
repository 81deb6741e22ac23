"""Access changes take effect on the very next request, with every cache warm.

Each test first makes requests that warm the shared cache (throttle history,
configuration versions), the in-process configuration cache and the response
cache, then changes access (a key revoked through the API or the admin, a
membership removed or lowered, a user deactivated, a token deleted, a tenant
deactivated or deleted) and checks the next request, a streamed completion
among them, in the API's error shape.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from llm_providers.models import ServiceKey, Tenant, TenantMembership, UserToken
from tests.api.fixtures import service_key_client, session_client, token_client
from tests.factories import (
    BudgetFactory,
    ModelPriceFactory,
    ProviderConfigFactory,
    RoutingOverrideFactory,
    ServiceKeyFactory,
    TenantMembershipFactory,
    UserFactory,
    UserTokenFactory,
)
from usage.models import CallLog

pytestmark = pytest.mark.django_db

COMPLETIONS = "/api/v1/completions/"
PROVIDERS = "/api/v1/providers/"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
STREAMED_HELLO = {**HELLO, "stream": True}


@pytest.fixture
def fake(tenant):
    ModelPriceFactory(model="fake-small", input_per_mtok="1", output_per_mtok="2")
    # Identical completions are answered from the response cache: that cache is warm too.
    tenant.response_cache_ttl_seconds = 600
    tenant.save()
    return ProviderConfigFactory(tenant=tenant, name="fake-main", is_default=True)


def _admin(user) -> Client:
    """A browser logged in to the admin: forms are posted as forms."""
    client = Client()
    client.force_login(user)
    return client


def _committed_elsewhere(change) -> None:
    """Run `change` on a connection of its own, committed before this returns: what
    another request does while this one is between reading and writing a row."""
    failures = []

    def run():
        try:
            change()
        except Exception as exc:  # noqa: BLE001 - reported to the test below
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and failures == []


def _streamed_text(response) -> str:
    body = b"".join(response.streaming_content).decode()
    return "".join(
        json.loads(line.removeprefix("data: "))["text"]
        for block in body.split("\n\n")
        if block.startswith("event: chunk")
        for line in block.splitlines()
        if line.startswith("data: ")
    )


def _warm(client, *, extra=None) -> None:
    """Completions (JSON and streamed, the second of each from the response cache) and a
    list: every cache a request consults holds this credential's and tenant's entries."""
    extra = extra or {}
    for _ in range(2):
        answer = client.post(COMPLETIONS, HELLO, format="json", **extra)
        assert answer.status_code == 200, answer.content
        assert answer.json()["content"] == "Echo: hi"
        streamed = client.post(COMPLETIONS, STREAMED_HELLO, format="json", **extra)
        assert streamed.status_code == 200
        assert _streamed_text(streamed) == "Echo: hi"
    assert client.get(PROVIDERS, **extra).status_code == 200


def _refused(response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {
        "error": {"code": code, "message": message, "fields": {}, "extra": {}}
    }


def _calls_refused(client, status: int, code: str, message: str, *, extra=None) -> None:
    extra = extra or {}
    calls = CallLog.objects.count()
    _refused(client.post(COMPLETIONS, HELLO, format="json", **extra), status, code, message)
    _refused(
        client.post(COMPLETIONS, STREAMED_HELLO, format="json", **extra), status, code, message
    )
    _refused(client.get(PROVIDERS, **extra), status, code, message)
    # No completion started: not even a blocked or cached one was logged.
    assert CallLog.objects.count() == calls


# --- 1. service keys revoked --------------------------------------------------------


def test_service_key_revoked_through_the_api_is_refused_on_the_next_request(
    fake, service_key, admin_api
):
    client = service_key_client(service_key)
    _warm(client)

    revoked = admin_api.post(f"/api/v1/service-keys/{service_key.prefix}/revoke/")

    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    _calls_refused(client, 401, "authentication_failed", "This service key has been revoked.")


def test_service_key_revoked_through_the_admin_action_is_refused_on_the_next_request(
    fake, service_key, admin_user
):
    client = service_key_client(service_key)
    _warm(client)

    response = _admin(admin_user).post(
        "/admin/llm_providers/servicekey/",
        {"action": "revoke", ACTION_CHECKBOX_NAME: [service_key.pk]},
    )

    assert response.status_code == 302
    assert ServiceKey.objects.get(pk=service_key.pk).revoked is True
    _calls_refused(client, 401, "authentication_failed", "This service key has been revoked.")


def test_service_key_revoked_on_its_admin_change_page_is_refused_on_the_next_request(
    fake, service_key, admin_user
):
    client = service_key_client(service_key)
    _warm(client)

    response = _admin(admin_user).post(
        f"/admin/llm_providers/servicekey/{service_key.pk}/change/",
        {"name": service_key.name, "expiry_date_0": "", "expiry_date_1": "", "revoked": "on"},
    )

    assert response.status_code == 302, response.content
    assert ServiceKey.objects.get(pk=service_key.pk).revoked is True
    _calls_refused(client, 401, "authentication_failed", "This service key has been revoked.")


def test_service_key_deleted_in_the_admin_is_refused_on_the_next_request(
    fake, service_key, admin_user
):
    client = service_key_client(service_key)
    _warm(client)

    response = _admin(admin_user).post(
        f"/admin/llm_providers/servicekey/{service_key.pk}/delete/", {"post": "yes"}
    )

    assert response.status_code == 302
    assert not ServiceKey.objects.filter(pk=service_key.pk).exists()
    _calls_refused(client, 401, "authentication_failed", "Invalid service key.")


# --- 2. memberships removed or lowered ------------------------------------------------


def _writes(tenant) -> list[tuple[str, str, dict]]:
    config = ProviderConfigFactory(tenant=tenant, name="spare")
    override = RoutingOverrideFactory(tenant=tenant, provider_config=config)
    budget = BudgetFactory(tenant=tenant)
    return [
        ("post", PROVIDERS, {"name": "x", "provider_type": "fake", "default_model": "fake-small"}),
        ("patch", f"{PROVIDERS}{config.pk}/", {"priority": 7}),
        ("delete", f"{PROVIDERS}{config.pk}/", {}),
        ("post", "/api/v1/overrides/", {"customer_id": "c", "provider_config": str(config.pk)}),
        ("patch", f"/api/v1/overrides/{override.pk}/", {"model": "fake-large"}),
        ("delete", f"/api/v1/overrides/{override.pk}/", {}),
        ("post", "/api/v1/budgets/", {"name": "b", "period": "monthly", "limit_usd": "5"}),
        ("patch", f"/api/v1/budgets/{budget.pk}/", {"limit_usd": "6"}),
        ("delete", f"/api/v1/budgets/{budget.pk}/", {}),
    ]


@pytest.mark.parametrize("credential", ["token", "session"])
def test_admin_lowered_to_viewer_is_refused_every_write_on_the_next_request(
    fake, tenant, admin_user, credential
):
    client = token_client(admin_user) if credential == "token" else session_client(admin_user)
    _warm(client)
    writes = _writes(tenant)
    assert client.patch(writes[1][1], {"priority": 3}, format="json").status_code == 200

    TenantMembership.objects.filter(user=admin_user, tenant=tenant).update(role="viewer")

    for method, path, body in writes:
        response = getattr(client, method)(path, body, format="json")
        _refused(
            response,
            403,
            "permission_denied",
            "Viewers can read but not change anything in this tenant.",
        )
    # Viewers do not call completions either.
    _refused(
        client.post(COMPLETIONS, STREAMED_HELLO, format="json"),
        403,
        "permission_denied",
        "Viewers can read but not change anything in this tenant.",
    )
    assert client.get(PROVIDERS).status_code == 200


@pytest.mark.parametrize("credential", ["token", "session"])
def test_removed_member_is_refused_on_the_next_request(fake, tenant, admin_user, credential):
    client = token_client(admin_user) if credential == "token" else session_client(admin_user)
    _warm(client)

    TenantMembership.objects.filter(user=admin_user, tenant=tenant).delete()

    _calls_refused(client, 403, "tenant_forbidden", "You are not a member of any active tenant.")


def test_member_removed_in_the_admin_stops_seeing_the_tenant_in_the_admin(fake, tenant):
    member = TenantMembershipFactory(tenant=tenant, user=UserFactory(username="mona")).user
    boss = TenantMembershipFactory(tenant=tenant, user=UserFactory(username="bob")).user
    member_admin = _admin(member)
    page = member_admin.get("/admin/llm_providers/providerconfig/")
    assert page.status_code == 200
    assert b"fake-main" in page.content
    assert member_admin.get(f"/admin/llm_providers/tenant/{tenant.pk}/change/").status_code == 200

    membership = TenantMembership.objects.get(user=member, tenant=tenant)
    removed = _admin(boss).post(
        f"/admin/llm_providers/tenantmembership/{membership.pk}/delete/", {"post": "yes"}
    )

    assert removed.status_code == 302
    assert member_admin.get("/admin/llm_providers/providerconfig/").status_code == 403
    assert member_admin.get(f"/admin/llm_providers/tenant/{tenant.pk}/change/").status_code in (
        302,
        403,
    )
    assert member_admin.get(
        f"/admin/llm_providers/providerconfig/{fake.pk}/change/"
    ).status_code in (
        302,
        403,
    )


def test_admin_lowered_to_viewer_in_the_admin_can_no_longer_change_in_the_admin(fake, tenant):
    member = TenantMembershipFactory(tenant=tenant, user=UserFactory(username="mona")).user
    boss = TenantMembershipFactory(tenant=tenant, user=UserFactory(username="bob")).user
    member_admin = _admin(member)
    change = f"/admin/llm_providers/providerconfig/{fake.pk}/change/"
    assert b'name="_save"' in member_admin.get(change).content

    membership = TenantMembership.objects.get(user=member, tenant=tenant)
    lowered = _admin(boss).post(
        f"/admin/llm_providers/tenantmembership/{membership.pk}/change/",
        {"user": member.username, "tenant": tenant.pk, "role": "viewer"},
    )

    assert lowered.status_code == 302, lowered.content
    assert TenantMembership.objects.get(pk=membership.pk).role == "viewer"
    page = member_admin.get(change)
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    refused = member_admin.post(change, {"name": "renamed"})
    assert refused.status_code == 403
    fake.refresh_from_db()
    assert fake.name == "fake-main"


# --- 3. users deactivated, tokens deleted --------------------------------------------


def test_deactivated_user_is_refused_on_the_next_request(fake, admin_user):
    client = token_client(admin_user)
    _warm(client)

    admin_user.is_active = False
    admin_user.save(update_fields=["is_active"])

    _calls_refused(client, 401, "authentication_failed", "User inactive or deleted.")


def test_deactivated_session_user_is_refused_on_the_next_request(fake, admin_user):
    client = session_client(admin_user)
    _warm(client)

    admin_user.is_active = False
    admin_user.save(update_fields=["is_active"])

    _calls_refused(
        client,
        401,
        "not_authenticated",
        "Authentication credentials were not provided.",
    )


def test_deleted_token_is_refused_on_the_next_request(fake, admin_user):
    client = token_client(admin_user)
    _warm(client)

    UserToken.objects.filter(user=admin_user).delete()

    _calls_refused(client, 401, "authentication_failed", "Invalid token.")


def test_token_revoked_in_the_admin_is_refused_on_the_next_request(fake, admin_user):
    token = UserTokenFactory(user=admin_user)
    client = token_client(admin_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.secret}")
    _warm(client)

    response = _admin(admin_user).post(
        "/admin/llm_providers/usertoken/",
        {"action": "revoke", ACTION_CHECKBOX_NAME: [token.pk]},
    )

    assert response.status_code == 302
    _calls_refused(client, 401, "authentication_failed", "Invalid token.")


# --- 4. tenants deactivated or deleted ---------------------------------------------------


def test_service_key_of_a_tenant_deactivated_in_the_admin_is_refused(fake, tenant, service_key):
    client = service_key_client(service_key)
    _warm(client)

    superuser = UserFactory(username="root", is_superuser=True)
    response = _admin(superuser).post(
        f"/admin/llm_providers/tenant/{tenant.pk}/change/",
        {
            "name": tenant.name,
            "slug": tenant.slug,
            "timezone": "UTC",
            "response_cache_ttl_seconds": "600",
        },
    )

    assert response.status_code == 302, response.content
    assert Tenant.objects.get(pk=tenant.pk).is_active is False
    _calls_refused(
        client, 401, "authentication_failed", "The tenant of this service key is inactive."
    )


def test_service_key_of_a_deleted_tenant_is_refused(fake, tenant, service_key):
    client = service_key_client(service_key)
    _warm(client)

    Tenant.objects.filter(pk=tenant.pk).delete()

    _calls_refused(client, 401, "authentication_failed", "Invalid service key.")


def test_members_of_a_deactivated_tenant_are_refused(fake, tenant, admin_user):
    client = token_client(admin_user)
    _warm(client)

    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)

    _calls_refused(client, 403, "tenant_forbidden", "You are not a member of any active tenant.")


# --- 5. a user of several tenants removed from one ----------------------------------------


def test_user_removed_from_one_of_its_tenants_cannot_name_it(fake, tenant, other_tenant):
    ProviderConfigFactory(tenant=other_tenant, name="globex-main", is_default=True)
    user = UserFactory(username="dora")
    TenantMembershipFactory(user=user, tenant=tenant)
    TenantMembershipFactory(user=user, tenant=other_tenant)
    client = token_client(user)
    for slug, name in (("acme", "fake-main"), ("globex", "globex-main")):
        _warm(client, extra={"HTTP_X_TENANT": slug})
        listed = client.get(PROVIDERS, HTTP_X_TENANT=slug).json()["results"]
        assert [c["name"] for c in listed] == [name]

    TenantMembership.objects.filter(user=user, tenant=other_tenant).delete()

    message = "You are not a member of a tenant “globex” (or it does not exist)."
    _calls_refused(client, 403, "tenant_forbidden", message, extra={"HTTP_X_TENANT": "globex"})
    _refused(
        client.get(f"{PROVIDERS}?tenant={other_tenant.pk}"),
        403,
        "tenant_forbidden",
        f"You are not a member of a tenant “{other_tenant.pk}” (or it does not exist).",
    )
    # The tenant left is now the only one: no need to name it.
    assert [c["name"] for c in client.get(PROVIDERS).json()["results"]] == ["fake-main"]


# --- 6. throttle state per credential -------------------------------------------------

DEPLOYMENT = "203.0.113.40"


@pytest.fixture
def rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "user": "3/min",
            "service_key": "3/min",
            "anon": None,
            "auth_failure": "3/min",
        },
    }


def _providers(secret: str, *, scheme: str = "Api-Key"):
    return APIClient().get(
        PROVIDERS, HTTP_AUTHORIZATION=f"{scheme} {secret}", REMOTE_ADDR=DEPLOYMENT
    )


def test_revoked_key_still_retried_neither_turns_into_429_nor_locks_out_its_successor(
    rates, tenant, service_key, admin_api
):
    # A program keeps calling with its key after the key was revoked, from the
    # address its replacement is deployed to.
    assert admin_api.post(f"/api/v1/service-keys/{service_key.prefix}/revoke/").status_code == 200

    retried = [_providers(service_key.secret) for _ in range(5)]
    successor = ServiceKeyFactory(tenant=tenant, name="billing-app-2")

    assert [r.status_code for r in retried] == [401] * 5
    _refused(retried[-1], 401, "authentication_failed", "This service key has been revoked.")
    assert _providers(successor.secret).status_code == 200


@pytest.mark.parametrize("refusal", ["revoked", "expired", "inactive user"])
def test_a_genuine_but_refused_token_is_not_counted_as_a_guess(rates, admin_user, refusal):
    token = UserTokenFactory(user=admin_user)
    if refusal == "revoked":
        UserToken.objects.filter(pk=token.pk).update(revoked=True)
    elif refusal == "expired":
        UserToken.objects.filter(pk=token.pk).update(
            expiry_date=timezone.now() - timedelta(seconds=1)
        )
    else:
        admin_user.is_active = False
        admin_user.save(update_fields=["is_active"])
    colleague = TenantMembershipFactory(tenant=admin_user.tenant_memberships.get().tenant).user

    statuses = [_providers(token.secret, scheme="Token").status_code for _ in range(5)]

    assert statuses == [401] * 5
    fresh = UserTokenFactory(user=colleague)
    assert _providers(fresh.secret, scheme="Token").status_code == 200


def test_wrong_secrets_still_count_against_the_address(rates, service_key):
    guesses = [_providers(f"{service_key.prefix}.{'x' * 32}") for _ in range(4)]

    assert [r.status_code for r in guesses] == [401, 401, 401, 429]
    assert _providers(service_key.secret).status_code == 429


def test_re_created_key_starts_its_own_throttle_window(rates, tenant, service_key, admin_api):
    used_up = [_providers(service_key.secret).status_code for _ in range(4)]
    admin_api.post(f"/api/v1/service-keys/{service_key.prefix}/revoke/")
    created = admin_api.post("/api/v1/service-keys/", {"name": "billing-app"}, format="json")
    successor = created.json()["key"]

    assert used_up == [200, 200, 200, 429]
    assert [_providers(successor).status_code for _ in range(4)] == [200, 200, 200, 429]


@pytest.mark.redis
def test_throttle_keys_in_redis_name_credentials_without_any_secret(
    rates, tenant, service_key, admin_user
):
    token = UserTokenFactory(user=admin_user)
    _providers(service_key.secret)
    _providers(token.secret, scheme="Token")
    _providers(f"{service_key.prefix}.{'y' * 32}")

    redis = get_redis_connection("default")
    keys = sorted(k.decode() for k in redis.keys("*throttle*"))

    assert keys == [
        f"llmpl:1:throttle_auth_failure_{DEPLOYMENT}",
        f"llmpl:1:throttle_service_key_{service_key.prefix}",
        f"llmpl:1:throttle_user_{admin_user.pk}",
    ]
    stored = " ".join([*keys, *(str(redis.zrange(k, 0, -1)) for k in keys)])
    for secret in (service_key.secret, token.secret):
        assert secret.partition(".")[2] not in stored
    assert token.prefix not in stored


# --- revocations concurrent with an edit in the admin -------------------------------------


@pytest.mark.parametrize("kind", ["service key", "user token"])
def test_key_revoked_while_its_admin_change_page_is_saved_stays_revoked(
    monkeypatch, fake, service_key, admin_user, kind
):
    from llm_providers.admin import ServiceKeyAdmin, UserTokenAdmin
    from llm_providers.services import service_key_revoke, user_token_revoke

    if kind == "service key":
        key, model_admin, revoke = service_key, ServiceKeyAdmin, service_key_revoke
        client, url = service_key_client(service_key), "servicekey"
        refusal = "This service key has been revoked."
    else:
        key = UserTokenFactory(user=admin_user, name="script")
        model_admin, revoke, url = UserTokenAdmin, user_token_revoke, "usertoken"
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key.secret}")
        refusal = "Invalid token."
    _warm(client)
    save_form = model_admin.save_form

    def revoked_meanwhile(self, request, form, change):
        # Another request revokes the key after this one read it, before it writes.
        assert revoke(**{kind.replace(" ", "_"): type(key).objects.get(pk=key.pk)}) is True
        return save_form(self, request, form, change)

    monkeypatch.setattr(model_admin, "save_form", revoked_meanwhile)

    response = _admin(admin_user).post(
        f"/admin/llm_providers/{url}/{key.pk}/change/",
        {"name": "renamed", "expiry_date_0": "", "expiry_date_1": ""},
    )

    assert response.status_code == 302, response.content
    stored = type(key).objects.get(pk=key.pk)
    assert (stored.name, stored.revoked) == ("renamed", True)
    _calls_refused(client, 401, "authentication_failed", refusal)


def test_tenant_deactivated_while_its_admin_saves_its_settings_stays_inactive(
    monkeypatch, fake, tenant, service_key, admin_user
):
    from llm_providers.admin import TenantAdmin

    client = service_key_client(service_key)
    _warm(client)
    save_form = TenantAdmin.save_form

    def deactivated_meanwhile(self, request, form, change):
        # A superuser deactivates the tenant after this request read it, before it writes.
        Tenant.objects.filter(pk=tenant.pk).update(is_active=False)
        return save_form(self, request, form, change)

    monkeypatch.setattr(TenantAdmin, "save_form", deactivated_meanwhile)

    response = _admin(admin_user).post(
        f"/admin/llm_providers/tenant/{tenant.pk}/change/",
        {"name": "Acme Inc", "timezone": "Europe/Paris", "response_cache_ttl_seconds": "600"},
    )

    assert response.status_code == 302, response.content
    stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.name, stored.timezone, stored.is_active) == ("Acme Inc", "Europe/Paris", False)
    _calls_refused(
        client, 401, "authentication_failed", "The tenant of this service key is inactive."
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_membership_removed_while_its_admin_change_page_is_saved_stays_removed(
    monkeypatch, fake, tenant
):
    from llm_providers.admin import TenantMembershipAdmin

    member = TenantMembershipFactory(
        tenant=tenant, user=UserFactory(username="mona"), role="viewer"
    ).user
    boss = TenantMembershipFactory(tenant=tenant, user=UserFactory(username="bob")).user
    client = token_client(member)
    assert client.get(PROVIDERS).status_code == 200
    membership = TenantMembership.objects.get(user=member, tenant=tenant)
    save_form = TenantMembershipAdmin.save_form

    def removed_meanwhile(self, request, form, change):
        # Another admin removes the membership after this request read it, before it writes.
        _committed_elsewhere(TenantMembership.objects.filter(pk=membership.pk).delete)
        return save_form(self, request, form, change)

    monkeypatch.setattr(TenantMembershipAdmin, "save_form", removed_meanwhile)

    response = _admin(boss).post(
        f"/admin/llm_providers/tenantmembership/{membership.pk}/change/",
        {"user": member.username, "tenant": tenant.pk, "role": "admin"},
    )

    assert response.status_code == 404
    assert not TenantMembership.objects.filter(user=member).exists()
    _refused(
        client.post(PROVIDERS, {"name": "x"}, format="json"),
        403,
        "tenant_forbidden",
        "You are not a member of any active tenant.",
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["service key", "user token", "tenant"])
def test_key_or_tenant_deleted_while_its_admin_change_page_is_saved_stays_deleted(
    monkeypatch, fake, tenant, service_key, admin_user, kind
):
    from llm_providers.admin import ServiceKeyAdmin, TenantAdmin, UserTokenAdmin

    token = UserTokenFactory(user=admin_user, name="script")
    row, model_admin, url, data = {
        "service key": (service_key, ServiceKeyAdmin, "servicekey", {}),
        "user token": (token, UserTokenAdmin, "usertoken", {}),
        "tenant": (
            tenant,
            TenantAdmin,
            "tenant",
            {"timezone": "UTC", "response_cache_ttl_seconds": "600"},
        ),
    }[kind]
    save_form = model_admin.save_form

    def deleted_meanwhile(self, request, form, change):
        _committed_elsewhere(type(row).objects.filter(pk=row.pk).delete)
        return save_form(self, request, form, change)

    monkeypatch.setattr(model_admin, "save_form", deleted_meanwhile)

    response = _admin(admin_user).post(
        f"/admin/llm_providers/{url}/{row.pk}/change/",
        {"name": "renamed", "expiry_date_0": "", "expiry_date_1": "", **data},
    )

    assert response.status_code == 404
    assert not type(row).objects.filter(pk=row.pk).exists()


def test_stream_in_flight_when_its_key_is_revoked_finishes_and_no_new_one_starts(
    fake, tenant, service_key, admin_api
):
    tenant.response_cache_ttl_seconds = 0
    tenant.save()
    client = service_key_client(service_key)
    streaming = client.post(COMPLETIONS, STREAMED_HELLO, format="json")
    events = iter(streaming.streaming_content)
    first = next(events).decode()
    assert first.startswith("event: chunk")

    revoked = admin_api.post(f"/api/v1/service-keys/{service_key.prefix}/revoke/")
    rest = b"".join(events).decode()

    assert revoked.json()["revoked"] is True
    assert "event: done" in rest and "event: error" not in rest
    assert CallLog.objects.filter(status=CallLog.Status.OK).count() == 1
    _calls_refused(client, 401, "authentication_failed", "This service key has been revoked.")
