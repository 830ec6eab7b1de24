"""The reviewer's safety findings, shown against the simulated kernel (the real agent bytes, run
in-process over SimSystem like simfleet's server runs them)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import threading
from pathlib import Path

import pytest

from remote.protocol import agent_source
from simfleet import PROFILES, SimHost

pytestmark = pytest.mark.timeout(60)

ENO49 = "0000:04:00.0"


def run(host, op, args=None, system=None):
    namespace = {"__name__": "sriov_agent"}
    # SRIOV_AGENT_UNDER_TEST=<path>: run these tests against another agent (e.g. the unfixed one)
    override = os.environ.get("SRIOV_AGENT_UNDER_TEST")
    source = Path(override).read_bytes() if override else agent_source()
    exec(compile(source, "sriov_agent.py", "exec"), namespace)
    request = json.dumps({"op": op, "args": args or {}, "request_id": "t"}).encode()
    _status, out, _err = namespace["run_payload"](request, system or host.system())
    return json.loads(out)


def set_vfs(host, count, **extra):
    return run(host, "set_vfs", dict({"pf": "eno49", "pci_address": ENO49, "count": count}, **extra))


def with_guest_on_vf(host, index=1, count=4):
    assert set_vfs(host, count)["ok"]
    vf = host.true_state()["vfs"][ENO49][index]["pci"]
    host.add_guest("vm-db01", [vf])
    return vf


# -- a failing dumpxml means "guests unknown", never "no VFs in use" ---------------------


def test_dumpxml_failure_fails_closed():
    host = SimHost("h1", "dl360g9", vf_delay=0.0)
    with_guest_on_vf(host)
    host.faults["virsh_dumpxml_fails"] = {}
    doc = set_vfs(host, 0)
    assert doc["error"]["code"] == "guest_check_failed", doc
    assert "dumpxml" in doc["error"]["details"]["error"]
    assert host.true_state()["numvfs"][ENO49] == 4
    assert [g["running"] for g in host.true_state()["guests"]] == [True]
    inv = run(host, "inventory")["result"]
    assert inv["guests"] is None and "dumpxml" in inv["guests_error"]
    doc = run(host, "reboot", {"refuse_if_guests": True})
    assert doc["error"]["code"] == "guest_check_failed" and host.reboots_requested == 0


# -- no virsh does not mean no guests -----------------------------------------------


def test_missing_virsh_with_qemu_running_fails_closed():
    host = SimHost("h2", "dl360g9", vf_delay=0.0)
    with_guest_on_vf(host)
    host.faults["no_virsh"] = {}
    doc = set_vfs(host, 0)
    assert doc["error"]["code"] == "guest_check_failed", doc
    assert "virsh is not installed" in doc["error"]["message"] and "qemu" in doc["error"]["message"]
    assert host.true_state()["numvfs"][ENO49] == 4
    assert run(host, "reboot")["error"]["code"] == "guest_check_failed"  # refuse_if_guests defaults on
    assert host.reboots_requested == 0


def test_missing_virsh_without_guests_proceeds():
    host = SimHost("h3", "dl360g9", vf_delay=0.0)
    assert set_vfs(host, 2)["ok"]
    host.faults["no_virsh"] = {}
    assert set_vfs(host, 0)["ok"]


def test_vfio_bound_vf_is_in_use_even_when_no_guest_claims_it():
    profile = dataclasses.replace(PROFILES["dl360g9"], vf_binding="vfio-pci")
    host = SimHost("h4", profile, vf_delay=0.0)
    doc = set_vfs(host, 2)
    assert doc["ok"], doc
    doc = set_vfs(host, 0)
    assert doc["error"]["code"] == "vfs_in_use", doc
    assert doc["error"]["details"]["vfs"][0]["used_by"] == ["<unknown: bound to vfio-pci>"]
    assert set_vfs(host, 0, allow_guest_impact=True)["ok"]


# -- take_over and allow_guest_impact are separate ----------------------------------


def test_take_over_does_not_allow_guest_impact():
    host = SimHost("h5", "dl360g9", vf_delay=0.0)
    host.system().write_text("/sys/class/net/eno49/device/sriov_numvfs", "4")  # by hand: unmanaged
    vf = host.true_state()["vfs"][ENO49][1]["pci"]
    host.add_guest("vm-db01", [vf])
    assert set_vfs(host, 2)["error"]["code"] == "externally_managed"
    assert set_vfs(host, 2, take_over=True)["error"]["code"] == "vfs_in_use"
    assert set_vfs(host, 2, allow_guest_impact=True)["error"]["code"] == "externally_managed"
    assert host.true_state()["numvfs"][ENO49] == 4


# -- passthrough hosts never get VF netdevs; that is not a timeout -------------------


@pytest.mark.parametrize("binding", ["vfio-pci", "none"])
def test_no_vf_netdevs_is_information_not_failure(binding):
    profile = dataclasses.replace(PROFILES["dl360g9"], vf_binding=binding)
    host = SimHost("h6", profile, vf_delay=0.0)
    doc = set_vfs(host, 3, wait_seconds=2)
    assert doc["ok"], doc
    assert doc["result"]["vf_netdevs_ready"] is True  # none expected: nothing pending
    assert [vf["netdev"] for vf in doc["result"]["after"]["vfs"]] == [None, None, None]


def test_slow_vf_netdevs_are_reported_not_failed():
    host = SimHost("h7", "dl360g9", vf_delay=30.0)
    doc = set_vfs(host, 2, wait_seconds=0.3)
    assert doc["ok"], doc
    assert doc["result"]["vf_netdevs_ready"] is False
    assert len(doc["result"]["after"]["vfs"]) == 2


# -- the driver refuses to free assigned VFs; the guests keep running ------------


@pytest.mark.parametrize("profile,pf,pci,code", [
    ("dl360g9", "eno49", ENO49, errno.EPERM),
    ("x710", "enp59s0f0", "0000:3b:00.0", errno.EINVAL),
    ("cx5", "enp94s0f0np0", "0000:5e:00.0", errno.EBUSY),
])
def test_zero_while_guests_hold_vfs_is_vfs_assigned(profile, pf, pci, code):
    host = SimHost("h8", profile, vf_delay=0.0)
    assert run(host, "set_vfs", {"pf": pf, "pci_address": pci, "count": 2})["ok"]
    host.add_guest("vm-a", [host.true_state()["vfs"][pci][0]["pci"]])
    with pytest.raises(OSError) as raised:
        host.system().write_text(f"/sys/class/net/{pf}/device/sriov_numvfs", "0")
    assert raised.value.errno == code
    doc = run(host, "set_vfs", {"pf": pf, "pci_address": pci, "count": 0, "allow_guest_impact": True})
    assert doc["error"]["code"] == "vfs_assigned", doc
    assert "assigned to guests" in doc["error"]["message"]
    assert doc["error"]["message"].startswith(f"{pf} now has 2 VFs (had 2). ")
    assert doc["error"]["details"]["partially_applied"] is False
    assert host.true_state()["numvfs"][pci] == 2 and host.true_state()["guests"][0]["running"]
    assert host.true_state()["persisted"][pci] == 2  # the ownership record was rolled back


def test_reset_then_failure_restores_the_previous_count():
    host = SimHost("h9", "dl360g9", vf_delay=0.0)
    assert set_vfs(host, 2)["ok"]
    system = host.system()
    original = system.write_sysfs

    def flaky(path, data, timeout):
        if data.strip() == "6":
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return original(path, data, timeout)

    system.write_sysfs = flaky
    doc = run(host, "set_vfs", {"pf": "eno49", "pci_address": ENO49, "count": 6}, system=system)
    assert doc["error"]["code"] == "enospc"
    details = doc["error"]["details"]
    assert details["sriov_numvfs_after_failure"] == 0 and details["sriov_numvfs_now"] == 2
    assert any(a.startswith("restored the previous count") for a in details["actions"])
    assert host.true_state()["numvfs"][ENO49] == 2 and host.true_state()["persisted"][ENO49] == 2


def test_sysfs_write_hang_times_out_without_restore_attempt():
    host = SimHost("h10", "dl360g9", vf_delay=0.0)
    host.sysfs_write_timeout = host.sysfs_read_timeout = 0.2
    host.faults["sysfs_write_hangs"] = {}  # until cleared
    doc = set_vfs(host, 2)
    assert doc["error"]["code"] == "write_timeout", doc
    details = doc["error"]["details"]
    # the read-back waits for the same device lock: the count is unknown, and said so
    assert details["write_pending"] is True and details["pending_value"] == 2
    assert details["sriov_numvfs_now"] is None and "unknown number" in doc["error"]["message"]
    assert not any(a.startswith("restored") for a in details["actions"])
    assert host.true_state()["persisted"] == {}  # rolled back
    host.faults.pop("sysfs_write_hangs")  # the driver finishes: the pending write lands
    assert host.wait_until(lambda s: s["numvfs"][ENO49] == 2 and not s["pending_writes"], 5)


# -- equal count on someone else's PF is not adopted silently -----------------------


def test_equal_count_on_unmanaged_pf_is_not_adopted_without_take_over():
    host = SimHost("h11", "dl360g9", vf_delay=0.0)
    host.system().write_text("/sys/class/net/eno49/device/sriov_numvfs", "2")
    doc = set_vfs(host, 2)
    assert doc["ok"] and doc["result"]["persisted"] is False and doc["result"]["reason"] == "externally_managed"
    assert host.true_state()["persisted"] == {}
    assert set_vfs(host, 2, take_over=True)["result"]["persisted"] is True


# -- one mutating run per host -------------------------------------------------------


def test_concurrent_runs_are_serialised_by_the_host_lock():
    host = SimHost("h12", "dl360g9", vf_delay=0.0)
    assert host.agent_lock.acquire()
    try:
        done = {}
        worker = threading.Thread(target=lambda: done.setdefault("doc", set_vfs(host, 2)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and host.true_state()["numvfs"][ENO49] == 0  # waiting for the lock
    finally:
        host.agent_lock.release()
    worker.join(10)
    assert done["doc"]["ok"]


# -- BLS hosts use grubby even when grub2-mkconfig exists ----------------------------


def test_bls_host_uses_grubby_and_the_args_reach_the_next_boot():
    host = SimHost("h13", "cx5")
    doc = run(host, "kernel_args", {"add": ["intel_iommu=on", "iommu=pt"]})
    assert doc["ok"], doc
    assert doc["result"]["grub_tool"] == "grubby"
    assert doc["result"]["grub_tool_argv"][:2] == ["grubby", "--update-kernel=ALL"]
    assert "intel_iommu=on" in host.files["/etc/default/grub"]  # future kernels get the args too
    host.boot()
    assert "intel_iommu=on" in host.cmdline.split() and host.iommu_active


# -- GRUB files keep their permissions ---------------------------------------------


def test_grub_file_mode_is_kept():
    host = SimHost("h14", "dl360g9")
    host.modes["/etc/default/grub.d/50-cloudimg-settings.cfg"] = 0o600
    assert run(host, "kernel_args", {"add": ["iommu=pt"]})["ok"]
    assert host.file_mode("/etc/default/grub.d/50-cloudimg-settings.cfg") == 0o600
