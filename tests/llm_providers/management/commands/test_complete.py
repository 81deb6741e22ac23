"""The `complete` management command against the Fake provider."""

import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from llm_providers.models import ProviderConfig
from tests.factories import ModelPriceFactory, ProviderConfigFactory, TenantFactory
from usage.models import CallLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo():
    tenant = TenantFactory(slug="demo")
    ProviderConfigFactory(tenant=tenant, name="fake", is_default=True)
    ModelPriceFactory(model="fake-small", input_per_mtok="1", output_per_mtok="2")
    return tenant


def test_complete_command_prints_content_tokens_and_cost(demo):
    out = StringIO()

    call_command("complete", "hi", "--service", "chat", stdout=out)

    text = out.getvalue()
    assert text.startswith("Echo: hi\n")
    assert "provider:   fake (fake)" in text
    assert "tokens:     8 in (0 cached), 3 out (0 reasoning)" in text
    assert "cost:       $0.000014000000  [override]" in text
    log = CallLog.objects.get()
    assert (log.service_name, log.status) == ("chat", "ok")
    assert f"request id: {log.request_id}" in text


def test_complete_command_streams(demo):
    out = StringIO()

    call_command("complete", "one two", "--stream", stdout=out)

    assert out.getvalue().startswith("Echo: one two\n")
    assert CallLog.objects.get().streamed is True


def test_complete_command_names_unknown_tenant(demo):
    with pytest.raises(CommandError) as raised:
        call_command("complete", "hi", "--tenant", "nope")

    assert "No tenant with slug “nope”" in str(raised.value)


def test_complete_command_reports_provider_error_code(demo):
    with pytest.raises(CommandError) as raised:
        call_command("complete", "[fake:bad_request] hi")

    assert str(raised.value).startswith("provider_bad_request:")


def test_complete_command_prints_cost_to_the_stored_precision(demo):
    # given a price (newer than the fixture's) at which the call costs less than a micro-dollar
    ModelPriceFactory(
        model="fake-small",
        input_per_mtok="0.123",
        output_per_mtok="0.001",
        effective_from=timezone.now().date() - timedelta(days=1),
    )
    out = StringIO()

    # when
    call_command("complete", "hi", stdout=out)

    # then the cost is the exact one logged, not rounded to 8 places ($0.00000099)
    assert CallLog.objects.get().cost_usd == Decimal("0.000000987")
    assert "cost:       $0.000000987000  [override]" in out.getvalue()


def test_complete_command_deadline_bounds_the_call(demo):
    # given a provider that answers after 5 s, well within its 60 s timeout
    config = ProviderConfig.objects.get(tenant=demo)
    config.options = {"latency_ms": 5000}
    config.save()
    started = time.monotonic()

    # when the command gives the call 1.5 s
    with pytest.raises(CommandError) as raised:
        call_command("complete", "hi", "--deadline", "1.5")

    # then the deadline ends it, not the provider's answer or its timeout
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 4
    assert str(raised.value).startswith(
        "provider_timeout: The call's deadline of 1.5 s was reached after 1 attempt"
    )
    log = CallLog.objects.get()
    assert (log.status, log.error_code) == ("error", "provider_timeout")


def test_complete_command_deadline_lets_a_quick_call_through(demo):
    out = StringIO()

    call_command("complete", "hi", "--deadline", "600", "--stream", stdout=out)

    assert out.getvalue().startswith("Echo: hi\n")
    assert CallLog.objects.get().status == "ok"


@pytest.mark.parametrize("value", ["0.5", "0", "600.5", "-3", "abc", "nan", "inf", ""])
def test_complete_command_refuses_a_deadline_out_of_range(demo, value):
    with pytest.raises(CommandError) as raised:
        call_command("complete", "hi", "--deadline", value)

    assert str(raised.value) == ("--deadline: deadline must be a number of seconds from 1 to 600.")
    assert not CallLog.objects.exists()
