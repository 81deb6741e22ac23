"""Recording call logs: values stored as given, long texts cut to their column size."""

import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models.signals import post_delete
from django.utils import timezone

from llm_providers.adapters.types import Usage
from llm_providers.models import ProviderConfig, Tenant
from tests.factories import ProviderConfigFactory, TenantFactory
from tests.usage.tenant_delete_race import tenant_deleted_while
from usage.call_logs import call_log_record
from usage.models import CallLog

pytestmark = pytest.mark.django_db


def test_call_log_record_stores_usage_and_cost():
    tenant = TenantFactory()
    request_id = uuid.uuid4()

    log_id = call_log_record(
        tenant_id=tenant.pk,
        request_id=request_id,
        attempt=2,
        status="ok",
        created_at=timezone.now(),
        usage=Usage(
            input_tokens=10,
            output_tokens=20,
            cache_read_tokens=3,
            cache_write_tokens=4,
            reasoning_tokens=5,
        ),
        cost_usd=Decimal("0.000123456789"),
        price_source="genai_prices",
    )

    log = CallLog.objects.get(pk=log_id)
    assert (log.request_id, log.attempt) == (request_id, 2)
    assert (
        log.input_tokens,
        log.output_tokens,
        log.cache_read_tokens,
        log.cache_write_tokens,
        log.reasoning_tokens,
    ) == (10, 20, 3, 4, 5)
    assert log.cost_usd == Decimal("0.000123456789")


def test_call_log_record_keeps_the_row_of_texts_holding_half_an_emoji_or_a_nul():
    # A provider's message or answered model cut inside an emoji's UTF-16 pair,
    # and a prompt holding a NUL: PostgreSQL text takes neither, the paid call
    # keeps its row with U+FFFD where each was.
    tenant = TenantFactory()

    log_id = call_log_record(
        tenant_id=tenant.pk,
        request_id=uuid.uuid4(),
        attempt=1,
        status="error",
        created_at=timezone.now(),
        model_answered="gpt\ud83d",
        error_message="refused: a\udc00b",
        prompt_preview="a\x00b",
    )

    log = CallLog.objects.get(pk=log_id)
    assert (log.model_answered, log.error_message, log.prompt_preview) == (
        "gpt\ufffd",
        "refused: a\ufffdb",
        "a\ufffdb",
    )


def test_call_log_record_cuts_long_texts():
    tenant = TenantFactory()

    log_id = call_log_record(
        tenant_id=tenant.pk,
        request_id=uuid.uuid4(),
        attempt=1,
        status="error",
        created_at=timezone.now(),
        error_message="x" * 2000,
        prompt_preview="y" * 2000,
    )

    log = CallLog.objects.get(pk=log_id)
    assert len(log.error_message) == 500
    assert len(log.prompt_preview) == 500


@pytest.fixture
def call_log_connection(transactional_db, settings):
    """A second connection to the test database, set up as production sets up
    `call_logs` (config/settings/base.py)."""
    from django.db import connections

    default = connections["default"]
    connection = type(default)(
        {
            **default.settings_dict,
            "OPTIONS": {
                **default.settings_dict.get("OPTIONS", {}),
                "options": "-c synchronous_commit=off",
                "server_side_binding": True,
            },
        },
        alias="call_logs",
    )
    connections["call_logs"] = connection
    settings.CALL_LOG_DATABASE = "call_logs"
    yield connection
    connection.close()
    del connections["call_logs"]


@pytest.mark.postgres
def test_call_log_record_survives_callers_rollback(call_log_connection):
    # given
    tenant = TenantFactory()
    request_id = uuid.uuid4()

    # when the caller's transaction rolls back after the provider was called
    # (six attempts: psycopg prepares the INSERT from the fifth on)
    with pytest.raises(RuntimeError), transaction.atomic():
        for attempt in range(1, 7):
            call_log_record(
                tenant_id=tenant.pk,
                request_id=request_id,
                attempt=attempt,
                status="ok",
                created_at=timezone.now(),
                cost_usd=Decimal("0.01"),
            )
        raise RuntimeError("the caller's own work failed")

    # then the call logs stay
    logs = CallLog.objects.filter(request_id=request_id)
    assert sorted(logs.values_list("attempt", flat=True)) == [1, 2, 3, 4, 5, 6]
    assert {log.cost_usd for log in logs} == {Decimal("0.01")}
    with call_log_connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("off",)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("bulk", [False, True], ids=["one", "bulk"])
def test_call_log_written_while_its_tenant_is_deleted_leaves_the_delete_whole(bulk):
    # given a tenant whose call ends while a superuser deletes it
    tenant = TenantFactory()
    ProviderConfigFactory(tenant=tenant)

    def log_the_call():
        return call_log_record(
            tenant_id=tenant.pk,
            request_id=uuid.uuid4(),
            attempt=1,
            status="ok",
            created_at=timezone.now(),
        )

    # when its log row is written once the delete has gone past the call logs
    # (to the tenant's provider configs), before it deletes the tenant's row
    outcome = tenant_deleted_while(
        tenant, log_the_call, bulk=bulk, hold_on=(post_delete, ProviderConfig)
    )

    # then the delete succeeds, and the row of a tenant that no longer exists is refused
    assert "delete_error" not in outcome, outcome.get("delete_error")
    assert outcome["deleted"]
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert isinstance(outcome.get("work_error"), IntegrityError)
    assert not CallLog.objects.filter(tenant_id=tenant.pk).exists()
