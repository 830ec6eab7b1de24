"""kernel_args and reboot operations without a worker: validation, conflicts, the IOMMU preset per
CPU vendor, the plan's before/after of GRUB_CMDLINE_LINUX_DEFAULT, the tool, the reboot decision,
running guests, the verification namespace and the reboot parallelism."""

import pytest

from changes import services
from changes.execution.rollout import effective_parallelism
from changes.models import ChangeRequest
from changes.operations import OperationError, validate_operations
from changes.operations.kernel_args import KernelArgs, conflicts_in, edit_value
from changes.operations.reboot import Reboot, duration_words
from hosts.models import Hypervisor

from .conftest import change_data, make_host

pytestmark = pytest.mark.django_db

UBUNTU = {
    "cpu_vendor": "intel",
    "grub_file": "/etc/default/grub.d/50-cloudimg-settings.cfg",
    "grub_cmdline_default": "console=tty1 console=ttyS0",
    "grub_cmdline_linux": "",
    "grub_tool": "update-grub",
    "cmdline": "BOOT_IMAGE=/boot/vmlinuz-5.15.0-91-generic root=UUID=x ro console=tty1 console=ttyS0",
}


def host_with(name, credential, facts=None, **kwargs):
    host = make_host(name, credential=credential, **kwargs)
    Hypervisor.objects.filter(pk=host.pk).update(**{**UBUNTU, **(facts or {})})
    host.refresh_from_db()
    return host


def iommu(**extra):
    return {"op": "kernel_args", "preset": "iommu", **extra}


def preview(hosts, ops, **policy):
    _clean, plan = services.preview_plan(change_data([h.pk for h in hosts], ops=ops, **policy))
    return plan


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, message",
    [
        ({"op": "kernel_args", "add": ["intel_iommu=on;reboot"]}, "is not a safe kernel argument"),
        ({"op": "kernel_args", "add": ['quiet"']}, "is not a safe kernel argument"),
        ({"op": "kernel_args", "add": ["$(reboot)"]}, "is not a safe kernel argument"),
        ({"op": "kernel_args", "add": ["a=`id`"]}, "is not a safe kernel argument"),
        ({"op": "kernel_args", "add": ["iommu=pt", "iommu=off"]}, "iommu=pt conflicts with iommu=off"),
        ({"op": "kernel_args", "add": ["intel_iommu=on", "intel_iommu=off"]}, "intel_iommu=on conflicts with"),
        ({"op": "kernel_args", "add": ["hugepages=8", "hugepages=16"]}, "hugepages is given twice"),
        ({"op": "kernel_args", "preset": "iommu", "add": ["iommu=off"]}, "conflicts with iommu=off"),
        ({"op": "kernel_args", "add": ["iommu=pt"], "remove": ["iommu"]}, "iommu=pt is both added and removed"),
        ({"op": "kernel_args", "preset": "iommu", "remove": ["iommu=pt"]}, "iommu=pt is both added and removed"),
        ({"op": "kernel_args", "add": ["root=/dev/sdb1"]}, "'root=/dev/sdb1' is protected"),
        ({"op": "kernel_args", "remove": ["resume"]}, "'resume' is protected"),
        ({"op": "kernel_args", "remove": ["rd.lvm.lv=vg/root"]}, "is protected"),
        ({"op": "kernel_args"}, "give arguments to add or remove, or the IOMMU preset"),
        ({"op": "kernel_args", "preset": "sriov"}, "preset must be one of iommu"),
        ({"op": "kernel_args", "preset": "iommu", "vfio_pci_ids": ["8086:15z1"]}, "is not vendor:device"),
        ({"op": "kernel_args", "add": ["quiet"], "vfio_pci_ids": ["8086:1521"]}, "go with the IOMMU preset"),
        ({"op": "kernel_args", "add": ["quiet"], "shell": "x"}, "unknown fields shell"),
        ({"op": "reboot", "when": "sometimes"}, "when must be if_needed or always"),
        ({"op": "reboot", "parallelism": 0}, "parallelism must be a whole number"),
    ],
)
def test_invalid_operations_are_refused_with_the_field(op, message):
    handler = KernelArgs() if op["op"] == "kernel_args" else Reboot()
    with pytest.raises(OperationError, match="operation 1: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        handler.validate(op, "operation 1")


def test_valid_operations_are_normalised():
    assert KernelArgs().validate(
        {"op": "kernel_args", "preset": "iommu", "vfio_pci_ids": "8086:1521, 15B3:1017 8086:1521"}, "op 1"
    ) == {"op": "kernel_args", "preset": "iommu", "vfio_pci_ids": ["8086:1521", "15b3:1017"], "add": [],
          "remove": []}
    assert KernelArgs().validate({"op": "kernel_args", "add": "hugepages=8 quiet quiet", "remove": ["splash"]},
                                 "op 1")["add"] == ["hugepages=8", "quiet"]
    assert Reboot().validate({"op": "reboot"}, "op 2") == {"op": "reboot", "when": "if_needed", "parallelism": None}


def test_conflicts_table_and_prediction_of_the_agent_edit():
    assert conflicts_in(["intel_iommu=on", "iommu=pt"]) == []
    assert conflicts_in(["amd_iommu=on", "iommu=off"]) == ["amd_iommu=on conflicts with iommu=off"]
    # same rules as the agent's token edit: remove, replace a key in place, append the rest
    assert edit_value("quiet splash iommu=off", ["intel_iommu=on", "iommu=pt"], ["splash"]) == (
        "quiet iommu=pt intel_iommu=on"
    )
    assert edit_value(None, ["intel_iommu=on"], []) == "intel_iommu=on"
    assert duration_words(130) == "2m10s" and duration_words(900) == "15m" and duration_words(5) == "5s"


def test_registered_in_the_operation_registry():
    ops = validate_operations([iommu(), {"op": "reboot", "when": "always"}])
    assert [o["op"] for o in ops] == ["kernel_args", "reboot"]


# -- planning -----------------------------------------------------------------------------------


def test_iommu_preset_per_cpu_vendor_before_after_tool_and_reboot(credential):
    intel = host_with("hv-intel", credential)
    amd = host_with("hv-amd", credential, {"cpu_vendor": "amd", "grub_file": "/etc/default/grub",
                                           "grub_cmdline_default": "quiet", "cmdline": "ro quiet"})
    rhel = host_with("hv-rhel", credential, {"grub_file": "/etc/default/grub", "grub_cmdline_default": "",
                                             "grub_tool": "grubby", "cmdline": "ro crashkernel=auto"})
    odd = host_with("hv-odd", credential, {"cpu_vendor": "centaurhauls"})
    plan = preview([intel, amd, rhel, odd], [iommu(vfio_pci_ids=["8086:1521"]), {"op": "reboot"}])
    by_name = {p.host.name: p.plan for p in plan.hosts}

    item = by_name["hv-intel"]
    grub = item.actions[0]["grub"]
    assert grub["before"] == "console=tty1 console=ttyS0"
    assert grub["after"] == "console=tty1 console=ttyS0 intel_iommu=on iommu=pt vfio-pci.ids=8086:1521"
    assert grub["tool"] == "update-grub" and grub["reboot_required"] is True
    assert item.actions[0]["text"] == (
        'GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub.d/50-cloudimg-settings.cfg: "console=tty1 '
        'console=ttyS0" → "console=tty1 console=ttyS0 intel_iommu=on iommu=pt vfio-pci.ids=8086:1521"; '
        "regenerate the boot configuration with update-grub; reboot required (/proc/cmdline lacks "
        "intel_iommu=on iommu=pt vfio-pci.ids=8086:1521)"
    )
    assert item.actions[0]["step"] == {
        "op": "kernel_args", "args": {"add": ["intel_iommu=on", "iommu=pt", "vfio-pci.ids=8086:1521"],
                                      "remove": []}}
    assert item.actions[1]["step"] == {"op": "reboot", "args": {"refuse_if_guests": True}}
    assert item.actions[1]["text"].startswith("reboot hv-intel (/proc/cmdline lacks intel_iommu=on")
    assert "verify: new boot id, /proc/cmdline has intel_iommu=on iommu=pt vfio-pci.ids=8086:1521, IOMMU active" in (
        item.actions[1]["text"])
    assert item.before == {"kernel_args": {"grub_cmdline_linux_default": "console=tty1 console=ttyS0"}}
    assert item.after["kernel_args"] == {
        "grub_cmdline_linux_default": "console=tty1 console=ttyS0 intel_iommu=on iommu=pt vfio-pci.ids=8086:1521",
        "cmdline:intel_iommu=on": True, "cmdline:iommu=pt": True, "cmdline:vfio-pci.ids=8086:1521": True,
        "iommu_active": True,
    }

    # AMD-Vi is on by default where the firmware enables it: amd_iommu=on is not a valid value.
    assert by_name["hv-amd"].actions[0]["grub"]["after"] == "quiet iommu=pt vfio-pci.ids=8086:1521"
    assert "--args='intel_iommu=on iommu=pt vfio-pci.ids=8086:1521'" in by_name["hv-rhel"].actions[0]["grub"][
        "tool_words"]
    assert by_name["hv-odd"].errors == [
        "operation 1: CPU vendor centaurhauls: cannot choose the IOMMU arguments (Intel or AMD only); run "
        "discovery, or give the arguments explicitly"
    ]
    assert plan.blocked


def test_reboot_if_needed_only_where_the_running_cmdline_lacks_the_arguments(credential):
    done = host_with("hv-done", credential, {
        "grub_cmdline_default": "console=tty1 intel_iommu=on iommu=pt",
        "cmdline": "ro console=tty1 intel_iommu=on iommu=pt"})
    pending = host_with("hv-pending", credential, {
        "grub_cmdline_default": "console=tty1 intel_iommu=on iommu=pt", "cmdline": "ro console=tty1"})
    plan = preview([done, pending], [iommu(), {"op": "reboot", "when": "if_needed"}])
    done_plan, pending_plan = (p.plan for p in plan.hosts)
    assert [a["step"] for a in done_plan.actions] == [None, None]
    assert done_plan.actions[1]["text"] == "no reboot needed: the running kernel already has the configured arguments"
    # GRUB already right but the running kernel lacks them: regenerate to be sure, then reboot
    assert pending_plan.actions[0]["step"]["args"]["regenerate"] is True
    assert pending_plan.actions[1]["step"]["op"] == "reboot"
    always = preview([done], [{"op": "reboot", "when": "always"}]).hosts[0].plan
    assert always.actions[0]["step"]["op"] == "reboot"
    assert always.actions[0]["text"].startswith("reboot hv-done (requested: reboot every host)")


def test_running_guests_block_a_reboot_unless_allowed(credential):
    host = host_with("hv-guests", credential)
    Hypervisor.objects.filter(pk=host.pk).update(running_guests=[
        {"name": "vm-db01", "hostdev_pci": ["0000:04:10.0"]}, {"name": "vm-web01", "hostdev_pci": []}])
    host.refresh_from_db()
    plan = preview([host], [iommu(), {"op": "reboot"}])
    assert plan.blocked
    assert plan.hosts[0].plan.errors == [
        "rebooting hv-guests takes down 2 running guests: vm-db01, vm-web01; stop or migrate them first, "
        "or allow guest impact in the policy"
    ]
    allowed = preview([host], [iommu(), {"op": "reboot"}], allow_guest_impact=True)
    assert not allowed.blocked
    assert allowed.hosts[0].plan.warnings == [
        "rebooting hv-guests takes down 2 running guests: vm-db01, vm-web01 (allowed by the rollout policy)"]
    assert allowed.hosts[0].plan.actions[1]["step"]["args"] == {"refuse_if_guests": False}


def test_combined_change_runs_kernel_args_then_vfs_then_reboot_and_checks_persisted_vfs(credential):
    host = host_with("hv-combo", credential, nics=[
        ("eno49", "0000:04:00.0", 0), ("eno50", "0000:04:00.1", 2, {"persisted": True, "persisted_numvfs": 2})])
    ops = [{"op": "reboot"}, {"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4}, iommu()]
    item = preview([host], ops).hosts[0].plan
    assert [a["step"]["op"] for a in item.actions if a.get("step")] == ["kernel_args", "set_vfs", "reboot"]
    assert item.after["numvfs"] == {"0000:04:00.0": 4, "boot:0000:04:00.1": 2}
    assert "eno49 has 4 VFs again" in item.actions[-1]["text"]
    # not persisted + reboot: the VFs would vanish
    ops[1]["persist"] = False
    blocked = preview([host], ops).hosts[0].plan
    assert "eno49: 4 VFs are not persisted and would be gone after the reboot" in blocked.errors[0]


def test_legacy_kernel_max_vfs_route_needs_the_reboot(credential):
    host = host_with("hv-old", credential, {"grub_file": "", "grub_tool": "grubby"},
                     kernel="2.6.32-754.35.1.el6.x86_64", nics=[("eth2", "0000:04:00.0", 0)])
    item = preview([host], [{"op": "set_vfs", "select": {"by": "name", "value": "eth2"}, "count": 4},
                            {"op": "reboot"}]).hosts[0].plan
    reboot = item.actions[-1]
    assert reboot["step"]["op"] == "reboot"
    assert "eth2: 4 VFs take effect only at boot (kernel 2.6.32-754.35.1.el6.x86_64 < 3.8: max_vfs)" in reboot["text"]
    # kernel arguments need /etc/default/grub, which grub-legacy hosts do not have
    blocked = preview([host], [iommu()]).hosts[0].plan
    assert blocked.errors[0].startswith("operation 1: no /etc/default/grub on this host")


def test_vfio_pci_ids_of_a_pf_the_host_uses_is_blocking(credential):
    host = host_with("hv-pf", credential, nics=[("eno49", "0000:04:00.0", 0)])  # an I350 port, 8086:1521
    item = preview([host], [iommu(vfio_pci_ids=["8086:1521"])]).hosts[0].plan
    assert item.errors == [
        "operation 1: vfio-pci.ids=8086:1521 is the device id of eno49 (0000:04:00.0), a port this host uses: "
        "vfio-pci would take it from its driver at boot; the VFs of this NIC have id 8086:1520"
    ]
    explicit = preview([host], [{"op": "kernel_args", "add": ["vfio-pci.ids=8086:1521"]}]).hosts[0].plan
    assert explicit.errors and "a port this host uses" in explicit.errors[0]
    assert not preview([host], [iommu(vfio_pci_ids=["8086:1520"])]).hosts[0].plan.errors


def test_grub_cmdline_linux_conflict_is_blocking(credential):
    host = host_with("hv-linux", credential, {"grub_cmdline_linux": "iommu=off"})
    item = preview([host], [iommu()]).hosts[0].plan
    assert item.errors == [
        "operation 1: GRUB_CMDLINE_LINUX ('iommu=off') keeps arguments that conflict with the result: "
        "iommu=off conflicts with intel_iommu=on; iommu=off conflicts with iommu=pt; the console edits only "
        "GRUB_CMDLINE_LINUX_DEFAULT"
    ]


def test_reboot_parallelism_caps_the_rollout_unless_raised_explicitly():
    change = ChangeRequest(parallelism=10, operations=[{"op": "set_vfs"}])
    assert effective_parallelism(change) == 10
    change.operations = [{"op": "reboot", "when": "if_needed", "parallelism": None}]
    assert effective_parallelism(change) == 1
    change.operations = [{"op": "reboot", "when": "if_needed", "parallelism": 4}]
    assert effective_parallelism(change) == 4
    change.parallelism = 2
    assert effective_parallelism(change) == 2
