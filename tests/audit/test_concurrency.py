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


WRITER = """
import os, sys, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
django.setup()
from audit.services import record
n = int(sys.argv[1])
for i in range(int(sys.argv[2])):
    record("hostrun.state_changed", actor_name=f"process-{n}", data={"process": n, "i": i})
"""


@pytest.mark.django_db(transaction=True)
def test_parallel_writer_processes_leave_one_unbroken_chain():
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = dict(os.environ, DATABASE_NAME_OVERRIDE=str(connection.settings_dict["NAME"]))
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(n), "40"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
        for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    result = assert_chain_ok()
    assert result.checked == 160 == AuditEvent.objects.count()
    assert AuditEvent.objects.filter(actor_name="process-2").count() == 40
