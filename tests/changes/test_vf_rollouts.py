"""The VF operations through a real Celery worker against simfleet over real SSH: applied and
verified, persisted settings back after a reboot change (unpersisted ones gone, found as drift),
and drift found when the host loses what the console applied."""

import pytest

from hosts.models import Hypervisor, Nic, VirtualFunction

from .kargs_helpers import (  # noqa: F401 (_roles is an autouse fixture)
    IOMMU,
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
SPECS = [{"profile": "dl360g9", "name": n} for n in ("vf-cfg", "vf-drv", "vf-net", "vf-mtu")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = make_fleet(tmp_path_factory, SPECS, "simfleet-vf")
    yield sim
    sim.stop()


def prepared(fleet, name, count=4):
    """A host whose eno49 has `count` VFs persisted, registered and discovered."""
    sim = fleet.host(name)
    agent_call(sim, "set_vfs", {"pf": "eno49", "pci_address": ENO49, "count": count, "persist": True,
                                "take_over": True})
    [host] = register(fleet, [sim])
    return sim, host


def vf_setting(sim, index, field):
    settings = sim.true_state()["vf_settings"].get(ENO49, {})
    return (settings.get(index) or settings.get(str(index)) or {}).get(field)


def succeeded(change):
    rollout = finished(change)
    assert rollout.state == "succeeded", [r.message for r in runs(rollout)]
    return runs(rollout)[0]


def drift_of(host):
    rediscover([host])
    return Hypervisor.objects.get(pk=host.pk).drift_reasons


def test_vf_settings_are_applied_verified_persisted_through_a_reboot_and_drift_is_found(
    celery_worker, fleet, operator, approver
):
    sim, host = prepared(fleet, "vf-cfg")
    ops = [{"op": "vf_config", "pf": "eno49", "vfs": "0-2", "vlan": 100, "trust": True, "mac": "stable",
            "persist": True},
           {"op": "vf_config", "pf": "eno49", "vfs": "3", "vlan": 300, "persist": False}]
    run = succeeded(approved([host], operator, approver, ops))
    assert kinds(run) == [("drift_check", "inventory"), ("action", "vf_config"), ("action", "vf_config"),
                          ("verify", "inventory")]
    assert [vf_setting(sim, i, "vlan") for i in range(4)] == [100, 100, 100, 300]
    assert vf_setting(sim, 1, "trust") is True
    vf1 = VirtualFunction.objects.get(nic__host=host, index=1)
    assert vf1.vlan == 100 and vf1.persisted_settings and int(vf1.admin_mac[:2], 16) & 0x02

    # A reboot change: the persisted settings must come back (checked), the unpersisted are gone.
    reboot = create([host], operator, [REBOOT_ALWAYS])
    assert reboot.plan_items.get().after["vf_config"][f"{ENO49}#1.vlan"] == 100
    assert f"{ENO49}#3.vlan" not in reboot.plan_items.get().after["vf_config"]
    succeeded(approve(reboot, operator, approver))
    assert [vf_setting(sim, i, "vlan") for i in range(3)] == [100, 100, 100]
    assert vf_setting(sim, 3, "vlan") in (0, None)
    assert drift_of(host) == [f"eno49 VF 3 ({ENO49}#3) has VLAN none; the console applied VLAN 300 (not "
                              "persisted: lost at a reboot or when the VFs were re-created?)."]

    # Someone changes VF 1 by hand: discovery words the drift, and the host page flags that VF.
    agent_call(sim, "vf_config", {"pf": "eno49", "pci_address": ENO49, "vfs": [{"index": 1, "vlan": 7}],
                                  "persist": True, "allow_guest_impact": True})
    assert f"eno49 VF 1 ({ENO49}#1) has VLAN 7; the console applied VLAN 100." in drift_of(host)


def test_vf_ranges_are_bound_to_their_drivers_and_come_back_after_a_reboot(celery_worker, fleet, operator, approver):
    sim, host = prepared(fleet, "vf-drv")
    ops = [{"op": "vf_driver", "pf": "eno49", "vfs": "0-1", "driver": "vfio-pci", "persist": True},
           {"op": "vf_driver", "pf": "eno49", "vfs": "2-3", "driver": "igbvf", "persist": True}]
    refused = create([host], operator, ops)  # vfio-pci takes only devices in an IOMMU group
    [item] = refused.plan_items.all()
    assert refused.plan_blocked and "vfio-pci needs the IOMMU, which is off on vf-drv" in item.errors[0]
    succeeded(approved([host], operator, approver, [IOMMU, REBOOT_IF_NEEDED]))
    change = approved([host], operator, approver, ops)
    assert [a["text"] for a in change.plan_items.get().actions] == [
        "eno49#0-1: igbvf → vfio-pci; persisted",
        "eno49#2-3: already igbvf; record the binding so it survives a reboot",
    ]
    succeeded(change)
    vf_pcis = {vf.index: vf.pci_address for vf in VirtualFunction.objects.filter(nic__host=host)}
    drivers = sim.true_state()["vf_drivers"]
    assert [drivers[vf_pcis[i]] for i in range(4)] == ["vfio-pci", "vfio-pci", "igbvf", "igbvf"]

    succeeded(approved([host], operator, approver, [REBOOT_ALWAYS]))
    drivers = sim.true_state()["vf_drivers"]
    assert [drivers[vf_pcis[i]] for i in range(4)] == ["vfio-pci", "vfio-pci", "igbvf", "igbvf"]

    agent_call(sim, "vf_driver", {"pf": "eno49", "pci_address": ENO49, "persist": False,
                                  "ranges": [{"first": 0, "last": 0, "driver": "default"}], "allow_guest_impact": True})
    assert f"eno49 VF 0 ({ENO49}#0) is bound to igbvf; the console bound it to vfio-pci." in drift_of(host)


def test_a_libvirt_vf_pool_is_defined_started_and_autostarted_and_drift_is_found(
    celery_worker, fleet, operator, approver
):
    sim, host = prepared(fleet, "vf-net")
    ops = [{"op": "libvirt_network", "name": "sriov-eno49", "pf": "eno49", "state": "present", "autostart": True}]
    succeeded(approved([host], operator, approver, ops))
    network = sim.true_state()["networks"]["sriov-eno49"]
    assert network["active"] and network["autostart"]
    nic = Nic.objects.get(host=host, pci_address=ENO49)
    pool = host.libvirt_networks.get(name="sriov-eno49")
    assert pool.vf_pool and pool.managed and pool.pfs == [nic.name]

    succeeded(approved([host], operator, approver, [REBOOT_ALWAYS]))  # verified: the pool is active again
    assert sim.true_state()["networks"]["sriov-eno49"]["active"]

    # Someone removes it by hand: drift; the console's own removal then has nothing to do.
    agent_call(sim, "libvirt_network", {"name": "sriov-eno49", "pf": "eno49", "pci_address": ENO49,
                                        "state": "absent", "autostart": False})
    assert drift_of(host) == ["The libvirt network sriov-eno49, which the console defined over eno49, is no longer "
                              "defined on the host."]
    absent = [{"op": "libvirt_network", "name": "sriov-eno49", "state": "absent"}]
    removal = approved([host], operator, approver, absent)
    assert [a["text"] for a in removal.plan_items.get().actions] == [
        "libvirt network sriov-eno49: not defined, nothing to do"]

    # Defined again by the console, then removed by it: undefined on the host, the intent forgotten.
    succeeded(approved([host], operator, approver, ops))
    assert "sriov-eno49" in sim.true_state()["networks"]
    removal = approved([host], operator, approver, absent)
    assert [a["text"] for a in removal.plan_items.get().actions] == [
        "libvirt network sriov-eno49: stop and undefine it"]
    succeeded(removal)
    assert "sriov-eno49" not in sim.true_state()["networks"]
    assert not host.intents.filter(operation="libvirt_network").exists()
    assert drift_of(host) == []


def test_the_pf_mtu_is_set_with_the_vf_count_and_kept_through_a_reboot(celery_worker, fleet, operator, approver):
    sim, host = prepared(fleet, "vf-mtu")
    succeeded(approved([host], operator, approver, [set_vfs("eno49", 4, mtu=9000)]))
    nic = Nic.objects.get(host=host, pci_address=ENO49)
    assert (nic.mtu, nic.persisted_mtu) == (9000, 9000)
    succeeded(approved([host], operator, approver, [REBOOT_ALWAYS]))
    rediscover([host])
    assert Nic.objects.get(pk=nic.pk).mtu == 9000
