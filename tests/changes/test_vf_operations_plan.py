"""Validation and plans of the VF operations (vf_config, vf_driver, libvirt_network, set_vfs's MTU)
from the inventory: the words per host and VF range, the agent steps, refusals."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from changes import services
from changes.forms import ChangeForm
from changes.models import ChangeRequest
from changes.operations import OperationError, get, validate_operations
from hosts.drift import update_drift
from hosts.intents import record_intent
from hosts.models import Hypervisor, LibvirtNetwork, VirtualFunction

from .conftest import change_data, make_host

pytestmark = pytest.mark.django_db


def preview(hosts, ops, **policy):
    _clean, plan = services.preview_plan(change_data([h.pk for h in hosts], ops=ops, **policy))
    return plan


def host_with_vfs(credential, numvfs=7, guests=None, **nic):
    host = make_host("hv1", credential=credential,
                     nics=[("eno49", "0000:04:00.0", numvfs, {"guests": guests or {}, **nic})])
    VirtualFunction.objects.filter(nic__host=host).update(vlan=0, qos=0, trust=False, spoofchk=True,
                                                          admin_mac="00:00:00:00:00:00", link_state="auto",
                                                          max_tx_rate=0, min_tx_rate=0, driver="igbvf")
    return host


def test_vf_settings_are_worded_per_range_with_their_step(credential):
    host = host_with_vfs(credential)
    VirtualFunction.objects.filter(nic__host=host, index=3).update(vlan=100, trust=True)
    ops = [{"op": "vf_config", "pf": "eno49", "vfs": "0-3", "vlan": 100, "trust": True, "persist": True}]
    item = preview([host], ops).hosts[0].plan
    [action] = item.actions
    assert action["text"] == ("eno49#0-2: VLAN none → 100, trust off → on; persisted; "
                              "eno49 VF 3: already VLAN 100, trust on; record them so they survive a reboot")
    assert action["step"] == {"op": "vf_config", "args": {
        "pf": "eno49", "pci_address": "0000:04:00.0", "persist": True, "allow_guest_impact": False,
        "vfs": [{"index": i, "vlan": 100, "trust": True} for i in range(4)]}}
    assert item.before["vf_config"]["0000:04:00.0#1.vlan"] == 0
    assert item.after["vf_config"]["0000:04:00.0#1.vlan"] == 100
    assert item.after["vf_config"]["0000:04:00.0#1.persisted.trust"] is True
    assert action["tags"] == ["persisted"] and item.errors == []


def test_settings_already_applied_and_persisted_need_nothing(credential):
    host = host_with_vfs(credential)
    VirtualFunction.objects.filter(nic__host=host).update(vlan=100, persisted_settings={"vlan": 100})
    item = preview([host], [{"op": "vf_config", "pf": "eno49", "vfs": "0-6", "vlan": 100}]).hosts[0].plan
    assert [a["text"] for a in item.actions] == ["eno49#0-6: already VLAN 100, nothing to do"]
    assert not any(a["step"] for a in item.actions)


def test_two_ranges_of_one_pf_get_their_own_drivers_and_the_plan_shows_them(credential):
    host = host_with_vfs(credential)
    ops = [{"op": "vf_driver", "pf": "eno49", "vfs": "0-3", "driver": "vfio-pci"},
           {"op": "vf_driver", "pf": "eno49", "vfs": "4-6", "driver": "igbvf"},
           {"op": "vf_config", "pf": "eno49", "vfs": "4-6", "mac": "stable", "spoofchk": False}]
    item = preview([host], ops).hosts[0].plan
    texts = [a["text"] for a in item.actions]
    assert texts == [
        "eno49#0-3: igbvf → vfio-pci; persisted",
        "eno49#4-6: already igbvf; record the binding so it survives a reboot",
        "eno49#4-6: MAC 00:00:00:00:00:00 → stable (from the machine id), spoofchk on → off; persisted",
    ]
    assert item.actions[0]["step"]["args"]["ranges"] == [{"first": 0, "last": 3, "driver": "vfio-pci"}]
    assert item.after["vf_driver"]["0000:04:00.0#2.driver"] == "vfio-pci"
    assert item.after["vf_config"]["0000:04:00.0#5.mac_stable"] is True


def test_overlapping_ranges_and_missing_vfs_are_refused(credential):
    host = host_with_vfs(credential, numvfs=4)
    ops = [{"op": "vf_driver", "pf": "eno49", "vfs": "0-2", "driver": "vfio-pci"},
           {"op": "vf_driver", "pf": "eno49", "vfs": "2-3", "driver": "default"},
           {"op": "vf_config", "pf": "eno49", "vfs": "3-5", "vlan": 7}]
    plan = preview([host], ops)
    errors = plan.hosts[0].plan.errors
    assert "operation 2: eno49#2-3 overlaps the VFs of operation 1" in errors
    assert "operation 3: eno49#4-5: no such VF (eno49 has 4 VFs)" in errors
    assert plan.blocked


def test_vfs_created_by_set_vfs_in_the_same_change_can_be_configured(credential):
    host = host_with_vfs(credential, numvfs=0, persisted=True, persisted_numvfs=0)
    ops = [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4},
           {"op": "vf_config", "pf": "eno49", "vfs": "0-3", "vlan": 20, "qos": 3}]
    item = preview([host], ops).hosts[0].plan
    assert item.errors == []
    assert item.actions[1]["text"] == "eno49#0-3: VLAN default → 20, QoS default → 3; persisted"
    assert "eno49: this change re-creates its VFs; the settings of eno49#0-3 are applied after that" in item.warnings


def test_a_vf_a_running_guest_uses_is_refused_unless_allowed(credential):
    host = host_with_vfs(credential, guests={1: "web-1"})
    ops = [{"op": "vf_config", "pf": "eno49", "vfs": "0-3", "trust": True}]
    plan = preview([host], ops)
    assert plan.hosts[0].plan.errors == [
        "eno49: changes the settings of VFs that running guests use: VF 1 (web-1); stop or migrate them, or allow "
        "guest impact in the policy"]
    allowed = preview([host], ops, allow_guest_impact=True).hosts[0].plan
    assert allowed.errors == [] and allowed.actions[0]["step"]["args"]["allow_guest_impact"] is True
    driver = preview([host], [{"op": "vf_driver", "pf": "eno49", "vfs": "1", "driver": "vfio-pci"}])
    assert "rebinds VFs that running guests use: VF 1 (web-1)" in driver.hosts[0].plan.errors[0]


def test_vfio_pci_is_refused_while_the_iommu_is_off(credential):
    host = host_with_vfs(credential)
    op = [{"op": "vf_driver", "pf": "eno49", "vfs": "0-1", "driver": "vfio-pci"}]
    assert "whether the IOMMU is on is not known" in " ".join(preview([host], op).hosts[0].plan.warnings)
    Hypervisor.objects.filter(pk=host.pk).update(iommu_active=False)
    assert preview([host], op).hosts[0].plan.errors == [
        "operation 1: eno49: vfio-pci needs the IOMMU, which is off on hv1; enable it first (kernel arguments: "
        "Enable IOMMU for SR-IOV, and a reboot)"]
    Hypervisor.objects.filter(pk=host.pk).update(iommu_active=True)
    assert preview([host], op).hosts[0].plan.errors == []


def test_a_netdev_driver_that_does_not_match_the_pf_is_refused(credential):
    host = host_with_vfs(credential)
    plan = preview([host], [{"op": "vf_driver", "pf": "eno49", "vfs": "0", "driver": "iavf"}])
    assert plan.hosts[0].plan.errors == [
        "operation 1: eno49 is driven by igb: its VFs bind to igbvf or vfio-pci, not iavf"]


def test_unpersisted_settings_with_a_reboot_are_refused_and_persisted_ones_checked_after_it(credential):
    host = host_with_vfs(credential)
    VirtualFunction.objects.filter(nic__host=host, index=6).update(vlan=30, persisted_settings={"vlan": 30})
    ops = [{"op": "vf_config", "pf": "eno49", "vfs": "0", "trust": True, "persist": False},
           {"op": "reboot", "when": "always"}]
    item = preview([host], ops).hosts[0].plan
    assert ("eno49#0: the VF settings are not persisted and would be gone after the reboot; persist them or do "
            "not reboot in this change") in item.errors
    ok = preview([host], [{**ops[0], "persist": True}, ops[1]]).hosts[0].plan
    assert ok.errors == []
    assert ok.after["vf_config"]["0000:04:00.0#6.vlan"] == 30  # persisted earlier: must come back
    assert "the persisted settings of eno49#6 are back" in ok.actions[-1]["text"]
    assert "the settings of eno49#0 are back" in ok.actions[-1]["text"]


def test_mtu_on_set_vfs(credential):
    host = host_with_vfs(credential, numvfs=4, mtu=1500, persisted=True, persisted_numvfs=4)
    ops = [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4, "mtu": 9000}]
    item = preview([host], ops).hosts[0].plan
    assert item.actions[0]["text"] == "eno49: already 4 VFs; MTU 1500 → 9000; persisted"
    assert item.actions[0]["step"]["args"]["mtu"] == 9000
    assert item.after["numvfs"] == {"0000:04:00.0": 4, "mtu:0000:04:00.0": 9000, "persisted_mtu:0000:04:00.0": 9000}
    with pytest.raises(OperationError, match="mtu must be a whole number from 68 to 9216"):
        validate_operations([{**ops[0], "mtu": 20000}])


def test_libvirt_network_present_absent_and_refusals(credential):
    host = host_with_vfs(credential)
    present = [{"op": "libvirt_network", "name": "sriov-eno49", "pf": "eno49", "state": "present"}]
    item = preview([host], present).hosts[0].plan
    assert item.actions[0]["text"] == ("libvirt network sriov-eno49 over eno49: define it (forward mode hostdev over "
                                       "eno49, managed), start it, autostart it")
    assert item.actions[0]["step"] == {"op": "libvirt_network", "args": {
        "name": "sriov-eno49", "pf": "eno49", "pci_address": "0000:04:00.0", "state": "present", "autostart": True}}
    LibvirtNetwork.objects.create(host=host, name="sriov-eno49", mode="hostdev", pfs=["eno49"], active=True,
                                  autostart=True, vf_pool=True, managed=True, guests=["db-1"])
    again = preview([host], present).hosts[0].plan
    assert again.actions[0]["text"].endswith("already a VF pool over eno49, active, autostarted, nothing to do")
    absent = preview([host], [{"op": "libvirt_network", "name": "sriov-eno49", "state": "absent"}]).hosts[0].plan
    assert absent.errors == ["operation 1: the libvirt network sriov-eno49 is used by running or autostart guests "
                             "(db-1); move them to another network first"]
    LibvirtNetwork.objects.create(host=host, name="default", mode="nat", active=True, autostart=True)
    taken = preview([host], [{**present[0], "name": "default"}]).hosts[0].plan
    assert "has a libvirt network default that SR-IOV Console did not define (nat over no PF)" in taken.errors[0]


@pytest.mark.parametrize("op, message", [
    ({"op": "vf_config", "pf": "eno49", "vfs": "0-3"}, "give at least one setting"),
    ({"op": "vf_config", "pf": "eno49", "vfs": "0-3", "mac": "02:00:00:00:00:01"}, "the same address"),
    ({"op": "vf_config", "pf": "eno49", "vfs": "0", "mac": "01:00:00:00:00:01"}, "unicast address"),
    ({"op": "vf_config", "pf": "eno49", "vfs": "0", "vlan": 5000}, "vlan must be a whole number from 0 to 4095"),
    ({"op": "vf_config", "pf": "eno49", "vfs": "0", "qos": 3}, "qos goes with a vlan"),
    ({"op": "vf_config", "pf": "eno49", "vfs": "0", "min_tx_rate": 500, "max_tx_rate": 100}, "is above max_tx_rate"),
    ({"op": "vf_config", "pf": "eno49", "vfs": "3-1", "trust": True}, "from the lower index to the higher"),
    ({"op": "vf_config", "pf": "eno49; reboot", "vfs": "0", "trust": True}, "pf must be a PF interface name"),
    ({"op": "vf_config", "pf": "eno49", "vfs": "0", "link_state": "up"}, "link_state must be one of"),
    ({"op": "vf_driver", "pf": "eno49", "vfs": "0", "driver": "../x"}, "driver must be vfio-pci"),
    ({"op": "vf_driver", "pf": "eno49", "vfs": "", "driver": "igbvf"}, "give the VFs"),
    ({"op": "libvirt_network", "name": "a b", "pf": "eno49"}, "name must be 1-50 letters"),
    ({"op": "libvirt_network", "name": "pool", "state": "present"}, "pf must be a PF interface name"),
    ({"op": "libvirt_network", "name": "pool", "pf": "eno49", "state": "gone"}, "state must be present or absent"),
])
def test_bad_input_is_refused_with_a_clear_message(op, message, operator):
    with pytest.raises(OperationError, match=message):
        validate_operations([op])
    with pytest.raises(ValidationError):
        services.create_change(change_data([], ops=[op]), operator)


def wizard_post(host, **fields):
    data = {"title": "VF pool", "reason": "guests need VLAN 100", "hosts": [str(host.pk)], "filter": "",
            "parallelism": "1", "canary_count": "0", "max_failures": "1"}
    data.update(fields)
    return data


def test_the_wizard_offers_the_vf_operations_and_previews_their_ranges(client_for, operator, credential):
    host = host_with_vfs(credential)
    client = client_for(operator)
    page = client.get(reverse("changes:new")).content.decode()
    for name in ('name="vf_config-0-target"', 'name="vf_config-3-vlan"', 'name="vf_driver-0-driver"',
                 'name="libvirt_network-1-name"', 'name="set_vfs-0-mtu"'):
        assert name in page, name
    fields = {"vf_driver-0-target": "eno49#0-3", "vf_driver-0-driver": "vfio-pci", "vf_driver-0-persist": "on",
              "vf_driver-1-target": "eno49#4-6", "vf_driver-1-driver": "igbvf", "vf_driver-1-persist": "on",
              "vf_config-0-target": "eno49#4-6", "vf_config-0-vlan": "100", "vf_config-0-trust": "on",
              "vf_config-0-persist": "on"}
    preview = client.post(reverse("changes:preview"), wizard_post(host, **fields), HTTP_HX_REQUEST="true")
    html = preview.content.decode()
    assert "eno49#0-3: igbvf → vfio-pci; persisted" in html
    assert "eno49#4-6: VLAN none → 100, trust off → on; persisted" in html
    bad = client.post(reverse("changes:preview"), wizard_post(host, **{"vf_config-1-target": "eno49",
                                                                         "vf_config-1-trust": "on"}),
                      HTTP_HX_REQUEST="true")
    assert "give the VFs, such as 0-3 or 0-3,6" in bad.content.decode()

    response = client.post(reverse("changes:new"), wizard_post(host, **fields))
    assert response.status_code == 302, response.content.decode()[:2000]
    change = ChangeRequest.objects.get()
    again = ChangeForm.for_change(change)  # the edit form holds every operation as it was saved
    rows = {(s["operation"].name, i): f.initial for s in again.sections for i, f in enumerate(s["forms"]) if f.initial}
    assert rows[("vf_config", 0)] == {"target": "eno49#4-6", "persist": True, "vlan": 100, "trust": "on"}
    assert rows[("vf_driver", 1)] == {"target": "eno49#4-6", "driver": "igbvf", "persist": True}


def test_verification_reads_each_vf_field_from_the_agents_inventory():
    inventory = {"nics": [{"pci_address": "0000:04:00.0", "name": "eno49", "vfs": [
        {"index": 1, "vlan": 100, "trust": True, "admin_mac": "02:AB:00:00:00:01", "driver": "vfio-pci",
         "driver_override": "vfio-pci", "persisted_settings": {"vlan": 100, "mac": "stable"},
         "persisted_driver": "vfio-pci"}]}]}
    config, driver = get("vf_config"), get("vf_driver")
    keys = ["0000:04:00.0#1.vlan", "0000:04:00.0#1.mac_stable", "0000:04:00.0#1.persisted.vlan",
            "0000:04:00.0#1.persisted.mac_stable", "0000:04:00.0#2.vlan"]
    assert config.observe(inventory, keys) == dict(zip(keys, [100, True, 100, True, None], strict=True))
    assert driver.observe(inventory, ["0000:04:00.0#1.driver", "0000:04:00.0#1.default"]) == {
        "0000:04:00.0#1.driver": "vfio-pci", "0000:04:00.0#1.default": False}
    assert config.difference("0000:04:00.0#1.vlan", 100, 0, "expected", {"0000:04:00.0": "eno49"}) == (
        "eno49 VF 1 (0000:04:00.0#1): expected VLAN 100, the host has none")


def test_drift_names_the_vf_and_ignores_vfs_the_console_removed_with_a_smaller_count(credential):
    host = host_with_vfs(credential, numvfs=2)
    record_intent(host.pk, "vf_config", "0000:04:00.0#1", {"vlan": 100, "persisted": True}, "VF 1: VLAN 100")
    record_intent(host.pk, "vf_driver", "0000:04:00.0#0", {"driver": "vfio-pci", "persisted": True}, "VF 0")
    record_intent(host.pk, "vf_config", "0000:04:00.0#5", {"vlan": 5, "persisted": True}, "VF 5: VLAN 5")
    update_drift(Hypervisor.objects.filter(pk=host.pk).prefetch_related("nics__vfs"))
    assert Hypervisor.objects.get(pk=host.pk).drift_reasons == [
        "eno49 VF 0 (0000:04:00.0#0) is bound to igbvf; the console bound it to vfio-pci.",
        "eno49 VF 1 (0000:04:00.0#1) has VLAN none; the console applied VLAN 100.",
        "eno49 VF 5 (0000:04:00.0#5) was configured by the console but no longer exists (the VF count changed?).",
    ]
    record_intent(host.pk, "set_vfs", "0000:04:00.0", 2, "2 VFs on eno49")  # the console set 2 VFs since
    update_drift(Hypervisor.objects.filter(pk=host.pk).prefetch_related("nics__vfs"))
    assert len(Hypervisor.objects.get(pk=host.pk).drift_reasons) == 2


def test_re_creating_the_vfs_warns_about_settings_the_console_applied_without_persist(credential):
    host = host_with_vfs(credential, numvfs=4, persisted=True, persisted_numvfs=4)
    record_intent(host.pk, "vf_config", "0000:04:00.0#3", {"vlan": 300, "persisted": False}, "VF 3: VLAN 300")
    record_intent(host.pk, "vf_config", "0000:04:00.0#2", {"vlan": 200, "persisted": True}, "VF 2: VLAN 200")
    record_intent(host.pk, "vf_driver", "0000:04:00.0#1", {"driver": "vfio-pci", "persisted": False}, "VF 1")
    grow = [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 6}]
    warnings = preview([host], grow).hosts[0].plan.warnings
    assert "eno49: this change re-creates its VFs; the settings the console applied without persist to eno49#3 " \
           "are lost" in warnings
    assert "eno49: this change re-creates its VFs; the driver bindings the console applied without persist to " \
           "eno49#1 are lost" in warnings
    again = grow + [{"op": "vf_config", "pf": "eno49", "vfs": "3", "vlan": 300}]
    assert not any("settings the console applied" in w for w in preview([host], again).hosts[0].plan.warnings)
    same = [{**grow[0], "count": 4}]
    assert not any("re-creates" in w for w in preview([host], same).hosts[0].plan.warnings)
