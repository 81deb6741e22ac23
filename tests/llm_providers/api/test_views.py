"""Provider config and service key endpoints: CRUD, connection tests, history, masking."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

from llm_providers.api.health import BROKER_TIMEOUT_SECONDS, health_broker
from llm_providers.models import ProviderConfig, ServiceKey
from tests.api.fixtures import service_key_client
from tests.factories import CallLogFactory, ProviderConfigFactory, ServiceKeyFactory

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"
SERVICE_KEYS = "/api/v1/service-keys/"
OPENAI_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789WXYZ"


def _history(instance) -> list[LogEntry]:
    return list(LogEntry.objects.filter(object_id=str(instance.pk)).order_by("id"))


# --- list and retrieve ---------------------------------------------------------


def test_provider_list_shows_masked_key_only_when_key_stored(admin_api, tenant):
    ProviderConfigFactory(
        tenant=tenant, name="openai-main", provider_type="openai", api_key=OPENAI_KEY
    )

    response = admin_api.get(PROVIDERS)

    assert response.status_code == 200
    [item] = response.json()["results"]
    assert item["name"] == "openai-main"
    assert item["key_mask"] == "sk-proj-…WXYZ"
    assert item["has_key"] is True
    assert "api_key" not in item and "key_fingerprint" not in item


def test_provider_list_is_paginated_in_priority_order_when_several(admin_api, tenant):
    ProviderConfigFactory(tenant=tenant, name="b", priority=20)
    ProviderConfigFactory(tenant=tenant, name="a", priority=10)
    ProviderConfigFactory(tenant=tenant, name="c", priority=30)

    response = admin_api.get(PROVIDERS, {"page_size": 2})

    body = response.json()
    assert body["count"] == 3
    assert [p["name"] for p in body["results"]] == ["a", "b"]
    assert body["next"].endswith("page=2&page_size=2")


def test_provider_retrieve_answers_404_when_id_is_not_a_uuid(admin_api):
    response = admin_api.get(f"{PROVIDERS}not-a-uuid/")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not found.", "fields": {}, "extra": {}}
    }


@pytest.mark.parametrize("path", [PROVIDERS, "/api/v1/calls/", "/api/v1/usage/summary/"])
def test_list_answers_400_when_query_has_more_parameters_than_allowed(admin_api, path, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    query = "&".join(f"x{n}=1" for n in range(11))

    response = admin_api.get(f"{path}?{query}")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "bad_request",
            "message": "The request has more parameters than the 10 this API accepts.",
            "fields": {},
            "extra": {"max_parameters": 10},
        }
    }


def test_api_answers_400_in_error_shape_when_host_is_not_allowed(admin_api):
    response = admin_api.get(PROVIDERS, HTTP_HOST="attacker.example")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "bad_request",
            "message": "The request was refused as malformed.",
            "fields": {},
            "extra": {},
        }
    }


@pytest.mark.parametrize(
    "path", ["/api/v1/no-such-thing/", "/api/v1/", "/api/", "/api", "/api/v2/providers/"]
)
def test_unknown_api_path_answers_404_in_error_shape(admin_api, path):
    response = admin_api.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not found.", "fields": {}, "extra": {}}
    }


def test_unknown_path_outside_the_api_answers_django_page(admin_api):
    response = admin_api.get("/apis/")

    assert response.status_code == 404
    assert response["Content-Type"] == "text/html; charset=utf-8"


# --- create --------------------------------------------------------------------


def test_provider_create_stores_encrypted_key_and_records_history(admin_api, admin_user, tenant):
    response = admin_api.post(
        PROVIDERS,
        {
            "name": "openai-main",
            "provider_type": "openai",
            "api_key": OPENAI_KEY,
            "default_model": "gpt-4o-mini",
            "is_default": True,
        },
    )

    assert response.status_code == 201, response.json()
    config = ProviderConfig.objects.get(tenant=tenant, name="openai-main")
    assert config.api_key == OPENAI_KEY
    assert config.is_default is True
    assert response.json()["key_mask"] == "sk-proj-…WXYZ"
    [entry] = _history(config)
    assert (entry.user_id, entry.action_flag, entry.get_change_message()) == (
        admin_user.pk,
        ADDITION,
        "Added.",
    )


def test_provider_create_answers_field_errors_when_key_missing(admin_api, tenant):
    response = admin_api.post(PROVIDERS, {"name": "openai-main", "provider_type": "openai"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"] == {"api_key": ["OpenAI needs an API key."]}
    assert "api_key: OpenAI needs an API key." in error["message"]
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_provider_create_answers_400_when_key_holds_a_character_it_cannot_send(admin_api, tenant):
    key = "sk-proj-abcdéfghijklmnop9876"
    response = admin_api.post(
        PROVIDERS, {"name": "openai-main", "provider_type": "openai", "api_key": key}
    )

    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["api_key"]
    assert message.startswith("The API key holds a character that cannot be sent")
    assert "9876" not in response.content.decode()
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("default_model", "fake\nsmall"),
        ("default_model", "fake-small\x7f"),
        ("allowed_models", ["fake-small", "fake\tlarge"]),
    ],
)
def test_provider_create_answers_400_when_a_model_name_holds_a_control_character(
    admin_api, tenant, field, value
):
    # given a model name no call could name: complete() refuses control characters
    body = {"name": "fake-main", "provider_type": "fake", field: value}

    response = admin_api.post(PROVIDERS, body, format="json")

    # then the config is refused on that field, rather than sending the name on
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["fields"] == {
        field: ["A model name must not contain control characters (such as a line break)."]
    }
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize(
    "region", ["us-east-1.example.com", "eu west 1", "EU-WEST-1", "us-east-1/"]
)
def test_provider_create_answers_400_when_bedrock_region_is_not_a_region(admin_api, tenant, region):
    body = {
        "name": "bedrock-main",
        "provider_type": "bedrock",
        "aws_access_key_id": "AKIAABCDEFGHIJKLMNOP",
        "aws_secret_access_key": "s3cr3t/abcdefghijklmnopqrstuvwxyz",
        "aws_region": region,
    }

    response = admin_api.post(PROVIDERS, body)

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "aws_region": [f"“{region}” is not an AWS region; enter one such as us-east-1."]
    }
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize("region", ["us-east-1", "us-gov-west-1", "ap-southeast-2"])
def test_provider_create_accepts_bedrock_region(admin_api, tenant, region):
    body = {
        "name": "bedrock-main",
        "provider_type": "bedrock",
        "aws_access_key_id": "AKIAABCDEFGHIJKLMNOP",
        "aws_secret_access_key": "s3cr3t/abcdefghijklmnopqrstuvwxyz",
        "aws_region": region,
    }

    response = admin_api.post(PROVIDERS, body)

    assert response.status_code == 201
    assert ProviderConfig.objects.get(tenant=tenant).aws_region == region


def test_provider_create_answers_400_when_name_taken(admin_api, tenant):
    ProviderConfigFactory(tenant=tenant, name="fake")

    response = admin_api.post(PROVIDERS, {"name": "fake", "provider_type": "fake"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "name": ["A provider config with this name already exists in this tenant."]
    }
    assert ProviderConfig.objects.filter(tenant=tenant).count() == 1


def test_provider_rename_answers_400_on_name_when_name_taken(admin_api, tenant):
    ProviderConfigFactory(tenant=tenant, name="taken")
    config = ProviderConfigFactory(tenant=tenant, name="mine")

    response = admin_api.patch(f"{PROVIDERS}{config.pk}/", {"name": "taken"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["fields"] == {
        "name": ["A provider config with this name already exists in this tenant."]
    }
    assert error["message"] == (
        "Invalid input: name: A provider config with this name already exists in this tenant."
    )
    config.refresh_from_db()
    assert config.name == "mine"


def test_provider_create_answers_400_when_options_hold_nul(admin_api, tenant):
    response = admin_api.post(
        PROVIDERS, {"name": "f", "provider_type": "fake", "options": {"reply": "a\x00b"}}
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "options": ["Options must not contain NUL characters."]
    }


def test_provider_create_answers_400_when_ollama_default_endpoint_is_loopback(
    admin_api, tenant, settings
):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False

    response = admin_api.post(PROVIDERS, {"name": "local", "provider_type": "ollama"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"] == {
        "base_url": [
            "Ollama needs a base URL on a public address: its default endpoint "
            "(http://localhost:11434/v1) is not public. Enter one, or turn on "
            "PROVIDER_ALLOW_PRIVATE_URLS to allow private addresses."
        ]
    }
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_provider_create_accepts_ollama_default_endpoint_when_private_urls_on(
    admin_api, tenant, allow_private_urls
):
    response = admin_api.post(PROVIDERS, {"name": "local", "provider_type": "ollama"})

    assert response.status_code == 201, response.json()
    assert response.json()["base_url"] == ""


def test_provider_create_answers_400_when_options_hold_unpaired_surrogate(admin_api, tenant):
    body = '{"name": "f", "provider_type": "fake", "options": {"reply": "\\ud800"}}'

    response = admin_api.post(PROVIDERS, body, content_type="application/json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"] == {
        "options": ["Options must not contain unpaired surrogates (such as \\ud800)."]
    }
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_provider_create_answers_400_when_options_nested_deep(admin_api, tenant):
    depth = 350
    body = (
        '{"name": "f", "provider_type": "fake", "options": {"models": '
        + "[" * depth
        + "]" * depth
        + "}}"
    )

    response = admin_api.post(PROVIDERS, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "options": ["Options must not be nested more than 64 levels deep."]
    }
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_provider_create_answers_400_when_header_options_are_not_texts(admin_api, tenant):
    response = admin_api.post(
        PROVIDERS,
        {
            "name": "openai-main",
            "provider_type": "openai",
            "api_key": OPENAI_KEY,
            "options": {"organization": {"x": [1, 2]}, "project": 12345},
        },
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "options": [
            "Option “organization” must be a text of at most 200 characters without spaces or "
            "control characters.",
            "Option “project” must be a text of at most 200 characters without spaces or "
            "control characters.",
        ]
    }
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize("failure", [{"kind": "timeout"}, ["timeout"]])
def test_provider_create_answers_400_when_fake_failure_is_not_a_text(admin_api, tenant, failure):
    response = admin_api.post(
        PROVIDERS, {"name": "fake", "provider_type": "fake", "options": {"failure": failure}}
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "options": [
            "Option “failure” must be one of: authentication, bad_request, context_too_long, "
            "rate_limited, refused, timeout, unavailable."
        ]
    }
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_provider_create_answers_400_when_provider_type_unknown(admin_api):
    response = admin_api.post(PROVIDERS, {"name": "x", "provider_type": "skynet"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "provider_type": ['"skynet" is not a valid choice.']
    }


# --- update --------------------------------------------------------------------


def test_provider_put_keeps_stored_key_when_key_omitted(admin_api, tenant):
    config = ProviderConfigFactory(
        tenant=tenant, name="openai-main", provider_type="openai", api_key=OPENAI_KEY
    )

    response = admin_api.put(
        f"{PROVIDERS}{config.pk}/",
        {"name": "openai-renamed", "provider_type": "openai", "priority": 5},
    )

    assert response.status_code == 200, response.json()
    config.refresh_from_db()
    assert (config.name, config.priority, config.api_key) == ("openai-renamed", 5, OPENAI_KEY)


def test_provider_put_resets_omitted_fields_to_defaults(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant, rpm_limit=60, options={"latency_ms": 5})

    response = admin_api.put(
        f"{PROVIDERS}{config.pk}/", {"name": config.name, "provider_type": "fake"}
    )

    assert response.status_code == 200
    config.refresh_from_db()
    assert (config.rpm_limit, config.options, config.default_model) == (None, {}, "")


def test_provider_patch_records_changed_fields_without_values(admin_api, admin_user, tenant):
    config = ProviderConfigFactory(
        tenant=tenant, name="openai-main", provider_type="openai", api_key=OPENAI_KEY
    )
    new_key = "sk-proj-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210abcd"

    response = admin_api.patch(
        f"{PROVIDERS}{config.pk}/", {"api_key": new_key, "priority": 7, "name": config.name}
    )

    assert response.status_code == 200
    assert response.json()["key_mask"] == "sk-proj-…abcd"
    [entry] = _history(config)
    assert entry.action_flag == CHANGE
    assert entry.user_id == admin_user.pk
    assert json.loads(entry.change_message) == [{"changed": {"fields": ["Api key", "Priority"]}}]
    assert new_key not in entry.change_message


def test_provider_create_hides_whole_key_when_little_follows_the_public_prefix(admin_api, tenant):
    response = admin_api.post(
        PROVIDERS, {"name": "openai-short", "provider_type": "openai", "api_key": "sk-proj-wxyz"}
    )

    assert response.status_code == 201, response.json()
    assert response.json()["key_mask"] == "••••"
    assert "wxyz" not in response.content.decode()
    config = ProviderConfig.objects.get(tenant=tenant, name="openai-short")
    assert (config.key_prefix, config.key_last4) == ("sk-proj-", "")


def test_provider_patch_records_nothing_when_nothing_changed(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant, priority=3)

    response = admin_api.patch(f"{PROVIDERS}{config.pk}/", {"priority": 3})

    assert response.status_code == 200
    assert _history(config) == []


def test_provider_patch_making_default_replaces_previous_default(admin_api, tenant):
    old = ProviderConfigFactory(tenant=tenant, is_default=True)
    new = ProviderConfigFactory(tenant=tenant)

    response = admin_api.patch(f"{PROVIDERS}{new.pk}/", {"is_default": True})

    assert response.status_code == 200
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.is_default, new.is_default) == (False, True)


def test_provider_create_stores_allowed_models_once_each_in_order_as_the_admin_does(
    admin_api, tenant
):
    response = admin_api.post(
        PROVIDERS,
        {
            "name": "fake-main",
            "provider_type": "fake",
            "allowed_models": ["fake-large", "fake-small", "fake-large", " fake-small "],
        },
    )

    assert response.status_code == 201, response.content
    assert response.json()["allowed_models"] == ["fake-large", "fake-small"]
    config = ProviderConfig.objects.get(tenant=tenant, name="fake-main")
    assert config.allowed_models == ["fake-large", "fake-small"]


def test_provider_patch_stores_allowed_models_once_each(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant, default_model="")

    response = admin_api.patch(f"{PROVIDERS}{config.pk}/", {"allowed_models": ["a", "a", " b "]})

    assert response.status_code == 200, response.content
    config.refresh_from_db()
    assert config.allowed_models == ["a", "b"]


def test_provider_patch_answers_400_and_keeps_row_when_invalid(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant, default_model="fake-small")

    response = admin_api.patch(f"{PROVIDERS}{config.pk}/", {"allowed_models": ["fake-large"]})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "default_model": ["The default model “fake-small” is not among the allowed models."]
    }
    config.refresh_from_db()
    assert config.allowed_models == []


def test_provider_patch_moving_endpoint_needs_the_key_again(admin_api, tenant):
    config = ProviderConfigFactory(
        tenant=tenant,
        provider_type="openai_compatible",
        base_url="https://8.8.8.8/v1",
        api_key="sk-stored-key-0123456789abcd",
    )

    response = admin_api.patch(f"{PROVIDERS}{config.pk}/", {"base_url": "https://1.1.1.1/v1"})

    assert response.status_code == 400
    assert "enter the key again" in response.json()["error"]["fields"]["api_key"][0]
    config.refresh_from_db()
    assert config.base_url == "https://8.8.8.8/v1"


def test_provider_patch_to_the_fake_type_drops_the_stored_key(admin_api, tenant):
    config = ProviderConfigFactory(
        tenant=tenant, provider_type="openai", api_key="sk-stored-key-0123456789abcd"
    )

    response = admin_api.patch(
        f"{PROVIDERS}{config.pk}/", {"provider_type": "fake", "default_model": "fake-small"}
    )

    assert response.status_code == 200
    assert (response.json()["provider_type"], response.json()["key_mask"]) == ("fake", "")
    config.refresh_from_db()
    assert config.api_key is None


# --- delete --------------------------------------------------------------------


def test_provider_delete_answers_204_and_records_deletion_when_unused(
    admin_api, admin_user, tenant
):
    config = ProviderConfigFactory(tenant=tenant, name="spare")
    config_id = config.pk

    response = admin_api.delete(f"{PROVIDERS}{config_id}/")

    assert response.status_code == 204
    assert not ProviderConfig.objects.filter(pk=config_id).exists()
    entry = LogEntry.objects.get(object_id=str(config_id))
    assert (entry.action_flag, entry.user_id, entry.object_repr) == (
        DELETION,
        admin_user.pk,
        "spare (Fake (demo and tests))",
    )


def test_provider_delete_deactivates_and_answers_200_when_call_logs_use_it(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant, is_default=True)
    CallLogFactory(tenant=tenant, provider_config=config)

    response = admin_api.delete(f"{PROVIDERS}{config.pk}/")

    assert response.status_code == 200
    assert (response.json()["is_active"], response.json()["is_default"]) == (False, False)
    config.refresh_from_db()
    assert (config.is_active, config.is_default) == (False, False)
    [entry] = _history(config)
    assert (entry.action_flag, entry.get_change_message()) == (
        CHANGE,
        "Deactivated instead of deleted: referred to by 1 call log.",
    )


def test_provider_delete_again_of_a_deactivated_config_changes_and_records_nothing(
    admin_api, tenant
):
    config = ProviderConfigFactory(tenant=tenant)
    CallLogFactory(tenant=tenant, provider_config=config)
    admin_api.delete(f"{PROVIDERS}{config.pk}/")
    config.refresh_from_db()
    deactivated_at = config.updated_at

    response = admin_api.delete(f"{PROVIDERS}{config.pk}/")

    assert response.status_code == 200
    assert response.json()["is_active"] is False
    config.refresh_from_db()
    # Unchanged: no new config version (caches, adapters) and one history entry only.
    assert config.updated_at == deactivated_at
    assert len(_history(config)) == 1


# --- connection test -----------------------------------------------------------


def test_provider_test_answers_models_when_fake_provider_ok(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant, options={"models": ["fake-a", "fake-b"]})

    response = admin_api.post(f"{PROVIDERS}{config.pk}/test/")

    assert response.status_code == 200
    body = response.json()
    assert (body["ok"], body["models"], body["error"]) == (True, ["fake-a", "fake-b"], "")
    config.refresh_from_db()
    assert config.last_test_status == ProviderConfig.TestStatus.OK


def test_provider_test_answers_scrubbed_error_when_fake_rejects_key(admin_api, tenant):
    config = ProviderConfigFactory(tenant=tenant, options={"failure": "authentication"})

    response = admin_api.post(f"{PROVIDERS}{config.pk}/test/")

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False
    assert body["models"] == []
    assert body["error"] == "provider_authentication: Fake provider rejected the key."
    config.refresh_from_db()
    assert (config.last_test_status, config.last_test_error) == (
        ProviderConfig.TestStatus.ERROR,
        "provider_authentication: Fake provider rejected the key.",
    )


# --- service keys ----------------------------------------------------------------


def test_service_key_create_shows_secret_once_and_stores_only_hash(admin_api, admin_user, tenant):
    response = admin_api.post(SERVICE_KEYS, {"name": "billing"})

    assert response.status_code == 201
    body = response.json()
    service_key = ServiceKey.objects.get(prefix=body["prefix"])
    assert service_key.tenant == tenant
    assert body["key"].startswith(f"{body['prefix']}.")
    assert service_key.is_valid(body["key"])
    assert body["key"] not in service_key.hashed_key
    listed = admin_api.get(SERVICE_KEYS).json()["results"]
    assert listed == [{k: v for k, v in body.items() if k != "key"}]
    assert LogEntry.objects.get(object_id=service_key.pk).user_id == admin_user.pk


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_service_key_create_response_may_not_be_stored_by_any_cache(admin_api, tenant, accept):
    # The response holds the secret: no browser or proxy cache may keep a copy.
    response = admin_api.post(SERVICE_KEYS, {"name": "billing"}, HTTP_ACCEPT=accept)

    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]


def test_service_key_created_through_api_authenticates(admin_api, tenant):
    secret = admin_api.post(SERVICE_KEYS, {"name": "billing"}).json()["key"]
    client = service_key_client(type("Key", (), {"secret": secret}))

    response = client.get(PROVIDERS)

    assert response.status_code == 200


def test_service_key_create_answers_400_when_expiry_in_past(admin_api, tenant):
    response = admin_api.post(SERVICE_KEYS, {"name": "old", "expiry_date": "2001-01-01T00:00:00Z"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "expiry_date": ["The expiry date must be in the future."]
    }
    assert not ServiceKey.objects.exists()


def test_service_key_revoke_stops_key_and_records_history(admin_api, admin_user, tenant):
    service_key = ServiceKeyFactory(tenant=tenant)

    response = admin_api.post(f"{SERVICE_KEYS}{service_key.prefix}/revoke/")

    assert response.status_code == 200
    assert response.json()["revoked"] is True
    service_key.refresh_from_db()
    assert service_key.revoked is True
    assert service_key_client(service_key).get(PROVIDERS).status_code == 401
    [entry] = _history(service_key)
    assert entry.get_change_message() == "Changed Revoked."


def test_service_key_revoke_is_idempotent_when_already_revoked(admin_api, tenant):
    service_key = ServiceKeyFactory(tenant=tenant, revoked=True)

    response = admin_api.post(f"{SERVICE_KEYS}{service_key.prefix}/revoke/")

    assert response.status_code == 200
    assert _history(service_key) == []


# --- health ----------------------------------------------------------------------


@pytest.mark.parametrize("broker_url", ["", "memory://", "memory://localhost/"])
def test_health_answers_200_without_credentials_when_components_up(
    anonymous_api, settings, broker_url
):
    # no broker: the settings make that the in-process transport, tasks run eagerly
    settings.CELERY_BROKER_URL = broker_url

    response = anonymous_api.get("/api/v1/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["components"]["database"]["status"] == "ok"
    assert body["components"]["cache"]["status"] == "ok"
    assert body["components"]["broker"] == {
        "status": "not configured",
        "latency_ms": None,
        "error": "",
    }


def test_health_answers_503_naming_broker_when_broker_down(anonymous_api, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    response = anonymous_api.get("/api/v1/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["components"]["broker"]["status"] == "error"
    assert body["components"]["broker"]["error"] == "OperationalError"
    assert "127.0.0.1" not in response.content.decode()


def test_health_answers_within_seconds_when_broker_hangs(settings, silent_server):
    # given a broker that accepts connections and never answers
    settings.CELERY_BROKER_URL = f"redis://{silent_server}/0"
    outcome = []
    probe = threading.Thread(target=lambda: outcome.append(health_broker()), daemon=True)

    # when the broker is probed
    started = time.monotonic()
    probe.start()
    probe.join(timeout=10)

    # then the probe gives up within its timeout and reports the broker down
    assert outcome, "the broker probe hung"
    assert time.monotonic() - started < 2 * BROKER_TIMEOUT_SECONDS + 1
    assert outcome[0].status == "error"
    assert outcome[0].error == "OperationalError"


@pytest.mark.redis
def test_health_reports_broker_ok_when_broker_answers(anonymous_api, settings):
    settings.CELERY_BROKER_URL = settings.REDIS_URL

    response = anonymous_api.get("/api/v1/health/")

    assert response.status_code == 200
    assert response.json()["components"]["broker"]["status"] == "ok"
    assert response.json()["components"]["cache"]["status"] == "ok"


def test_urls_answer_without_trailing_slash(admin_api, tenant):
    created = admin_api.post("/api/v1/providers", {"name": "f", "provider_type": "fake"})
    config_id = created.json()["id"]

    detail = admin_api.get(f"/api/v1/providers/{config_id}")
    tested = admin_api.post(f"/api/v1/providers/{config_id}/test")

    assert (created.status_code, detail.status_code, tested.status_code) == (201, 200, 200)
    assert detail.json()["name"] == "f"
