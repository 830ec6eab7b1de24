"""The issue's integration tests: a real Celery worker (Redis in CI), the test database, simfleet
hosts over real SSH. Hosts are registered with pinned keys and discovered, then changed.

Covered: the 3-host change with four-eyes and transcripts; non-zero→non-zero through the reset and
an over-limit request blocked at plan time; canary failure; the failure threshold; cancel
mid-rollout; two changes on one host never at once; a worker SIGKILLed mid-rollout and resumed;
drift between approval and execution; retry of the failed hosts.
"""

import json
import re
import time

import pytest
from django.core.exceptions import PermissionDenied

from audit.models import AuditEvent
from changes import approvals, retries, services
from changes.models import ChangeRequest, HostRun, Rollout, Step
from changes.tasks import resume_stale_host_runs
from hosts.discovery import discover_hosts
from hosts.models import Hypervisor, Nic
from remote import protocol
from simfleet import SimFleet
from tests.conftest import ensure_role_groups, register_sim_hosts

from .conftest import change_data, wait_for

pytestmark = pytest.mark.slow

ENO49 = "0000:04:00.0"
ENO50 = "0000:04:00.1"
NAMES = [f"c{i:02d}" for i in range(24)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = SimFleet(
        tmp_path_factory.mktemp("simfleet-changes"),
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


@pytest.fixture(autouse=True)
def _clear_faults(fleet):
    yield
    for host in fleet.hosts:
        host.clear_faults()


_used = iter(NAMES)


def sim_hosts(fleet, n):
    """n fresh simulated hosts (each test uses its own, so true states never mix)."""
    return [fleet.host(next(_used)) for _ in range(n)]


def register(fleet, sims):
    return register_sim_hosts(fleet, sims)


def set_vfs(value, count, by="name", **extra):
    return {"op": "set_vfs", "select": {"by": by, "value": value}, "count": count, **extra}


def approved(hosts, operator, approver, ops=None, **policy):
    change = services.create_change(change_data([h.pk for h in hosts], ops=ops, **policy), operator)
    assert not change.plan_blocked, list(change.plan_items.values_list("errors", flat=True))
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    approvals.approve(change.pk, approver, comment="ok", approval_hash=approvals.current_approval_hash(change.pk))
    change.refresh_from_db()
    return change


def finished(change, timeout=120):
    def check():
        rollout = Rollout.objects.filter(change=change).order_by("-attempt").first()
        return rollout if rollout and rollout.is_finished else None

    rollout = wait_for(check, timeout=timeout, what=f"rollout of change #{change.pk}")
    change.refresh_from_db()
    return rollout


def runs(rollout):
    return list(rollout.host_runs.select_related("host").order_by("order"))


def writes(sim, pci=ENO49):
    """The values written to a PF's sriov_numvfs on the simulated host, in order."""
    return [
        int(m.group(1))
        for e in list(sim.events)
        if (m := re.match(rf"sriov_numvfs {re.escape(pci)} <- (\d+)", e))
    ]


def set_vfs_calls(sim):
    return [c for c in list(sim.commands) if c.get("op") == "set_vfs"]


def test_three_host_change_four_eyes_transcripts_and_the_reset(celery_worker, fleet, operator, approver):
    sims = sim_hosts(fleet, 3)
    hosts = register(fleet, sims)
    change = services.create_change(
        change_data([h.pk for h in hosts], parallelism=2, canary_count=1), operator
    )
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    with pytest.raises(PermissionDenied):
        approvals.approve(change.pk, operator, approval_hash=approvals.current_approval_hash(change.pk))
    approvals.approve(change.pk, approver, comment="go", approval_hash=approvals.current_approval_hash(change.pk))
    rollout = finished(change)
    assert rollout.state == "succeeded" and change.state == "succeeded", [r.message for r in runs(rollout)]
    for sim in sims:
        assert sim.true_state()["numvfs"][ENO49] == 4
        assert writes(sim) == [4]
    sha = protocol.agent_sha256()
    for run in runs(rollout):
        steps = list(run.steps.order_by("seq"))
        assert [s.kind for s in steps] == ["drift_check", "action", "verify"]
        assert all(s.ok and s.exit_status == 0 and s.agent_sha256 == sha and s.duration > 0 for s in steps)
        action = steps[1]
        assert action.request["args"] == {
            "pf": "eno49",
            "pci_address": ENO49,
            "count": 4,
            "persist": True,
            "take_over": False,
            "allow_guest_impact": False,
        }
        assert json.loads(action.stdout)["result"]["after"]["sriov_numvfs"] == 4
        assert run.message == "1 step applied and verified"
        assert AuditEvent.objects.filter(action="step.finished", data__step=action.pk).exists()
    assert (
        Nic.objects.filter(
            host__in=hosts, pci_address=ENO49, sriov_numvfs=4, persisted=True,
            host__intents__operation="set_vfs", host__intents__subject=ENO49, host__intents__value=4,
        ).count()
        == 3
    )
    assert runs(rollout)[0].is_canary

    # Non-zero → non-zero goes through the reset; 8 is over the I350's 7 and is blocked at plan time.
    blocked = services.create_change(change_data([hosts[0].pk], ops=[set_vfs("eno49", 8)]), operator)
    assert blocked.plan_blocked
    assert blocked.plan_items.get().errors == ["eno49: 8 VFs requested, the NIC supports at most 7"]
    with pytest.raises(services.ChangeError):
        services.submit_change(blocked.pk, operator)
    second = approved(hosts[:1], operator, approver, ops=[set_vfs("eno49", 2)])
    assert (
        second.plan_items.get().actions[0]["text"]
        == "eno49: 4 → 2 VFs (reset to 0 first, the kernel refuses a direct change)"
    )
    rollout = finished(second)
    assert rollout.state == "succeeded", [r.message for r in runs(rollout)]
    assert writes(sims[0]) == [4, 0, 2]
    action = runs(rollout)[0].steps.get(kind="action")
    assert any("wrote 0 to sriov_numvfs" in a for a in action.result["actions"])
    assert sims[0].true_state()["numvfs"][ENO49] == 2


def test_canary_failure_halts_with_the_rest_untouched(celery_worker, fleet, operator, approver):
    sims = sim_hosts(fleet, 3)
    hosts = register(fleet, sims)
    sims[0].inject("readonly_etc")  # the persistence file cannot be written: set_vfs fails
    change = approved(hosts, operator, approver, canary_count=1, parallelism=3, max_failures=3)
    rollout = finished(change)
    canary, *rest = runs(rollout)
    assert canary.state == "failed" and "readonly_fs" in canary.message
    assert [r.state for r in rest] == ["skipped", "skipped"]
    assert all(r.message == f"halted: canary {sims[0].name} failed" for r in rest)
    assert rollout.state == "failed" and change.state == "failed"
    for sim in sims[1:]:
        assert set_vfs_calls(sim) == [] and writes(sim) == []
    # The failure was followed by a re-read of the host, recorded as a step.
    assert [s.kind for s in canary.steps.order_by("seq")] == ["drift_check", "action", "verify"]


def test_failure_threshold(celery_worker, fleet, operator, approver):
    sims = sim_hosts(fleet, 4)
    hosts = register(fleet, sims)
    for sim in sims[:2]:
        sim.inject("readonly_etc")
    change = approved(hosts, operator, approver, parallelism=1, max_failures=2)
    rollout = finished(change)
    assert [r.state for r in runs(rollout)] == ["failed", "failed", "skipped", "skipped"]
    assert runs(rollout)[2].message == "halted after 2 failures"
    assert change.state == "failed"
    assert set_vfs_calls(sims[2]) == [] and set_vfs_calls(sims[3]) == []


def test_cancel_mid_rollout(celery_worker, fleet, operator, approver):
    sims = sim_hosts(fleet, 3)
    hosts = register(fleet, sims)
    for sim in sims:
        sim.inject("latency", seconds=1.5)
    change = approved(hosts, operator, approver, parallelism=1)
    wait_for(lambda: Step.objects.filter(host_run__rollout__change=change).exists(), what="the first step")
    services.cancel_change(change.pk, operator, reason="window moved")
    rollout = finished(change)
    first, *rest = runs(rollout)
    assert first.state in ("cancelled", "succeeded")
    assert [r.state for r in rest] == ["cancelled", "cancelled"]
    assert rollout.state == "cancelled" and change.state == "cancelled"
    assert not Step.objects.filter(host_run__in=rest).exists()
    for sim in sims[1:]:
        assert not set_vfs_calls(sim)
    assert all(s.finished_at for s in first.steps.all())


def test_two_changes_on_one_host_never_run_at_once(celery_worker, fleet, operator, approver):
    sims = sim_hosts(fleet, 1)
    hosts = register(fleet, sims)
    sims[0].inject("latency", seconds=1.0)
    first = approved(hosts, operator, approver, ops=[set_vfs("eno49", 2)])
    second = approved(hosts, operator, approver, ops=[set_vfs("eno50", 3)])
    saw_waiting = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        active = HostRun.objects.filter(host=hosts[0], state="running").count()
        assert active <= 1
        waiting = HostRun.objects.filter(host=hosts[0], state="waiting").first()
        if waiting:
            saw_waiting = True
            other = first if waiting.rollout.change_id == second.pk else second
            assert waiting.message == f"waiting: host is held by change #{other.pk}"
        if all(Rollout.objects.get(change=c).is_finished for c in (first, second)):
            break
        time.sleep(0.1)
    assert saw_waiting
    for change in (first, second):
        assert Rollout.objects.get(change=change).state == "succeeded"
    # The agent calls of the two changes never overlapped on the host.
    calls = sorted(
        (c["time"], c["time"] + c.get("duration", 0), c["request_id"])
        for c in sims[0].commands
        if c.get("request_id")
    )
    for (_s1, end1, _r1), (start2, _e2, _r2) in zip(calls, calls[1:], strict=False):
        assert start2 >= end1 - 0.01
    assert sims[0].true_state()["numvfs"] == {**sims[0].true_state()["numvfs"], ENO49: 2, ENO50: 3}


def test_worker_killed_mid_rollout_resumes_without_harmful_rewrites(celery_worker, fleet, operator, approver):
    sims = sim_hosts(fleet, 2)
    hosts = register(fleet, sims)
    for sim in sims:
        sim.inject("latency", seconds=3.0)
    change = approved(hosts, operator, approver, parallelism=2)
    # Wait until both hosts are inside their set_vfs call, then kill the worker (SIGKILL, all processes).
    wait_for(
        lambda: (
            Step.objects.filter(
                host_run__rollout__change=change, kind="action", finished_at__isnull=True
            ).count()
            == 2
        ),
        what="both set_vfs calls",
    )
    celery_worker.kill()
    for sim in sims:
        sim.clear_faults()
    assert set(HostRun.objects.filter(rollout__change=change).values_list("state", flat=True)) == {"running"}
    celery_worker.start()
    # Beat's resume task (through the new worker) finds the stale heartbeats and resumes.
    deadline = time.monotonic() + 120
    while not Rollout.objects.get(change=change).is_finished:
        assert time.monotonic() < deadline, "the rollout did not complete after the worker was restarted"
        resume_stale_host_runs.delay()
        time.sleep(2)
    rollout = finished(change)
    assert rollout.state == "succeeded", [r.message for r in runs(rollout)]
    for sim, run in zip(sims, runs(rollout), strict=True):
        assert sim.true_state()["numvfs"][ENO49] == 4
        assert writes(sim) == [4]  # never reset, never written twice
        steps = list(run.steps.order_by("seq"))
        assert all(s.finished_at is not None for s in steps)
        interrupted = [s for s in steps if s.error_code == "interrupted"]
        assert len(interrupted) == 1 and interrupted[0].kind == "action"
        rerun = [s for s in steps if s.kind == "action" and s.ok]
        # The host is re-read first: the lost worker either wrote the count (recorded, not sent
        # again) or did not (re-run).
        assert len(rerun) == 1 and rerun[0].note.startswith(
            (f"re-run of step {interrupted[0].seq}", f"step {interrupted[0].seq} was applied by the lost worker")
        )
        assert run.resumed_count >= 1
        assert AuditEvent.objects.filter(
            action="hostrun.state_changed", object_id=str(run.pk), data__resumed=True
        ).exists()
        assert AuditEvent.objects.filter(action="step.finished", data__step=interrupted[0].pk).exists()


def test_drift_between_approval_and_execution(celery_worker, fleet, operator, approver):
    sims = sim_hosts(fleet, 1)
    hosts = register(fleet, sims)
    change = services.create_change(change_data([hosts[0].pk], ops=[set_vfs("eno49", 4)]), operator)
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    # Someone changes the host by hand after the plan was made.
    sims[0].system().write_text("/sys/class/net/eno49/device/sriov_numvfs", "2\n")
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    rollout = finished(change)
    run = runs(rollout)[0]
    assert run.state == "drifted"
    assert run.message.startswith("drifted: the host no longer matches the plan, nothing written")
    assert "eno49 (0000:04:00.0): the plan saw 0 VFs, the host has 2 VFs" in run.message
    assert [s.kind for s in run.steps.all()] == ["drift_check"]
    assert set_vfs_calls(sims[0]) == []
    assert sims[0].true_state()["numvfs"][ENO49] == 2
    assert change.state == "failed"
    with pytest.raises(services.ChangeError, match="drifted from the plan: a new change is needed"):
        retries.retry_change(change.pk, operator)


def test_retry_reruns_only_the_failed_hosts(celery_worker, fleet, operator, approver):
    sims = sim_hosts(fleet, 2)
    hosts = register(fleet, sims)
    sims[1].inject("garbage_output")  # the drift check cannot read the host: nothing is written
    change = approved(hosts, operator, approver, parallelism=2, max_failures=2)
    rollout = finished(change)
    assert [r.state for r in runs(rollout)] == ["succeeded", "failed"]
    assert change.state == "partially_failed"
    sims[1].clear_faults()
    discover_hosts(Hypervisor.objects.filter(pk=hosts[1].pk))
    retry = retries.retry_change(change.pk, operator)
    assert retry.attempt == 2 and retry.parent_id == rollout.pk
    assert [r.host_id for r in retry.host_runs.all()] == [hosts[1].pk]
    rollout = finished(change)
    assert rollout.pk == retry.pk and rollout.state == "succeeded"
    assert change.state == "succeeded"
    assert writes(sims[0]) == [4] and writes(sims[1]) == [4]
    assert AuditEvent.objects.filter(change_id=change.pk, action="change.retried").count() == 1
    assert ChangeRequest.objects.get(pk=change.pk).approvals.count() == 1  # approved once, same plan
