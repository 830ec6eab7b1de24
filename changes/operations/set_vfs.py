"""`set_vfs`: how many VFs a PF has, and whether the count survives a reboot.

    {"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4, "persist": true,
     "take_over": false, "allow_management_link": false, "allow_autostart_impact": false,
     "apply_to_all_ports": false}

`select.by` is name, pci, driver or vendor_device (several PFs may match); a PF without a network
interface (driver unbound, vfio-pci) is selected by its PCI address. The three allow flags relax
one check each (set_vfs_checks.py): the PF carrying the management SSH connection, guests that
start at boot losing a VF, and, on a kernel < 3.8 whose driver takes one max_vfs for every port,
the same count on every port of that driver. ``mtu`` (68-9216, optional) sets the PF's MTU after
the count (`ip link set dev <pf> mtu N`), kept by the managed persistence with persist.
Namespace ``numvfs`` of the plan: ``{pci: count}``, ``mtu:<pci>`` → the MTU and
``persisted_mtu:<pci>`` → the MTU set at boot; after a reboot also ``boot:<pci>`` → the persisted
count of a PF the change does not set, which must come back. Intents: one per PF, the count the
console applied, and ``<pci>#mtu`` → the MTU.
"""

from __future__ import annotations

from django import forms

from . import set_vfs_checks as checks
from .base import HostPlan, IntentValue, Operation, OperationError, PlanContext, Resume
from .validators import check_select_value, legacy_kernel

SELECT_BY = ("name", "pci", "driver", "vendor_device")
SELECT_LABELS = {"name": "PF name", "pci": "PCI address", "driver": "driver", "vendor_device": "vendor:device"}
RESET_NOTE = "reset to 0 first, the kernel refuses a direct change"
BOOT = "boot:"
# Optional flags of the operation, each false unless the requester says so.
FLAGS = ("take_over", "allow_management_link", "allow_autostart_impact", "apply_to_all_ports")
MTU = "mtu:"
PERSISTED_MTU = "persisted_mtu:"
MTU_SUBJECT = "#mtu"
MTU_RANGE = (68, 9216)  # the IPv4 minimum; the largest jumbo frame common NIC drivers accept


class SetVfsForm(forms.Form):
    by = forms.ChoiceField(choices=[(b, SELECT_LABELS[b]) for b in SELECT_BY], required=False, label="Select PFs by")
    value = forms.CharField(max_length=64, required=False, label="Value",
                            widget=forms.TextInput(attrs={"placeholder": "eno49"}))
    count = forms.IntegerField(min_value=0, max_value=4096, required=False, label="VFs")
    persist = forms.BooleanField(required=False, initial=True, label="Persist")
    take_over = forms.BooleanField(required=False, label="Take over")
    allow_management_link = forms.BooleanField(required=False, label="Management link")
    allow_autostart_impact = forms.BooleanField(required=False, label="Autostart guests")
    apply_to_all_ports = forms.BooleanField(required=False, label="All ports")
    mtu = forms.IntegerField(min_value=MTU_RANGE[0], max_value=MTU_RANGE[1], required=False, label="PF MTU")

    def clean(self):
        data = super().clean()
        if (data.get("value") or "").strip() and data.get("count") is None:
            self.add_error("count", "Give the VF count.")
        return data


class SetVfs(Operation):
    name = "set_vfs"
    title = "Set the VF count"
    phase = 20
    form_class = SetVfsForm
    form_rows = 4
    form_help = ("Persist keeps the count across reboots (a managed udev rule). Take over lets the console "
                 "change a PF whose VFs it did not create and disable other boot configuration of its count. "
                 "Management link allows changing the PF that carries the host's SSH connection (its link "
                 "drops); Autostart guests allows removing VFs that stopped guests starting at boot use; All "
                 "ports gives every port of the driver the count on kernels older than 3.8 whose max_vfs is "
                 "one number. Select a PF without a network interface by its PCI address.")

    @property
    def namespace(self) -> str:
        return "numvfs"

    # -- input ----------------------------------------------------------------------------
    def validate(self, op: dict, where: str) -> dict:
        self.check_fields(op, {"select", "count", "persist", "mtu", *FLAGS}, where)
        select = op.get("select")
        if not isinstance(select, dict) or set(select) != {"by", "value"}:
            raise OperationError(f'{where}: select must be {{"by": ..., "value": ...}}')
        by, value = select["by"], select["value"]
        if by not in SELECT_BY:
            raise OperationError(f"{where}: select by must be one of {', '.join(SELECT_BY)}")
        if not isinstance(value, str) or not value.strip() or len(value) > 64:
            raise OperationError(f"{where}: give the {by} to select (at most 64 characters)")
        value = value.strip()
        check_select_value(by, value, where)
        count = op.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 4096:
            raise OperationError(f"{where}: count must be a whole number between 0 and 4096")
        persist = op.get("persist", True)
        flags = {name: op.get(name, False) for name in FLAGS}
        wrong = [name for name, v in {"persist": persist, **flags}.items() if not isinstance(v, bool)]
        if wrong:
            raise OperationError(f"{where}: {' and '.join(wrong)} must be true or false")
        mtu = op.get("mtu")
        if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)
                                or not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]):
            raise OperationError(f"{where}: mtu must be a whole number from {MTU_RANGE[0]} to {MTU_RANGE[1]}")
        if by == "vendor_device":
            value = value.lower()
        normal = {"op": self.name, "select": {"by": by, "value": value}, "count": count, "persist": persist,
                  "take_over": flags.pop("take_over")}
        if mtu is not None:
            normal["mtu"] = mtu
        # The other flags only when set: a change that does not use them keeps its earlier shape.
        return normal | {name: True for name, v in flags.items() if v}

    def summary(self, op: dict) -> str:
        by = {"name": "PF", "pci": "PF at", "driver": "PFs driven by", "vendor_device": "PFs of device"}
        words = f"set {op['count']} VFs on {by[op['select']['by']]} {op['select']['value']}"
        words += f", MTU {op['mtu']}" if op.get("mtu") else ""
        words += ", persisted" if op["persist"] else ", not persisted"
        words += ", taking over" if op.get("take_over") else ""
        allowed = [text for name, text in (("allow_management_link", "the management link"),
                                           ("allow_autostart_impact", "autostart guest impact"),
                                           ("apply_to_all_ports", "the same count on every port"))
                   if op.get(name)]
        return words + (f", allowing {' and '.join(allowed)}" if allowed else "")

    # -- planning -------------------------------------------------------------------------
    def select_nics(self, op: dict, nics: list) -> list:
        by, value = op["select"]["by"], op["select"]["value"]
        if by == "name":
            return [n for n in nics if n.name == value]
        if by == "pci":
            return [n for n in nics if n.pci_address == value]
        if by == "driver":
            return [n for n in nics if n.driver == value and n.sriov_capable]
        return [n for n in nics if f"{n.vendor_id}:{n.device_id}".lower() == value and n.sriov_capable]

    def plan(self, op: dict, ctx: PlanContext, out: HostPlan) -> None:
        selected = self.select_nics(op, ctx.nics)
        if not selected:
            by, value = op["select"]["by"], op["select"]["value"]
            what = {
                "name": f"no NIC named {value}",
                "pci": f"no NIC at PCI address {value}",
                "driver": f"no SR-IOV capable NIC driven by {value}",
                "vendor_device": f"no SR-IOV capable NIC of device {value}",
            }[by]
            out.errors.append(f"{ctx.where}: PF missing: {what} on {ctx.host.name}")
            return
        for nic in selected:
            label = f"{nic.name} ({nic.pci_address})" if nic.name else nic.pci_address
            if nic.pci_address in ctx.claimed:
                out.errors.append(f"{label} is selected by operations {ctx.claimed[nic.pci_address]} and {ctx.number}")
                continue
            ctx.claimed[nic.pci_address] = ctx.number
            if not nic.sriov_capable:
                out.errors.append(f"{label} is not SR-IOV capable (no sriov_totalvfs)")
                continue
            problems = checks.binding_errors(nic) + checks.capability_errors(nic)
            if problems and by_group(op):
                out.warnings.append(f"{problems[0]}; left out of this change")
                continue
            if problems:
                out.errors.extend(problems)
                continue
            self._plan_nic(op, ctx, out, nic)

    def _plan_nic(self, op: dict, ctx: PlanContext, out: HostPlan, nic) -> None:
        current = nic.sriov_numvfs if nic.sriov_numvfs is not None else 0
        count = op["count"]
        out.before.setdefault(self.namespace, {})[nic.pci_address] = current
        out.after.setdefault(self.namespace, {})[nic.pci_address] = count
        if count > nic.sriov_totalvfs:
            out.errors.append(f"{nic.label}: {count} VFs requested, the NIC supports at most {nic.sriov_totalvfs}")
            return
        take_over = self._ownership(op, ctx, out, nic, current, count)
        legacy = legacy_kernel(ctx.host.kernel)
        reset = (not legacy) and current > 0 and count > 0 and count != current
        flags = self._host_truth(op, ctx, out, nic, current, count, reset, legacy)
        needs_persist = op["persist"] and not (nic.persisted and nic.persisted_numvfs == count)
        mtu_words = self._plan_mtu(op, out, nic)
        text = self._words(nic, current, count, reset, needs_persist)
        mtu_write = bool(mtu_words) and (nic.mtu != op["mtu"] or (op["persist"] and nic.persisted_mtu != op["mtu"]))
        if mtu_write:
            text = text.removesuffix(", nothing to do")
        text += mtu_words
        needs_persist = needs_persist or (mtu_write and op["persist"])
        if mtu_write and nic.mtu != op["mtu"]:
            flags = sorted(set(flags) | set(checks.mtu_checks(op, out, nic)))
        if legacy and count != current:
            text += " (kernel older than 3.8: max_vfs in modprobe.d, applies after a reboot)"
            if nic.max_vfs_form == "single":
                text += f"; same count on every port of {nic.driver} (its max_vfs is one number)"
            out.warnings.append(f"{nic.label}: the new count applies only after a reboot (kernel {ctx.host.kernel})")
        step = None
        if count != current or needs_persist or mtu_write or (op["take_over"] and nic.persisted_conflict):
            # The agent's safety flags, each only where the approved plan/policy says so:
            # take_over skips only the "externally managed" and "other boot configuration"
            # refusals, allow_guest_impact only the guest checks; the others only when the plan
            # saw what they allow.
            step = {"op": self.name, "args": {
                "pf": nic.name or None, "pci_address": nic.pci_address, "count": count, "persist": op["persist"],
                "take_over": take_over, "allow_guest_impact": bool(ctx.change.allow_guest_impact),
            } | {flag: True for flag in flags}}
            if op.get("mtu"):
                step["args"]["mtu"] = op["mtu"]
        action = out.add_action(self, text, step=step, label=nic.label, subject=nic.pci_address, was=current)
        if step and op["persist"]:
            action["tags"].append("persisted")

    def _plan_mtu(self, op: dict, out: HostPlan, nic) -> str:
        """The MTU part of the plan of one PF, in words ("; MTU 1500 → 9000"); "" without an MTU."""
        mtu = op.get("mtu")
        if not mtu:
            return ""
        pci = nic.pci_address
        if nic.mtu is not None:
            out.before.setdefault(self.namespace, {})[MTU + pci] = nic.mtu
        after = out.after.setdefault(self.namespace, {})
        after[MTU + pci] = mtu
        if op["persist"]:
            after[PERSISTED_MTU + pci] = mtu
        kept = "; persisted" if op["persist"] else ""
        if nic.mtu == mtu:
            return f"; MTU already {mtu}" + (kept if nic.persisted_mtu != mtu else "")
        return f"; MTU {nic.mtu if nic.mtu is not None else 'unknown'} → {mtu}{kept}"

    def _host_truth(self, op, ctx, out, nic, current: int, count: int, reset: bool, legacy: bool) -> list[str]:
        """The checks of the host as discovery saw it; returns the agent flags the plan allows."""
        flags = []
        if count != current:
            self._guest_impact(ctx, out, nic, current, count, reset)
            flags += checks.autostart_checks(op, ctx, out, nic, count, reset)
            flags += checks.link_checks(op, out, nic, checks.link_drops(current, count, reset, legacy))
        checks.other_config_checks(op, out, nic, count)
        if legacy and nic.max_vfs_form == "single":
            flags += checks.single_max_vfs_checks(op, ctx, out, nic, count, self._wanted(ctx, nic))
        return flags

    def _wanted(self, ctx: PlanContext, nic) -> dict:
        """PCI address -> count that the change's set_vfs operations ask for this driver's ports."""
        wanted = {}
        for other in ctx.operations_of(self.name):
            for port in self.select_nics(other, ctx.nics):
                if port.driver == nic.driver and port.pk != nic.pk:
                    wanted[port.pci_address] = other["count"]
        return wanted

    def _ownership(self, op, ctx, out, nic, current: int, count: int) -> bool:
        """A PF whose VFs the console did not create is changed only with take_over; take_over also
        lets the agent disable other boot configuration of this PF's count."""
        owned = nic.persisted or ctx.intent(self.name, nic.pci_address) is not None
        if count == current or current == 0 or owned:
            return bool(op["take_over"] and op["persist"] and _conflicts(nic, count))
        text = f"{nic.label} has {current} VFs that SR-IOV Console did not configure (externally managed)"
        if op["take_over"]:
            out.warnings.append(text + "; this change takes it over")
            return True
        out.errors.append(text + "; set take_over to change it")
        return False

    def _guest_impact(self, ctx, out, nic, current: int, count: int, reset: bool) -> None:
        removed = [vf for vf in ctx.vfs_by_nic.get(nic.pk, []) if reset or vf.index >= count]
        in_use = sorted({vf.guest for vf in removed if vf.guest})
        if count == current or not in_use:
            return
        text = f"{nic.label}: VFs in use by running guests would be removed ({', '.join(in_use)})"
        if ctx.change.allow_guest_impact:
            out.warnings.append(text + "; allowed by the rollout policy")
        else:
            out.errors.append(text + "; stop or migrate them, or allow guest impact in the policy")

    @staticmethod
    def _words(nic, current: int, count: int, reset: bool, needs_persist: bool) -> str:
        label = nic.label if nic.name else f"{nic.label} (no network interface)"
        if count == current:
            if needs_persist or (nic.persisted_conflict and nic.persisted_numvfs == count):
                return f"{label}: already {count} VFs; record the count so it survives a reboot"
            return f"{label}: already {count} VFs, nothing to do"
        if reset:
            return f"{label}: {current} → {count} VFs ({RESET_NOTE})"
        return f"{label}: {current} → {count} VFs"

    def reboot_reasons(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        if not legacy_kernel(ctx.host.kernel):
            return []
        planned = out.after.get(self.namespace, {})
        reasons = []
        for nic in ctx.nics:
            if not nic.sriov_capable:
                continue
            want = planned.get(nic.pci_address, nic.persisted_numvfs if nic.persisted else None)
            if want is not None and want != (nic.sriov_numvfs or 0):
                reasons.append(
                    f"{nic.name}: {want} VFs take effect only at boot (kernel {ctx.host.kernel} < 3.8: max_vfs)"
                )
        return reasons

    def after_boot(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        legacy = legacy_kernel(ctx.host.kernel)
        set_here = out.after.get(self.namespace, {})
        checks = []
        for action in out.actions:
            step = action.get("step")
            if action.get("op") == self.name and step and not step["args"]["persist"] and step["args"]["count"] \
                    and not legacy:
                out.errors.append(
                    f"{action['label']}: {step['args']['count']} VFs are not persisted and would be gone after "
                    "the reboot; persist them or do not reboot in this change"
                )
        for nic in ctx.nics:
            if nic.pci_address in set_here:
                if set_here[nic.pci_address]:
                    checks.append(f"{nic.name} has {set_here[nic.pci_address]} VFs again")
            elif nic.sriov_capable and nic.persisted and nic.persisted_numvfs is not None:
                out.after.setdefault(self.namespace, {})[BOOT + nic.pci_address] = nic.persisted_numvfs
                checks.append(f"{nic.name} has its persisted {nic.persisted_numvfs} VFs again")
        return checks

    # -- execution ------------------------------------------------------------------------
    def resume(self, action: dict, lost, reread) -> Resume:
        """Re-read the host before anything is written: the lost worker may have applied it."""
        args = action["step"]["args"]
        pci, want, before = args["pci_address"], args["count"], action.get("was")
        inventory = reread()
        if inventory is None:
            return Resume("failed", message=f"{action['label']}: could not re-read the host after the loss of "
                                            f"the worker of step {lost.seq}; nothing written")
        nic = _pf(inventory, pci) or {}
        observed = None if not nic else (nic.get("sriov_numvfs") or 0)
        if observed == want and (not args.get("persist") or nic.get("persisted_count") == want):
            return Resume("done", observed=observed,
                          message=f"applied by the lost worker: the host already has {observed} VFs")
        if observed in (want, before, 0):
            return Resume.rerun(f"re-run of step {lost.seq}, interrupted by the loss of its worker "
                                "(the host was re-read: the count was not applied yet)")
        return Resume("drifted", observed=observed, message=(
            f"drifted: {action['label']} ({pci}) has {observed} VFs after the loss of the worker of step "
            f"{lost.seq}, neither the plan's {before} nor {want}; nothing written. A new change is needed."))

    def intents(self, action: dict, current: dict) -> list[IntentValue]:
        args = action["step"]["args"]
        out = [IntentValue(args["pci_address"], args["count"],
                           f"{args['count']} VFs on {args['pf'] or args['pci_address']}")]
        if args.get("mtu"):
            words = f"MTU {args['mtu']} on {args['pf'] or args['pci_address']}"
            out.append(IntentValue(args["pci_address"] + MTU_SUBJECT, args["mtu"], words))
        return out

    # -- verification and drift -------------------------------------------------------------
    def observe(self, inventory: dict, keys) -> dict:
        seen = {}
        for key in keys:
            if key.startswith((MTU, PERSISTED_MTU)):
                prefix, pci = key.split(":", 1)
                seen[key] = (_pf(inventory, pci) or {}).get(prefix)
            else:
                seen[key] = _count(_pf(inventory, key.removeprefix(BOOT)))
        return seen

    def difference(self, key: str, want, got, word: str, names: dict) -> str:
        if key.startswith((MTU, PERSISTED_MTU)):
            prefix, pci = key.split(":", 1)
            what = "MTU" if prefix == "mtu" else "persisted MTU"
            return f"{names.get(pci, pci)} ({pci}): {word} {what} {want}, the host has {got if got else 'none'}"
        pci = key.removeprefix(BOOT)
        got_text = "no such PF" if got is None else f"{got} VFs"
        if key.startswith(BOOT):
            return (f"{names.get(pci, pci)} ({pci}): the persisted {want} VFs did not come back after the "
                    f"reboot, the host has {got_text}")
        return f"{names.get(pci, pci)} ({pci}): {word} {want} VFs, the host has {got_text}"

    def drift(self, host, nics: list, intents: list) -> list[str]:
        by_pci = {nic.pci_address: nic for nic in nics}
        reasons = []
        for intent in sorted((i for i in intents if i.operation == self.name), key=lambda i: i.subject):
            if intent.subject.endswith(MTU_SUBJECT):
                reasons.extend(_mtu_drift(by_pci.get(intent.subject.removesuffix(MTU_SUBJECT)), intent))
                continue
            nic = by_pci.get(intent.subject)
            name = nic.label if nic else intent.subject
            if nic is None or not nic.present:
                reasons.append(f"{name} ({intent.subject}) was configured by the console with {intent.value} VFs "
                               "but the host no longer reports it.")
            elif nic.sriov_numvfs != intent.value:
                observed = "no VF count" if nic.sriov_numvfs is None else f"{nic.sriov_numvfs} VFs"
                hint = " (the count did not survive a reboot?)" if nic.sriov_numvfs == 0 else ""
                reasons.append(f"{nic.label} ({nic.pci_address}) has {observed}; the console applied "
                               f"{intent.value}{hint}.")
        return reasons

    # -- the wizard -----------------------------------------------------------------------
    def from_form(self, cleaned: dict) -> dict | None:
        value = (cleaned.get("value") or "").strip()
        if not value:
            return None
        op = {"op": self.name, "select": {"by": cleaned.get("by") or "name", "value": value},
              "count": cleaned.get("count"), "persist": bool(cleaned.get("persist")),
              **{name: bool(cleaned.get(name)) for name in FLAGS}}
        if cleaned.get("mtu"):
            op["mtu"] = cleaned["mtu"]
        return op

    def to_form(self, op: dict) -> dict:
        return {"by": op["select"]["by"], "value": op["select"]["value"], "count": op["count"],
                "persist": op["persist"], "mtu": op.get("mtu"), **{name: op.get(name, False) for name in FLAGS}}


def by_group(op: dict) -> bool:
    """Selected by driver or device: one port that cannot have VFs now is left out, not fatal."""
    return op["select"]["by"] in ("driver", "vendor_device")


def _conflicts(nic, count: int) -> bool:
    return any(isinstance(i, dict) and i.get("active") and (i.get("counts") or {}).get(nic.pci_address, count) != count
               for i in nic.other_config or [])


def _pf(inventory: dict, pci: str) -> dict | None:
    """The PF as the agent reports it: a network interface, or an SR-IOV function without one."""
    found = next((n for n in inventory.get("nics", []) if n.get("pci_address") == pci and not n.get("is_vf")), None)
    return found or next((p for p in inventory.get("sriov_pfs") or [] if p.get("pci_address") == pci), None)


def _count(nic: dict | None):
    return None if nic is None else (nic.get("sriov_numvfs") or 0)


def _mtu_drift(nic, intent) -> list[str]:
    if nic is None or not nic.present or nic.mtu is None or nic.mtu == intent.value:
        return []
    return [f"{nic.name} ({nic.pci_address}) has MTU {nic.mtu}; the console applied {intent.value}."]
