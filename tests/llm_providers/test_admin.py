"""The provider config admin: write-only keys, writes through services, connection tests."""

from __future__ import annotations

import datetime as dt
import json
import re
from html import unescape

import pytest
from django.conf import settings
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.messages import get_messages
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse
from django.utils.html import strip_tags
from rest_framework.test import APIClient

from llm_providers.forms import options_help_text
from llm_providers.models import (
    ProviderConfig,
    ServiceKey,
    Tenant,
    TenantMembership,
    UserToken,
)
from llm_providers.provider_types import ProviderType
from llm_providers.selectors import user_token_for_key
from overrides.models import RoutingOverride
from tests.factories import (
    BudgetFactory,
    CallLogFactory,
    ProviderConfigFactory,
    RoutingOverrideFactory,
    ServiceKeyFactory,
    TenantMembershipFactory,
    UserFactory,
    UserTokenFactory,
)
from usage.models import Budget, CallLog

pytestmark = pytest.mark.django_db

KEY = "sk-proj-Q7mZ2xLp9WcR4tYv8NbK3hJd"
AWS_KEY_ID = "AKIAQ7MZ2XLP9WCR4TYV"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ7mZ2xLp9"

CHANGELIST = "admin:llm_providers_providerconfig_changelist"
ADD = "admin:llm_providers_providerconfig_add"


def _change_url(config) -> str:
    return reverse("admin:llm_providers_providerconfig_change", args=[config.pk])


def _test_url(config) -> str:
    return reverse("admin:llm_providers_providerconfig_test_connection", args=[config.pk])


def _form_data(config=None, **overrides) -> dict:
    data = {
        "tenant": "",
        "name": "",
        "provider_type": "fake",
        "default_model": "",
        "allowed_models": "",
        "base_url": "",
        "aws_region": "",
        "options": "{}",
        "is_active": "on",
        "priority": "100",
        "rpm_limit": "",
        "tpm_limit": "",
        "api_key": "",
        "aws_access_key_id": "",
        "aws_secret_access_key": "",
    }
    if config is not None:
        data.update(
            name=config.name,
            provider_type=config.provider_type,
            default_model=config.default_model,
            options=json.dumps(config.options or {}),
            priority=str(config.priority),
        )
        if config.is_default:
            data["is_default"] = "on"
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def admin_client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def openai_config(tenant):
    return ProviderConfigFactory(
        tenant=tenant, name="openai-prod", provider_type="openai", api_key=KEY
    )


# --- write-only keys --------------------------------------------------------------


def test_add_stores_key_encrypted_and_shows_only_mask(
    tenant, tenant_admin, admin_client_for, raw_column, assert_secret_absent
):
    client = admin_client_for(tenant_admin)
    response = client.post(
        reverse(ADD),
        _form_data(
            tenant=str(tenant.pk),
            name="openai-prod",
            provider_type="openai",
            default_model="gpt-4o-mini",
            api_key=KEY,
        ),
        follow=True,
    )
    assert response.status_code == 200
    config = ProviderConfig.objects.get(tenant=tenant, name="openai-prod")
    assert config.api_key == KEY
    assert KEY not in raw_column(config, "api_key")
    html = response.content.decode()
    assert "sk-proj-…" + KEY[-4:] in html
    assert_secret_absent(html, KEY)


def test_error_report_of_a_failed_save_shows_the_posted_keys_as_stars(
    tenant, tenant_admin, admin_client_for, monkeypatch, assert_secret_absent, error_reports
):
    # given a save that fails with an unexpected error after the keys were posted
    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr("llm_providers.admin.provider_config_create", broken)

    # when the form is posted
    response = admin_client_for(tenant_admin).post(
        reverse(ADD),
        _form_data(
            tenant=str(tenant.pk),
            name="bedrock-prod",
            provider_type="bedrock",
            aws_region="us-east-1",
            aws_access_key_id=AWS_KEY_ID,
            aws_secret_access_key=AWS_SECRET,
        ),
    )

    # then the error report (DEBUG page, mail to ADMINS, error trackers) stars the keys
    assert response.status_code == 500
    (text,) = error_reports
    assert "database went away" in text
    assert "aws_secret_access_key = '********************'" in text
    assert "aws_access_key_id = '********************'" in text
    assert "name = 'bedrock-prod'" in text
    assert_secret_absent(text, AWS_SECRET)
    assert_secret_absent(text, AWS_KEY_ID)


def test_changelist_hides_whole_key_when_little_follows_the_public_prefix(
    tenant, tenant_admin, admin_client_for
):
    ProviderConfigFactory(
        tenant=tenant, name="openai-short", provider_type="openai", api_key="sk-proj-wxyz"
    )

    response = admin_client_for(tenant_admin).get(reverse(CHANGELIST))

    html = response.content.decode()
    assert response.status_code == 200
    assert "••••" in html
    assert "wxyz" not in html


def test_add_ollama_without_base_url_shows_error_when_private_urls_off(
    tenant, tenant_admin, admin_client_for, settings
):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False

    response = admin_client_for(tenant_admin).post(
        reverse(ADD), _form_data(tenant=str(tenant.pk), name="local", provider_type="ollama")
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["base_url"] == [
        "Ollama needs a base URL on a public address: its default endpoint "
        "(http://localhost:11434/v1) is not public. Enter one, or turn on "
        "PROVIDER_ALLOW_PRIVATE_URLS to allow private addresses."
    ]
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{"reply": "\\ud800"}', "Options must not contain unpaired surrogates (such as \\ud800)."),
        ("[" * 100_000 + "]" * 100_000, "Options must not be nested more than 64 levels deep."),
        (
            '{"models": ' + "[" * 350 + "]" * 350 + "}",
            "Options must not be nested more than 64 levels deep.",
        ),
    ],
)
def test_add_with_unstorable_options_shows_form_error(
    tenant, tenant_admin, admin_client_for, options, message
):
    response = admin_client_for(tenant_admin).post(
        reverse(ADD), _form_data(tenant=str(tenant.pk), name="fake", options=options)
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["options"] == [message]
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_add_with_header_option_of_wrong_type_shows_form_error(
    tenant, tenant_admin, admin_client_for
):
    response = admin_client_for(tenant_admin).post(
        reverse(ADD),
        _form_data(
            tenant=str(tenant.pk),
            name="openai",
            provider_type="openai",
            api_key=KEY,
            options='{"organization": {"a": 1}}',
        ),
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["options"] == [
        "Option “organization” must be a text of at most 200 characters without spaces or "
        "control characters."
    ]
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_change_page_never_contains_key(
    openai_config, tenant_admin, admin_client_for, assert_secret_absent
):
    response = admin_client_for(tenant_admin).get(_change_url(openai_config))
    html = response.content.decode()
    assert response.status_code == 200
    assert f"Stored: sk-proj-…{KEY[-4:]}. Leave empty to keep it." in html
    assert 'type="password"' in html
    assert_secret_absent(html, KEY)


def test_changelist_shows_mask_type_default_and_last_test(
    openai_config, tenant_admin, admin_client_for, assert_secret_absent
):
    openai_config.is_default = True
    openai_config.save()
    response = admin_client_for(tenant_admin).get(reverse(CHANGELIST))
    html = response.content.decode()
    assert response.status_code == 200
    assert f"sk-proj-…{KEY[-4:]}" in html
    assert '<td class="field-provider_type">OpenAI</td>' in html
    assert 'class="field-is_default"><img src="/static/admin/img/icon-yes.svg" alt="True">' in html
    assert "not tested" in html
    assert_secret_absent(html, KEY)


def test_changelist_provider_type_filter_that_is_no_type_says_so(
    openai_config, tenant_admin, admin_client_for
):
    # when the list is filtered by a provider type that does not exist
    response = admin_client_for(tenant_admin).get(
        reverse(CHANGELIST), {"provider_type__exact": "openia"}
    )

    # then it says so and lists nothing, rather than an empty list that reads "no configs"
    (message,) = _messages(response)
    assert message.startswith("“openia” is not a provider type; choose one of: OpenAI, ")
    assert str(openai_config.pk) not in response.content.decode()


def test_changelist_last_test_filter_not_tested_lists_configs_never_tested(
    openai_config, tenant_admin, admin_client_for
):
    response = admin_client_for(tenant_admin).get(
        reverse(CHANGELIST), {"last_test_status__exact": ""}
    )

    assert _messages(response) == []
    assert str(openai_config.pk) in response.content.decode()


def test_provider_config_pages_write_every_empty_value_the_same_way(
    tenant, tenant_admin, admin_client_for
):
    # given a Fake config without a key, never tested
    config = ProviderConfigFactory(tenant=tenant, name="local-fake")
    client = admin_client_for(tenant_admin)

    # when its list and its page are opened
    listed = client.get(reverse(CHANGELIST)).content.decode()
    shown = client.get(_change_url(config)).content.decode()

    # then the key, the latency and the test time read "—" alike, never "-"
    row = re.search(r"<tr>.*?local-fake.*?</tr>", listed, re.S).group(0)
    cells = dict(re.findall(r'<td class="field-([a-z_]+)[^"]*">([^<]*)</td>', row))
    assert (cells["key_display"], cells["last_test_latency_ms"]) == ("—", "—")

    def readonly(field):
        within_its_row = r"(?:(?!form-row).)*?"
        pattern = rf'field-{field}">{within_its_row}<div class="readonly">([^<]*)</div>'
        return re.search(pattern, shown, re.S).group(1)

    assert [
        readonly(field)
        for field in (
            "key_display",
            "last_tested_at_utc",
            "last_test_latency_ms",
            "key_fingerprint",
        )
    ] == ["—", "—", "—", "—"]


def test_no_admin_page_contains_key(
    openai_config, superuser, admin_client_for, assert_secret_absent
):
    client = admin_client_for(superuser)
    client.post(_change_url(openai_config), _form_data(openai_config, priority="9"))
    pk = openai_config.pk
    pages = [
        reverse("admin:index"),
        reverse(CHANGELIST),
        reverse(CHANGELIST) + "?q=openai",
        reverse(ADD),
        _change_url(openai_config),
        reverse("admin:llm_providers_providerconfig_history", args=[pk]),
        reverse("admin:llm_providers_providerconfig_delete", args=[pk]),
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        assert_secret_absent(response.content.decode(), KEY)


def test_change_with_empty_key_keeps_key(openai_config, tenant_admin, admin_client_for):
    response = admin_client_for(tenant_admin).post(
        _change_url(openai_config), _form_data(openai_config, priority="5")
    )
    assert response.status_code == 302
    stored = ProviderConfig.objects.get(pk=openai_config.pk)
    assert (stored.api_key, stored.priority) == (KEY, 5)


def test_change_with_new_key_replaces_key(openai_config, tenant_admin, admin_client_for):
    response = admin_client_for(tenant_admin).post(
        _change_url(openai_config), _form_data(openai_config, api_key="sk-replacement-key-0000ABCD")
    )
    assert response.status_code == 302
    stored = ProviderConfig.objects.get(pk=openai_config.pk)
    assert stored.api_key == "sk-replacement-key-0000ABCD"
    assert stored.key_mask == "sk-…ABCD"


def test_change_of_endpoint_without_key_is_refused(tenant, tenant_admin, admin_client_for):
    config = ProviderConfigFactory(
        tenant=tenant,
        provider_type="openai_compatible",
        base_url="https://8.8.8.8/v1",
        api_key=KEY,
    )

    response = admin_client_for(tenant_admin).post(
        _change_url(config), _form_data(config, base_url="https://1.1.1.1/v1")
    )

    assert response.status_code == 200
    assert "enter the key again" in response.content.decode()
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.base_url, stored.api_key) == ("https://8.8.8.8/v1", KEY)


def test_invalid_form_does_not_echo_key(
    tenant, tenant_admin, admin_client_for, assert_secret_absent
):
    response = admin_client_for(tenant_admin).post(
        reverse(ADD),
        _form_data(tenant=str(tenant.pk), name="", provider_type="openai", api_key=KEY),
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "This field is required." in html
    assert_secret_absent(html, KEY)
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_new_key_dropped_by_an_error_elsewhere_is_asked_for_again(
    openai_config, tenant_admin, admin_client_for, assert_secret_absent
):
    # given an admin replacing the stored key while another field is invalid
    client = admin_client_for(tenant_admin)
    response = client.post(
        _change_url(openai_config),
        _form_data(openai_config, name="", api_key="sk-replacement-key-0000ABCD"),
    )

    # then the key field, which comes back empty, says the new key was not
    # kept: saving the corrected form as shown would keep the old key
    form = response.context["adminform"].form
    assert response.status_code == 200
    assert form.errors["api_key"] == [
        "Enter the key again: a typed key is never sent back to the page."
    ]
    html = response.content.decode()
    assert_secret_absent(html, "sk-replacement-key-0000ABCD")
    assert ProviderConfig.objects.get(pk=openai_config.pk).api_key == KEY
    # and the key shown is the stored one's mask, not the unsaved new key's
    key_row = re.search(r'field-key_display">.*?<div class="readonly">(.*?)</div>', html, re.S)
    assert key_row.group(1) == openai_config.key_mask == f"sk-proj-…{KEY[-4:]}"
    assert "ABCD" not in html


def _shown_value(html: str, name: str) -> str:
    """What the re-rendered form holds in field `name` (an input's value, a textarea's text)."""
    field = re.search(rf'<input [^>]*name="{name}"[^>]*>', html)
    if field is not None:
        value = re.search(r'value="([^"]*)"', field.group(0))
        return unescape(value.group(1)) if value else ""
    area = re.search(rf'<textarea [^>]*name="{name}"[^>]*>\n?(.*?)</textarea>', html, re.S)
    assert area, f"the form has no field {name}"
    return unescape(area.group(1))


def test_bedrock_form_shown_again_for_a_missing_region_keeps_the_typed_access_key_id(
    tenant, tenant_admin, admin_client_for, assert_secret_absent
):
    # given a Bedrock config typed whole but for its region
    data = _form_data(
        tenant=str(tenant.pk),
        name="bedrock",
        provider_type="bedrock",
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
        default_model="anthropic.claude-3-haiku",
        options='{"timeout": 30}',
    )

    # when it is saved
    response = admin_client_for(tenant_admin).post(reverse(ADD), data)

    # then the page asks for the region, holds the typed access key id (as text,
    # not a password field), and asks for the secret key again without showing it
    html = response.content.decode()
    assert response.status_code == 200
    assert _field_errors(html, "aws_region") == [
        "AWS Bedrock needs an AWS access key id, an AWS secret access key and a region; "
        "missing: a region."
    ]
    assert _shown_value(html, "aws_access_key_id") == AWS_KEY_ID
    assert 'type="text" name="aws_access_key_id"' in html
    assert _field_errors(html, "aws_access_key_id") == []
    assert _field_errors(html, "aws_secret_access_key") == [
        "Enter the key again: a typed key is never sent back to the page."
    ]
    assert _shown_value(html, "aws_secret_access_key") == ""
    assert_secret_absent(html, AWS_SECRET)
    assert _shown_value(html, "default_model") == "anthropic.claude-3-haiku"
    assert json.loads(_shown_value(html, "options")) == {"timeout": 30}
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()

    # and the form sent again with the region and the secret key saves the typed id
    data.update(aws_region="eu-central-1")
    saved = admin_client_for(tenant_admin).post(reverse(ADD), data)
    assert saved.status_code == 302
    assert ProviderConfig.objects.get(tenant=tenant, name="bedrock").credentials() == {
        "aws_access_key_id": AWS_KEY_ID,
        "aws_secret_access_key": AWS_SECRET,
    }


def test_bedrock_change_form_shown_again_shows_the_typed_access_key_id_never_the_stored_one(
    tenant, tenant_admin, admin_client_for, assert_secret_absent
):
    # given a stored Bedrock config
    config = ProviderConfigFactory(
        tenant=tenant, name="bedrock-main", provider_type="bedrock", aws_region="eu-west-1"
    )
    config.set_aws_credentials(access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET)
    config.save()
    client = admin_client_for(tenant_admin)
    new_key_id = "AKIAZ9YX8WV7UT6SR5QP"

    # when its page is saved with an error, once with no key typed, once with a new key id
    kept = client.post(_change_url(config), _form_data(config, aws_region="nowhere"))
    typed = client.post(
        _change_url(config),
        _form_data(config, aws_region="nowhere", aws_access_key_id=new_key_id),
    )

    # then the stored id is shown as its mask only (the Key row and the fields'
    # help), and a typed one as typed, in its field only: it is not stored
    for response in (kept, typed):
        html = response.content.decode()
        assert response.status_code == 200
        assert _field_errors(html, "aws_region") == [
            "“nowhere” is not an AWS region; enter one such as us-east-1."
        ]
        key_row = re.search(r'field-key_display">.*?<div class="readonly">(.*?)</div>', html, re.S)
        assert key_row.group(1) == f"AKIA…{AWS_KEY_ID[-4:]}"
        assert f"Stored: AKIA…{AWS_KEY_ID[-4:]}. Leave empty to keep it." in html
        assert f"…{new_key_id[-4:]}" not in html
        assert_secret_absent(html, AWS_KEY_ID)
        assert_secret_absent(html, AWS_SECRET)
    assert _shown_value(kept.content.decode(), "aws_access_key_id") == ""
    assert _shown_value(typed.content.decode(), "aws_access_key_id") == new_key_id
    config.refresh_from_db()
    assert (config.aws_access_key_id, config.aws_region) == (AWS_KEY_ID, "eu-west-1")


@pytest.mark.parametrize("provider_type", ProviderType.values)
def test_form_shown_again_with_an_error_keeps_every_typed_field_but_the_secrets(
    tenant, tenant_admin, admin_client_for, assert_secret_absent, provider_type
):
    # given every field typed, and one of them wrong whatever the type (an RPM limit of 0)
    typed = {
        "name": f"{provider_type}-main",
        "default_model": "model-a",
        "allowed_models": "model-a\nmodel-b",
        "base_url": "https://8.8.8.8/openai",
        "aws_region": "eu-west-1",
        "aws_access_key_id": AWS_KEY_ID,
        "options": '{"api_version": "2024-10-21", "deployment": "gpt-4o"}',
        "priority": "7",
        "rpm_limit": "0",
        "tpm_limit": "5000",
    }
    data = _form_data(
        tenant=str(tenant.pk),
        provider_type=provider_type,
        api_key=KEY,
        aws_secret_access_key=AWS_SECRET,
        **typed,
    )

    # when it is saved
    response = admin_client_for(tenant_admin).post(reverse(ADD), data)

    # then the page shows each field as typed, and neither secret
    html = response.content.decode()
    assert response.status_code == 200
    assert _field_errors(html, "rpm_limit") == ["Ensure this value is greater than or equal to 1."]
    for name, value in typed.items():
        shown = _shown_value(html, name)
        if name == "options":
            assert json.loads(shown) == json.loads(value)
        else:
            assert shown == value, name
    assert f'<option value="{provider_type}" selected>' in html
    assert (_shown_value(html, "api_key"), _shown_value(html, "aws_secret_access_key")) == ("", "")
    assert_secret_absent(html, KEY)
    assert_secret_absent(html, AWS_SECRET)
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_options_that_are_not_json_are_shown_again_as_typed(tenant, tenant_admin, admin_client_for):
    typed = '{"api_version": "2024-10-21", deployment: gpt-4o}'

    response = admin_client_for(tenant_admin).post(
        reverse(ADD),
        _form_data(
            tenant=str(tenant.pk),
            name="azure",
            provider_type="azure_openai",
            base_url="https://8.8.8.8/azure",
            options=typed,
            api_key=KEY,
        ),
    )

    # then the page says the JSON is wrong (not that the options it could not
    # read lack an api_version) and shows the options as typed
    html = response.content.decode()
    assert _field_errors(html, "options") == ["Enter a valid JSON."]
    assert _shown_value(html, "options") == typed
    assert _shown_value(html, "base_url") == "https://8.8.8.8/azure"


def test_key_typed_before_choosing_a_provider_type_gets_a_form_error(
    tenant, tenant_admin, admin_client_for, assert_secret_absent
):
    # given an add form whose provider type was left at "---------", with a key typed
    data = _form_data(tenant=str(tenant.pk), name="new", provider_type="", api_key=KEY)

    # when it is saved
    response = admin_client_for(tenant_admin).post(reverse(ADD), data)

    # then the form asks for the type, and nothing is saved
    html = response.content.decode()
    assert response.status_code == 200
    assert '<ul class="errorlist" id="id_provider_type_error"><li>This field is required.' in html
    assert_secret_absent(html, KEY)
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_missing_key_message_names_what_is_missing(tenant, tenant_admin, admin_client_for):
    response = admin_client_for(tenant_admin).post(
        reverse(ADD), _form_data(tenant=str(tenant.pk), name="a", provider_type="anthropic")
    )
    assert response.status_code == 200
    assert "Anthropic needs an API key." in response.content.decode()
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def _field_errors(html: str, field: str) -> list[str]:
    found = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', html)
    return re.findall(r"<li>(.*?)</li>", found.group(1)) if found else []


def test_key_over_the_maximum_length_gets_only_the_length_error(
    tenant, tenant_admin, admin_client_for, assert_secret_absent
):
    key = "sk-" + "a" * 1998 + "WXYZ"

    response = admin_client_for(tenant_admin).post(
        reverse(ADD),
        _form_data(tenant=str(tenant.pk), name="long", provider_type="openai", api_key=key),
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert _field_errors(html, "api_key") == [
        "Ensure this value has at most 2000 characters (it has 2005)."
    ]
    assert "needs an API key" not in html
    assert_secret_absent(html, key)
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_key_over_the_maximum_length_on_a_new_endpoint_gets_only_the_length_error(
    tenant, tenant_admin, admin_client_for
):
    config = ProviderConfigFactory(
        tenant=tenant,
        provider_type="openai_compatible",
        base_url="https://8.8.8.8/v1",
        api_key=KEY,
    )

    response = admin_client_for(tenant_admin).post(
        _change_url(config),
        _form_data(config, base_url="https://1.1.1.1/v1", api_key="k" * 2001),
    )

    assert response.status_code == 200
    assert _field_errors(response.content.decode(), "api_key") == [
        "Ensure this value has at most 2000 characters (it has 2001)."
    ]
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.base_url, stored.api_key) == ("https://8.8.8.8/v1", KEY)


def test_aws_secret_over_the_maximum_length_gets_only_the_length_error(
    tenant, tenant_admin, admin_client_for
):
    response = admin_client_for(tenant_admin).post(
        reverse(ADD),
        _form_data(
            tenant=str(tenant.pk),
            name="bedrock",
            provider_type="bedrock",
            aws_region="eu-central-1",
            aws_access_key_id=AWS_KEY_ID,
            aws_secret_access_key="s" * 201,
        ),
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert _field_errors(html, "aws_secret_access_key") == [
        "Ensure this value has at most 200 characters (it has 201)."
    ]
    assert "missing:" not in html
    assert not ProviderConfig.objects.filter(tenant=tenant).exists()


def test_bedrock_credentials_write_only(
    tenant, tenant_admin, admin_client_for, raw_column, assert_secret_absent
):
    client = admin_client_for(tenant_admin)
    response = client.post(
        reverse(ADD),
        _form_data(
            tenant=str(tenant.pk),
            name="bedrock",
            provider_type="bedrock",
            aws_region="eu-central-1",
            aws_access_key_id=AWS_KEY_ID,
            aws_secret_access_key=AWS_SECRET,
        ),
    )
    assert response.status_code == 302
    config = ProviderConfig.objects.get(tenant=tenant, name="bedrock")
    assert config.credentials() == {
        "aws_access_key_id": AWS_KEY_ID,
        "aws_secret_access_key": AWS_SECRET,
    }
    assert AWS_SECRET not in raw_column(config, "aws_secret_access_key")
    assert AWS_KEY_ID not in raw_column(config, "aws_access_key_id")
    for page in (reverse(CHANGELIST), _change_url(config)):
        html = client.get(page).content.decode()
        assert f"AKIA…{AWS_KEY_ID[-4:]}" in html
        assert_secret_absent(html, AWS_SECRET)
        assert_secret_absent(html, AWS_KEY_ID)


def test_unreadable_key_shown_as_such_not_as_error(openai_config, tenant_admin, admin_client_for):
    client = admin_client_for(tenant_admin)
    with override_settings(SALT_KEY=["a-salt-that-does-not-match"]):
        change = client.get(_change_url(openai_config))
        listing = client.get(reverse(CHANGELIST))
    assert change.status_code == 200
    assert listing.status_code == 200
    assert "key unreadable — enter it again" in change.content.decode()
    assert "key unreadable — enter it again" in listing.content.decode()


def test_unreadable_key_replaced_by_entering_it_again(
    openai_config, tenant_admin, admin_client_for
):
    client = admin_client_for(tenant_admin)
    with override_settings(SALT_KEY=["new-salt-only"]):
        response = client.post(
            _change_url(openai_config), _form_data(openai_config, api_key="sk-entered-again-WXYZ")
        )
        assert response.status_code == 302
        assert ProviderConfig.objects.get(pk=openai_config.pk).api_key == "sk-entered-again-WXYZ"


def test_provider_type_help_lists_requirements(tenant_admin, admin_client_for):
    html = admin_client_for(tenant_admin).get(reverse(ADD)).content.decode()
    assert (
        "<li><strong>AWS Bedrock</strong>: AWS access key id, AWS secret access key and "
        "region." in html
    )
    assert (
        "<li><strong>Azure OpenAI</strong>: API key; base URL (your endpoint); option api_version"
        in html
    )
    assert "<li><strong>Ollama</strong>: no key (local server)." in html


def test_options_help_names_the_types_that_take_a_timeout(tenant_admin, admin_client_for):
    html = admin_client_for(tenant_admin).get(reverse(ADD)).content.decode()

    help_text = re.search(r'<div class="help" id="id_options_helptext">\s*<div>(.*?)</div>', html)
    assert help_text, "the options field carries no help text"
    assert help_text.group(1) == (
        'A JSON object, e.g. {"api_version": "2024-10-21", "deployment": "gpt-4o"} '
        'for Azure or {"timeout": 30} for any type but Fake (demo and tests).'
    )


@pytest.mark.parametrize("provider_type", ProviderType.values)
def test_options_help_tells_truly_which_types_take_a_timeout(provider_type):
    config = ProviderConfig(provider_type=provider_type, options={"timeout": 30})
    excluded = options_help_text().partition('{"timeout": 30} for any type')[2]

    try:
        config.options_validate()
        refusals = []
    except ValidationError as error:
        refusals = [m for m in error.message_dict["options"] if "timeout" in m]

    # (an Azure config's missing api_version is no matter here)
    assert (not refusals) == (ProviderType(provider_type).label not in excluded)


def _provider_type_fields(html: str) -> dict:
    match = re.search(
        r'<script id="provider-type-fields" type="application/json">(.*?)</script>', html
    )
    assert match, "the form carries no provider type field map"
    return json.loads(match.group(1))


def test_add_form_hides_fields_the_chosen_provider_type_has_no_use_for(
    tenant_admin, admin_client_for
):
    html = admin_client_for(tenant_admin).get(reverse(ADD)).content.decode()

    fields = _provider_type_fields(html)
    aws = ["aws_access_key_id", "aws_secret_access_key", "aws_region"]
    assert fields["current"] == ""
    assert fields["unused"]["openai"] == aws
    assert fields["unused"]["anthropic"] == aws
    assert fields["unused"]["bedrock"] == ["api_key"]
    assert fields["unused"]["fake"] == ["api_key", *aws, "base_url"]
    # every row the script toggles is on the page, each under its own class
    for name in ["api_key", *aws, "base_url"]:
        assert f"form-row field-{name}" in html
    assert 'getElementById("id_provider_type")' in html


def test_change_form_of_bedrock_config_starts_from_its_type(
    tenant, tenant_viewer, admin_client_for
):
    config = ProviderConfigFactory(
        tenant=tenant,
        name="bedrock-main",
        provider_type="bedrock",
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
        aws_region="eu-west-1",
    )

    html = admin_client_for(tenant_viewer).get(_change_url(config)).content.decode()

    # a viewer sees the type as text, not as a select: the script starts from it
    assert _provider_type_fields(html)["current"] == "bedrock"


def test_new_default_replaces_previous_default(tenant, tenant_admin, admin_client_for):
    old = ProviderConfigFactory(tenant=tenant, name="old", is_default=True)
    response = admin_client_for(tenant_admin).post(
        reverse(ADD), _form_data(tenant=str(tenant.pk), name="new", is_default="on")
    )
    assert response.status_code == 302
    assert list(
        ProviderConfig.objects.filter(tenant=tenant, is_default=True).values_list("name", flat=True)
    ) == ["new"]
    old.refresh_from_db()
    assert old.is_default is False


def test_duplicate_name_refused_on_change(tenant, tenant_admin, admin_client_for):
    ProviderConfigFactory(tenant=tenant, name="taken")
    config = ProviderConfigFactory(tenant=tenant, name="mine")
    response = admin_client_for(tenant_admin).post(
        _change_url(config), _form_data(config, name="taken")
    )
    assert response.status_code == 200
    assert "A provider config with this name already exists in this tenant." in (
        response.content.decode()
    )
    assert ProviderConfig.objects.get(pk=config.pk).name == "mine"


def test_allowed_models_typed_one_per_line(tenant, tenant_admin, admin_client_for):
    response = admin_client_for(tenant_admin).post(
        reverse(ADD),
        _form_data(
            tenant=str(tenant.pk),
            name="lines",
            allowed_models="fake-small\nfake-large, fake-small",
            default_model="fake-large",
        ),
    )
    assert response.status_code == 302
    config = ProviderConfig.objects.get(tenant=tenant, name="lines")
    assert config.allowed_models == ["fake-small", "fake-large"]


def _delete_url(config) -> str:
    return reverse("admin:llm_providers_providerconfig_delete", args=[config.pk])


def _history(instance) -> list[tuple[int, int, str]]:
    entries = LogEntry.objects.filter(object_id=str(instance.pk)).order_by("id")
    return [(e.action_flag, e.user_id, e.get_change_message()) for e in entries]


def test_delete_of_unused_config_removes_it_and_records_deletion(
    tenant, tenant_admin, admin_client_for
):
    # given
    config = ProviderConfigFactory(tenant=tenant, name="spare")
    client = admin_client_for(tenant_admin)
    # when
    page = client.get(_delete_url(config)).content.decode()
    response = client.post(_delete_url(config), {"post": "yes"}, follow=True)
    # then
    assert "Are you sure you want to delete the provider config" in page
    assert "will be deactivated" not in page
    assert not ProviderConfig.objects.filter(pk=config.pk).exists()
    assert _messages(response) == [
        "The provider config “spare (Fake (demo and tests))” was deleted successfully."
    ]
    entry = LogEntry.objects.get(object_id=str(config.pk))
    assert (entry.action_flag, entry.user_id, entry.object_repr) == (
        DELETION,
        tenant_admin.pk,
        "spare (Fake (demo and tests))",
    )


def test_delete_of_config_with_call_logs_deactivates_it_and_records_change(
    tenant, tenant_admin, admin_client_for
):
    # given
    config = ProviderConfigFactory(tenant=tenant, name="served", is_default=True)
    CallLogFactory.create_batch(3, tenant=tenant, provider_config=config)
    client = admin_client_for(tenant_admin)
    # when
    page = client.get(_delete_url(config)).content.decode()
    response = client.post(_delete_url(config), {"post": "yes"}, follow=True)
    # then
    assert "will be deactivated instead of deleted" in page
    assert "<li>3 call logs</li>" in page
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert (stored.is_active, stored.is_default) == (False, False)
    assert _messages(response) == [
        "“served” was deactivated instead of deleted: referred to by 3 call logs."
    ]
    assert CallLog.objects.filter(provider_config=config).count() == 3
    assert _history(config) == [
        (CHANGE, tenant_admin.pk, "Deactivated instead of deleted: referred to by 3 call logs.")
    ]


def test_delete_of_config_used_by_override_deactivates_it(tenant, tenant_admin, admin_client_for):
    # given
    override = RoutingOverrideFactory(tenant=tenant)
    config = override.provider_config
    client = admin_client_for(tenant_admin)
    # when
    page = client.get(_delete_url(config)).content.decode()
    response = client.post(_delete_url(config), {"post": "yes"}, follow=True)
    # then: the override does not block the delete; the config stays, inactive.
    assert "protected" not in page
    assert "will be deactivated instead of deleted" in page
    assert "<li>1 routing override</li>" in page
    assert response.status_code == 200
    assert ProviderConfig.objects.get(pk=config.pk).is_active is False
    assert RoutingOverride.objects.get(pk=override.pk).provider_config_id == config.pk
    assert _history(config) == [
        (
            CHANGE,
            tenant_admin.pk,
            "Deactivated instead of deleted: referred to by 1 routing override.",
        )
    ]


def test_delete_of_config_with_budget_deactivates_it_and_keeps_budget(
    tenant, tenant_admin, admin_client_for
):
    # given
    config = ProviderConfigFactory(tenant=tenant, name="capped")
    budget = BudgetFactory(tenant=tenant, name="capped-monthly", provider_config=config)
    client = admin_client_for(tenant_admin)
    # when
    page = client.get(_delete_url(config)).content.decode()
    client.post(_delete_url(config), {"post": "yes"})
    # then: the page does not list the budget as going with the config.
    assert "will be deactivated instead of deleted" in page
    assert "<li>1 budget</li>" in page
    assert "capped-monthly" not in page
    assert "Summary" not in page
    assert ProviderConfig.objects.get(pk=config.pk).is_active is False
    assert Budget.objects.get(pk=budget.pk).provider_config_id == config.pk
    assert _history(config) == [
        (CHANGE, tenant_admin.pk, "Deactivated instead of deleted: referred to by 1 budget.")
    ]


def test_bulk_delete_deletes_unused_and_deactivates_referenced(
    tenant, tenant_admin, admin_client_for
):
    # given
    spare = ProviderConfigFactory(tenant=tenant, name="spare")
    served = ProviderConfigFactory(tenant=tenant, name="served")
    CallLogFactory(tenant=tenant, provider_config=served)
    RoutingOverrideFactory(tenant=tenant, provider_config=served)
    client = admin_client_for(tenant_admin)
    selection = {"action": "delete_selected", "_selected_action": [spare.pk, served.pk]}
    # when
    page = client.post(reverse(CHANGELIST), selection).content.decode()
    done = client.post(reverse(CHANGELIST), {**selection, "post": "yes"}, follow=True)
    # then
    assert _messages(done) == [
        "“served” was deactivated instead of deleted: referred to by 1 call log and "
        "1 routing override.",
        "Deleted 1 provider config. Deactivated 1 instead, which other records refer to.",
    ]
    assert "Those that others refer to are deactivated instead" in page
    assert "served (Fake (demo and tests)) — deactivated, not deleted: referred to by" in page
    assert "<li>1 call log</li>" in page
    assert "<li>1 routing override</li>" in page
    assert "protected" not in page
    assert not ProviderConfig.objects.filter(pk=spare.pk).exists()
    assert ProviderConfig.objects.get(pk=served.pk).is_active is False
    assert _history(spare) == [(DELETION, tenant_admin.pk, "")]
    assert _history(served) == [
        (
            CHANGE,
            tenant_admin.pk,
            "Deactivated instead of deleted: referred to by 1 call log and 1 routing override.",
        )
    ]


# --- connection tests -------------------------------------------------------------------


def test_action_records_ok_and_list_shows_it(tenant, tenant_admin, admin_client_for):
    config = ProviderConfigFactory(tenant=tenant, name="fake-ok")
    client = admin_client_for(tenant_admin)
    response = client.post(
        reverse(CHANGELIST),
        {"action": "test_connection", "_selected_action": [str(config.pk)]},
        follow=True,
    )
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert stored.last_test_status == "ok"
    assert stored.last_test_latency_ms is not None
    messages = _messages(response)
    assert len(messages) == 1
    assert messages[0].startswith("“fake-ok”: connection OK in ")
    assert messages[0].endswith(" ms, 2 models offered.")
    assert f"OK · {stored.last_tested_at:%Y-%m-%d %H:%M} UTC" in response.content.decode()


def test_action_records_authentication_failure(tenant, tenant_admin, admin_client_for):
    config = ProviderConfigFactory(
        tenant=tenant, name="fake-denied", options={"failure": "authentication"}
    )
    response = admin_client_for(tenant_admin).post(
        reverse(CHANGELIST),
        {"action": "test_connection", "_selected_action": [str(config.pk)]},
        follow=True,
    )
    stored = ProviderConfig.objects.get(pk=config.pk)
    assert stored.last_test_status == "error"
    assert stored.last_test_error == "provider_authentication: Fake provider rejected the key."
    assert _messages(response) == [
        "“fake-denied”: connection failed: provider_authentication: Fake provider rejected the key."
    ]
    assert "provider_authentication: Fake provider rejected the key." in response.content.decode()


def test_button_tests_connection_and_returns_to_change_page(tenant, tenant_admin, admin_client_for):
    config = ProviderConfigFactory(tenant=tenant)
    client = admin_client_for(tenant_admin)
    page = client.get(_change_url(config)).content.decode()
    assert f'action="{_test_url(config)}"' in page
    response = client.post(_test_url(config))
    assert response.status_code == 302
    assert response["Location"] == _change_url(config)
    assert ProviderConfig.objects.get(pk=config.pk).last_test_status == "ok"


def test_button_is_styled_like_the_history_link_beside_it(tenant, tenant_admin, admin_client_for):
    config = ProviderConfigFactory(tenant=tenant)

    page = admin_client_for(tenant_admin).get(_change_url(config)).content.decode()

    # the admin's own object-tools colours, so it also follows dark mode
    style = page[page.index(".object-tools #test-connection {") :]
    style = style[: style.index("}")]
    assert "border-radius: 15px" in style and "text-transform: uppercase" in style
    assert "background: var(--object-tools-bg)" in style
    assert "color: var(--object-tools-fg)" in style
    assert '<button type="submit" class="button" id="test-connection">' in page


def test_button_refuses_get(tenant, tenant_admin, admin_client_for):
    config = ProviderConfigFactory(tenant=tenant)
    response = admin_client_for(tenant_admin).get(_test_url(config))
    assert response.status_code == 405
    assert ProviderConfig.objects.get(pk=config.pk).last_test_status == ""


def test_button_hidden_and_refused_for_viewer(tenant, tenant_viewer, admin_client_for):
    config = ProviderConfigFactory(tenant=tenant)
    client = admin_client_for(tenant_viewer)
    page = client.get(_change_url(config)).content.decode()
    assert _test_url(config) not in page
    assert client.post(_test_url(config)).status_code == 403
    assert ProviderConfig.objects.get(pk=config.pk).last_test_status == ""


def test_button_not_found_for_other_tenant(other_tenant, tenant_admin, admin_client_for):
    config = ProviderConfigFactory(tenant=other_tenant)
    response = admin_client_for(tenant_admin).post(_test_url(config))
    assert response.status_code == 404
    assert ProviderConfig.objects.get(pk=config.pk).last_test_status == ""


# --- service keys ----------------------------------------------------------------------


def _secret_on_page(response) -> str:
    """The secret the page after an add shows, checked to appear there once."""
    html = response.content.decode()
    secret = re.search(r'id="created-secret"[^>]*value="([^"]+)"', html)[1]
    assert html.count(secret) == 1
    return secret


def _assert_secret_kept_nowhere(client, response, secret) -> None:
    """The page is not cached, and no cookie nor the session holds the secret."""
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    for morsel in (*response.cookies.values(), *client.cookies.values()):
        assert secret not in morsel.value
        assert secret not in morsel.OutputString()
    messages_cookie = client.cookies.get(CookieStorage.cookie_name)
    if messages_cookie is not None and messages_cookie.value:
        decoded = CookieStorage(response.wsgi_request)._decode(messages_cookie.value) or []
        assert all(secret not in str(message) for message in decoded)
    assert all(secret not in str(m) for m in get_messages(response.wsgi_request))
    session = SessionStore(session_key=client.cookies[settings.SESSION_COOKIE_NAME].value)
    assert secret not in repr(session.load())
    assert secret not in str(Session.objects.get(session_key=session.session_key).session_data)


def test_service_key_secret_shown_once_then_prefix_only(tenant, tenant_admin, admin_client_for):
    client = admin_client_for(tenant_admin)
    response = client.post(
        reverse("admin:llm_providers_servicekey_add"),
        {"tenant": str(tenant.pk), "name": "billing-job"},
    )
    service_key = ServiceKey.objects.get(tenant=tenant, name="billing-job")
    html = response.content.decode()
    assert "Service key “billing-job” was added successfully." in strip_tags(html)
    assert "store it now: it is shown only once." in html
    secret = _secret_on_page(response)
    _assert_secret_kept_nowhere(client, response, secret)
    assert ServiceKey.objects.get_from_key(secret) == service_key
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    authenticated = api.get("/api/v1/providers/")
    assert authenticated.status_code == 200
    assert authenticated.wsgi_request.auth == service_key
    assert _history(service_key) == [(ADDITION, tenant_admin.pk, "Added.")]
    listing = client.get(reverse("admin:llm_providers_servicekey_changelist")).content.decode()
    assert service_key.prefix in listing
    assert secret not in listing
    change = client.get(
        reverse("admin:llm_providers_servicekey_change", args=[service_key.pk])
    ).content.decode()
    assert secret not in change


def test_service_key_page_links_to_the_key_the_list_and_another(
    tenant, tenant_admin, admin_client_for
):
    response = admin_client_for(tenant_admin).post(
        reverse("admin:llm_providers_servicekey_add"),
        {"tenant": str(tenant.pk), "name": "billing-job", "_addanother": "Save and add another"},
    )

    service_key = ServiceKey.objects.get(tenant=tenant, name="billing-job")
    html = response.content.decode()
    assert response.status_code == 200
    for url in (
        reverse("admin:llm_providers_servicekey_change", args=[quote(service_key.pk)]),
        reverse("admin:llm_providers_servicekey_changelist"),
        reverse("admin:llm_providers_servicekey_add"),
    ):
        assert f'href="{url}"' in html


def _add_form_token(client, add_url: str) -> str:
    """The token of a freshly rendered add form."""
    html = client.get(add_url).content.decode()
    return re.search(r'name="_submission" value="([A-Za-z0-9_-]+)"', html)[1]


def test_service_key_form_sent_again_adds_no_second_key(tenant, tenant_admin, admin_client_for):
    # given a service key added with its form
    client = admin_client_for(tenant_admin)
    add_url = reverse("admin:llm_providers_servicekey_add")
    form = {"tenant": str(tenant.pk), "name": "billing-job", "_submission": ""}
    form["_submission"] = _add_form_token(client, add_url)
    secret = _secret_on_page(client.post(add_url, form))

    # when the same form is sent again (the secret's page reloaded)
    again = client.post(add_url, form, follow=True)

    # then it leads to the key it added, without its secret, and adds none
    service_key = ServiceKey.objects.get(tenant=tenant)
    assert again.redirect_chain == [
        (reverse("admin:llm_providers_servicekey_change", args=[quote(service_key.pk)]), 302)
    ]
    html = again.content.decode()
    assert "This form was sent already: it added service key “billing-job”" in html
    assert "revoke this service key and add a new one" in html
    assert secret not in html
    assert ServiceKey.objects.filter(tenant=tenant).count() == 1
    # A new form adds a second key.
    form["_submission"] = _add_form_token(client, add_url)
    _secret_on_page(client.post(add_url, form))
    assert ServiceKey.objects.filter(tenant=tenant, name="billing-job").count() == 2


def test_service_key_form_with_an_error_may_be_sent_again_corrected(
    tenant, tenant_admin, admin_client_for
):
    client = admin_client_for(tenant_admin)
    add_url = reverse("admin:llm_providers_servicekey_add")
    form = {"tenant": str(tenant.pk), "name": "", "_submission": _add_form_token(client, add_url)}

    refused = client.post(add_url, form)
    form["name"] = "billing-job"
    accepted = client.post(add_url, form)

    assert refused.status_code == 200 and "This field is required." in refused.content.decode()
    assert ServiceKey.objects.get(tenant=tenant).name == "billing-job"
    _secret_on_page(accepted)


def test_service_key_form_sent_again_after_the_key_was_deleted_adds_none(
    tenant, tenant_admin, admin_client_for
):
    client = admin_client_for(tenant_admin)
    add_url = reverse("admin:llm_providers_servicekey_add")
    form = {"tenant": str(tenant.pk), "name": "billing-job"}
    form["_submission"] = _add_form_token(client, add_url)
    client.post(add_url, form)
    ServiceKey.objects.filter(tenant=tenant).delete()

    again = client.post(add_url, form, follow=True)

    assert again.redirect_chain == [(reverse("admin:llm_providers_servicekey_changelist"), 302)]
    assert "the service key it added is gone. No second one was added" in again.content.decode()
    assert not ServiceKey.objects.filter(tenant=tenant).exists()


def test_service_key_form_of_another_user_is_not_theirs_to_replay(
    tenant, tenant_admin, admin_client_for
):
    # given a form token used by one admin
    add_url = reverse("admin:llm_providers_servicekey_add")
    first = admin_client_for(tenant_admin)
    form = {"tenant": str(tenant.pk), "name": "billing-job"}
    form["_submission"] = _add_form_token(first, add_url)
    first.post(add_url, form)
    colleague = UserFactory(username="acme-colleague")
    TenantMembershipFactory(user=colleague, tenant=tenant, role="admin")

    # when another admin of the tenant sends the same token
    response = admin_client_for(colleague).post(add_url, {**form, "name": "their-job"})

    # then theirs is a form of its own: its key is added and shown
    _secret_on_page(response)
    assert sorted(ServiceKey.objects.values_list("name", flat=True)) == [
        "billing-job",
        "their-job",
    ]


def test_service_key_form_with_the_cache_down_still_adds_the_key(
    tenant, tenant_admin, admin_client_for, cache_down, caplog
):
    client = admin_client_for(tenant_admin)
    add_url = reverse("admin:llm_providers_servicekey_add")
    form = {"tenant": str(tenant.pk), "name": "billing-job"}
    form["_submission"] = _add_form_token(client, add_url)

    response = client.post(add_url, form)

    _secret_on_page(response)
    assert ServiceKey.objects.get(tenant=tenant).name == "billing-job"
    assert "not checked for a second submission: cache unavailable" in caplog.text


def test_service_key_revoke_action(tenant, tenant_admin, admin_client_for):
    service_key = ServiceKeyFactory(tenant=tenant)
    response = admin_client_for(tenant_admin).post(
        reverse("admin:llm_providers_servicekey_changelist"),
        {"action": "revoke", "_selected_action": [service_key.pk]},
        follow=True,
    )
    assert _messages(response) == ["Revoked 1 service key."]
    assert ServiceKey.objects.get(pk=service_key.pk).revoked is True
    assert ServiceKey.objects.is_valid(service_key.secret) is False
    assert _history(service_key) == [(CHANGE, tenant_admin.pk, "Changed Revoked.")]


def test_service_key_revoke_action_records_nothing_for_revoked_key(
    tenant, tenant_admin, admin_client_for
):
    service_key = ServiceKeyFactory(tenant=tenant, revoked=True)
    response = admin_client_for(tenant_admin).post(
        reverse("admin:llm_providers_servicekey_changelist"),
        {"action": "revoke", "_selected_action": [service_key.pk]},
        follow=True,
    )
    assert _messages(response) == ["Revoked 0 service keys."]
    assert _history(service_key) == []


def test_revoked_service_key_is_read_only(tenant, tenant_admin, admin_client_for):
    service_key = ServiceKeyFactory(tenant=tenant, revoked=True)
    html = (
        admin_client_for(tenant_admin)
        .get(reverse("admin:llm_providers_servicekey_change", args=[service_key.pk]))
        .content.decode()
    )
    assert 'name="revoked"' not in html
    assert 'name="name"' not in html


def test_service_key_with_an_expiry_in_the_past_gets_a_form_error(
    tenant, tenant_admin, admin_client_for
):
    # when a new key is given an expiry date that has already passed
    response = admin_client_for(tenant_admin).post(
        reverse("admin:llm_providers_servicekey_add"),
        {
            "tenant": str(tenant.pk),
            "name": "billing-job",
            "expiry_date_0": "2020-01-01",
            "expiry_date_1": "10:00:00",
        },
    )

    # then the form says what to fix and no key is created
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "expiry_date": ["The expiry date must be in the future."]
    }
    assert not ServiceKey.objects.filter(tenant=tenant).exists()


_API_KEY_LIBRARY_HELP = (
    "A free-form name for the API key.",
    "Once API key expires, clients cannot use it anymore.",
    "If the API key is revoked, clients cannot use it anymore.",
)


def _help_texts(html: str) -> list[str]:
    return [
        " ".join(strip_tags(text).split())
        for text in re.findall(r'<div class="help"[^>]*>(.*?)</div>\s*</div>', html, re.S)
    ]


@pytest.mark.parametrize(
    ("kind", "factory", "owner"),
    [("service key", ServiceKeyFactory, "tenant"), ("user token", UserTokenFactory, "user")],
)
def test_key_pages_explain_their_fields_as_service_keys_and_user_tokens(
    kind, factory, owner, tenant, tenant_admin, admin_client_for
):
    # given a live and a revoked key of the kind
    client = admin_client_for(tenant_admin)
    owned_by = {"tenant": tenant} if owner == "tenant" else {"user": tenant_admin}
    live = factory(**owned_by)
    revoked = factory(**owned_by, revoked=True)
    model_name = kind.replace(" ", "")

    # when its add page, a live one's and a revoked one's pages are opened
    pages = [
        client.get(reverse(f"admin:llm_providers_{model_name}_add")).content.decode(),
        *(
            client.get(
                reverse(f"admin:llm_providers_{model_name}_change", args=[quote(key.pk)])
            ).content.decode()
            for key in (live, revoked)
        ),
    ]

    # then each field is explained in terms of the kind, none in the API key library's
    name_help = (
        f"What this {kind} is for, e.g. the script or program that uses it; it need not be "
        "unique. 50 characters at most."
    )
    expiry_help = f"From then on, calls with this {kind} are refused. Empty: it never expires."
    revoked_help = f"A revoked {kind} is refused on every call. Revoking cannot be undone."
    added, live_page, revoked_page = (_help_texts(page) for page in pages)
    assert name_help in added and expiry_help in added
    assert {name_help, expiry_help, revoked_help} <= set(live_page)
    assert {name_help, revoked_help} <= set(revoked_page)
    for page in pages:
        assert not any(text in page for text in _API_KEY_LIBRARY_HELP)


# --- user tokens -------------------------------------------------------------------------

USER_TOKEN_ADD = "admin:llm_providers_usertoken_add"
USER_TOKEN_CHANGELIST = "admin:llm_providers_usertoken_changelist"


def _user_token_change_url(user_token) -> str:
    return reverse("admin:llm_providers_usertoken_change", args=[user_token.pk])


def test_user_token_shown_once_then_prefix_only(tenant_admin, admin_client_for):
    client = admin_client_for(tenant_admin)

    response = client.post(reverse(USER_TOKEN_ADD), {"name": "nightly"})

    user_token = UserToken.objects.get(name="nightly")
    assert user_token.user == tenant_admin
    html = response.content.decode()
    assert "User token “nightly” was added successfully." in strip_tags(html)
    assert f"The token “nightly” of {tenant_admin.username}" in html
    assert "store it now: it is shown only once." in html
    token = _secret_on_page(response)
    _assert_secret_kept_nowhere(client, response, token)
    assert user_token_for_key(key=token) == user_token
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    authenticated = api.get("/api/v1/providers/")
    assert authenticated.status_code == 200
    assert authenticated.wsgi_request.auth == user_token
    secret = token.partition(".")[2]
    for page in (
        client.get(reverse(USER_TOKEN_CHANGELIST)),
        client.get(_user_token_change_url(user_token)),
        client.get(reverse("admin:index")),
    ):
        html = page.content.decode()
        assert page.status_code == 200
        assert secret not in html
    assert user_token.prefix in client.get(reverse(USER_TOKEN_CHANGELIST)).content.decode()
    assert [e.object_repr for e in LogEntry.objects.all()] == ["nightly"]


def test_user_token_form_sent_again_adds_no_second_token(tenant_admin, admin_client_for):
    client = admin_client_for(tenant_admin)
    form = {"name": "nightly", "_submission": _add_form_token(client, reverse(USER_TOKEN_ADD))}
    token = _secret_on_page(client.post(reverse(USER_TOKEN_ADD), form))

    again = client.post(reverse(USER_TOKEN_ADD), form, follow=True)

    user_token = UserToken.objects.get(user=tenant_admin)
    change_url = reverse("admin:llm_providers_usertoken_change", args=[quote(user_token.pk)])
    assert again.redirect_chain == [(change_url, 302)]
    html = again.content.decode()
    assert "This form was sent already: it added user token “nightly”" in html
    assert token.partition(".")[2] not in html


def test_user_token_of_staff_user_is_their_own_whatever_the_post_names(
    tenant_admin, tenant_viewer, admin_client_for
):
    admin_client_for(tenant_viewer).post(
        reverse(USER_TOKEN_ADD), {"name": "forged", "user": str(tenant_admin.pk)}
    )

    assert UserToken.objects.get(name="forged").user == tenant_viewer


def test_user_tokens_of_other_users_are_out_of_a_staff_users_sight(
    tenant_admin, tenant_viewer, admin_client_for
):
    own = UserTokenFactory(user=tenant_viewer, name="mine")
    other = UserTokenFactory(user=tenant_admin, name="theirs")
    client = admin_client_for(tenant_viewer)

    listing = client.get(reverse(USER_TOKEN_CHANGELIST))
    change = client.get(_user_token_change_url(other))
    revoke = client.post(
        reverse(USER_TOKEN_CHANGELIST),
        {"action": "revoke", "_selected_action": [own.pk, other.pk]},
        follow=True,
    )

    assert [t.name for t in listing.context["cl"].result_list] == ["mine"]
    assert change.status_code == 302
    assert _messages(revoke)[-1] == "Revoked 1 user token."
    assert UserToken.objects.get(pk=own.pk).revoked is True
    assert UserToken.objects.get(pk=other.pk).revoked is False
    assert _history(own) == [(CHANGE, tenant_viewer.pk, "Changed Revoked.")]


def test_superuser_sees_every_user_token_and_creates_one_for_another_user(
    superuser, tenant_admin, admin_client_for
):
    UserTokenFactory(user=tenant_admin, name="theirs")
    client = admin_client_for(superuser)

    response = client.post(
        reverse(USER_TOKEN_ADD), {"name": "for-alice", "user": str(tenant_admin.pk)}
    )
    listing = client.get(reverse(USER_TOKEN_CHANGELIST))

    assert UserToken.objects.get(name="for-alice").user == tenant_admin
    assert f"The token “for-alice” of {tenant_admin.username}" in response.content.decode()
    assert user_token_for_key(key=_secret_on_page(response)).user == tenant_admin
    assert sorted(t.name for t in listing.context["cl"].result_list) == ["for-alice", "theirs"]


def test_superuser_cannot_create_a_token_for_an_inactive_user(
    superuser, tenant_admin, admin_client_for
):
    tenant_admin.is_active = False
    tenant_admin.save()

    response = admin_client_for(superuser).post(
        reverse(USER_TOKEN_ADD), {"name": "for-gone", "user": str(tenant_admin.pk)}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["user"] == [
        f"The user “{tenant_admin.username}” is inactive: its tokens are refused."
    ]
    assert not UserToken.objects.filter(name="for-gone").exists()


def test_revoked_user_token_is_read_only(tenant_admin, admin_client_for):
    user_token = UserTokenFactory(user=tenant_admin, revoked=True)

    html = admin_client_for(tenant_admin).get(_user_token_change_url(user_token)).content.decode()

    assert 'name="revoked"' not in html
    assert 'name="name"' not in html


# --- times of service keys and user tokens ---------------------------------------------

CREATED = dt.datetime(2026, 11, 22, 17, 51, 3, tzinfo=dt.UTC)
EXPIRES = dt.datetime(2027, 1, 5, 8, 0, 30, tzinfo=dt.UTC)


def _dated(key):
    """`key` created at 17:51:03 UTC on 2026-11-22, expiring at 08:00:30 UTC on 2027-01-05."""
    type(key).objects.filter(pk=key.pk).update(created=CREATED, expiry_date=EXPIRES)
    return key


def _assert_times_in_utc(listed: str, page: str, revoked_page: str) -> None:
    """The list (its time columns sortable) and both change pages (editable,
    revoked) name the zone, as the usage pages do."""
    assert '">Created (UTC)</a></div>' in listed
    assert '">Expires (UTC)</a></div>' in listed
    assert '<td class="field-created_utc">2026-11-22 17:51:03 UTC</td>' in listed
    assert '<td class="field-expires_utc">2027-01-05 08:00:30 UTC</td>' in listed
    # The expiry of a live key is edited, in UTC, the server's zone.
    assert "<label>Created (UTC):</label>" in page
    assert '<div class="readonly">2026-11-22 17:51:03 UTC</div>' in page
    assert "<label>Expires (UTC):</label>" in page and 'name="expiry_date_0"' in page
    assert 'value="2027-01-05"' in page and 'value="08:00:30"' in page
    assert "<label>Created (UTC):</label>" in revoked_page
    assert "<label>Expires (UTC):</label>" in revoked_page and "expiry_date_0" not in revoked_page
    assert '<div class="readonly">2027-01-05 08:00:30 UTC</div>' in revoked_page
    for html in (listed, page, revoked_page):
        assert "p.m." not in html and "a.m." not in html


def test_service_key_list_and_pages_show_times_in_utc(tenant, tenant_admin, admin_client_for):
    live = _dated(ServiceKeyFactory(tenant=tenant))
    revoked = _dated(ServiceKeyFactory(tenant=tenant, revoked=True))
    client = admin_client_for(tenant_admin)

    listed = client.get(reverse("admin:llm_providers_servicekey_changelist")).content.decode()
    page, revoked_page = (
        client.get(reverse("admin:llm_providers_servicekey_change", args=[key.pk])).content.decode()
        for key in (live, revoked)
    )

    _assert_times_in_utc(listed, page, revoked_page)


def test_user_token_list_and_pages_show_times_in_utc(tenant_admin, admin_client_for):
    live = _dated(UserTokenFactory(user=tenant_admin))
    revoked = _dated(UserTokenFactory(user=tenant_admin, revoked=True))
    client = admin_client_for(tenant_admin)

    listed = client.get(reverse(USER_TOKEN_CHANGELIST)).content.decode()
    page, revoked_page = (
        client.get(_user_token_change_url(key)).content.decode() for key in (live, revoked)
    )

    _assert_times_in_utc(listed, page, revoked_page)


# --- times of tenants, memberships and provider configs -------------------------------


def test_tenant_membership_and_provider_config_pages_show_times_in_utc(
    tenant, tenant_admin, admin_client_for
):
    # given a tenant in New York, its membership and a provider config, each dated in UTC
    tenant.timezone = "America/New_York"
    tenant.save()
    Tenant.objects.filter(pk=tenant.pk).update(created_at=CREATED)
    TenantMembership.objects.filter(tenant=tenant).update(created_at=CREATED)
    config = ProviderConfigFactory(tenant=tenant, last_test_status="ok")
    ProviderConfig.objects.filter(pk=config.pk).update(
        created_at=CREATED,
        updated_at=dt.datetime(2026, 11, 22, 22, 55, 7, tzinfo=dt.UTC),
        last_tested_at=dt.datetime(2026, 11, 23, 0, 4, 9, tzinfo=dt.UTC),
    )
    client = admin_client_for(tenant_admin)

    # when
    tenant_page = client.get(
        reverse("admin:llm_providers_tenant_change", args=[tenant.pk])
    ).content.decode()
    memberships = client.get(
        reverse("admin:llm_providers_tenantmembership_changelist")
    ).content.decode()
    config_page = client.get(_change_url(config)).content.decode()

    # then every time names its zone, as the key and usage pages do
    assert "<label>Created (UTC):</label>" in tenant_page
    assert '<div class="readonly">2026-11-22 17:51:03 UTC</div>' in tenant_page
    assert '">Created (UTC)</a></div>' in memberships
    assert '<td class="field-created_at_utc">2026-11-22 17:51:03 UTC</td>' in memberships
    assert "<label>Last tested (UTC):</label>" in config_page
    assert '<div class="readonly">2026-11-23 00:04:09 UTC</div>' in config_page
    assert "<label>Created (UTC):</label>" in config_page
    assert '<div class="readonly">2026-11-22 17:51:03 UTC</div>' in config_page
    assert "<label>Updated (UTC):</label>" in config_page
    assert '<div class="readonly">2026-11-22 22:55:07 UTC</div>' in config_page
    for html in (tenant_page, memberships, config_page):
        assert "p.m." not in html and "a.m." not in html and "midnight" not in html


# --- times of the history page and of users ---------------------------------------------


def test_history_page_shows_the_time_of_an_edit_in_utc(
    openai_config, tenant_admin, admin_client_for
):
    # given a provider config edited in the admin
    client = admin_client_for(tenant_admin)
    client.post(_change_url(openai_config), _form_data(openai_config, priority="7"))
    entry = LogEntry.objects.get(object_id=str(openai_config.pk), action_flag=CHANGE)

    # when
    html = client.get(
        reverse("admin:llm_providers_providerconfig_history", args=[openai_config.pk])
    ).content.decode()

    # then the edit's time names its zone, as the app's own pages do
    shown = f"{entry.action_time.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
    assert f'<th scope="row">{shown}</th>' in html
    assert '<th scope="col">Date/time (UTC)</th>' in html
    assert f"<td>{entry.get_change_message()}</td>" in html
    # Django's page otherwise: its breadcrumbs and paginator stay.
    assert "&rsaquo; History" in html and "1 entry" in html
    for word in ("a.m.", "p.m.", "midnight", "noon"):
        assert word not in html


USER_CHANGELIST = "admin:auth_user_changelist"


def _dated_user():
    """A user who joined at 17:51:03 UTC on 2026-11-22 and last logged in at
    08:00:30 UTC on 2027-01-05."""
    user = UserFactory(username="carol", first_name="Carol", is_staff=False)
    type(user).objects.filter(pk=user.pk).update(date_joined=CREATED, last_login=EXPIRES)
    return user


def test_user_list_and_page_show_last_login_and_date_joined_in_utc(superuser, admin_client_for):
    user = _dated_user()
    client = admin_client_for(superuser)

    listed = client.get(reverse(USER_CHANGELIST)).content.decode()
    page = client.get(reverse("admin:auth_user_change", args=[user.pk])).content.decode()

    assert '">Last login (UTC)</a></div>' in listed
    assert '">Date joined (UTC)</a></div>' in listed
    assert '<td class="field-last_login_utc">2027-01-05 08:00:30 UTC</td>' in listed
    assert '<td class="field-date_joined_utc">2026-11-22 17:51:03 UTC</td>' in listed
    assert "<label>Last login (UTC):</label>" in page
    assert '<div class="readonly">2027-01-05 08:00:30 UTC</div>' in page
    assert "<label>Date joined (UTC):</label>" in page
    assert '<div class="readonly">2026-11-22 17:51:03 UTC</div>' in page
    assert 'name="date_joined_0"' not in page and 'name="last_login_0"' not in page
    for html in (listed, page):
        assert "p.m." not in html and "a.m." not in html


def test_user_who_never_logged_in_shows_a_dash(superuser, admin_client_for):
    user = UserFactory(username="dave")
    client = admin_client_for(superuser)

    listed = client.get(reverse(USER_CHANGELIST) + "?q=dave").content.decode()

    assert user.last_login is None
    assert '<td class="field-last_login_utc">—</td>' in listed


def test_superuser_still_edits_a_user(superuser, admin_client_for):
    user = _dated_user()
    client = admin_client_for(superuser)

    response = client.post(
        reverse("admin:auth_user_change", args=[user.pk]),
        {
            "username": "carol",
            "first_name": "Caroline",
            "last_name": "Doe",
            "email": "carol@example.com",
            "is_active": "on",
            "is_staff": "on",
        },
    )

    assert response.status_code == 302, response.content.decode()
    stored = type(user).objects.get(pk=user.pk)
    assert (stored.first_name, stored.last_name, stored.is_staff) == ("Caroline", "Doe", True)
    assert (stored.date_joined, stored.last_login) == (CREATED, EXPIRES)
    assert _history(user) == [
        (CHANGE, superuser.pk, "Changed First name, Last name and Staff status.")
    ]
