"""The engine's one lock order (change → rollout → host run → step → audit) holds under
PostgreSQL: claiming a host run never deadlocks with advancing its rollout, and a database error
after an agent call leaves the host run to be resumed (re-reading the host), never "failed"."""

import threading
import time

import pytest
from django.db import close_old_connections, connection, transaction

from changes import approvals, services
from changes.execution.host_run import run_host
from changes.execution.locks import lock_change, lock_host_runs, lock_rollout
from changes.execution.ownership import claim
from changes.execution.rollout import advance
from changes.models import HostRun, Rollout, Step
from tests.conftest import require_or_skip

from .conftest import change_data, make_host, wait_for
from .kargs_helpers import make_fleet, register, set_vfs


def postgresql():
    require_or_skip(connection.vendor == "postgresql", "row-lock order is a PostgreSQL matter (SQLite has one writer)")


def dispatched_run(hosts, operator, approver, capture):
    change = services.create_change(change_data([h.pk for h in hosts]), operator)
    services.submit_change(change.pk, operator)
    with capture():
        approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
        advance(Rollout.objects.get(change=change).pk)
    return change, HostRun.objects.get(rollout__change=change, dispatched_at__isnull=False)


def test_claim_and_advance_do_not_deadlock(transactional_db, credential, operator, approver,
                                           django_capture_on_commit_callbacks):
    postgresql()
    host = make_host("hl1", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])
    change, run = dispatched_run([host], operator, approver, django_capture_on_commit_callbacks)
    claimed, errors = {}, []

    def claimer():
        try:
            with django_capture_on_commit_callbacks():
                claimed["run"] = claim(run.pk, run.owner)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    with transaction.atomic():
        # What advance() holds first: the change and the rollout.
        lock_change(change.pk)
        rollout = lock_rollout(run.rollout_id)
        thread = threading.Thread(target=claimer)
        thread.start()
        time.sleep(1.0)  # the claim runs to its COMMIT (formerly it waited there for the rollout row)
        # Then what advance() takes next: the rollout's host runs. A deadlock would abort here.
        runs = lock_host_runs(rollout)
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    assert claimed["run"] is not None and claimed["run"].state == "running"
    assert [r.pk for r in runs] == [run.pk]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = make_fleet(tmp_path_factory, [{"profile": "dl360g9", "name": "hl-db"}], "simfleet-lock")
    yield sim
    sim.stop()


def test_a_database_error_after_an_agent_call_resumes_and_rereads(
    transactional_db, fleet, operator, approver, django_capture_on_commit_callbacks
):
    postgresql()
    sim = fleet.host("hl-db")
    hosts = register(fleet, [sim])
    change = services.create_change(change_data([h.pk for h in hosts], ops=[set_vfs("eno49", 3)]), operator)
    services.submit_change(change.pk, operator)
    with django_capture_on_commit_callbacks():
        approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
        advance(Rollout.objects.get(change=change).pk)
    run = HostRun.objects.get(rollout__change=change)
    outcome = {}

    def worker():
        try:
            outcome["first"] = run_host(run.pk, run.owner)
        finally:
            connection.close()

    sim.inject("latency", seconds=2.0)
    thread = threading.Thread(target=worker)
    thread.start()
    wait_for(lambda: Step.objects.filter(host_run=run, kind="action", finished_at=None).exists(),
             what="the set_vfs call")
    # The database drops the executor's connection while the agent writes the VFs.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    thread.join(timeout=60)
    sim.clear_faults()
    assert outcome["first"] == "resumed later"
    run.refresh_from_db()
    assert run.state == "running", run.message  # not failed: the write happened, the record did not
    assert sim.true_state()["numvfs"]["0000:04:00.0"] == 3

    # The redelivered task re-reads the host, sees the write done, records it and verifies.
    assert run_host(run.pk, run.owner) == "succeeded"
    run.refresh_from_db()
    steps = list(run.steps.order_by("seq"))
    lost = next(s for s in steps if s.kind == "action" and s.error_code == "interrupted")
    applied = next(s for s in steps if s.kind == "action" and s.ok)
    assert applied.note.startswith(f"step {lost.seq} was applied by the lost worker")
    assert all(s.finished_at is not None for s in steps)
    assert [w for w in sim.events if w.startswith("sriov_numvfs 0000:04:00.0 <-")] == ["sriov_numvfs 0000:04:00.0 <- 3"]
