"""`vf_driver`: which driver a range of a PF's VFs is bound to: vfio-pci (PCI passthrough to a guest),
a VF netdev driver (igbvf, iavf, ixgbevf, mlx5_core...), or "default" (the kernel's own match).

    {"op": "vf_driver", "pf": "eno49", "vfs": "0-3", "driver": "vfio-pci", "persist": true}
    {"op": "vf_driver", "pf": "eno49", "vfs": "4-6", "driver": "igbvf", "persist": true}

The agent binds through each VF's ``driver_override``, ``driver/unbind`` and ``drivers_probe`` (kernel
Documentation/ABI/testing/sysfs-bus-pci) and loads vfio-pci when it is missing. Several vf_driver
operations give ranges of one PF their own drivers (the SR-IOV Network Operator's "eno49#0-3").

Namespace ``vf_driver`` of the plan: ``<pf pci>#<index>.driver`` → the driver (``.default`` → True
for "default": no override and not bound to a passthrough driver), ``.persisted_driver`` → the
persisted binding (None when not persisted, or for "default"). Intent: one per VF.
"""

from __future__ import annotations

from django import forms

from .base import HostPlan, IntentValue, Operation, OperationError, PlanContext
from .validators import DRIVER_RE
from .vf_ranges import (
    check_pf,
    count_removed,
    grouped,
    guest_impact,
    lost_when_recreated,
    merge,
    needed_with,
    nic_vfs,
    parse_ranges,
    plan_pf,
    planned_count,
    ranges_text,
    recreated,
    split_key,
    split_subject,
    split_target,
    vf_mark,
    vf_of,
    vf_subject,
)

DEFAULT = "default"
VFIO = "vfio-pci"
PASSTHROUGH = ("vfio-pci", "pci-stub")
# The VF netdev driver of the common PF drivers: another netdev driver would not bind to their VFs.
VF_DRIVER_OF_PF = {"igb": "igbvf", "ixgbe": "ixgbevf", "i40e": "iavf", "ice": "iavf", "mlx5_core": "mlx5_core",
                   "bnxt_en": "bnxt_en", "qede": "qede", "ixgbevf": "ixgbevf"}


def is_default(vf_driver, override) -> bool:
    """Bound by the kernel's own match: no override, and not held by a passthrough driver."""
    return not override and vf_driver not in PASSTHROUGH


class VfDriverForm(forms.Form):
    target = forms.CharField(max_length=60, required=False, label="PF#VFs",
                             widget=forms.TextInput(attrs={"placeholder": "eno49#0-3"}))
    driver = forms.CharField(max_length=50, required=False, label="Driver",
                             widget=forms.TextInput(attrs={"placeholder": "vfio-pci, igbvf or default"}))
    persist = forms.BooleanField(required=False, initial=True, label="Persist")


class VfDriver(Operation):
    name = "vf_driver"
    title = "VF driver binding"
    phase = 25  # after set_vfs (the VFs exist), before vf_config (settings apply to bound VFs too)
    form_class = VfDriverForm
    form_rows = 4
    form_help = ("Bind VF ranges to vfio-pci for PCI passthrough, to a VF netdev driver (igbvf, iavf, ixgbevf, "
                 "mlx5_core) or back to the kernel's default. Persist: the binding comes back after a reboot and "
                 "after the VFs are re-created.")

    # -- input ----------------------------------------------------------------------------
    def validate(self, op: dict, where: str) -> dict:
        self.check_fields(op, {"pf", "vfs", "driver", "persist"}, where)
        pf = check_pf(op.get("pf"), where)
        ranges = parse_ranges(op.get("vfs"), where)
        driver = op.get("driver")
        if not isinstance(driver, str) or not DRIVER_RE.match(driver.strip()):
            raise OperationError(f"{where}: driver must be vfio-pci, a VF driver name such as igbvf, or default")
        persist = op.get("persist", True)
        if not isinstance(persist, bool):
            raise OperationError(f"{where}: persist must be true or false")
        return {"op": self.name, "pf": pf, "vfs": ranges_text(ranges), "driver": driver.strip(), "persist": persist}

    def summary(self, op: dict) -> str:
        driver = "the default driver" if op["driver"] == DEFAULT else op["driver"]
        return f"bind {op['pf']}#{op['vfs']} to {driver}" + (", persisted" if op["persist"] else ", not persisted")

    def needs(self, operations: list[dict]) -> set[str]:
        return needed_with(operations, self.name, "vfs")

    # -- planning -------------------------------------------------------------------------
    def plan(self, op: dict, ctx: PlanContext, out: HostPlan) -> None:
        nic, indexes = plan_pf(op, ctx, out, self.name)
        if nic is None:
            return
        driver = op["driver"]
        expected = VF_DRIVER_OF_PF.get(nic.driver)
        if driver not in (DEFAULT, *PASSTHROUGH) and expected and driver != expected:
            out.errors.append(f"{ctx.where}: {nic.name} is driven by {nic.driver}: its VFs bind to {expected} or "
                              f"vfio-pci, not {driver}")
            return
        if driver in PASSTHROUGH and not self._iommu_ready(ctx, out, nic):
            return
        guest_impact(ctx, out, nic, indexes, "rebinds")
        fresh = recreated(out, nic)
        by_index = {vf.index: vf for vf in ctx.all_vfs.get(nic.pk, [])}
        before, after = out.before.setdefault(self.namespace, {}), out.after.setdefault(self.namespace, {})
        words, send = [], []
        for index in indexes:
            vf = None if fresh else by_index.get(index)
            subject = vf_subject(nic.pci_address, index)
            if vf is not None and vf.driver:
                before[f"{subject}.driver"] = vf.driver
            if driver == DEFAULT:
                after[f"{subject}.default"] = True
            else:
                after[f"{subject}.driver"] = driver
            after[f"{subject}.persisted_driver"] = driver if op["persist"] and driver != DEFAULT else None
            text, needed = self._vf_words(vf, driver, op["persist"], expected)
            words.append((index, text))
            if needed:
                send.append(index)
        self._add_actions(op, ctx, out, nic, words, send)

    @staticmethod
    def _iommu_ready(ctx: PlanContext, out: HostPlan, nic) -> bool:
        """vfio-pci takes only devices in an IOMMU group (kernel Documentation/driver-api/vfio.rst):
        with the IOMMU off the binding fails on the host, so the plan refuses it first."""
        if ctx.host.iommu_active is False:
            out.errors.append(f"{ctx.where}: {nic.name}: vfio-pci needs the IOMMU, which is off on {ctx.host.name}; "
                              "enable it first (kernel arguments: Enable IOMMU for SR-IOV, and a reboot)")
            return False
        if ctx.host.iommu_active is None:
            out.warnings.append(f"{nic.name}: whether the IOMMU is on is not known (run discovery); vfio-pci "
                                "needs it")
        return True

    @staticmethod
    def _vf_words(vf, driver: str, persist: bool, expected) -> tuple[str, bool]:
        now = (vf.driver or "no driver") if vf is not None else "default"
        bound = vf is not None and (is_default(vf.driver, vf.driver_override) if driver == DEFAULT
                                    else vf.driver == driver)
        want_persisted = driver if persist and driver != DEFAULT else ""
        held = (vf.persisted_driver or "") if vf is not None else ""
        target = f"the default driver{f' ({expected})' if expected else ''}" if driver == DEFAULT else driver
        tail = "; persisted" if persist and driver != DEFAULT else ("; not persisted" if driver != DEFAULT else "")
        if bound and held == want_persisted:
            return f"already {now}, nothing to do", False
        if bound:
            return f"already {now}; " + ("record the binding so it survives a reboot" if want_persisted
                                         else "forget the persisted binding"), True
        return f"{now} → {target}{tail}", True

    def _add_actions(self, op, ctx, out, nic, words, send) -> None:
        if not send:
            for label, text in grouped(nic, words):
                out.add_action(self, f"{label}: {text}", label=label)
            return
        text = "; ".join(f"{label}: {text}" for label, text in grouped(nic, words))
        ranges = [{"first": first, "last": last, "driver": op["driver"]} for first, last in merge(send)]
        step = {"op": self.name, "args": {
            "pf": nic.name, "pci_address": nic.pci_address, "ranges": ranges, "persist": op["persist"],
            "allow_guest_impact": bool(ctx.change.allow_guest_impact),
        }}
        label = f"{nic.name}#{ranges_text(merge(send))}"
        subject = f"{nic.pci_address}#{label.partition('#')[2]}"
        action = out.add_action(self, text, step=step, label=label, subject=subject)
        if op["persist"]:
            action["tags"].append("persisted")

    def after_boot(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        checks = []
        for action in out.actions:
            step = action.get("step")
            if action.get("op") != self.name or not step:
                continue
            if not step["args"]["persist"] and step["args"]["ranges"][0]["driver"] != DEFAULT:
                out.errors.append(f"{action['label']}: the binding is not persisted and would be gone after the "
                                  "reboot; persist it or do not reboot in this change")
            else:
                checks.append(f"{action['label']} bound again")
        after = out.after.setdefault(self.namespace, {})
        for nic in ctx.nics:
            kept = [vf for vf in ctx.all_vfs.get(nic.pk, []) if vf.persisted_driver
                    and vf.index < planned_count(out, nic)
                    and f"{vf_subject(nic.pci_address, vf.index)}.persisted_driver" not in after]
            for vf in kept:
                after[f"{vf_subject(nic.pci_address, vf.index)}.driver"] = vf.persisted_driver
            for first, last in merge(vf.index for vf in kept):
                checks.append(f"{nic.name}#{ranges_text([(first, last)])} bound to its persisted driver again")
        if not after:
            out.after.pop(self.namespace, None)
        return checks

    def after_plan(self, ctx: PlanContext, out: HostPlan) -> None:
        lost_when_recreated(ctx, out, self.name, self.namespace, "driver bindings")

    # -- execution ------------------------------------------------------------------------
    def intents(self, action: dict, current: dict) -> list[IntentValue]:
        args = action["step"]["args"]
        out = []
        for item in args["ranges"]:
            for index in range(item["first"], item["last"] + 1):
                value = {"driver": item["driver"], "persisted": bool(args["persist"]) and item["driver"] != DEFAULT}
                words = "the default driver" if item["driver"] == DEFAULT else item["driver"]
                out.append(IntentValue(vf_subject(args["pci_address"], index), value, f"VF {index}: {words}"))
        return out

    # -- verification and drift -------------------------------------------------------------
    def observe(self, inventory: dict, keys) -> dict:
        seen = {}
        for key in keys:
            pci, index, field = split_key(key)
            vf = vf_of(inventory, pci, index) if index is not None else None
            if vf is None:
                seen[key] = None
            elif field == "default":
                seen[key] = is_default(vf.get("driver"), vf.get("driver_override"))
            else:
                seen[key] = vf.get(field)
        return seen

    def difference(self, key: str, want, got, word: str, names: dict) -> str:
        pci, index, field = split_key(key)
        who = f"{names.get(pci, pci)} VF {index} {vf_mark(pci, index)}"
        if field == "default":
            return f"{who}: {word} the default driver, the host has an override or a passthrough driver"
        if field == "persisted_driver":
            return f"{who}: {word} persisted binding {want or 'none'}, the host persists {got or 'none'}"
        return f"{who}: {word} driver {want}, the host has {got or 'no driver'}"

    def drift(self, host, nics: list, intents: list) -> list[str]:
        by_pci = {nic.pci_address: nic for nic in nics}
        reasons = []
        for intent in sorted((i for i in intents if i.operation == self.name), key=lambda i: i.subject):
            pci, index = split_subject(intent.subject)
            want = (intent.value or {}).get("driver")
            nic, mark = by_pci.get(pci), vf_mark(pci, index)
            vf = next((v for v in nic_vfs(nic) if v.index == index and v.present), None) if nic else None
            if vf is None and nic is not None and count_removed(intents, pci, index):
                continue
            if vf is None:
                reasons.append(f"{pci} VF {index} {mark} was bound to {want} by the console but the host no longer "
                               "reports it.")
                continue
            ok = is_default(vf.driver, vf.driver_override) if want == DEFAULT else vf.driver == want
            if not ok:
                hint = "" if (intent.value or {}).get("persisted") else " (not persisted: lost at a reboot?)"
                reasons.append(f"{nic.name} VF {index} {mark} is bound to {vf.driver or 'no driver'}; the console "
                               f"bound it to {want}{hint}.")
        return reasons

    # -- the wizard -----------------------------------------------------------------------
    def from_form(self, cleaned: dict) -> dict | None:
        pf, vfs = split_target(cleaned.get("target") or "")
        if not pf:
            return None
        return {"op": self.name, "pf": pf, "vfs": vfs, "driver": (cleaned.get("driver") or "").strip(),
                "persist": bool(cleaned.get("persist"))}

    def to_form(self, op: dict) -> dict:
        return {"target": f"{op['pf']}#{op['vfs']}", "driver": op["driver"], "persist": op["persist"]}
