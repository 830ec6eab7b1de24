"""Plans that read the host as it is: each case is a simfleet scenario profile whose real agent
inventory is recorded by discovery, then planned. The plan says, in words, what the agent would
refuse or what the host would suffer, before anyone approves anything."""

import pytest

from changes import services
from changes.operations import OperationError, summaries, validate_operations
from hosts import discovery
from hosts.models import Hypervisor
from simfleet.host import SimHost
from tests.hosts.pages_fleet import inventory_result

from .conftest import change_data

pytestmark = pytest.mark.django_db


def discovered(profile, credential, *, prepare=None):
    sim = SimHost(profile, profile, vf_delay=0)
    sim.boot()
    if prepare:
        prepare(sim)
    host = Hypervisor.objects.create(name=profile, address="127.0.0.1", credential=credential)
    assert discovery.apply_result(host.pk, inventory_result(sim, 0)).kind == "ok"
    return Hypervisor.objects.get(pk=host.pk)


def set_vfs(value, count, by="name", **extra):
    return {"op": "set_vfs", "select": {"by": by, "value": value}, "count": count, **extra}


def plan_for(host, ops, **policy):
    _clean, plan = services.preview_plan(change_data([host.pk], ops=ops, **policy))
    return plan.hosts[0].plan


def steps(plan):
    return [a["step"] for a in plan.actions if a.get("step")]


def test_the_pf_that_carries_the_management_connection_is_blocking_unless_allowed(credential):
    host = discovered("dl360g9-mgmt-on-pf", credential)
    plan = plan_for(host, [set_vfs("eno49", 2)])
    assert any("eno49 carries the management SSH connection" in e and "drops once, for about 3 s" in e
               and "allow the management link" in e for e in plan.errors), plan.errors
    allowed = plan_for(host, [set_vfs("eno49", 2, allow_management_link=True)])
    assert not allowed.errors, allowed.errors
    assert any("management SSH connection" in w and "allowed by this change" in w for w in allowed.warnings)
    assert steps(allowed)[0]["args"]["allow_management_link"] is True
    # another PF of the same host is fine and its step does not carry the flag
    other = plan_for(host, [set_vfs("eno50", 2)])
    assert not other.errors and "allow_management_link" not in steps(other)[0]["args"]


def test_a_bonded_bridged_pf_warns_that_its_link_drops_twice_on_a_reset(credential):
    host = discovered("dl360g9-bond", credential)
    plan = plan_for(host, [set_vfs("eno49", 2)])
    assert not plan.errors, plan.errors
    assert ("eno49: link drops once, for about 3 s when the VF count changes, and it carries the bond bond0 "
            "and the bridge br0; the addresses 192.168.50.10/24 on br0") in plan.warnings, plan.warnings
    host.nics.filter(name="eno49").update(sriov_numvfs=2, persisted=True, persisted_numvfs=2)
    reset = plan_for(host, [set_vfs("eno49", 4)])
    assert any(w.startswith("eno49: link drops twice, for about 3 s each") for w in reset.warnings), reset.warnings


def test_another_boot_rule_is_blocking_unless_taken_over_and_the_plan_names_it(credential):
    host = discovered("dl360g9-foreign-udev", credential)
    eno49 = host.nics.get(name="eno49")
    assert eno49.other_config[0]["path"] == "/etc/udev/rules.d/igb.rules"
    plan = plan_for(host, [set_vfs("eno49", 3)])
    assert any("other boot configuration sets 7 VFs at boot: /etc/udev/rules.d/igb.rules:1" in e
               and "use take_over to disable it (its line commented out in /etc/udev/rules.d/igb.rules, backed up "
                   "first)" in e for e in plan.errors), plan.errors
    taken = plan_for(host, [set_vfs("eno49", 3, take_over=True)])
    assert not taken.errors, taken.errors
    assert any("take_over disables it" in w and "0000:04:00.1" in w for w in taken.warnings), taken.warnings
    assert steps(taken)[0]["args"]["take_over"] is True
    # not persisting: the rule does not fight a count that is not recorded
    assert not [e for e in plan_for(host, [set_vfs("eno49", 3, persist=False)]).errors if "boot" in e]


def test_other_configuration_that_cannot_be_disabled_is_blocking_even_with_take_over(credential):
    host = discovered("dl360g9-foreign-udev", credential)
    eno49 = host.nics.get(name="eno49")
    eno49.other_config = [dict(eno49.other_config[0], disable=None,
                               disable_blocker="the rule matches by driver in a file shared with other rules")]
    eno49.save()
    plan = plan_for(host, [set_vfs("eno49", 3, take_over=True)])
    assert any("take_over cannot disable it: the rule matches by driver" in e for e in plan.errors), plan.errors


def test_guests_that_start_at_boot_are_named_and_blocking_unless_allowed(credential):
    host = discovered("dl360g9-guests", credential)
    assert host.defined_guests[0]["name"] == "vm-autostart"
    plan = plan_for(host, [set_vfs("eno49", 4, persist=True, take_over=True), set_vfs("eno50", 2)])
    assert not any("start at boot" in e for e in plan.errors)  # nothing removed
    plan = plan_for(host, [set_vfs("eno49", 2)])
    assert ("eno49: guests that start at boot use VFs this change removes: vm-autostart (VF 2, hostdev); they "
            "will not start. Change or disable those guests, or allow autostart impact") in plan.errors
    assert any("vm-macvtap" in e for e in plan.errors)  # the running macvtap guest on VF 3 too
    allowed = plan_for(host, [set_vfs("eno49", 2, allow_autostart_impact=True)], allow_guest_impact=True)
    assert not allowed.errors, allowed.errors
    assert any("vm-autostart" in w and "allowed by this change" in w for w in allowed.warnings)
    args = steps(allowed)[0]["args"]
    assert args["allow_autostart_impact"] is True and args["allow_guest_impact"] is True
    by_policy = plan_for(host, [set_vfs("eno49", 3)], allow_guest_impact=True)
    assert any("vm-autostart" in w and "allowed by the rollout policy" in w for w in by_policy.warnings)


def test_one_max_vfs_for_every_port_on_an_old_kernel(credential):
    host = discovered("legacy-intree", credential)
    assert {n.max_vfs_form for n in host.nics.all()} == {"single"}
    plan = plan_for(host, [set_vfs("eth1", 4)])
    assert any("eth1: same count on every port of igb: 4 VFs on eth0 (now 0), eth2 (now 0), eth3 (now 0) too" in e
               and "Set apply_to_all_ports" in e for e in plan.errors), plan.errors
    mixed = plan_for(host, [set_vfs("eth0", 4), set_vfs("eth1", 2)])
    assert any("igb takes max_vfs as one number for every port" in e and "eth1: 2" in e for e in mixed.errors)
    every = plan_for(host, [set_vfs("eth1", 4, apply_to_all_ports=True)])
    assert not every.errors, every.errors
    assert steps(every)[0]["args"]["apply_to_all_ports"] is True
    assert every.actions[0]["text"].endswith("; same count on every port of igb (its max_vfs is one number)")
    assert every.after["numvfs"] == {f"0000:03:00.{f}": 4 for f in range(4)}
    # Intel's out-of-tree igb takes one value per port: no such rule
    array = discovered("legacy", credential)
    assert not plan_for(array, [set_vfs("eth1", 4)]).errors


def test_a_pf_without_a_network_interface_is_listed_and_selectable_by_pci_address(credential):
    host = discovered("x710-vfio-pf", credential)
    pf = host.nics.get(pci_address="0000:3b:00.1")
    assert (pf.name, pf.label, pf.binding_state, pf.driver, pf.sriov_totalvfs) == (
        "", "0000:3b:00.1", "vfio", "vfio-pci", 64)
    plan = plan_for(host, [set_vfs("0000:3b:00.1", 4, by="pci")])
    assert plan.errors == ["0000:3b:00.1 is bound to vfio-pci: it is handed to a guest or to a userspace driver "
                           "(DPDK) and has no network interface. SR-IOV Console does not change the VFs of such a "
                           "PF; give it back to its network driver first if that is what you want"]
    # by device id the other ports are planned and this one is left out, with the reason
    group = plan_for(host, [set_vfs("8086:1572", 2, by="vendor_device")])
    assert not group.errors and any(w.startswith("0000:3b:00.1 is bound to vfio-pci") for w in group.warnings)
    assert [s["args"]["pf"] for s in steps(group)] == ["enp59s0f0"]


def test_an_unbound_pf_is_planned_by_pci_address_without_a_name(credential):
    host = discovered("x710-vfio-pf", credential)
    host.nics.filter(pci_address="0000:3b:00.1").update(binding_state="other_driver", driver="i40e")
    plan = plan_for(host, [set_vfs("0000:3b:00.1", 4, by="pci")])
    assert not plan.errors, plan.errors
    assert steps(plan)[0]["args"]["pf"] is None
    assert plan.actions[0]["text"].startswith("0000:3b:00.1 (no network interface): 0 → 4 VFs")


def test_kernel_arguments_without_an_iommu_in_the_firmware_are_blocking(credential):
    host = discovered("dl360g9-novtd", credential)
    assert host.iommu_firmware == {"table": None, "present": False, "acpi_tables_readable": True}
    plan = plan_for(host, [{"op": "kernel_args", "preset": "iommu"}])
    assert any("does not enable the IOMMU: no VT-d (ACPI DMAR table)" in e
               and "enable VT-d / AMD-Vi in the BIOS" in e for e in plan.errors), plan.errors
    # other arguments are not about the IOMMU; a host whose firmware has it is fine
    assert not plan_for(host, [{"op": "kernel_args", "add": ["hugepages=16"]}]).errors
    assert not plan_for(discovered("dl360g9", credential), [{"op": "kernel_args", "preset": "iommu"}]).errors


def test_the_new_flags_are_validated_and_kept_only_when_set():
    clean = validate_operations([set_vfs("eno49", 2, allow_management_link=True, apply_to_all_ports=False)])
    assert clean == [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 2, "persist": True,
                      "take_over": False, "allow_management_link": True}]
    with pytest.raises(OperationError, match="allow_autostart_impact must be true or false"):
        validate_operations([set_vfs("eno49", 2, allow_autostart_impact="yes")])


def test_the_wizard_shows_the_blocking_error_and_takes_the_management_link_box(client_for, operator, credential):
    from django.urls import reverse

    from changes.models import ChangeRequest

    from .test_pages import form_post

    host = discovered("dl360g9-mgmt-on-pf", credential)
    client = client_for(operator)
    response = client.post(reverse("changes:preview"), form_post([host.pk], **{"set_vfs-0-count": "2"}),
                           HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "eno49 carries the management SSH connection of this host" in html
    assert "Management link" in client.get(reverse("changes:new") + f"?hosts={host.pk}").content.decode()
    response = client.post(reverse("changes:new"), form_post([host.pk], **{
        "set_vfs-0-count": "2", "set_vfs-0-allow_management_link": "on"}))
    assert response.status_code in (302, 303), response.content.decode()[:2000]
    change = ChangeRequest.objects.get()
    assert change.operations[0]["allow_management_link"] is True and not change.plan_blocked
    assert summaries(change.operations) == ["set 2 VFs on PF eno49, persisted, allowing the management link"]


def test_a_bls_host_plan_says_kernels_installed_later_get_the_arguments_too(credential):
    plan = plan_for(discovered("cx5", credential), [{"op": "kernel_args", "preset": "iommu"}])
    assert "BLS entries: also written where kernels installed later take their arguments from" in \
        plan.actions[0]["text"], plan.actions
    assert "kernels installed later" not in plan_for(discovered("dl360g9", credential), [
        {"op": "kernel_args", "preset": "iommu"}]).actions[0]["text"]


def test_a_pf_with_no_driver_bound_is_refused_with_the_reason(credential):
    from dataclasses import replace

    from simfleet.profiles import X710

    unbound = replace(X710, name="x710-unbound", nics=X710.nics[:3] + (replace(X710.nics[3], binding="none"),))
    sim = SimHost("x710-unbound", unbound, vf_delay=0)
    sim.boot()
    host = Hypervisor.objects.create(name="x710-unbound", address="127.0.0.1", credential=credential)
    assert discovery.apply_result(host.pk, inventory_result(sim, 0)).kind == "ok"
    pf = host.nics.get(pci_address="0000:3b:00.1")
    assert (pf.name, pf.binding_state, pf.driver) == ("", "no_driver", "")
    plan = plan_for(host, [set_vfs("0000:3b:00.1", 2, by="pci")])
    assert plan.errors == ["0000:3b:00.1 has no driver bound, so the kernel cannot change its VFs; bind it to its "
                           "network driver first, then run discovery again"]


def test_sriov_off_in_the_firmware_and_a_blocked_device_are_said_in_the_plan(credential):
    host = discovered("dl360g9", credential, prepare=lambda sim: sim.faults.setdefault("sriov_off_in_firmware", {}))
    plan = plan_for(host, [set_vfs("eno49", 2)])
    assert len(plan.errors) == 1 and plan.errors[0].startswith("eno49 cannot have VFs now: sriov_totalvfs is 0"), \
        plan.errors
    assert "SR-IOV is off in the BIOS/UEFI" in plan.errors[0]
    by_driver = plan_for(host, [set_vfs("igb", 2, by="driver")])
    assert not by_driver.errors and len(by_driver.warnings) >= 4, by_driver.warnings
    host.nics.filter(name="eno50").update(sriov_totalvfs=7, device_busy=True)
    plan = plan_for(host, [set_vfs("eno50", 2)])
    assert plan.errors[0].startswith("eno50: the kernel is still waiting on an earlier change of its VF count")


def test_a_new_mtu_on_the_management_pf_or_a_bond_port_is_refused_as_the_agent_would(credential):
    """A new MTU closes and reopens the PF: on the management PF only when allowed, on a bond port never
    (its master decides); the same count with a new MTU is still checked."""
    mgmt = discovered("dl360g9-mgmt-on-pf", credential)
    plan = plan_for(mgmt, [set_vfs("eno49", 0, mtu=9000)])
    assert any("eno49 carries the management SSH connection of this host: a new MTU drops its link" in e
               for e in plan.errors), plan.errors
    allowed = plan_for(mgmt, [set_vfs("eno49", 0, mtu=9000, allow_management_link=True)])
    assert not allowed.errors, allowed.errors
    assert steps(allowed)[0]["args"]["allow_management_link"] is True and steps(allowed)[0]["args"]["mtu"] == 9000
    bonded = discovered("dl360g9-bond", credential)
    refused = plan_for(bonded, [set_vfs("eno49", 0, mtu=9000, allow_management_link=True)])
    assert any("eno49 is a port of the bond bond0: set the MTU on bond0" in e for e in refused.errors), refused.errors
