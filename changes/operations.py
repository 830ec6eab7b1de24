"""The operations a change can carry: validation, planning, drift comparison and verification.

One class per operation in `REGISTRY`; issue 7 adds kernel_args and reboot next to set_vfs. Each
operation owns one namespace of the plan's before/after (set_vfs: ``numvfs`` = {pci: count}), so
the drift check and the verification compare only what the operation is about.
"""

from dataclasses import dataclass, field

SELECT_BY = ("name", "pci", "driver", "vendor_device")
MAX_OPERATIONS = 20
RESET_NOTE = "reset to 0 first, the kernel refuses a direct change"


class OperationError(ValueError):
    """Invalid operation input; the message is for people (prefixed with the operation number)."""


@dataclass
class HostPlan:
    """What planning builds for one host before it becomes a PlanItem."""

    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    actions: list = field(default_factory=list)  # {"text", "pf", "pci_address", "step"}
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


class SetVfs:
    name = "set_vfs"
    namespace = "numvfs"
    phase = 1  # kernel args -> VF counts -> reboot (changes/planning.py plans in this order)

    # -- input ------------------------------------------------------------------------------
    def validate(self, op: dict, where: str) -> dict:
        allowed = {"op", "select", "count", "persist", "take_over"}
        unknown = set(op) - allowed
        if unknown:
            raise OperationError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
        select = op.get("select")
        if not isinstance(select, dict) or set(select) != {"by", "value"}:
            raise OperationError(f'{where}: select must be {{"by": ..., "value": ...}}')
        by, value = select["by"], select["value"]
        if by not in SELECT_BY:
            raise OperationError(f"{where}: select by must be one of {', '.join(SELECT_BY)}")
        if not isinstance(value, str) or not value.strip() or len(value) > 64:
            raise OperationError(f"{where}: give the {by} to select (at most 64 characters)")
        value = value.strip()
        from .validators import check_select_value

        check_select_value(by, value, where)
        count = op.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 4096:
            raise OperationError(f"{where}: count must be a whole number between 0 and 4096")
        persist = op.get("persist", True)
        take_over = op.get("take_over", False)
        if not isinstance(persist, bool) or not isinstance(take_over, bool):
            raise OperationError(f"{where}: persist and take_over must be true or false")
        if by == "vendor_device":
            value = value.lower()
        return {
            "op": self.name,
            "select": {"by": by, "value": value},
            "count": count,
            "persist": persist,
            "take_over": take_over,
        }

    def describe(self, op: dict) -> str:
        by = {"name": "PF", "pci": "PF at", "driver": "PFs driven by", "vendor_device": "PFs of device"}
        words = f"set {op['count']} VFs on {by[op['select']['by']]} {op['select']['value']}"
        return words + (" (persisted)" if op["persist"] else " (not persisted)")

    # -- planning ---------------------------------------------------------------------------
    def select_nics(self, op: dict, nics: list) -> list:
        by, value = op["select"]["by"], op["select"]["value"]
        if by == "name":
            return [n for n in nics if n.name == value]
        if by == "pci":
            return [n for n in nics if n.pci_address == value]
        if by == "driver":
            return [n for n in nics if n.driver == value and n.sriov_capable]
        return [n for n in nics if f"{n.vendor_id}:{n.device_id}".lower() == value and n.sriov_capable]

    def plan(
        self, op: dict, number: int, host, nics: list, vfs_by_nic: dict, change, out: HostPlan, claimed: dict
    ) -> None:
        selected = self.select_nics(op, nics)
        by, value = op["select"]["by"], op["select"]["value"]
        if not selected:
            what = {
                "name": f"no NIC named {value}",
                "pci": f"no NIC at PCI address {value}",
                "driver": f"no SR-IOV capable NIC driven by {value}",
                "vendor_device": f"no SR-IOV capable NIC of device {value}",
            }[by]
            out.errors.append(f"operation {number}: PF missing: {what} on {host.name}")
            return
        before = out.before.setdefault(self.namespace, {})
        after = out.after.setdefault(self.namespace, {})
        legacy = _legacy_kernel(host.kernel)
        for nic in selected:
            label = f"{nic.name} ({nic.pci_address})"
            if nic.pci_address in claimed:
                out.errors.append(
                    f"{label} is selected by operations {claimed[nic.pci_address]} and {number}"
                )
                continue
            claimed[nic.pci_address] = number
            if not nic.sriov_capable:
                out.errors.append(f"{label} is not SR-IOV capable (no sriov_totalvfs)")
                continue
            current = nic.sriov_numvfs if nic.sriov_numvfs is not None else 0
            count = op["count"]
            before[nic.pci_address] = current
            after[nic.pci_address] = count
            if count > nic.sriov_totalvfs:
                out.errors.append(
                    f"{nic.name}: {count} VFs requested, the NIC supports at most {nic.sriov_totalvfs}"
                )
                continue
            take_over = False
            owned = nic.persisted or nic.managed_numvfs is not None
            if count != current and current > 0 and not owned:
                text = (
                    f"{nic.name} has {current} VFs that SR-IOV Console did not configure (externally managed)"
                )
                if op["take_over"]:
                    out.warnings.append(text + "; this change takes it over")
                    take_over = True
                else:
                    out.errors.append(text + "; set take_over to change it")
            reset = (not legacy) and current > 0 and count > 0 and count != current
            removed = [vf for vf in vfs_by_nic.get(nic.pk, []) if reset or vf.index >= count]
            in_use = sorted({vf.guest for vf in removed if vf.guest})
            if count != current and in_use:
                text = f"{nic.name}: VFs in use by running guests would be removed ({', '.join(in_use)})"
                if change.allow_guest_impact:
                    out.warnings.append(text + "; allowed by the rollout policy")
                else:
                    out.errors.append(text + "; stop or migrate them, or allow guest impact in the policy")
            needs_persist = op["persist"] and not (nic.persisted and nic.persisted_numvfs == count)
            if count == current:
                text = f"{nic.name}: already {count} VFs, nothing to do"
                if needs_persist:
                    text = f"{nic.name}: already {count} VFs; record the count so it survives a reboot"
            elif reset:
                text = f"{nic.name}: {current} → {count} VFs ({RESET_NOTE})"
            else:
                text = f"{nic.name}: {current} → {count} VFs"
            if legacy and count != current:
                text += " (kernel older than 3.8: max_vfs in modprobe.d, applies after a reboot)"
                out.warnings.append(
                    f"{nic.name}: the new count applies only after a reboot (kernel {host.kernel})"
                )
            step = None
            if count != current or needs_persist:
                step = {
                    "op": self.name,
                    "args": {
                        "pf": nic.name,
                        "pci_address": nic.pci_address,
                        "count": count,
                        "persist": op["persist"],
                        # The agent's two safety flags, each only where the approved plan/policy
                        # says so (never the deprecated `force`, which skips both checks):
                        # take_over skips only the "externally managed" refusal,
                        # allow_guest_impact only the "VFs in use by guests" refusal.
                        "take_over": take_over,
                        "allow_guest_impact": bool(change.allow_guest_impact),
                    },
                }
            out.actions.append({"text": text, "pf": nic.name, "pci_address": nic.pci_address, "step": step})

    # -- execution --------------------------------------------------------------------------
    def observe(self, inventory: dict, pcis) -> dict:
        """{pci: numvfs} from an agent inventory result for the given PCI addresses (None if gone)."""
        by_pci = {n.get("pci_address"): n for n in inventory.get("nics", []) if not n.get("is_vf")}
        seen = {}
        for pci in pcis:
            nic = by_pci.get(pci)
            seen[pci] = None if nic is None else (nic.get("sriov_numvfs") or 0)
        return seen


REGISTRY = {op.name: op for op in (SetVfs(),)}  # kernel_args and reboot are added at the end


def _legacy_kernel(release: str) -> bool:
    try:
        major, minor = (int(p) for p in (release or "").split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (3, 8)


def validate_operations(operations) -> list[dict]:
    if not isinstance(operations, list) or not operations:
        raise OperationError("give at least one operation")
    if len(operations) > MAX_OPERATIONS:
        raise OperationError(f"at most {MAX_OPERATIONS} operations per change")
    normal = []
    for number, op in enumerate(operations, start=1):
        where = f"operation {number}"
        if not isinstance(op, dict):
            raise OperationError(f"{where}: must be an object")
        handler = REGISTRY.get(op.get("op"))
        if handler is None:
            raise OperationError(f"{where}: unknown op {op.get('op')!r}; known: {', '.join(REGISTRY)}")
        normal.append(handler.validate(op, where))
    return normal


# Issue 7: the other two operations of the reference procedure. Imported last: they build on
# HostPlan / OperationError / _legacy_kernel above.
from .kernel_args import KernelArgs  # noqa: E402
from .reboots import Reboot  # noqa: E402

REGISTRY.update({op.name: op for op in (KernelArgs(), Reboot())})
