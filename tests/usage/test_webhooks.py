"""Alert webhook URL checks: messages that speak of the webhook URL and say what to fix."""

import pytest
from django.core.exceptions import ValidationError

from usage.webhooks import WebhookFailed, webhook_label, webhook_post, webhook_url_validate


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "https://alerts:hunter22@hooks.example.com/T0/B0",
            "The webhook URL must not carry credentials (user:password@); put a token the "
            "receiver needs in the URL's path or query.",
        ),
        (
            "https://hooks.nowhere.invalid/T0/B0",
            "The host “hooks.nowhere.invalid” could not be resolved; check the webhook URL.",
        ),
        ("ftp://hooks.example.com/T0", "The webhook URL must start with http:// or https://."),
    ],
)
def test_webhook_url_refusal_names_the_webhook_url_and_the_fix(url, message):
    with pytest.raises(ValidationError) as refused:
        webhook_url_validate(url)

    assert refused.value.messages == [message]


# Stored before URLs with an unreadable port were refused on save.
LEGACY_TOKEN = "Zq8sLegacyHookToken"
LEGACY_URL = f"https://93.184.215.14:{LEGACY_TOKEN}/hooks/T0001"


def test_label_of_unparsable_url_says_so_without_quoting_it():
    assert webhook_label(LEGACY_URL) == "invalid URL — enter it again"


def test_post_to_unparsable_url_fails_without_quoting_it():
    with pytest.raises(WebhookFailed) as failed:
        webhook_post(LEGACY_URL, {"text": "budget crossed"})

    assert str(failed.value) == (
        "The webhook URL is not a valid URL (Port could not be cast to integer value)."
    )
