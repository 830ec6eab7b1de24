"""A step interrupted by a lost worker is decided from a re-read of the host (done, re-run or
drifted), a late result of a replaced worker is kept, and the maintenance window stops a host run
between steps — over real SSH to simfleet. run_host runs in this process (no worker): the tests
set up the rows a lost worker leaves behind."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from changes import approvals, services
from changes.execution.host_run import run_host
from changes.execution.recovery import resume_stale
from changes.execution.rollout import advance
from changes.execution.transitions import close_open_steps
from changes.models import ChangeRequest, HostRun, Rollout, Step
from simfleet import SimFleet
from tests.conftest import ensure_role_groups

from .conftest import change_data
from .test_rollout_integration import ENO50, register, set_vfs, writes

pytestmark = pytest.mark.slow

NAMES = [f"r{i:02d}" for i in range(8)]
_used = iter(NAMES)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = SimFleet(
        tmp_path_factory.mktemp("simfleet-review"),
        hosts=[{"profile": "dl360g9", "name": n} for n in NAMES],
        base_port=0,
        vf_delay=0.02,
    ).start()
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _roles(transactional_db):
    """transactional_db empties every table after a test, the role groups too: put them back."""
    ensure_role_groups()


def lost_worker_run(fleet, operator, approver, ops, **policy):
    """A dispatched host run whose worker died inside the agent call of its first action."""
    sim = fleet.host(next(_used))
    host = register(fleet, [sim])[0]
    change = services.create_change(change_data([host.pk], ops=ops, **policy), operator)
    assert not change.plan_blocked, list(change.plan_items.values_list("errors", flat=True))
    services.submit_change(change.pk, operator)
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    rollout = Rollout.objects.get(change=change)
    advance(rollout.pk)
    run = HostRun.objects.get(rollout=rollout)
    item = run.plan_item
    now = timezone.now()
    Step.objects.create(host_run=run, seq=1, kind="drift_check", operation="inventory", ok=True,
                        started_at=now, finished_at=now, result={})
    first = next(i for i, a in enumerate(item.actions) if a.get("step"))
    Step.objects.create(host_run=run, seq=2, kind="action", action_index=first, operation="set_vfs",
                        request=item.actions[first]["step"], started_at=now)
    HostRun.objects.filter(pk=run.pk).update(
        state="running", started_at=now, heartbeat_at=now - timedelta(hours=1), lease="dead-worker"
    )
    return sim, change, run


def resume_and_run(run):
    assert resume_stale() == [run.pk]
    run.refresh_from_db()
    assert run.lease == ""
    return run_host(run.pk, run.owner)


def test_a_step_the_lost_worker_applied_is_not_sent_again(fleet, operator, approver):
    sim, _change, run = lost_worker_run(fleet, operator, approver, [set_vfs("eno49", 4, persist=False)])
    sim.system().write_text("/sys/class/net/eno49/device/sriov_numvfs", "4\n")  # it did write
    sim.events.clear()
    assert resume_and_run(run) == "succeeded"
    assert writes(sim) == []  # nothing sent again
    steps = list(run.steps.order_by("seq"))
    assert [s.kind for s in steps] == ["drift_check", "action", "verify", "action", "verify"]
    assert steps[1].error_code == "interrupted"
    assert steps[3].ok and steps[3].note.startswith("step 2 was applied by the lost worker")


def test_a_verify_call_the_lost_worker_left_open_is_closed_and_done_again(fleet, operator, approver):
    sim, _change, run = lost_worker_run(fleet, operator, approver, [set_vfs("eno49", 4, persist=False)])
    # The lost worker applied the step and died inside the verify call.
    sim.system().write_text("/sys/class/net/eno49/device/sriov_numvfs", "4\n")
    Step.objects.filter(host_run=run, seq=2).update(ok=True, finished_at=timezone.now())
    Step.objects.create(host_run=run, seq=3, kind="verify", operation="inventory", started_at=timezone.now())
    assert resume_and_run(run) == "succeeded"
    steps = list(run.steps.order_by("seq"))
    assert [(s.kind, s.error_code) for s in steps] == [
        ("drift_check", ""), ("action", ""), ("verify", "interrupted"), ("verify", "")
    ]
    assert all(s.finished_at is not None for s in steps)


def test_a_half_done_reset_is_re_run(fleet, operator, approver):
    sim, _change, run = lost_worker_run(fleet, operator, approver, [set_vfs("eno49", 4, persist=False)])
    sim.events.clear()
    assert resume_and_run(run) == "succeeded"  # 0 on the host: the re-run writes the count
    assert writes(sim) == [4]
    rerun = run.steps.filter(kind="action", ok=True).get()
    assert rerun.note.startswith("re-run of step 2")


def test_a_count_that_is_neither_before_nor_after_is_drifted_and_nothing_is_written(fleet, operator, approver):
    sim, _change, run = lost_worker_run(fleet, operator, approver, [set_vfs("eno49", 4, persist=False)])
    sim.system().write_text("/sys/class/net/eno49/device/sriov_numvfs", "3\n")  # someone else
    sim.events.clear()
    assert resume_and_run(run) == "drifted"
    assert writes(sim) == []
    run.refresh_from_db()
    assert "has 3 VFs after the loss of the worker of step 2" in run.message


def test_the_window_closing_between_steps_stops_the_host_run(fleet, operator, approver):
    ops = [set_vfs("eno49", 2, persist=False), set_vfs("eno50", 2, persist=False)]
    sim, change, run = lost_worker_run(
        fleet, operator, approver, ops, not_after=timezone.now() + timedelta(hours=1)
    )
    # The lost worker finished its first step; the window closes before the second.
    Step.objects.filter(host_run=run, seq=2).update(ok=True, finished_at=timezone.now())
    HostRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now(), lease="")
    ChangeRequest.objects.filter(pk=change.pk).update(not_after=timezone.now() - timedelta(minutes=1))
    sim.events.clear()
    run.refresh_from_db()
    assert run_host(run.pk, run.owner) == "failed"
    run.refresh_from_db()
    assert run.message.startswith("window closed after 1 of 2 steps")
    assert "not rolled back" in run.message
    assert writes(sim) == [] and writes(sim, ENO50) == []


def test_a_late_result_of_a_step_closed_as_interrupted_is_kept_as_a_step(fleet, operator, approver):
    import threading

    from audit.models import AuditEvent

    from .conftest import wait_for

    sim = fleet.host(next(_used))
    host = register(fleet, [sim])[0]
    change = services.create_change(change_data([host.pk], ops=[set_vfs("eno49", 4, persist=False)]), operator)
    services.submit_change(change.pk, operator)
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    rollout = Rollout.objects.get(change=change)
    advance(rollout.pk)
    run = HostRun.objects.get(rollout=rollout)
    outcome = {}
    sim.inject("latency", seconds=3.0)

    def old_worker():
        from django.db import connection

        try:
            outcome["state"] = run_host(run.pk, run.owner)
        finally:
            connection.close()

    thread = threading.Thread(target=old_worker)
    thread.start()
    try:
        step = wait_for(
            lambda: Step.objects.filter(host_run=run, kind="action", finished_at__isnull=True).first(),
            what="the set_vfs call",
        )
        # The old worker is presumed dead: a new owner takes over and closes its step.
        HostRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        assert resume_stale() == [run.pk]
        with transaction.atomic():
            close_open_steps(run, run.rollout.change_id)
    finally:
        thread.join(timeout=60)
        sim.clear_faults()
    assert outcome["state"] == "lost ownership"
    late = Step.objects.get(host_run=run, note=f"late result of step {step.seq} from the replaced worker")
    assert late.ok and late.kind == "action" and late.finished_at is not None
    assert AuditEvent.objects.filter(action="step.finished", data__step=late.pk).exists()
