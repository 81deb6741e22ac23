"""A delete with other work run between its collection and its commit."""

import threading

from django.db import connection, connections
from django.db.models.signals import pre_delete

from llm_providers.models import Tenant


def deleted_while(delete, work, *, hold_on=None, hold_before: str = "") -> dict:
    """Run `delete` and run `work` in another thread between the delete's
    collection of the rows to delete and its commit: where the delete sends
    `hold_on` (a signal and its sender), or just before it runs the first
    statement starting with `hold_before`. `work` runs to its end, or until
    it waits for a lock the delete holds.
    Returns "deleted" or "delete_error", and "result" or "work_error".
    """
    collected, proceed = threading.Event(), threading.Event()
    outcome = {}
    deleter_thread = []

    def hold():
        if threading.current_thread() in deleter_thread and not collected.is_set():
            collected.set()
            proceed.wait(30)

    def hold_after_collection(sender, instance, **kwargs):
        hold()

    def hold_before_statement(execute, sql, params, many, context):
        if sql.startswith(hold_before):
            hold()
        return execute(sql, params, many, context)

    def run_delete():
        try:
            if hold_before:
                with connection.execute_wrapper(hold_before_statement):
                    outcome["deleted"] = delete()
            else:
                outcome["deleted"] = delete()
        except Exception as exc:  # noqa: BLE001 - asserted below
            outcome["delete_error"] = exc
        finally:
            collected.set()
            connections.close_all()

    def run_work():
        try:
            outcome["result"] = work()
        except Exception as exc:  # noqa: BLE001 - asserted below
            outcome["work_error"] = exc
        finally:
            connections.close_all()

    if hold_on is not None:
        signal, sender = hold_on
        signal.connect(hold_after_collection, sender=sender, dispatch_uid="test-hold")
    deleter = threading.Thread(target=run_delete)
    deleter_thread.append(deleter)
    worker = threading.Thread(target=run_work)
    try:
        deleter.start()
        assert collected.wait(30)
        worker.start()
        for _ in range(600):
            worker.join(0.05)
            if not worker.is_alive():
                break
            # The deleter waits on an event, not a lock: a waiter is the work.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if cursor.fetchone()[0]:
                    break
        proceed.set()
        deleter.join(30)
        worker.join(30)
    finally:
        proceed.set()
        if hold_on is not None:
            hold_on[0].disconnect(sender=hold_on[1], dispatch_uid="test-hold")
    assert not deleter.is_alive() and not worker.is_alive()
    return outcome


def tenant_deleted_while(tenant, work, *, bulk: bool, hold_on=(pre_delete, Tenant)) -> dict:
    """Delete `tenant` (one instance, or a queryset when `bulk`) while `work`
    runs, as deleted_while; "deleted" is True once it is."""

    def delete():
        if bulk:
            Tenant.objects.filter(pk=tenant.pk).delete()
        else:
            Tenant.objects.get(pk=tenant.pk).delete()
        return True

    return deleted_while(delete, work, hold_on=hold_on)
