"""The real agent bytes over real SSH against simulated hosts that look like real fleets: guests on
macvtap and libvirt networks, guests that start at boot, old kernels with in-tree drivers, a PF
carrying the management connection, other boot rules, PFs without a network interface, drivers
that answer EAGAIN or enable fewer VFs, a write the kernel blocks, firmware without an IOMMU,
and kernels installed after a kernel-argument change."""

from __future__ import annotations

import threading

import pytest

from .conftest import agent, wait_rebooted

pytestmark = pytest.mark.timeout(120)

ENO49, ENO50 = "0000:04:00.0", "0000:04:00.1"


def set_vfs(pf, pci, count, **extra):
    return dict({"pf": pf, "pci_address": pci, "count": count}, **extra)


def nic(inventory, name):
    return next(n for n in inventory["nics"] if n["name"] == name)


def reboot(fleet, host):
    old = host.boot_id
    assert agent(fleet, host, "reboot", {"refuse_if_guests": False})["ok"]
    wait_rebooted(host, old)


# -- 1. guests ------------------------------------------------------------------------------------


def test_macvtap_network_and_autostart_guests_are_seen_and_protected(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-guests"])
    host = fleet.hosts[0]
    inv = agent(fleet, host, "inventory")["result"]
    assert sorted(g["name"] for g in inv["guests"]) == ["vm-macvtap", "vm-pool"]
    assert [g["name"] for g in inv["defined_guests"]] == ["vm-autostart"]
    eno49 = nic(inv, "eno49")
    assert [vf["used_by"] for vf in eno49["vfs"]] == [[], [], [], ["vm-macvtap"]]
    assert eno49["vfs"][2]["reserved_by"] == ["vm-autostart"]
    assert nic(inv, "eno50")["vfs"][0]["used_by"] == ["vm-pool"]
    # the macvtap guest's VF (index 3) would go
    doc = agent(fleet, host, "set_vfs", set_vfs("eno49", ENO49, 3))
    assert doc["error"]["code"] == "vfs_in_use" and doc["error"]["details"]["guests"] == ["vm-macvtap"], doc
    assert not [g for g in host.true_state()["guests"] if "lost" in g["note"]]
    # the libvirt network's guest holds eno50's VF 0
    doc = agent(fleet, host, "set_vfs", set_vfs("eno50", ENO50, 0))
    assert doc["error"]["code"] == "vfs_in_use" and doc["error"]["details"]["guests"] == ["vm-pool"], doc
    # the stopped guest that starts at boot uses VF 2
    host.remove_guest("vm-macvtap")
    doc = agent(fleet, host, "set_vfs", set_vfs("eno49", ENO49, 2))
    assert doc["error"]["code"] == "autostart_guests" and "vm-autostart" in doc["error"]["message"], doc
    doc = agent(fleet, host, "set_vfs", set_vfs("eno49", ENO49, 2, allow_autostart_impact=True))
    assert doc["ok"] and "vm-autostart" in doc["result"]["warnings"][0], doc
    assert host.true_state()["numvfs"][ENO49] == 2


def test_a_network_pool_left_too_small_for_its_autostart_guests_is_refused(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-guests"])
    host = fleet.hosts[0]
    host.remove_guest("vm-pool")
    for name in ("vm-pool1", "vm-pool2"):  # stopped, start at boot, each takes a VF from the network
        host.add_guest(name, interfaces=[{"type": "network", "network": "sriov-eno50"}], running=False)
    inv = agent(fleet, host, "inventory")["result"]
    pool = next(n for n in inv["libvirt_networks"] if n["name"] == "sriov-eno50")
    assert pool["mode"] == "passthrough" and pool["pfs"] == ["eno50"] and len(pool["vf_pci"]) == 2
    # one VF left for two guests: one of them would not start
    doc = agent(fleet, host, "set_vfs", set_vfs("eno50", ENO50, 1))
    assert doc["error"]["code"] == "autostart_guests", doc
    assert doc["error"]["details"]["guests"] == ["vm-pool1", "vm-pool2"]
    assert agent(fleet, host, "set_vfs", set_vfs("eno50", ENO50, 3))["ok"]  # growing is fine


# -- 2. kernels older than 3.8 --------------------------------------------------------------------


def test_in_tree_igb_gets_one_max_vfs_and_loads_after_the_reboot(make_fleet):
    fleet = make_fleet(hosts=["legacy-intree"])
    host = fleet.hosts[0]
    doc = agent(fleet, host, "set_vfs", set_vfs("eth1", "0000:03:00.1", 4))
    assert doc["error"]["code"] == "max_vfs_applies_to_all_ports", doc
    doc = agent(fleet, host, "set_vfs", set_vfs("eth1", "0000:03:00.1", 4, apply_to_all_ports=True))
    assert doc["ok"], doc
    assert doc["result"]["initramfs"]["regenerated"] is True  # igb loads from the initramfs here
    reboot(fleet, host)
    state = host.true_state()
    assert state["drivers_failing_at_boot"] == [] and state["nics_without_driver"] == []
    assert set(state["numvfs"].values()) == {4}


# -- 3. a write the kernel blocks -----------------------------------------------------------------


def test_blocked_write_answers_device_busy_and_lands_when_qemu_lets_go(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    host.sysfs_write_timeout = host.sysfs_read_timeout = 0.5
    assert agent(fleet, host, "set_vfs", set_vfs("eno49", ENO49, 2))["ok"]
    vf = host.true_state()["vfs"][ENO49][1]["pci"]
    host.add_guest("vm-db01", [vf])
    host.inject("vfio_release_blocks")
    answer = {}
    worker = threading.Thread(target=lambda: answer.update(doc=agent(
        fleet, host, "set_vfs", set_vfs("eno49", ENO49, 0, allow_guest_impact=True))))
    worker.start()
    worker.join(60)  # a hang detector: the agent must answer while the write stays blocked
    hung = worker.is_alive()
    if hung:
        host.clear_faults("vfio_release_blocks")
        worker.join(30)
    assert not hung, "the agent did not answer while the kernel held the write"
    error = answer["doc"]["error"]
    assert error["code"] == "device_busy", answer
    assert f"waiting for a guest to release VF {vf}" in error["message"] and "vm-db01" in error["message"]
    assert error["details"]["write_pending"] is True and error["details"]["sriov_numvfs_now"] is None
    # while the write is pending, the host still answers
    inv = agent(fleet, host, "inventory")["result"]
    assert nic(inv, "eno49")["device_busy"] is True
    assert agent(fleet, host, "set_vfs", set_vfs("eno49", ENO49, 1))["error"]["code"] == "device_busy"
    host.clear_faults("vfio_release_blocks")  # QEMU lets go: the VF is unplugged, the write lands
    assert host.wait_until(lambda s: s["numvfs"][ENO49] == 0 and not s["pending_writes"], 10)
    assert "unplugged" in host.true_state()["guests"][0]["note"]


# -- 4. the PF's own link -------------------------------------------------------------------------


def test_pf_carrying_the_ssh_connection_is_protected(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-mgmt-on-pf", "dl360g9"], users=("admin",))
    mgmt, plain = fleet.hosts
    inv = agent(fleet, mgmt, "inventory")["result"]  # through sudo, as the admin user
    assert inv["ssh_connection"]["devices"] == ["eno49"]
    assert nic(inv, "eno49")["link"]["management"] is True and nic(inv, "eno49")["link"]["default_route"] is True
    assert nic(inv, "eno50")["link"]["management"] is False
    doc = agent(fleet, mgmt, "set_vfs", set_vfs("eno49", ENO49, 2))
    assert doc["error"]["code"] == "management_link", doc
    assert mgmt.true_state()["numvfs"][ENO49] == 0
    assert agent(fleet, mgmt, "set_vfs", set_vfs("eno50", ENO50, 2))["ok"]
    # the ordinary profile: management on eno1, the SR-IOV PFs are free to change
    inv = agent(fleet, plain, "inventory")["result"]
    assert nic(inv, "eno1")["link"]["management"] is True and nic(inv, "eno49")["link"]["management"] is False
    assert agent(fleet, plain, "set_vfs", set_vfs("eno49", ENO49, 2))["ok"]


def test_bonded_pf_reports_bond_bridge_and_addresses(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-bond"])
    link = nic(agent(fleet, fleet.hosts[0], "inventory")["result"], "eno49")["link"]
    assert link["master"] == {"name": "bond0", "kind": "bond"}
    assert [s["name"] for s in link["stacked"]] == ["bond0", "br0"]
    assert link["addresses"] == [{"dev": "br0", "address": "192.168.50.10/24"}]
    doc = agent(fleet, fleet.hosts[0], "set_vfs", set_vfs("eno49", ENO49, 2))
    assert doc["ok"] and doc["result"]["link_drops"] == 1 and doc["result"]["link"]["link_drop_seconds"] == 3


# -- 5. other boot rules --------------------------------------------------------------------------


def test_networkmanager_rule_is_taken_over_and_the_count_survives_the_reboot(make_fleet):
    fleet = make_fleet(hosts=["cx5-nm"])
    host = fleet.hosts[0]
    pci = host.true_state()["nics"]["enp94s0f0np0"]
    assert host.true_state()["numvfs"][pci] == 4  # NetworkManager set it at boot
    args = set_vfs("enp94s0f0np0", pci, 2, take_over=True)
    doc = agent(fleet, host, "set_vfs", args)
    assert doc["ok"] and doc["result"]["persisted"] is True, doc
    reboot(fleet, host)
    assert host.true_state()["numvfs"][pci] == 2


def test_foreign_udev_rule_is_other_configuration(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-foreign-udev"])
    host = fleet.hosts[0]
    inv = agent(fleet, host, "inventory")["result"]
    for name in ("eno49", "eno50", "eno51", "eno52"):
        assert [(o["path"], o["count"]) for o in nic(inv, name)["other_config"]] == [("/etc/udev/rules.d/igb.rules", 7)]
    doc = agent(fleet, host, "set_vfs", set_vfs("eno49", ENO49, 4, take_over=True))
    assert doc["ok"] and doc["result"]["persisted"] is True, doc
    reboot(fleet, host)
    assert host.true_state()["numvfs"] == {ENO49: 4, ENO50: 7, "0000:04:00.2": 7, "0000:04:00.3": 7}


# -- 6. PFs without a network interface -----------------------------------------------------------


def test_vfio_bound_pf_is_listed_and_refused_with_its_state(make_fleet):
    fleet = make_fleet(hosts=["x710-vfio-pf"])
    host = fleet.hosts[0]
    inv = agent(fleet, host, "inventory")["result"]
    pfs = {p["pci_address"]: p for p in inv["sriov_pfs"]}
    assert pfs["0000:3b:00.1"]["state"] == "vfio" and pfs["0000:3b:00.1"]["netdev"] is None
    assert inv["pfs_without_netdev"] == ["0000:3b:00.1"]
    doc = agent(fleet, host, "set_vfs", set_vfs("enp59s0f1", "0000:3b:00.1", 2))
    assert doc["error"]["code"] == "pf_bound_to_vfio", doc
    host.inject("sriov_off_in_firmware")
    doc = agent(fleet, host, "set_vfs", set_vfs("enp59s0f0", "0000:3b:00.0", 2))
    assert doc["error"]["code"] == "not_capable_now" and "BIOS" in doc["error"]["message"], doc


# -- 7. errors that say the right thing -----------------------------------------------------------


def test_eagain_is_retried_then_reported_as_driver_busy(make_fleet):
    fleet = make_fleet(hosts=["x710"])
    host = fleet.hosts[0]
    pci = host.true_state()["nics"]["enp59s0f0"]
    host.inject("sriov_eagain", times=2)
    doc = agent(fleet, host, "set_vfs", set_vfs("enp59s0f0", pci, 4))
    assert doc["ok"] and "after 2 EAGAIN retries" in doc["result"]["actions"][-1], doc
    host.inject("sriov_eagain", times=50)
    doc = agent(fleet, host, "set_vfs", set_vfs("enp59s0f0", pci, 0))
    assert doc["error"]["code"] == "driver_busy" and "other operation is pending" in doc["error"]["message"], doc
    assert host.true_state()["numvfs"][pci] == 4


def test_partial_enable_is_reported_and_only_what_exists_is_persisted(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    host.inject("partial_enable", max=3)
    doc = agent(fleet, host, "set_vfs", set_vfs("eno49", ENO49, 6))
    error = doc["error"]
    assert error["code"] == "partial_enable", doc
    assert (error["details"]["requested"], error["details"]["enabled"], error["details"]["missing"]) == (6, 3, 3)
    assert host.true_state()["numvfs"][ENO49] == 3 and host.true_state()["persisted"][ENO49] == 3


# -- 8. kernel arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("profile,new_kernel", [("cx5", "5.14.0-427.13.1.el9_4.x86_64"),
                                                ("rhel8bls", "4.18.0-193.el8.x86_64")])
def test_kernel_arguments_survive_a_kernel_installed_before_the_reboot(make_fleet, profile, new_kernel):
    fleet = make_fleet(hosts=[profile])
    host = fleet.hosts[0]
    doc = agent(fleet, host, "kernel_args", {"add": ["intel_iommu=on", "iommu=pt"]})
    assert doc["ok"], doc
    host.install_kernel(new_kernel)  # `dnf update` in the same maintenance window
    reboot(fleet, host)
    inv = agent(fleet, host, "inventory")["result"]
    assert inv["kernel_release"] == new_kernel
    assert {"intel_iommu=on", "iommu=pt"} <= set(inv["cmdline"].split()), inv["cmdline"]
    assert inv["iommu"]["active"] is True


def test_firmware_without_dmar_is_reported_and_no_argument_turns_the_iommu_on(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-novtd"])
    host = fleet.hosts[0]
    assert agent(fleet, host, "inventory")["result"]["iommu"]["firmware"]["present"] is False
    assert agent(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})["ok"]
    reboot(fleet, host)
    inv = agent(fleet, host, "inventory")["result"]
    assert "intel_iommu=on" in inv["cmdline"].split() and inv["iommu"]["active"] is False


def test_vfio_ids_of_the_hosts_own_pf_are_refused(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    doc = agent(fleet, fleet.hosts[0], "kernel_args", {"add": ["vfio-pci.ids=8086:1521"]})
    assert doc["error"]["code"] == "vfio_ids_match_host_pf" and doc["error"]["details"]["vf_ids"] == ["8086:1520"]
