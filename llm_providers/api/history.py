"""Changes made through the API, written to the same history as the admin's (LogEntry).

Entries use the admin's change-message format, so the admin's "History"
page shows API changes as "Added.", "Changed API key and Name." or a
deletion. The admin uses these too where its own logging would be wrong
or missing: a delete that only deactivates, an action that revokes. Only
field names are recorded, never values: a secret field appears as
"API key", never as its content.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.utils.text import capfirst, get_text_list


def _field_label(instance: models.Model, name: str) -> str:
    try:
        verbose_name = getattr(instance._meta.get_field(name), "verbose_name", None)
    except FieldDoesNotExist:
        verbose_name = None
    return str(capfirst(verbose_name or name.replace("_", " ")))


def change_history_record_addition(*, user, instance: models.Model) -> LogEntry:
    return LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[instance],
        action_flag=ADDITION,
        change_message=[{"added": {}}],
        single_object=True,
    )


def change_history_record_change(
    *, user, instance: models.Model, fields: Iterable[str]
) -> LogEntry | None:
    """Record which fields changed; nothing is recorded when none did."""
    labels = [_field_label(instance, name) for name in fields]
    if not labels:
        return None
    return LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[instance],
        action_flag=CHANGE,
        change_message=[{"changed": {"fields": labels}}],
        single_object=True,
    )


def change_history_record_deletion(*, user, instance: models.Model) -> LogEntry:
    """Record a deletion; call it before the row is deleted, while it still has its id."""
    return LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[instance],
        action_flag=DELETION,
        change_message="",
        single_object=True,
    )


def change_history_record_deactivation(
    *, user, instance: models.Model, references: Iterable[str]
) -> LogEntry:
    """Record a delete that only deactivated the instance, because others refer to it.

    The row is still there, so this is a change, not a deletion; the message
    says why it stayed: "Deactivated instead of deleted: referred to by 3 call logs."
    """
    return LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[instance],
        action_flag=CHANGE,
        change_message="Deactivated instead of deleted: referred to by "
        f"{get_text_list(list(references), 'and')}.",
        single_object=True,
    )
