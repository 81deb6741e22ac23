"""Provider keys and budget webhook URLs never leave the API: not in JSON, errors, the
browsable API, history or schema."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry

from llm_providers.models import ProviderConfig
from tests.api.fixtures import session_client
from tests.factories import AlertDeliveryFactory, BudgetFactory, CostAlertFactory
from usage.webhooks import webhook_label

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"
API_KEY = "sk-proj-Q7tLmN3vXc9RbY2kHs8JwE5uAp4DfG6zTn1oKi0"
AWS_KEY_ID = "AKIAZ7Q3LMN4VXC9RBY2"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY9"
# Pieces a leak could show: the middle of each secret, away from the masked ends.
FRAGMENTS = [API_KEY[8:-4], AWS_KEY_ID[4:-4], AWS_SECRET[4:-4]]


def _assert_no_secret(text: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text


@pytest.fixture
def configs(admin_api):
    openai = admin_api.post(
        PROVIDERS, {"name": "openai", "provider_type": "openai", "api_key": API_KEY}
    )
    bedrock = admin_api.post(
        PROVIDERS,
        {
            "name": "bedrock",
            "provider_type": "bedrock",
            "aws_access_key_id": AWS_KEY_ID,
            "aws_secret_access_key": AWS_SECRET,
            "aws_region": "eu-west-1",
        },
    )
    assert (openai.status_code, bedrock.status_code) == (201, 201)
    _assert_no_secret(openai.content.decode() + bedrock.content.decode())
    return {"openai": openai.json()["id"], "bedrock": bedrock.json()["id"]}


def test_json_responses_show_masks_only(admin_api, configs):
    listed = admin_api.get(PROVIDERS)
    detail = admin_api.get(f"{PROVIDERS}{configs['bedrock']}/")

    _assert_no_secret(listed.content.decode() + detail.content.decode())
    assert detail.json()["key_mask"] == "AKIA…RBY2"
    assert ProviderConfig.objects.get(name="bedrock").aws_secret_access_key == AWS_SECRET


@pytest.mark.parametrize("accept", ["format=api", "text/html"])
def test_browsable_api_pages_show_masks_only(admin_user, configs, accept):
    client = session_client(admin_user)
    headers = {"HTTP_ACCEPT": "text/html"} if accept == "text/html" else {}
    query = {"format": "api"} if accept == "format=api" else {}

    paths = [PROVIDERS, *(f"{PROVIDERS}{config_id}/" for config_id in configs.values())]
    for path in paths:
        response = client.get(path, query, **headers)

        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        page = response.content.decode()
        _assert_no_secret(page)
        # The page does render the keys, as their masks: a page without them proves nothing.
        if path == PROVIDERS or configs["openai"] in path:
            assert "sk-proj-…oKi0" in page
        if path == PROVIDERS or configs["bedrock"] in path:
            assert "AKIA…RBY2" in page


def test_browsable_api_error_page_does_not_echo_submitted_key(admin_user, configs):
    client = session_client(admin_user)

    response = client.post(
        f"{PROVIDERS}?format=api",
        {"name": "openai", "provider_type": "openai", "api_key": API_KEY},
        format="json",
    )

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    _assert_no_secret(response.content.decode())


@pytest.mark.parametrize(
    "body",
    [
        {"name": "openai", "provider_type": "openai", "api_key": API_KEY},
        {"name": "x", "provider_type": "nope", "api_key": API_KEY},
        {"name": "x", "provider_type": "openai", "api_key": API_KEY * 50},
        {"name": "x", "provider_type": "openai", "api_key": API_KEY, "base_url": "ftp://x"},
        {"name": "x", "provider_type": "bedrock", "aws_secret_access_key": AWS_SECRET},
    ],
    ids=["duplicate", "bad-type", "too-long", "bad-url", "missing-pair"],
)
def test_validation_errors_do_not_echo_keys(admin_api, configs, body):
    response = admin_api.post(PROVIDERS, body)

    assert response.status_code == 400
    _assert_no_secret(response.content.decode())


def test_update_errors_do_not_echo_keys(admin_api, configs):
    response = admin_api.patch(
        f"{PROVIDERS}{configs['openai']}/", {"api_key": API_KEY, "rpm_limit": 0}
    )

    assert response.status_code == 400
    _assert_no_secret(response.content.decode())


def test_history_records_secret_fields_by_name_only(admin_api, configs):
    admin_api.patch(f"{PROVIDERS}{configs['bedrock']}/", {"aws_secret_access_key": AWS_SECRET})

    messages = " ".join(e.change_message + e.object_repr for e in LogEntry.objects.all())

    _assert_no_secret(messages)
    assert "Aws secret access key" in messages


def test_options_request_describes_fields_without_values(admin_api, configs):
    response = admin_api.options(f"{PROVIDERS}{configs['openai']}/")

    assert response.status_code == 200
    _assert_no_secret(response.content.decode())


def test_schema_and_docs_hold_no_key(anonymous_api, configs):
    schema = anonymous_api.get("/api/schema/").content.decode()
    docs = anonymous_api.get("/api/docs/").content.decode()

    _assert_no_secret(schema + docs)


# --- budget webhook URLs -------------------------------------------------------

BUDGETS = "/api/v1/budgets/"
WEBHOOK_TOKEN = "Zq8sWebhookToken77xKp"
WEBHOOK = f"https://93.184.215.14/hooks/T0001/B0001/{WEBHOOK_TOKEN}"


@pytest.fixture
def budget_id(admin_api) -> int:
    response = admin_api.post(BUDGETS, {"name": "cap", "limit_usd": "10", "webhook_url": WEBHOOK})
    assert response.status_code == 201
    assert WEBHOOK_TOKEN not in response.content.decode()
    return response.json()["id"]


def test_budget_responses_say_only_that_a_webhook_is_stored(admin_api, admin_user, budget_id):
    detail = f"{BUDGETS}{budget_id}/"
    changed = admin_api.patch(detail, {"webhook_url": WEBHOOK + "x", "limit_usd": "11"})
    pages = [
        admin_api.get(BUDGETS),
        admin_api.get(detail),
        changed,
        admin_api.options(detail),
        session_client(admin_user).get(detail, {"format": "api"}),
        session_client(admin_user).get(BUDGETS, HTTP_ACCEPT="text/html"),
    ]

    assert [page.status_code for page in pages] == [200] * 6
    for page in pages:
        assert WEBHOOK_TOKEN not in page.content.decode()
        assert "93.184.215.14" not in page.content.decode()
    assert changed.json()["has_webhook"] is True
    history = " ".join(e.change_message + e.object_repr for e in LogEntry.objects.all())
    assert WEBHOOK_TOKEN not in history
    assert "Webhook url" in history


@pytest.mark.parametrize(
    "webhook_url",
    [
        f"ftp://93.184.215.14/{WEBHOOK_TOKEN}",
        f"http://10.0.0.5/hooks/{WEBHOOK_TOKEN}",
        f"https://user:{WEBHOOK_TOKEN}@93.184.215.14/hook",
        # A token pasted where the port goes: Python's parse error quotes it.
        f"https://93.184.215.14:{WEBHOOK_TOKEN}/hook",
        # Characters that NFKC turns into "@" or "/": Python's parse error quotes
        # the whole host part, credentials and all.
        f"https://user:{WEBHOOK_TOKEN}\uff20hooks.example.com/hook",
        f"https://hooks.example.com\uff0f{WEBHOOK_TOKEN}/hook",
    ],
    ids=["scheme", "private", "credentials", "port", "nfkc-at", "nfkc-slash"],
)
def test_budget_validation_errors_do_not_echo_webhook_url(admin_api, webhook_url):
    response = admin_api.post(
        BUDGETS, {"name": "cap", "limit_usd": "10", "webhook_url": webhook_url}
    )

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["webhook_url"]
    assert WEBHOOK_TOKEN not in response.content.decode()


def test_alerts_show_webhook_deliveries_by_host_only(admin_api, tenant):
    budget = BudgetFactory(tenant=tenant, webhook_url=WEBHOOK)
    alert = CostAlertFactory(tenant=tenant, budget=budget)
    AlertDeliveryFactory(
        alert=alert, channel="webhook", target=WEBHOOK, target_label=webhook_label(WEBHOOK)
    )

    response = admin_api.get("/api/v1/alerts/")

    assert response.status_code == 200
    [delivery] = response.json()["results"][0]["deliveries"]
    assert delivery["target_label"] == "https://93.184.215.14/…"
    assert WEBHOOK_TOKEN not in response.content.decode()


def test_user_token_appears_in_no_response_page_or_log_line_after_creation(admin_user, caplog):
    import logging
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection
    from rest_framework.test import APIClient

    from llm_providers.models import UserToken

    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True
    try:
        # given a token created with the command, then used, then revoked and used again
        out = StringIO()
        call_command("user_token_create", "alice", "--name", "ci", stdout=out, stderr=StringIO())
        token = out.getvalue().strip()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        answers = [
            client.get(PROVIDERS),
            client.get("/api/v1/service-keys/"),
            client.get(PROVIDERS, {"format": "api"}),
            client.post(PROVIDERS, {"name": "x", "provider_type": "nope"}),
        ]
        UserToken.objects.filter(user=admin_user).update(revoked=True)
        answers.append(client.get(PROVIDERS))
    finally:
        connection.force_debug_cursor = False

    # then its secret part is nowhere but in the command's output
    secret = token.partition(".")[2]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 400, 401]
    for answer in answers:
        assert secret not in answer.content.decode()
        assert secret not in str(answer.headers)
    assert "llm_providers_usertoken" in caplog.text  # the SQL was logged
    assert secret not in caplog.text
    assert not [r for r in caplog.records if secret in r.getMessage()]
