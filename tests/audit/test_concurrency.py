"""Parallel writers must not fork the chain (PostgreSQL: advisory lock; SQLite: BEGIN IMMEDIATE)."""

import threading

import pytest
from django.db import connection, transaction

from audit.models import AuditEvent
from audit.services import record
from tests.audit.helpers import assert_chain_ok

THREADS, EACH = 8, 50


@pytest.mark.django_db(transaction=True)
def test_parallel_writers_leave_one_unbroken_chain():
    start = threading.Barrier(THREADS)
    errors = []

    def writer(n):
        try:
            start.wait()
            for i in range(EACH):
                # Half inside a caller's transaction with other work, half in record()'s own.
                if i % 2:
                    with transaction.atomic():
                        record("host.discovered", actor_name=f"worker-{n}", data={"thread": n, "i": i})
                else:
                    record("host.discovered", actor_name=f"worker-{n}", data={"thread": n, "i": i})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = assert_chain_ok()
    assert result.checked == THREADS * EACH == AuditEvent.objects.count()
    assert list(AuditEvent.objects.order_by("id").values_list("id", flat=True)) == list(
        range(1, THREADS * EACH + 1)
    )
    prev_hashes = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(prev_hashes)) == len(prev_hashes)
    per_thread = AuditEvent.objects.filter(actor_name="worker-3").count()
    assert per_thread == EACH
