"""Kernel arguments on real simulated hosts through a real Celery worker.

* "Enable IOMMU for SR-IOV" on a mixed Intel/AMD fleet (Ubuntu update-grub with a grub.d override,
  Debian on AMD EPYC, RHEL 9 grubby): each host gets its own arguments, reboots once, verifies.
* A host whose update-grub fails stops before the reboot, its GRUB defaults intact (restored from
  the backup), the tool's error in the step's transcript; the rollout halts per policy.
"""

import json

import pytest

from audit.models import AuditEvent
from changes.models import HostRun, Rollout
from hosts.models import Hypervisor

from .conftest import wait_for
from .kargs_helpers import (  # noqa: F401 (_roles is an autouse fixture)
    IOMMU,
    REBOOT_IF_NEEDED,
    _roles,
    approved,
    finished,
    kinds,
    make_fleet,
    register,
    runs,
)

pytestmark = pytest.mark.slow

SPECS = [
    {"profile": "dl360g9", "name": "ka-ubuntu"},
    {"profile": "epyc", "name": "ka-epyc"},
    {"profile": "cx5", "name": "ka-rhel9"},
    {"profile": "dl360g9", "name": "ka-fails"},
    {"profile": "x710", "name": "ka-later"},
]
EXPECTED_ARGS = {
    "ka-ubuntu": ["intel_iommu=on", "iommu=pt"],
    "ka-epyc": ["iommu=pt"],  # AMD-Vi is on already where the firmware enables it
    "ka-rhel9": ["intel_iommu=on", "iommu=pt"],
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = make_fleet(tmp_path_factory, SPECS, "simfleet-kargs")
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _clear_faults(fleet):
    yield
    for host in fleet.hosts:
        host.clear_faults()


def test_enable_iommu_on_a_mixed_intel_amd_fleet(celery_worker, fleet, operator, approver):
    sims = [fleet.host(n) for n in EXPECTED_ARGS]
    hosts = register(fleet, sims)
    before = {s.name: s.true_state() for s in sims}
    assert [n for n, state in before.items() if state["iommu_active"]] == ["ka-epyc"]
    change = approved(hosts, operator, approver, [IOMMU, REBOOT_IF_NEEDED], parallelism=3)
    plans = {item.host.name: item for item in change.plan_items.select_related("host")}
    assert plans["ka-ubuntu"].actions[0]["grub"]["file"] == "/etc/default/grub.d/50-cloudimg-settings.cfg"
    assert plans["ka-ubuntu"].actions[0]["grub"]["tool"] == "update-grub"
    assert plans["ka-epyc"].actions[0]["grub"]["after"] == "quiet iommu=pt"
    assert plans["ka-rhel9"].actions[0]["grub"]["tool"] == "grubby"

    seen_rebooting = set()

    def check():
        rebooting = HostRun.objects.filter(rollout__change=change, state="rebooting").select_related("host")
        seen_rebooting.update(r.host.name for r in rebooting)
        # never more than one host rebooting at once: a reboot caps the rollout at parallelism 1
        assert rebooting.count() <= 1
        assert HostRun.objects.filter(rollout__change=change, state__in=("running", "rebooting")).count() <= 1
        rollout = Rollout.objects.filter(change=change).first()
        return rollout if rollout and rollout.is_finished else None

    wait_for(check, timeout=180, interval=0.1, what="the IOMMU rollout")
    rollout = finished(change)
    assert rollout.state == "succeeded", [r.message for r in runs(rollout)]
    assert seen_rebooting  # the UI state was visible while hosts rebooted
    assert sorted(r.host.name for r in runs(rollout)) == sorted(EXPECTED_ARGS)
    for run in runs(rollout):
        sim = fleet.host(run.host.name)
        state = sim.true_state()
        args = EXPECTED_ARGS[sim.name]
        assert all(a in state["cmdline"].split() for a in args), state["cmdline"]
        assert "amd_iommu=on" not in state["cmdline"]
        if sim.name == "ka-epyc":
            assert "intel_iommu=on" not in state["cmdline"]
        assert state["iommu_active"] is True
        assert state["reboots_requested"] == 1 and state["boot_count"] == before[sim.name]["boot_count"] + 1
        assert kinds(run) == [
            ("drift_check", "inventory"),
            ("action", "kernel_args"),
            ("action", "reboot"),
            ("boot_wait", "inventory"),
            ("verify", "inventory"),
        ]
        steps = list(run.steps.order_by("seq"))
        assert steps[1].request["args"] == {"add": args, "remove": []}
        assert steps[1].result["reboot_required"] is True
        assert steps[3].result["boot_id"] != steps[0].result["boot_id"] == steps[2].result["boot_id"]
        assert steps[3].description.startswith(f"{sim.name} came back after ")
        assert run.state == "succeeded" and "verified" in run.message
        host = Hypervisor.objects.get(pk=run.host_id)
        assert host.intents.get(operation="kernel_args").value == args
        assert host.iommu_active is True and not host.drifted
        assert AuditEvent.objects.filter(action="hostrun.state_changed", object_id=str(run.pk),
                                         data__to="rebooting").exists()


def test_update_grub_failure_stops_before_the_reboot(celery_worker, fleet, operator, approver):
    sims = [fleet.host("ka-fails"), fleet.host("ka-later")]
    hosts = register(fleet, sims)
    grub_before = sims[0].true_state()
    sims[0].inject("update_grub_fails")
    change = approved(hosts, operator, approver, [IOMMU, REBOOT_IF_NEEDED], parallelism=1, max_failures=1)
    rollout = finished(change)
    failed, skipped = runs(rollout)
    assert (failed.host.name, skipped.host.name) == ("ka-fails", "ka-later")
    assert failed.state == "failed", failed.message
    assert failed.message.startswith("kernel arguments: grub_tool_failed: update-grub failed (exit status 1); "
                                     "the previous GRUB defaults were restored from the backup.")
    assert skipped.state == "skipped" and skipped.message == "halted after 1 failure"
    assert rollout.state == "failed" and change.state == "failed"
    # stopped before the reboot: never requested, same boot, the files as they were
    state = sims[0].true_state()
    assert state["reboots_requested"] == 0 and state["boot_id"] == grub_before["boot_id"]
    assert state["grub_default_text"] == grub_before["grub_default_text"]
    assert state["grub_effective"] == grub_before["grub_effective"]
    assert "intel_iommu=on" not in (state["generated_cmdline"] or "")
    # the error is in the transcript
    action = failed.steps.get(kind="action")
    assert action.operation == "kernel_args" and action.exit_status == 1 and action.error_code == "grub_tool_failed"
    error = json.loads(action.stdout)["error"]
    assert "failed to get canonical path" in error["details"]["stderr"]
    assert error["details"]["restored"] == ["/etc/default/grub.d/50-cloudimg-settings.cfg"]
    assert not failed.steps.filter(operation="reboot").exists()
    assert not Hypervisor.objects.get(pk=failed.host_id).intents.exists()
    assert sims[1].true_state()["reboots_requested"] == 0
