"""Alert webhook URL checks: messages that speak of the webhook URL and say what to fix."""

import pytest
from django.core.exceptions import ValidationError

from usage.webhooks import webhook_url_validate


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
