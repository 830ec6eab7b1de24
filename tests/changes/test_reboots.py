"""Reboots through a real Celery worker against simfleet over real SSH.

* A reboot that never returns: the host run fails at the deadline, the rollout halts per policy;
  meanwhile the host row says "waiting for <host> to come back (…)".
* VFs persisted through the reboot come back (verified); the verification notices when they do not.
* Running guests block a reboot at plan time unless allowed; a guest started after the plan stops
  the host run before the reboot.
* A legacy kernel (< 3.8): max_vfs in modprobe.d, the reboot it needs, the count after the boot.
"""

import pytest

from changes.execution.boot_wait import run_message
from changes.models import HostRun, Rollout
from hosts.models import Nic

from .conftest import wait_for
from .kargs_helpers import (  # noqa: F401 (_roles is an autouse fixture)
    REBOOT_ALWAYS,
    REBOOT_IF_NEEDED,
    _roles,
    agent_call,
    approve,
    approved,
    create,
    finished,
    kinds,
    make_fleet,
    rediscover,
    register,
    runs,
    set_vfs,
)

pytestmark = pytest.mark.slow

ENO49 = "0000:04:00.0"
ENO50 = "0000:04:00.1"
SPECS = [
    {"profile": "dl360g9", "name": "rb-gone"},
    {"profile": "dl360g9", "name": "rb-next"},
    {"profile": "dl360g9", "name": "rb-vfs-ok"},
    {"profile": "dl360g9", "name": "rb-vfs-lost"},
    {"profile": "dl360g9", "name": "rb-guests"},
    {"profile": "dl360g9", "name": "rb-late-guest"},
    {"profile": "legacy", "name": "rb-legacy"},
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = make_fleet(tmp_path_factory, SPECS, "simfleet-reboots")
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _clear_faults(fleet):
    yield
    for host in fleet.hosts:
        host.clear_faults()


def test_reboot_that_never_returns_fails_at_the_deadline_and_halts(celery_worker, fleet, operator, approver):
    sims = [fleet.host("rb-gone"), fleet.host("rb-next")]
    hosts = register(fleet, sims)
    sims[0].inject("reboot_never_returns")
    change = approved(hosts, operator, approver, [REBOOT_ALWAYS], parallelism=5, max_failures=1)
    messages = set()

    def rebooting():
        run = HostRun.objects.filter(rollout__change=change, state="rebooting").select_related("host").first()
        if run is None:
            return None
        run = HostRun.objects.prefetch_related("steps").select_related("host").get(pk=run.pk)
        messages.add(run_message(run))
        return run

    run = wait_for(rebooting, timeout=60, interval=0.1, what="the host to be rebooting")
    assert run.host.name == "rb-gone"
    # parallelism 5 asked, but a change with a reboot runs one host at a time (REBOOT_PARALLELISM)
    assert HostRun.objects.get(rollout__change=change, host__name="rb-next").dispatched_at is None
    wait_for(lambda: rebooting() is None, timeout=60, interval=0.5, what="the deadline")
    assert any(m.startswith("waiting for rb-gone to come back (") and m.endswith("s)") for m in messages), messages
    rollout = finished(change)
    gone, rest = runs(rollout)
    assert gone.state == "failed"
    assert gone.message.startswith("rb-gone did not come back within 8s (last attempt: unreachable")
    assert kinds(gone)[-1] == ("boot_wait", "inventory")
    last = gone.steps.order_by("-seq").first()
    assert last.ok is False and last.error_code == "boot_timeout"
    assert gone.steps.filter(operation="reboot").count() == 1  # one reboot attempt, no loop
    assert rest.state == "skipped" and rest.message == "halted after 1 failure"
    assert rollout.state == "failed" and change.state == "failed"
    assert sims[1].true_state()["reboots_requested"] == 0
    assert sims[0].true_state()["reboots_requested"] == 1


def test_persisted_vfs_come_back_and_the_verification_notices_when_not(celery_worker, fleet, operator, approver):
    ok_sim, lost_sim = fleet.host("rb-vfs-ok"), fleet.host("rb-vfs-lost")
    # rb-vfs-lost had 3 VFs persisted by the console earlier (eno50)
    agent_call(lost_sim, "set_vfs", {"pf": "eno50", "pci_address": ENO50, "count": 3, "persist": True})
    ok_host, lost_host = sorted(register(fleet, [ok_sim, lost_sim]), key=lambda h: h.name != "rb-vfs-ok")
    assert Nic.objects.get(host__name="rb-vfs-lost", pci_address=ENO50).persisted is True

    # VFs set and persisted in this change, then a reboot: they are there after the boot.
    boot_before = ok_sim.true_state()["boot_id"]
    good = approved([ok_host], operator, approver, [set_vfs("eno49", 4), REBOOT_ALWAYS])
    rollout = finished(good)
    run = runs(rollout)[0]
    assert rollout.state == "succeeded", run.message
    assert kinds(run) == [
        ("drift_check", "inventory"),
        ("action", "set_vfs"),
        ("action", "reboot"),
        ("boot_wait", "inventory"),
        ("verify", "inventory"),
    ]
    state = ok_sim.true_state()
    assert state["boot_id"] != boot_before and state["numvfs"][ENO49] == 4 and state["persisted"] == {ENO49: 4}

    # A reboot of the other host, whose persistence rule someone removed by hand after the plan.
    bad = create([lost_host], operator, [REBOOT_ALWAYS])
    assert bad.plan_items.get().after["numvfs"] == {f"boot:{ENO50}": 3}
    lost_sim.system().remove("/etc/udev/rules.d/70-sriov-console.rules")
    approve(bad, operator, approver)
    rollout = finished(bad)
    run = runs(rollout)[0]
    assert run.state == "failed"
    assert run.message == (
        f"verification failed: eno50 ({ENO50}): the persisted 3 VFs did not come back after the reboot, "
        "the host has 0 VFs"
    )
    assert lost_sim.true_state()["numvfs"][ENO50] == 0


def test_running_guests_block_a_reboot_at_plan_time_unless_allowed(celery_worker, fleet, operator, approver):
    sim = fleet.host("rb-guests")
    sim.add_guest("vm-db01", [])
    hosts = register(fleet, [sim])
    blocked = create(hosts, operator, [REBOOT_ALWAYS])
    assert blocked.plan_blocked
    assert blocked.plan_items.get().errors == [
        "rebooting rb-guests takes down 1 running guest: vm-db01; stop or migrate them first, or allow guest "
        "impact in the policy"
    ]
    allowed = approved(hosts, operator, approver, [REBOOT_ALWAYS], allow_guest_impact=True)
    assert allowed.plan_items.get().warnings == [
        "rebooting rb-guests takes down 1 running guest: vm-db01 (allowed by the rollout policy)"]
    rollout = finished(allowed)
    assert rollout.state == "succeeded", runs(rollout)[0].message
    assert sim.true_state()["reboots_requested"] == 1


def test_a_guest_started_after_the_plan_stops_the_host_run_before_the_reboot(
    celery_worker, fleet, operator, approver
):
    sim = fleet.host("rb-late-guest")
    hosts = register(fleet, [sim])
    change = create(hosts, operator, [REBOOT_ALWAYS])
    assert not change.plan_blocked
    sim.add_guest("vm-late", [])  # started after the plan, before the execution
    approve(change, operator, approver)
    rollout = finished(change)
    run = runs(rollout)[0]
    assert run.state == "failed"
    assert run.message == "reboot: guests_running: Not rebooting: 1 running guest would go down: vm-late."
    assert sim.true_state()["reboots_requested"] == 0


def test_legacy_kernel_max_vfs_route_with_the_reboot_it_needs(celery_worker, fleet, operator, approver):
    sim = fleet.host("rb-legacy")
    hosts = register(fleet, [sim])
    pci = sim.true_state()["nics"]["eth1"]
    change = approved(hosts, operator, approver, [set_vfs("eth1", 4), REBOOT_IF_NEEDED])
    item = change.plan_items.get()
    assert item.actions[-1]["step"]["op"] == "reboot"
    assert "eth1: 4 VFs take effect only at boot" in item.actions[-1]["text"]
    rollout = finished(change)
    run = runs(rollout)[0]
    assert rollout.state == "succeeded", run.message
    steps = list(run.steps.order_by("seq"))
    set_step = next(s for s in steps if s.operation == "set_vfs")
    assert set_step.result["reboot_required"] is True
    assert any("max_vfs=" in a for a in set_step.result["actions"])
    assert [s.kind for s in steps][-2:] == ["boot_wait", "verify"]
    assert sim.true_state()["numvfs"][pci] == 4
    assert Rollout.objects.get(change=change).state == "succeeded"


def test_reboot_if_needed_skips_hosts_that_do_not_need_it(celery_worker, fleet, operator, approver):
    sim = fleet.host("rb-next")
    hosts = register(fleet, [sim])
    rediscover(hosts)
    change = approved(hosts, operator, approver, [REBOOT_IF_NEEDED])
    item = change.plan_items.get()
    assert item.steps == []
    rollout = finished(change)
    assert rollout.state == "succeeded"
    assert sim.true_state()["reboots_requested"] == 0
