"""What `set_vfs` checks against the host as discovery saw it, before anything is sent.

Each check reads the inventory (Nic and Hypervisor rows) and adds words to the plan: blocking
errors for what the agent would refuse or what would harm the host, warnings for what the operator
should expect. The agent checks again on the host at run time (docs/agent.md); the plan says it
first, so the requester and the approvers read it before anything runs.
"""

from __future__ import annotations

from .base import HostPlan, PlanContext

# How a PF can be held without its network driver (the agent's binding states).
PASSTHROUGH = ("vfio", "pci-stub")


def binding_errors(nic) -> list[str]:
    """A PF the host does not drive through its network driver cannot, or must not, change VFs."""
    state, label = nic.binding_state, nic.label
    if state in PASSTHROUGH:
        return [f"{label} is bound to {nic.driver or state}: it is handed to a guest or to a userspace driver "
                "(DPDK) and has no network interface. SR-IOV Console does not change the VFs of such a PF; give "
                "it back to its network driver first if that is what you want"]
    if state == "no_driver":
        return [f"{label} has no driver bound, so the kernel cannot change its VFs; bind it to its network driver "
                "first, then run discovery again"]
    return []


def capability_errors(nic) -> list[str]:
    if nic.sriov_totalvfs == 0:
        reason = nic.not_capable_reason or "sriov_totalvfs is 0"
        return [f"{nic.label} cannot have VFs now: {reason}"]
    if nic.device_busy:
        return [f"{nic.label}: the kernel is still waiting on an earlier change of its VF count (a guest holds one "
                "of its VFs, so the device stays locked); release the VF, then run discovery again"]
    return []


def link_drops(current: int, count: int, reset: bool, legacy: bool) -> int:
    """How often the PF's link goes down: never on a kernel < 3.8 (the count applies at boot), twice
    when the path writes 0 first."""
    if legacy or count == current:
        return 0
    return 2 if reset else 1


def _drop_words(link: dict, drops: int) -> str:
    seconds = link.get("link_drop_seconds")
    if drops == 2:
        return "drops twice" + (f", for about {seconds} s each" if seconds else "")
    return "drops once" + (f", for about {seconds} s" if seconds else "")


def link_checks(op: dict, out: HostPlan, nic, drops: int) -> list[str]:
    """The PF's link drops when its VF count changes (igb closes and reopens the PF, i40e resets
    it). Returns the step flags the plan allows (allow_management_link)."""
    link = nic.link or {}
    if not drops or not link or link.get("link_drops_on_vf_change") is False:
        return []
    label, words = nic.label, _drop_words(link, drops)
    if link.get("management"):
        text = (f"{label} carries the management SSH connection of this host: changing its VF count its link "
                f"{words}, and the console may lose the host")
        if op.get("allow_management_link"):
            out.warnings.append(text + "; allowed by this change (allow_management_link)")
            return ["allow_management_link"]
        out.errors.append(text + ". Use another PF, or allow the management link if a console on the host is "
                                 "at hand")
        return []
    if link.get("management") is None:
        out.warnings.append(f"{label}: cannot tell whether it carries the management SSH connection; its link "
                            f"{words} when the VF count changes")
    uses = _link_uses(link)
    if uses:
        out.warnings.append(f"{label}: link {words} when the VF count changes, and it carries {uses}")
    return []


def mtu_checks(op: dict, out: HostPlan, nic) -> list[str]:
    """A new MTU closes and reopens the PF (igb_change_mtu, ixgbe's reinit): refused on a bond or
    bridge port, whose MTU its master decides, and on the management PF unless allowed, as the agent
    refuses them (pf_enslaved, management_link). Returns the step flags the plan allows."""
    link = nic.link or {}
    master = link.get("master") if isinstance(link.get("master"), dict) else None
    if master:
        out.errors.append(f"{nic.label} is a port of the {master.get('kind') or 'device'} {master.get('name')}: "
                          f"set the MTU on {master.get('name')}, its ports follow it")
        return []
    if not link.get("management"):
        return []
    text = f"{nic.label} carries the management SSH connection of this host: a new MTU drops its link"
    if op.get("allow_management_link"):
        out.warnings.append(text + "; allowed by this change (allow_management_link)")
        return ["allow_management_link"]
    out.errors.append(text + ". Use another PF, or allow the management link if a console on the host is at hand")
    return []


def _link_uses(link: dict) -> str:
    parts = []
    stacked = [s for s in link.get("stacked") or [] if isinstance(s, dict)]
    if stacked:
        parts.append("the " + " and the ".join(f"{s.get('kind') or 'device'} {s.get('name')}" for s in stacked))
    addresses = [f"{a.get('address')} on {a.get('dev')}" for a in link.get("addresses") or [] if isinstance(a, dict)]
    if addresses:
        parts.append("the addresses " + ", ".join(addresses))
    if link.get("default_route"):
        parts.append("the default route")
    return "; ".join(parts)


def other_config_checks(op: dict, out: HostPlan, nic, count: int) -> None:
    """Other boot configuration (udev rules, NetworkManager, netplan, systemd, rc.local, modprobe)
    that sets another VF count for this PF would fight the persisted one at boot."""
    if not op["persist"]:
        return
    conflicts = [item for item in nic.other_config or [] if isinstance(item, dict) and item.get("active")
                 and nic.pci_address in (item.get("counts") or {}) and item["counts"][nic.pci_address] != count]
    for item in conflicts:
        where = f"{item.get('path')}:{item['line']}" if item.get("line") else str(item.get("path"))
        sets = item["counts"][nic.pci_address]
        text = (f"{nic.label}: other boot configuration sets {sets if sets is not None else 'a'} VFs at boot: "
                f"{where} ({item.get('how') or item.get('kind')})")
        others = sorted(p for p in item.get("counts") or {} if p != nic.pci_address)
        blocker = item.get("disable_blocker") or ("" if item.get("disable") else "it cannot be disabled")
        if blocker:
            out.errors.append(f"{text}; take_over cannot disable it: {blocker}. Change it by hand")
        elif not op["take_over"]:
            out.errors.append(f"{text}. Both would run at boot and the count would depend on which comes last; "
                              f"remove it, or use take_over to disable it ({_disable_words(item)})")
        else:
            kept = f"; the console's rule keeps the counts it gave {', '.join(others)}" if others else ""
            out.warnings.append(f"{text}; take_over disables it ({_disable_words(item)}){kept}")


def _disable_words(item: dict) -> str:
    disable = item.get("disable") or {}
    method = {"comment": "its line commented out", "nm_section": "its [sriov] section commented out"}.get(
        disable.get("method"), disable.get("method") or "disabled")
    return f"{method} in {disable.get('target') or item.get('path')}, backed up first"


def autostart_checks(op: dict, ctx: PlanContext, out: HostPlan, nic, count: int, reset: bool) -> list[str]:
    """Stopped guests that start at boot and use a VF this change removes would not start."""
    hit = {}
    for guest in ctx.host.defined_guests or []:
        for vf in (guest or {}).get("vfs") or []:
            index = vf.get("index")
            if vf.get("pf") == nic.pci_address and isinstance(index, int) and (reset or index >= count):
                hit.setdefault(guest.get("name") or "?", []).append(f"VF {index}, {vf.get('via') or 'hostdev'}")
    if not hit:
        return []
    names = "; ".join(f"{name} ({', '.join(vfs)})" for name, vfs in sorted(hit.items()))
    text = f"{nic.label}: guests that start at boot use VFs this change removes: {names}; they will not start"
    if op.get("allow_autostart_impact") or ctx.change.allow_guest_impact:
        out.warnings.append(text + "; allowed by " + (
            "this change (allow_autostart_impact)" if op.get("allow_autostart_impact") else "the rollout policy"))
        return ["allow_autostart_impact"] if op.get("allow_autostart_impact") else []
    out.errors.append(text + ". Change or disable those guests, or allow autostart impact")
    return []


def same_driver_ports(ctx: PlanContext, nic) -> list:
    return [n for n in ctx.nics if n.driver == nic.driver and n.sriov_capable and n.pk != nic.pk]


def single_max_vfs_checks(op: dict, ctx: PlanContext, out: HostPlan, nic, count: int, wanted: dict) -> list[str]:
    """Kernels < 3.8 with a max_vfs that is one unsigned integer (the in-tree igb/ixgbe): the count
    is the same on every port of the driver. `wanted`: PCI address -> count this change asks."""
    others = same_driver_ports(ctx, nic)
    asked = {n.pci_address: wanted[n.pci_address] for n in others if wanted.get(n.pci_address, count) != count}
    if asked:
        names = {n.pci_address: n.label for n in others}
        listed = ", ".join(f"{names[p]}: {c}" for p, c in sorted(asked.items()))
        out.errors.append(f"{nic.label}: {nic.driver} takes max_vfs as one number for every port on this kernel "
                          f"(kernel {ctx.host.kernel}): this change asks {count} VFs here and other counts on "
                          f"{listed}; ask for the same count on every {nic.driver} port")
        return []
    differ = [n for n in others if (n.sriov_numvfs or 0) != count]
    if not differ:
        return []
    if all(n.pci_address in wanted for n in differ):
        return ["apply_to_all_ports"]  # the change itself asks this count on every port
    listed = ", ".join(f"{n.label} (now {n.sriov_numvfs or 0})" for n in differ if n.pci_address not in wanted)
    text = f"{nic.label}: same count on every port of {nic.driver}: {count} VFs on {listed} too"
    if op.get("apply_to_all_ports"):
        out.warnings.append(text + " (apply_to_all_ports)")
        for other in differ:
            out.before.setdefault("numvfs", {})[other.pci_address] = other.sriov_numvfs or 0
            out.after.setdefault("numvfs", {})[other.pci_address] = count
        return ["apply_to_all_ports"]
    out.errors.append(text + f": {nic.driver} takes max_vfs as one number on this kernel. Set apply_to_all_ports "
                             "(same count on every port), or use a kernel of 3.8 or newer")
    return []
