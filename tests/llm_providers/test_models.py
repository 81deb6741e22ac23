"""Model constraints, provider type validation messages, key display and stored tokens."""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from llm_providers.encryption import UnreadableSecret
from llm_providers.models import ModelPrice, ProviderConfig
from llm_providers.provider_types import PROVIDER_TYPE_SPECS, ProviderType
from tests.factories import (
    ModelPriceFactory,
    ProviderConfigFactory,
    TenantFactory,
    UserTokenFactory,
)

pytestmark = pytest.mark.django_db

PUBLIC_URL = "https://8.8.8.8/v1"


def _errors(config: ProviderConfig) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        config.full_clean()
    return caught.value.message_dict


def _config(**fields) -> ProviderConfig:
    tenant = fields.pop("tenant", None) or TenantFactory()
    api_key = fields.pop("api_key", None)
    config = ProviderConfig(tenant=tenant, name=fields.pop("name", "main"), **fields)
    if api_key:
        config.set_api_key(api_key)
    return config


# --- constraints -------------------------------------------------------------------


def test_name_unique_within_tenant_when_saved_twice():
    config = ProviderConfigFactory(name="primary")
    with pytest.raises(IntegrityError), transaction.atomic():
        ProviderConfigFactory(tenant=config.tenant, name="primary")
    assert ProviderConfig.objects.filter(tenant=config.tenant, name="primary").count() == 1


def test_name_reusable_across_tenants():
    first = ProviderConfigFactory(name="primary")
    second = ProviderConfigFactory(name="primary")
    assert first.tenant_id != second.tenant_id
    assert ProviderConfig.objects.filter(name="primary").count() == 2


def test_second_default_refused_by_database_when_same_tenant():
    config = ProviderConfigFactory(is_default=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        ProviderConfigFactory(tenant=config.tenant, is_default=True)
    assert ProviderConfig.objects.filter(tenant=config.tenant, is_default=True).count() == 1


def test_defaults_allowed_when_tenants_differ():
    ProviderConfigFactory(is_default=True)
    ProviderConfigFactory(is_default=True)
    assert ProviderConfig.objects.filter(is_default=True).count() == 2


def test_non_default_configs_unlimited_when_same_tenant():
    tenant = TenantFactory()
    ProviderConfigFactory.create_batch(3, tenant=tenant, is_default=False)
    assert ProviderConfig.objects.filter(tenant=tenant).count() == 3


def test_second_default_message_when_validated():
    config = ProviderConfigFactory(is_default=True)
    duplicate = _config(tenant=config.tenant, name="other", provider_type="fake", is_default=True)
    assert "This tenant already has a default provider config." in _errors(duplicate)["__all__"]


def test_duplicate_name_message_when_validated():
    config = ProviderConfigFactory(name="primary")
    duplicate = _config(tenant=config.tenant, name="primary", provider_type="fake")
    assert _errors(duplicate)["__all__"] == [
        "A provider config with this name already exists in this tenant."
    ]


def test_global_price_unique_per_model_and_date():
    ModelPriceFactory(model="gpt-x", effective_from=date(2025, 1, 1))
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPriceFactory(model="gpt-x", effective_from=date(2025, 1, 1))
    assert ModelPrice.objects.filter(model="gpt-x").count() == 1


def test_tenant_price_may_shadow_global_price():
    tenant = TenantFactory()
    ModelPriceFactory(model="gpt-x", effective_from=date(2025, 1, 1))
    ModelPriceFactory(tenant=tenant, model="gpt-x", effective_from=date(2025, 1, 1))
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPriceFactory(tenant=tenant, model="gpt-x", effective_from=date(2025, 1, 1))
    assert ModelPrice.objects.filter(model="gpt-x").count() == 2


def test_negative_price_refused_by_database():
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPriceFactory(input_per_mtok=Decimal("-0.000001"))
    assert ModelPrice.objects.count() == 0


# --- provider type requirements -------------------------------------------------------


def test_openai_without_key_names_the_missing_key():
    assert _errors(_config(provider_type="openai"))["api_key"] == ["OpenAI needs an API key."]


def test_openai_valid_when_key_given():
    config = _config(provider_type="openai", api_key="sk-abcdefghijklmnop1234")
    config.full_clean()
    assert config.credentials() == {"api_key": "sk-abcdefghijklmnop1234"}


def test_bedrock_without_credentials_lists_everything_missing():
    errors = _errors(_config(provider_type="bedrock"))
    assert errors["aws_access_key_id"] == [
        "AWS Bedrock needs an AWS access key id, an AWS secret access key and a region; "
        "missing: an AWS access key id, an AWS secret access key, a region."
    ]


def test_bedrock_without_region_points_at_region():
    config = _config(provider_type="bedrock")
    config.set_aws_credentials(
        access_key_id="AKIAABCDEFGHIJKLMNOP", secret_access_key="s3cr3t/abcdefghijklmnopqrstuvwxyz"
    )
    assert _errors(config)["aws_region"] == [
        "AWS Bedrock needs an AWS access key id, an AWS secret access key and a region; "
        "missing: a region."
    ]


def test_bedrock_without_secret_access_key_points_at_that_key():
    config = _config(provider_type="bedrock", aws_region="eu-west-1")
    config.set_aws_credentials(access_key_id="AKIAABCDEFGHIJKLMNOP", secret_access_key="")
    assert _errors(config) == {
        "aws_secret_access_key": [
            "AWS Bedrock needs an AWS access key id, an AWS secret access key and a region; "
            "missing: an AWS secret access key."
        ]
    }


def test_bedrock_region_with_a_trailing_newline_is_refused():
    # botocore refuses such a region when it builds the client: every call would fail.
    config = _config(provider_type="bedrock", aws_region="us-east-1\n")
    config.set_aws_credentials(
        access_key_id="AKIAABCDEFGHIJKLMNOP", secret_access_key="s3cr3t/abcdefghijklmnopqrstuvwxyz"
    )
    assert _errors(config)["aws_region"] == [
        "“us-east-1\n” is not an AWS region; enter one such as us-east-1."
    ]


def test_bedrock_valid_with_key_pair_and_region():
    config = _config(provider_type="bedrock", aws_region="eu-west-1")
    config.set_aws_credentials(
        access_key_id="AKIAABCDEFGHIJKLMNOP", secret_access_key="s3cr3t/abcdefghijklmnopqrstuvwxyz"
    )
    config.full_clean()
    assert config.credentials() == {
        "aws_access_key_id": "AKIAABCDEFGHIJKLMNOP",
        "aws_secret_access_key": "s3cr3t/abcdefghijklmnopqrstuvwxyz",
    }


def test_azure_without_endpoint_version_and_deployment_says_so():
    errors = _errors(_config(provider_type="azure_openai", api_key="azure-key-0123456789"))
    assert errors["base_url"] == [
        "Azure OpenAI needs a base URL (the endpoint of your deployment)."
    ]
    assert errors["options"] == [
        "Azure OpenAI needs the option: api_version.",
        "Azure OpenAI needs a “deployment” (or a “deployments” map of model → deployment).",
    ]


def test_azure_valid_with_endpoint_version_and_deployment():
    config = _config(
        provider_type="azure_openai",
        api_key="azure-key-0123456789",
        base_url=PUBLIC_URL,
        options={"api_version": "2024-10-21", "deployment": "gpt-4o"},
    )
    config.full_clean()
    assert config.options["deployment"] == "gpt-4o"


def test_azure_deployments_map_must_name_deployments():
    config = _config(
        provider_type="azure_openai",
        api_key="azure-key-0123456789",
        base_url=PUBLIC_URL,
        options={"api_version": "2024-10-21", "deployments": {"gpt-4o": ""}},
    )
    assert _errors(config)["options"] == [
        "Azure “deployments” must map model names to deployment names."
    ]


@pytest.mark.parametrize("provider_type", ["ollama", "fake"])
def test_keyless_types_valid_without_key(allow_private_urls, provider_type):
    config = _config(provider_type=provider_type)
    config.full_clean()
    assert config.credentials() == {"api_key": ""}
    assert config.key_mask == ""


OLLAMA_DEFAULT_REFUSED = (
    "Ollama needs a base URL on a public address: its default endpoint "
    "(http://localhost:11434/v1) is not public. Enter one, or turn on "
    "PROVIDER_ALLOW_PRIVATE_URLS to allow private addresses."
)


def test_ollama_without_base_url_refused_when_private_urls_off(settings):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    errors = _errors(_config(provider_type="ollama"))
    assert errors["base_url"] == [OLLAMA_DEFAULT_REFUSED]


def test_ollama_with_public_base_url_valid_when_private_urls_off(settings):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    config = _config(provider_type="ollama", base_url=PUBLIC_URL)
    config.full_clean()
    assert config.base_url == PUBLIC_URL


def test_openai_compatible_needs_base_url():
    errors = _errors(_config(provider_type="openai_compatible"))
    assert errors["base_url"] == [
        "OpenAI-compatible endpoint needs a base URL (the endpoint of your deployment)."
    ]


def test_every_provider_type_has_a_spec():
    assert set(PROVIDER_TYPE_SPECS) == set(ProviderType.values)


def test_unknown_provider_type_asks_for_a_type():
    errors = _errors(_config(provider_type="nope"))
    assert errors["provider_type"] == [
        "Value 'nope' is not a valid choice.",
        "Choose a provider type.",
    ]


def test_unknown_option_lists_allowed_ones():
    errors = _errors(_config(provider_type="fake", options={"colour": "red"}))
    assert errors["options"] == [
        "Unknown option for Fake (demo and tests): colour. Allowed: chunk_latency_ms, "
        "fail_first, failure, latency_ms, models, reply."
    ]


@pytest.mark.parametrize("value", [0, -1, 601, "30", True])
def test_timeout_out_of_range_refused(value):
    config = _config(provider_type="openai", api_key="sk-abcdefghijklmnop1234")
    config.options = {"timeout": value}
    assert _errors(config)["options"] == [
        "Option “timeout” must be a number of seconds greater than 0 and at most 600."
    ]


@pytest.mark.parametrize("value", [0.001, 600])
def test_timeout_at_the_edges_of_its_range_accepted(value):
    config = _config(provider_type="openai", api_key="sk-abcdefghijklmnop1234")
    config.options = {"timeout": value, "connect_timeout": value}
    config.full_clean()
    assert config.options == {"timeout": value, "connect_timeout": value}


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"organization": {"x": [1, 2]}}, "organization"),
        ({"project": 12345}, "project"),
        ({"organization": "org-1\r\nX-Injected: 1"}, "organization"),
        ({"project": "p" * 201}, "project"),
    ],
)
def test_openai_header_option_of_wrong_type_refused(options, name):
    config = _config(provider_type="openai", api_key="sk-abcdefghijklmnop1234", options=options)
    assert _errors(config)["options"] == [
        f"Option “{name}” must be a text of at most 200 characters without spaces or control "
        "characters."
    ]


def test_azure_api_version_and_deployment_of_wrong_type_refused():
    config = _config(
        provider_type="azure_openai",
        api_key="azure-key-0123456789",
        base_url=PUBLIC_URL,
        options={"api_version": ["2024-10-21"], "deployment": 4},
    )
    assert _errors(config)["options"] == [
        "Option “api_version” must be a text of at most 200 characters without spaces or "
        "control characters.",
        "Option “deployment” must be a text of at most 200 characters without spaces or "
        "control characters.",
    ]


def test_openai_organization_and_project_accepted_when_texts():
    config = _config(
        provider_type="openai",
        api_key="sk-abcdefghijklmnop1234",
        options={"organization": "org-Abc123", "project": "proj_Xyz789"},
    )
    config.full_clean()
    assert config.options == {"organization": "org-Abc123", "project": "proj_Xyz789"}


def test_options_with_unpaired_surrogate_refused():
    config = _config(provider_type="fake", options={"reply": "\ud800"})
    assert _errors(config)["options"] == [
        "Options must not contain unpaired surrogates (such as \\ud800)."
    ]


def test_options_nested_too_deep_refused():
    nested: list = []
    for _ in range(350):
        nested = [nested]
    config = _config(provider_type="fake", options={"models": nested})
    assert _errors(config)["options"] == ["Options must not be nested more than 64 levels deep."]


def test_default_model_must_be_allowed():
    config = _config(
        provider_type="fake", allowed_models=["fake-large"], default_model="fake-small"
    )
    assert _errors(config)["default_model"] == [
        "The default model “fake-small” is not among the allowed models."
    ]


def test_allowed_models_must_be_names():
    config = _config(provider_type="fake", allowed_models="fake-small")
    assert _errors(config)["allowed_models"] == ["Allowed models must be a list of model names."]


def test_inactive_config_cannot_be_default():
    config = _config(provider_type="fake", is_active=False, is_default=True)
    assert _errors(config)["is_default"] == [
        "An inactive provider config cannot be the tenant default."
    ]


def test_base_url_scheme_checked_on_clean():
    config = _config(provider_type="openai_compatible", base_url="ftp://8.8.8.8/")
    assert _errors(config)["base_url"] == ["The base URL must start with http:// or https://."]


def test_unknown_timezone_refused():
    tenant = TenantFactory.build(timezone="Mars/Olympus")
    with pytest.raises(ValidationError) as caught:
        tenant.full_clean()
    assert caught.value.message_dict["timezone"] == [
        "“Mars/Olympus” is not a known time zone, e.g. UTC or Europe/Paris."
    ]


@pytest.mark.parametrize(
    "slug", ["deadbeefdeadbeefdeadbeefdeadbeef", "0b5f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"]
)
def test_slug_that_reads_as_an_id_refused(slug):
    # The API takes a tenant's slug or id in one place and reads such a value as an id.
    tenant = TenantFactory.build(slug=slug)
    with pytest.raises(ValidationError) as caught:
        tenant.full_clean()
    assert caught.value.message_dict["slug"] == [
        f"“{slug}” reads as a tenant id (a UUID) where the API takes a slug or an id: "
        "choose a slug that is not one."
    ]


# --- key display ---------------------------------------------------------------------------


def test_mask_shows_vendor_prefix_and_last_four():
    config = ProviderConfigFactory(provider_type="openai", api_key="sk-proj-Zx81Qm0PaL77abcd")
    assert config.key_mask == "sk-proj-…abcd"
    assert (config.key_prefix, config.key_last4) == ("sk-proj-", "abcd")


def test_mask_hides_everything_when_key_is_short():
    config = ProviderConfigFactory(provider_type="openai", api_key="short-key")
    assert config.key_mask == "••••"
    assert config.key_last4 == ""


def test_mask_without_known_prefix_shows_last_four_only():
    config = ProviderConfigFactory(provider_type="mistral", api_key="Qm0PaL77Zx81wxyz")
    assert config.key_mask == "…wxyz"


def test_bedrock_mask_shows_access_key_id_not_secret():
    config = _config(provider_type="bedrock", aws_region="us-east-1")
    config.set_aws_credentials(
        access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCY"
    )
    assert config.key_mask == "AKIA…MPLE"
    assert (
        config.key_fingerprint
        == (hashlib.sha256(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCY").hexdigest()[:16])
    )


def test_fingerprint_is_sha256_prefix_of_key():
    config = ProviderConfigFactory(provider_type="openai", api_key="sk-abcdefghijklmnop1234")
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert stored.key_fingerprint == hashlib.sha256(b"sk-abcdefghijklmnop1234").hexdigest()[:16]
    assert len(stored.key_fingerprint) == 16


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latency_ms": "x"}, "Option “latency_ms” must be a whole number from 0 to 60000."),
        ({"fail_first": -1}, "Option “fail_first” must be a whole number from 0 to 60000."),
        ({"failure": "sometimes"}, "Option “failure” must be one of: authentication, "),
        ({"models": "fake-small"}, "Option “models” must be a list of model names."),
        ({"reply": 42}, "Option “reply” must be a string."),
    ],
)
def test_fake_options_are_checked(options, message):
    config = ProviderConfigFactory.build(
        tenant=TenantFactory(), provider_type="fake", options=options
    )
    with pytest.raises(ValidationError) as caught:
        config.full_clean()
    assert caught.value.message_dict["options"][0].startswith(message)


# --- keys that cannot be sent ---------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "sk-tést-abcdefghijklmnop",
        "sk-abc defghijklmnop",
        "sk-abcdefgh\nijklmnop",
        "sk-abc\u200bdef",
    ],
)
def test_key_with_a_character_no_http_header_carries_is_refused_without_quoting_it(key):
    errors = _errors(_config(provider_type="openai", api_key=key))

    assert errors["api_key"] == [
        "The API key holds a character that cannot be sent to the provider (a space, a line "
        "break, an accented letter or a symbol outside ASCII): copy the key again, whole and "
        "alone."
    ]
    assert key not in str(errors) and "ijklmnop" not in str(errors)


def test_aws_secret_with_a_character_outside_ascii_is_refused():
    config = _config(provider_type="bedrock", aws_region="us-east-1")
    config.set_aws_credentials(access_key_id="AKIAEXAMPLE123", secret_access_key="wJalr«XUtn»")

    assert list(_errors(config)) == ["aws_secret_access_key"]


def test_blanks_around_a_pasted_key_are_not_part_of_it():
    config = _config(provider_type="openai", api_key="  sk-abcdefghijklmnop1234\n")
    config.full_clean()

    assert config.credentials() == {"api_key": "sk-abcdefghijklmnop1234"}
    assert config.key_last4 == "1234"


def test_new_access_key_id_keeps_a_stored_secret_that_is_unreadable():
    config = _config(provider_type="bedrock", aws_region="us-east-1")
    unreadable = UnreadableSecret("gAAAA-ciphertext")
    config.aws_secret_access_key = unreadable

    config.set_aws_credentials(access_key_id=" AKIAEXAMPLE123 ", secret_access_key=unreadable)

    assert config.aws_access_key_id == "AKIAEXAMPLE123"
    assert config.aws_secret_access_key is unreadable


@pytest.mark.postgres
def test_user_token_row_holds_no_part_of_the_token():
    user_token = UserTokenFactory(name="nightly")
    prefix, _, secret = user_token.secret.partition(".")

    # every column of the row, as PostgreSQL prints it
    with connection.cursor() as cursor:
        cursor.execute("SELECT t::text FROM llm_providers_usertoken t")
        (row,) = cursor.fetchone()

    assert prefix in row
    assert "nightly" in row
    assert user_token.secret not in row
    pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
    assert [piece for piece in pieces if piece in row] == []
    assert hashlib.sha512(user_token.secret.encode()).hexdigest() in row
