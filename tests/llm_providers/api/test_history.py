"""API changes in the admin's history: field names in the admin's own format, no values."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE

from llm_providers.api.history import change_history_record_change
from tests.factories import ProviderConfigFactory, RoutingOverrideFactory

pytestmark = pytest.mark.django_db


def test_change_names_model_fields_by_verbose_name(admin_user):
    config = ProviderConfigFactory()

    entry = change_history_record_change(
        user=admin_user, instance=config, fields=["aws_secret_access_key", "rpm_limit"]
    )

    assert (entry.action_flag, entry.user_id, str(entry.object_id)) == (
        CHANGE,
        admin_user.pk,
        str(config.pk),
    )
    assert entry.get_change_message() == "Changed Aws secret access key and Rpm limit."


def test_change_names_relations_by_their_name(admin_user):
    override = RoutingOverrideFactory()

    entry = change_history_record_change(user=admin_user, instance=override, fields=["fallbacks"])

    assert entry.get_change_message() == "Changed Fallbacks."


def test_change_records_nothing_when_no_field_changed(admin_user):
    config = ProviderConfigFactory()

    assert change_history_record_change(user=admin_user, instance=config, fields=[]) is None
