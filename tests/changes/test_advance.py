"""advance(): canary first, parallelism, failure threshold, window, cancel — driven directly on
database rows (host run outcomes are set by hand; the worker path is in test_rollout_integration)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from changes import approvals, services
from changes.execution.host_run import run_host
from changes.execution.rollout import advance
from changes.models import ChangeRequest, HostRun

from .conftest import change_data, make_host

pytestmark = pytest.mark.django_db


def approved_change(hosts, operator, approver, **policy):
    change = services.create_change(change_data([h.pk for h in hosts], **policy), operator)
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    change.refresh_from_db()
    return change, change.rollouts.get()


@pytest.fixture
def hosts(credential):
    return [make_host(f"hv{i}", credential=credential, nics=[("eno49", "0000:04:00.0", 0)]) for i in range(5)]


def states(rollout):
    return [
        r.state + ("*" if r.dispatched_at and r.state == "pending" else "")
        for r in rollout.host_runs.order_by("order")
    ]


def finish(rollout, order, state):
    HostRun.objects.filter(rollout=rollout, order=order).update(state=state, finished_at=timezone.now())


def test_canary_alone_then_parallelism_then_halt(hosts, operator, approver):
    change, rollout = approved_change(
        hosts, operator, approver, canary_count=1, parallelism=2, max_failures=2
    )
    advance(rollout.pk)
    advance(rollout.pk)  # idempotent: nothing more while the canary runs
    assert states(rollout) == ["pending*", "pending", "pending", "pending", "pending"]
    change.refresh_from_db()
    assert change.state == "running"
    finish(rollout, 0, "succeeded")
    advance(rollout.pk)
    assert states(rollout) == ["succeeded", "pending*", "pending*", "pending", "pending"]
    finish(rollout, 1, "failed")
    advance(rollout.pk)
    assert states(rollout) == ["succeeded", "failed", "pending*", "pending*", "pending"]
    HostRun.objects.filter(rollout=rollout, order=3).update(state="running")  # claimed by a worker
    finish(rollout, 2, "drifted")  # drifted counts as a failure
    assert advance(rollout.pk) == "halting"
    # Not started yet → skipped; the running host finishes.
    assert states(rollout) == ["succeeded", "failed", "drifted", "running", "skipped"]
    rollout.refresh_from_db()
    assert rollout.halted and rollout.message == "halted after 2 failures"
    finish(rollout, 3, "succeeded")
    assert advance(rollout.pk) == "partially_failed"
    change.refresh_from_db()
    assert change.state == "partially_failed"
    assert HostRun.objects.get(rollout=rollout, order=4).message == "halted after 2 failures"


def test_canary_failure_halts_everything(hosts, operator, approver):
    change, rollout = approved_change(
        hosts, operator, approver, canary_count=2, parallelism=5, max_failures=5
    )
    advance(rollout.pk)
    finish(rollout, 0, "failed")
    assert advance(rollout.pk) == "failed"
    assert states(rollout) == ["failed", "skipped", "skipped", "skipped", "skipped"]
    assert HostRun.objects.get(rollout=rollout, order=1).message == "halted: canary hv0 failed"
    change.refresh_from_db()
    assert change.state == "failed"


def test_window_not_before_and_not_after(hosts, operator, approver):
    later = timezone.now() + timedelta(hours=1)
    change, rollout = approved_change(
        hosts[:2], operator, approver, not_before=later, not_after=later + timedelta(hours=1)
    )
    assert advance(rollout.pk) == "window"
    assert states(rollout) == ["pending", "pending"]
    rollout.refresh_from_db()
    assert rollout.message.startswith("waiting for the window: not before")
    ChangeRequest.objects.filter(pk=change.pk).update(
        not_before=timezone.now() - timedelta(hours=2), not_after=timezone.now() - timedelta(hours=1)
    )
    assert advance(rollout.pk) == "failed"
    assert all(r.state == "skipped" and "window closed" in r.message for r in rollout.host_runs.all())


def test_cancel_stops_pending_hosts(hosts, operator, approver):
    change, rollout = approved_change(hosts[:3], operator, approver, parallelism=1)
    advance(rollout.pk)
    HostRun.objects.filter(rollout=rollout, order=0).update(state="running")
    services.cancel_change(change.pk, operator, reason="maintenance moved")
    assert advance(rollout.pk) == "cancelling"
    assert states(rollout) == ["running", "cancelled", "cancelled"]
    finish(rollout, 0, "succeeded")
    assert advance(rollout.pk) == "cancelled"
    change.refresh_from_db()
    assert change.state == "cancelled"


def test_a_busy_host_makes_the_second_change_wait_and_say_why(hosts, operator, approver):
    _first, r1 = approved_change(hosts[:1], operator, approver)
    second, r2 = approved_change(hosts[:1], operator, approver)
    HostRun.objects.filter(rollout=r1).update(state="running")
    advance(r2.pk)
    run = r2.host_runs.get()
    assert run_host(run.pk, run.owner if run.owner else "x") == "not claimed"
    run.refresh_from_db()
    assert run.state == "waiting"
    assert run.message == f"waiting: host is held by change #{_first.pk}"
