"""The VF operations over real SSH against simulated hosts: per-VF settings, driver binding,
libvirt VF pools and the PF MTU; what the managed persistence brings back after a reboot and after
the VFs are re-created, and what is gone when it was not persisted."""

from __future__ import annotations

import pytest

from .conftest import agent, wait_rebooted

pytestmark = pytest.mark.timeout(120)

ENO49 = {"pf": "eno49", "pci_address": "0000:04:00.0"}


def ok(fleet, host, op, args=None) -> dict:
    doc = agent(fleet, host, op, args)
    assert doc["ok"], doc
    return doc["result"]


def refused(fleet, host, op, args, code) -> dict:
    doc = agent(fleet, host, op, args)
    assert not doc["ok"] and doc["error"]["code"] == code, doc
    return doc["error"]


def reboot(host) -> None:
    old = host.boot_id
    host.reboot()
    wait_rebooted(host, old)


def settings(host, pf="0000:04:00.0"):
    return host.true_state()["vf_settings"][pf]


def test_inventory_numa_vf_settings_drivers_and_every_network(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-guests", "epyc", "legacy"])
    guests_host, epyc, legacy = fleet.hosts
    inv = ok(fleet, guests_host, "inventory")
    nics = {n["name"]: n for n in inv["nics"]}
    assert (nics["eno1"]["numa_node"], nics["eno49"]["numa_node"]) == (0, 1)  # two sockets
    assert nics["eno49"]["local_cpulist"] == "12-23,36-47" and nics["eno49"]["vf_settings_known"] is True
    vf0 = nics["eno49"]["vfs"][0]
    assert (vf0["admin_mac"], vf0["vlan"], vf0["spoofchk"], vf0["trust"], vf0["link_state"]) == (
        "00:00:00:00:00:00", 0, True, False, "auto")
    assert vf0["driver"] == "igbvf" and vf0["driver_override"] is None
    networks = {n["name"]: n for n in inv["libvirt_networks"]}
    assert sorted(networks) == ["default", "sriov-eno50"]
    pool = networks["sriov-eno50"]
    assert pool["vf_pool"] is True and pool["managed"] is False and pool["guests"] == ["vm-pool"]
    assert pool["pfs"] == ["eno50"] and pool["active"] is True and pool["autostart"] is True
    assert networks["default"]["vf_pool"] is False
    epyc_nics = {n["name"]: n for n in ok(fleet, epyc, "inventory")["nics"]}
    assert (epyc_nics["enp65s0f0"]["numa_node"], epyc_nics["enp129s0f0"]["numa_node"]) == (0, 1)
    legacy_nics = {n["name"]: n for n in ok(fleet, legacy, "inventory")["nics"]}
    # CentOS 6: no NUMA node in sysfs (-1), and iproute2 without JSON: the settings are unknown
    assert legacy_nics["eth1"]["numa_node"] is None and legacy_nics["eth1"]["local_cpulist"] == "0-23"
    assert legacy_nics["eth1"]["vf_settings_known"] is False


def test_persisted_vf_settings_come_back_after_reboot_and_re_creation(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    ok(fleet, host, "set_vfs", dict(ENO49, count=4))
    res = ok(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 1, "vlan": 100, "qos": 3, "mac": "stable"},
                                                       {"index": 2, "spoofchk": False, "trust": True}]))
    mac = res["after"]["vfs"]["1"]["admin_mac"]
    assert res["persisted"] is True and int(mac[:2], 16) & 3 == 2
    ok(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 3, "trust": True}], persist=False))
    assert settings(host)[3]["trust"] is True
    error = refused(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 3, "max_tx_rate": 300}]),
                    "vf_setting_unsupported")  # I350: only the 82576 limits VF rates
    assert error["details"]["field"] == "max_tx_rate" and error["details"]["unsupported"] is True
    reboot(host)
    now = settings(host)
    assert (now[1]["vlan"], now[1]["qos"], now[1]["mac"]) == (100, 3, mac)
    assert (now[2]["spoofchk"], now[2]["trust"]) == (False, True)
    assert now[3]["trust"] is False  # not persisted: gone with the reboot
    # the same MAC on every run: a second stable request changes nothing
    again = ok(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 1, "mac": "stable"}]))
    assert again["changed"] is False
    # a later VF count change re-creates the VFs: they get their persisted settings back
    res = ok(fleet, host, "set_vfs", dict(ENO49, count=6))
    assert "ip link set dev eno49 vf 1 vlan 100 qos 3" in res["actions"]
    now = settings(host)
    assert len(now) == 6 and (now[1]["vlan"], now[2]["trust"], now[5]["vlan"]) == (100, True, 0)


def test_vf_config_refusals_over_ssh(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-guests"])
    host = fleet.hosts[0]
    error = refused(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 3, "vlan": 5}]), "vf_in_use")
    assert error["details"]["guests"] == ["vm-macvtap"]
    error = refused(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 0, "link_state": "disable"}]),
                    "vf_setting_unsupported")  # igb has no ndo_set_vf_link_state
    assert error["details"]["field"] == "link_state"
    refused(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 9, "vlan": 5}]), "no_such_vf")
    assert settings(host)[0]["link_state"] == "auto" and settings(host)[3]["vlan"] == 0


def test_vf_driver_binding_is_persisted_across_reboot(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    error = refused(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 0, "driver": "vfio-pci"}]),
                    "no_such_vf")
    ok(fleet, host, "set_vfs", dict(ENO49, count=4))
    error = refused(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 0, "driver": "vfio-pci"}]),
                    "vf_bind_failed")
    assert error["details"]["step"] == "iommu_group"  # vfio-pci needs the VF's IOMMU group
    assert host.true_state()["vf_drivers"][host.true_state()["vfs"]["0000:04:00.0"][0]["pci"]] == "igbvf"
    ok(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})
    reboot(host)
    vfs = [v["pci"] for v in host.true_state()["vfs"]["0000:04:00.0"]]
    res = ok(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 1, "driver": "vfio-pci"},
                                                          {"first": 2, "last": 3, "driver": "igbvf"}]))
    assert res["persisted"] is True and "loaded the vfio-pci module (modprobe vfio-pci)" in res["actions"]
    drivers = host.true_state()["vf_drivers"]
    assert [drivers[p] for p in vfs] == ["vfio-pci", "vfio-pci", "igbvf", "igbvf"]
    reboot(host)
    state = host.true_state()
    assert [state["vf_drivers"][p] for p in vfs] == ["vfio-pci", "vfio-pci", "igbvf", "igbvf"]
    inv = ok(fleet, host, "inventory")
    eno49 = next(n for n in inv["nics"] if n["name"] == "eno49")
    assert [v["persisted_driver"] for v in eno49["vfs"]] == ["vfio-pci", "vfio-pci", "igbvf", "igbvf"]
    assert eno49["vfs"][0]["driver_override"] == "vfio-pci" and eno49["vfs"][0]["netdev"] is None
    ok(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 3, "driver": "default"}]))
    reboot(host)
    assert [host.true_state()["vf_drivers"][p] for p in vfs] == ["igbvf"] * 4


def test_vf_driver_refuses_a_vf_a_running_guest_holds(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    ok(fleet, host, "set_vfs", dict(ENO49, count=2))
    vf = host.true_state()["vfs"]["0000:04:00.0"][1]["pci"]
    host.add_guest("vm-db", [vf])
    error = refused(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 1, "driver": "vfio-pci"}]),
                    "vf_in_use")
    assert error["details"]["guests"] == ["vm-db"]
    assert host.true_state()["vf_drivers"][vf] == "vfio-pci"  # (libvirt's managed hostdev) untouched
    assert host.true_state()["guests"][0]["hostdevs"] == [vf]


def test_libvirt_network_pool_defined_started_autostarted_and_refused_while_used(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    request = dict(ENO49, name="pool-eno49", state="present", autostart=True)
    error = refused(fleet, host, "libvirt_network", request, "network_start_failed")  # no VFs yet
    assert "No Vf's present on SRIOV PF eno49" in error["message"]
    assert "pool-eno49" not in host.true_state()["networks"]
    ok(fleet, host, "set_vfs", dict(ENO49, count=4))
    res = ok(fleet, host, "libvirt_network", request)
    assert res["after"]["active"] and res["after"]["autostart"] and res["after"]["managed"]
    assert host.true_state()["networks"]["pool-eno49"] == {
        "mode": "hostdev", "pf": "eno49", "active": True, "autostart": True, "persistent": True, "managed": True}
    assert ok(fleet, host, "libvirt_network", request)["actions"] == []
    host.add_guest("vm-pool", interfaces=[{"type": "network", "network": "pool-eno49"}], running=False)
    error = refused(fleet, host, "libvirt_network", dict(request, state="absent"), "network_in_use")
    assert error["details"]["guests"] == ["vm-pool"]  # stopped, but it starts at boot
    ok(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})  # PCI passthrough needs the IOMMU
    reboot(host)  # the VFs (persisted count) and the autostart network come back; the guest starts
    state = host.true_state()
    assert state["networks"]["pool-eno49"]["active"] is True
    assert next(g for g in state["guests"] if g["name"] == "vm-pool")["running"] is True
    inv = ok(fleet, host, "inventory")
    pool = next(n for n in inv["libvirt_networks"] if n["name"] == "pool-eno49")
    assert pool["guests"] == ["vm-pool"] and pool["connections"] == 1
    host.remove_guest("vm-pool")
    res = ok(fleet, host, "libvirt_network", dict(request, state="absent"))
    assert res["actions"] == ["virsh net-destroy pool-eno49", "virsh net-undefine pool-eno49"]
    assert "pool-eno49" not in host.true_state()["networks"]


def test_pf_mtu_is_persisted_across_reboot(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    res = ok(fleet, host, "set_vfs", dict(ENO49, count=2, mtu=9000))
    assert (res["before"]["mtu"], res["after"]["mtu"]) == (1500, 9000)
    ok(fleet, host, "set_vfs", {"pf": "eno50", "pci_address": "0000:04:00.1", "count": 0, "mtu": 4000,
                                "persist": False})
    reboot(host)
    mtu = host.true_state()["mtu"]
    assert (mtu["0000:04:00.0"], mtu["0000:04:00.1"]) == (9000, 1500)


def test_a_hand_made_change_shows_against_the_persisted_settings(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    ok(fleet, host, "set_vfs", dict(ENO49, count=2))
    ok(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 1, "vlan": 100}]))
    assert host.run_program(["ip", "link", "set", "dev", "eno49", "vf", "1", "vlan", "7"])[0] == 0
    vf1 = next(n for n in ok(fleet, host, "inventory")["nics"] if n["name"] == "eno49")["vfs"][1]
    assert (vf1["vlan"], vf1["persisted_settings"]) == (7, {"vlan": 100})  # drift the console can word
    res = ok(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 1, "vlan": 100}]))
    assert res["before"]["vfs"]["1"]["vlan"] == 7 and res["after"]["vfs"]["1"]["vlan"] == 100


def test_the_boot_unit_applies_the_persisted_state_before_libvirt_starts_networks(make_fleet):
    fleet = make_fleet(hosts=["rhel8"])
    host = fleet.hosts[0]
    pf = next(n for n in ok(fleet, host, "inventory")["nics"] if n["name"] == "ens1f0")
    target = {"pf": pf["name"], "pci_address": pf["pci_address"]}
    ok(fleet, host, "set_vfs", dict(target, count=2, mtu=9000))
    ok(fleet, host, "vf_config", dict(target, vfs=[{"index": 1, "vlan": 100}]))
    reboot(host)
    state = host.true_state()
    units = [run["unit"] for run in state["boot_runs"]]
    # ordered before libvirt: it ran first, with the unit's PATH (ip is /usr/sbin/ip on RHEL)
    assert units[0] == "sriov-console-vf-boot.service", units
    first = state["boot_runs"][0]
    assert first["status"] == 0 and first["response"]["result"]["errors"] == [], first
    assert f"ip link set dev {pf['name']} vf 1 vlan 100" in first["response"]["result"]["actions"]
    assert settings(host, pf["pci_address"])[1]["vlan"] == 100
    assert state["mtu"][pf["pci_address"]] == 9000
    # the VF units udev's add events start afterwards find nothing left to do
    assert all(run["status"] == 0 and run["response"]["result"]["actions"] == [] for run in state["boot_runs"][1:])


def test_without_path_which_searches_only_the_c_library_default(make_fleet):
    from simfleet.host import SimSystem

    host = make_fleet(hosts=["rhel8"]).hosts[0]
    udev_run = SimSystem(host, env_path=None)  # udev passes a RUN program only the device's properties
    assert udev_run.which("ip") is None and udev_run.run(["ip", "link"], 5)[0] == 127
    udev_run.ensure_path("/usr/sbin:/usr/bin")
    assert udev_run.which("ip") == "/usr/sbin/ip"


def test_a_re_issued_add_event_leaves_vfs_in_use_alone(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    ok(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})  # VFIO groups need the IOMMU
    reboot(host)
    ok(fleet, host, "set_vfs", dict(ENO49, count=3))
    ok(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 0, "driver": "igbvf"}]))
    ok(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 1, "vlan": 100}, {"index": 2, "vlan": 200}]))
    vfs = [vf["pci_address"] for vf in next(n for n in ok(fleet, host, "inventory")["nics"]
                                           if n["name"] == "eno49")["vfs"]]
    host.add_guest("vm-db", hostdevs=[vfs[0]])  # libvirt's managed hostdev: vfio-pci while it runs
    host.extra_processes[5000] = {"comm": "dpdk-testpmd", "vfio": [vfs[1]]}  # DPDK, not libvirt
    for index in (1, 2):
        assert host.run_program(["ip", "link", "set", "dev", "eno49", "vf", str(index), "vlan", "7"])[0] == 0
    host.trigger_vf_add_events()  # udevadm trigger --action=add
    state = host.true_state()
    assert state["vf_drivers"][vfs[0]] == "vfio-pci" and state["guests"][0]["hostdevs"] == [vfs[0]]
    assert (settings(host)[1]["vlan"], settings(host)[2]["vlan"]) == (7, 200)
    skipped = {s["pci_address"]: s["in_use"] for run in state["boot_runs"]
               for s in run["response"]["result"]["skipped"]}
    assert skipped[vfs[0]] == ["running guest vm-db", "qemu-system-x86 (pid 4000) has its VFIO group open"]
    assert skipped[vfs[1]] == ["dpdk-testpmd (pid 5000) has its VFIO group open"]
    assert vfs[2] not in skipped


def test_re_created_vfs_with_a_persisted_driver_never_reach_the_vf_driver(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    ok(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})
    reboot(host)
    ok(fleet, host, "set_vfs", dict(ENO49, count=2))
    ok(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 0, "driver": "vfio-pci"}]))
    # a VF on vfio-pci may be a guest's: removing it needs allow_guest_impact
    ok(fleet, host, "set_vfs", dict(ENO49, count=0, allow_guest_impact=True))
    res = ok(fleet, host, "set_vfs", dict(ENO49, count=3))
    vfs = sorted(vf for vf in host.true_state()["vf_drivers"] if vf.startswith("0000:04:1"))
    drivers = host.true_state()["vf_drivers"]
    assert [drivers[vf] for vf in vfs] == ["vfio-pci", "igbvf", "igbvf"]
    actions = res["actions"]
    assert actions[0].startswith("wrote 0 to /sys/class/net/eno49/device/sriov_drivers_autoprobe")
    assert not [a for a in actions if "unbound" in a]  # igbvf never probed VF 0: autoprobe 0, an override
    assert "wrote 1 back to /sys/class/net/eno49/device/sriov_drivers_autoprobe" in actions
    inv = next(n for n in ok(fleet, host, "inventory")["nics"] if n["name"] == "eno49")
    assert inv["sriov_drivers_autoprobe"] == 1


def test_vf_driver_refuses_a_vf_a_process_outside_libvirt_holds(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    ok(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})
    reboot(host)
    ok(fleet, host, "set_vfs", dict(ENO49, count=2))
    ok(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 1, "last": 1, "driver": "vfio-pci"}]))
    vf = host.true_state()["vfs"]["0000:04:00.0"][1]["pci"]
    host.extra_processes[5000] = {"comm": "dpdk-testpmd", "vfio": [vf]}
    error = refused(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 1, "last": 1, "driver": "default"}]),
                    "vf_in_use")
    assert error["details"]["vfs"][0]["used_by"] == ["dpdk-testpmd (pid 5000) has its VFIO group open"]
    assert host.true_state()["vf_drivers"][vf] == "vfio-pci"


def test_mtu_is_refused_on_a_bond_port_and_on_the_management_pf(make_fleet):
    fleet = make_fleet(hosts=["dl360g9-bond", "dl360g9-mgmt-on-pf"])
    bonded, mgmt = fleet.hosts
    error = refused(fleet, bonded, "set_vfs", dict(ENO49, count=2, mtu=9000), "pf_enslaved")
    assert "Set the MTU of bond0" in error["message"] and bonded.true_state()["mtu"]["0000:04:00.0"] == 1500
    refused(fleet, mgmt, "set_vfs", dict(ENO49, count=0, mtu=9000), "management_link")
    res = ok(fleet, mgmt, "set_vfs", dict(ENO49, count=0, mtu=9000, allow_management_link=True))
    assert res["after"]["mtu"] == 9000


def test_an_administrators_pool_of_the_same_shape_is_left_alone(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    ok(fleet, host, "set_vfs", dict(ENO49, count=2))
    host.add_network("pool-eno49", "hostdev", "eno49", active=False, autostart=False)
    res = ok(fleet, host, "libvirt_network", dict(ENO49, name="pool-eno49", state="present", autostart=True))
    assert res["actions"] == [] and "did not define it: left as it is" in res["warnings"][0]
    network = host.true_state()["networks"]["pool-eno49"]
    assert (network["active"], network["autostart"], network["managed"]) == (False, False, False)


def test_an_igb_vf_interface_takes_the_assigned_mac_when_igbvf_probes_it_again(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    ok(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})
    reboot(host)
    ok(fleet, host, "set_vfs", dict(ENO49, count=2))
    old = host.true_state()["vfs"]["0000:04:00.0"][0]["mac"]
    res = ok(fleet, host, "vf_config", dict(ENO49, vfs=[{"index": 0, "mac": "stable"}]))
    mac = res["after"]["vfs"]["0"]["admin_mac"]
    assert host.true_state()["vfs"]["0000:04:00.0"][0]["mac"] == old  # igb: "Reload the VF driver"
    ok(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 0, "driver": "vfio-pci"}]))
    ok(fleet, host, "vf_driver", dict(ENO49, ranges=[{"first": 0, "last": 0, "driver": "igbvf"}]))
    assert host.true_state()["vfs"]["0000:04:00.0"][0]["mac"] == mac
