"""`kernel_args`: edit GRUB_CMDLINE_LINUX_DEFAULT and regenerate the boot configuration with the
host's own tool; the "Enable IOMMU for SR-IOV" preset.

    {"op": "kernel_args", "add": ["intel_iommu=on", "iommu=pt"], "remove": ["quiet"]}
    {"op": "kernel_args", "preset": "iommu", "vfio_pci_ids": ["8086:1520"], "add": [], "remove": []}

`preset: "iommu"` resolves per host at plan time from the host's CPU vendor (Intel:
``intel_iommu=on iommu=pt``; AMD: ``iommu=pt`` — AMD-Vi is on by default where the firmware enables
it, ``amd_iommu=on`` is not a valid value; anything else is a blocking error), plus
``vfio-pci.ids=<ids>`` when `vfio_pci_ids` is given: the VFs' device ids (I350 VF 8086:1520, X710
VF 8086:154c, ConnectX-5 VF 15b3:1018), never a PF the host uses. A `remove` item without ``=``
removes every token with that key (``iommu`` removes ``iommu=pt``); with ``=`` only that token.

Namespace ``kernel_args`` of the plan: ``{"grub_cmdline_linux_default": value}`` (whitespace-
normalised); after a reboot also ``cmdline:<token>`` → True/False (must / must not be on
/proc/cmdline) and ``iommu_active``. Intent: the arguments the console added (host-wide).
"""

from __future__ import annotations

import re

from django import forms

from .base import HostPlan, IntentValue, Operation, OperationError, PlanContext, Resume
from .firmware import firmware_iommu_error, wants_iommu

# Same pattern as the agent's KARG_RE (agent/sriov_agent.py): name or name=value, no quotes, no
# spaces, no shell metacharacters. The agent checks again; the console refuses earlier, per field.
KARG_RE = re.compile(r"^[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,:/+-]+)?$")
# Same list as the agent's PROTECTED_KARGS: they decide whether the host boots at all, so the
# console refuses them when the change is drafted, not only when the agent runs.
PROTECTED_KARGS = frozenset({
    "root", "rootflags", "rootfstype", "ro", "rw", "init", "initrd", "BOOT_IMAGE", "resume",
    "rd.lvm.lv", "rd.luks.uuid", "rd.md.uuid", "rd.dm.uuid", "rd.break", "systemd.unit", "crashkernel",
})
MAX_ARG_LENGTH = 512
MAX_ARGS = 32
VFIO_ID_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")
PRESETS = ("iommu",)
IOMMU_ARGS = {"intel": ["intel_iommu=on", "iommu=pt"], "amd": ["iommu=pt"]}
# The PF device ids of common SR-IOV NICs and the id of their VFs: vfio-pci.ids takes the VF id;
# the PF id would bind the host's own ports to vfio-pci at boot.
VF_ID_OF_PF = {
    "8086:1521": "8086:1520",  # I350 → I350 VF (igbvf)
    "8086:10fb": "8086:10ed",  # 82599 → 82599 VF (ixgbevf)
    "8086:1572": "8086:154c",  # X710 → X710/XL710 VF (iavf)
    "8086:1583": "8086:154c",  # XL710
    "8086:158b": "8086:154c",  # XXV710
    "15b3:1017": "15b3:1018",  # ConnectX-5 → ConnectX-5 VF
    "15b3:1015": "15b3:1016",  # ConnectX-4 Lx → its VF
}
GRUB_VAR = "GRUB_CMDLINE_LINUX_DEFAULT"

# Tokens that cannot both be on one command line (besides the generic rule: one key, two values).
CONFLICTS = (
    ("iommu=pt", "iommu=off"),
    ("iommu=on", "iommu=off"),
    ("intel_iommu=on", "intel_iommu=off"),
    ("amd_iommu=on", "amd_iommu=off"),
    ("intel_iommu=on", "iommu=off"),
    ("amd_iommu=on", "iommu=off"),
)
# Keys the kernel accepts several times (values accumulate): on GRUB_CMDLINE_LINUX, which the
# console does not edit, another value of these keys is not a conflict.
MULTI_VALUE_KEYS = {"console", "rd.lvm.lv", "modprobe.blacklist", "module_blacklist", "rd.driver.pre"}


def key_of(token: str) -> str:
    return token.split("=", 1)[0]


def conflicts_in(tokens: list[str]) -> list[str]:
    """Human sentences for every conflicting pair in `tokens` (empty when consistent)."""
    found = []
    present = set(tokens)
    for a, b in CONFLICTS:
        if a in present and b in present:
            found.append(f"{a} conflicts with {b}")
    by_key: dict[str, list[str]] = {}
    for token in tokens:
        if "=" in token:
            values = by_key.setdefault(key_of(token), [])
            if token not in values:
                values.append(token)
    for key, values in by_key.items():
        if len(values) > 1:
            text = f"{key} is given twice with different values ({' and '.join(values)})"
            if not any(f"{a} conflicts with {b}" in found for a in values for b in values if a != b):
                found.append(text)
    return found


def clashes_with(existing: list[str], added: list[str]) -> list[str]:
    """Conflicts between tokens that stay (e.g. GRUB_CMDLINE_LINUX) and the added ones."""
    found = []
    pairs = set(CONFLICTS) | {(b, a) for a, b in CONFLICTS}
    for a in added:
        for t in existing:
            if (a, t) in pairs or (
                "=" in a and "=" in t and key_of(a) == key_of(t) and a != t and key_of(a) not in MULTI_VALUE_KEYS
            ):
                text = f"{t} conflicts with {a}"
                if text not in found:
                    found.append(text)
    return found


def _clean_list(value, field: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        raise OperationError(f"{where}: {field} must be a list of kernel arguments")
    if len(value) > MAX_ARGS:
        raise OperationError(f"{where}: {field}: at most {MAX_ARGS} arguments")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise OperationError(f"{where}: {field}: every argument must be a non-empty text")
        item = item.strip()
        if len(item) > MAX_ARG_LENGTH or not KARG_RE.match(item):
            raise OperationError(
                f"{where}: {field}: {item!r} is not a safe kernel argument (name or name=value; "
                "letters, digits, _ . - in the name and , : / + also in the value; no quotes, "
                "spaces or shell characters)"
            )
        if item.split("=", 1)[0] in PROTECTED_KARGS:
            raise OperationError(
                f"{where}: {field}: {item!r} is protected: the console never changes arguments that decide "
                "whether the host boots (root, init, resume, rd.*, crashkernel...)"
            )
        if item not in out:
            out.append(item)
    return out


def resolve_add(op: dict, cpu_vendor: str | None) -> tuple[list[str], str | None]:
    """The arguments to add on one host -> (args, error). The preset depends on the CPU vendor."""
    add: list[str] = []
    if op.get("preset") == "iommu":
        vendor = (cpu_vendor or "").lower()
        if vendor not in IOMMU_ARGS:
            shown = cpu_vendor or "unknown"
            return [], (
                f"CPU vendor {shown}: cannot choose the IOMMU arguments (Intel or AMD only); "
                "run discovery, or give the arguments explicitly"
            )
        add.extend(IOMMU_ARGS[vendor])
        if op.get("vfio_pci_ids"):
            add.append("vfio-pci.ids=" + ",".join(op["vfio_pci_ids"]))
    for token in op.get("add", []):
        if token not in add:
            add.append(token)
    return add, None


def removed_by(token: str, remove: list[str]) -> bool:
    return token in remove or ("=" in token and key_of(token) in remove) or (
        "=" not in token and token in remove
    )


def edit_value(value: str | None, add: list[str], remove: list[str]) -> str:
    """Predict the agent's token edit of the effective GRUB_CMDLINE_LINUX_DEFAULT value (same
    rules as agent._edit_tokens: removed tokens go, a token with the key of an added name=value is
    replaced in place, missing added tokens are appended). Returns the normalised value."""
    add_by_key = {key_of(a): a for a in add if "=" in a}
    out: list[str] = []
    for token in (value or "").split():
        if removed_by(token, remove):
            continue
        if "=" in token and key_of(token) in add_by_key:
            token = add_by_key[key_of(token)]
        if token not in out or token not in add:
            out.append(token)
    for token in add:
        if token not in out:
            out.append(token)
    return " ".join(out)


def running_needs_reboot(cmdline: str | None, add: list[str], remove: list[str]) -> list[str]:
    """What the running kernel's /proc/cmdline lacks (or still has) -> reasons, empty if none."""
    tokens = (cmdline or "").split()
    reasons = []
    missing = [a for a in add if a not in tokens]
    if missing:
        reasons.append("/proc/cmdline lacks " + " ".join(missing))
    still = [t for t in tokens if removed_by(t, remove)]
    if still:
        reasons.append("/proc/cmdline still has " + " ".join(still))
    return reasons


def tool_words(tool: str, add: list[str], remove: list[str]) -> str:
    if tool == "update-grub":
        return "update-grub"
    if tool == "grub2-mkconfig":
        return "grub2-mkconfig -o /boot/grub2/grub.cfg (or the EFI grub.cfg when it is not a stub)"
    if tool == "grub-mkconfig":
        return "grub-mkconfig -o /boot/grub/grub.cfg"
    if tool == "grubby":
        words = "grubby --update-kernel=ALL"
        if add:
            words += f" --args='{' '.join(add)}'"
        if remove:
            words += f" --remove-args='{' '.join(remove)}'"
        return words
    return tool


def wanted_tokens(operations: list[dict], cpu_vendor: str | None) -> tuple[list[str], list[str]]:
    """All tokens these kernel_args operations add and remove on a host of this vendor."""
    add: list[str] = []
    remove: list[str] = []
    for op in operations:
        args, error = resolve_add(op, cpu_vendor)
        if error:
            continue
        add.extend(a for a in args if a not in add)
        remove.extend(r for r in op.get("remove", []) if r not in remove)
    return add, remove


def pf_ids_in(tokens: list[str], nics: list) -> list[str]:
    """Sentences for vfio-pci.ids values that are the device id of a PF this host uses."""
    ids = {i for t in tokens if key_of(t) == "vfio-pci.ids" for i in t.split("=", 1)[1].split(",")}
    problems = []
    for nic in nics:
        pf_id = f"{nic.vendor_id}:{nic.device_id}".lower()
        if pf_id in ids and nic.present:
            hint = f"; the VFs of this NIC have id {VF_ID_OF_PF[pf_id]}" if pf_id in VF_ID_OF_PF else ""
            problems.append(
                f"vfio-pci.ids={pf_id} is the device id of {nic.name} ({nic.pci_address}), a port this host "
                f"uses: vfio-pci would take it from its driver at boot{hint}"
            )
    return problems


class KernelArgsForm(forms.Form):
    iommu_preset = forms.BooleanField(
        required=False, label="Enable IOMMU for SR-IOV",
        help_text="Per host from its CPU vendor: Intel intel_iommu=on iommu=pt; AMD iommu=pt (AMD-Vi is on by "
                  "default where the firmware enables it).",
    )
    vfio_pci_ids = forms.CharField(
        max_length=200, required=False, label="vfio-pci.ids",
        widget=forms.TextInput(attrs={"placeholder": "8086:1520, 15b3:1018"}),
        help_text="Optional, with the IOMMU preset: the VFs' vendor:device ids, bound to vfio-pci at boot "
                  "(I350 VF 8086:1520, X710 VF 8086:154c, ConnectX-5 VF 15b3:1018). Never a PF's id.",
    )
    add = forms.CharField(
        max_length=2000, required=False, label="Add kernel arguments",
        widget=forms.TextInput(attrs={"placeholder": "hugepages=16"}),
        help_text="Space separated; name or name=value, no quotes.",
    )
    remove = forms.CharField(
        max_length=2000, required=False, label="Remove kernel arguments",
        widget=forms.TextInput(attrs={"placeholder": "quiet"}),
        help_text="A name removes every value of it (iommu removes iommu=pt); name=value only that one.",
    )


class KernelArgs(Operation):
    name = "kernel_args"
    title = "Kernel arguments"
    phase = 10
    max_per_change = 1
    form_class = KernelArgsForm
    form_help = "Edits GRUB_CMDLINE_LINUX_DEFAULT and regenerates the boot configuration with the host's own tool."

    # -- input ----------------------------------------------------------------------------
    def validate(self, op: dict, where: str) -> dict:
        self.check_fields(op, {"add", "remove", "preset", "vfio_pci_ids"}, where)
        preset = op.get("preset") or None
        if preset is not None and preset not in PRESETS:
            raise OperationError(f"{where}: preset must be one of {', '.join(PRESETS)}")
        add = _clean_list(op.get("add"), "add", where)
        remove = _clean_list(op.get("remove"), "remove", where)
        ids = op.get("vfio_pci_ids") or []
        if isinstance(ids, str):
            ids = [i for i in re.split(r"[\s,]+", ids) if i]
        if not isinstance(ids, list):
            raise OperationError(f"{where}: vfio_pci_ids must be a list of vendor:device ids")
        clean_ids = []
        for item in ids:
            value = item.strip().lower() if isinstance(item, str) else ""
            if not VFIO_ID_RE.match(value):
                raise OperationError(f"{where}: vfio_pci_ids: {item!r} is not vendor:device such as 8086:1520")
            if value not in clean_ids:
                clean_ids.append(value)
        if clean_ids and preset != "iommu":
            raise OperationError(f"{where}: vfio_pci_ids go with the IOMMU preset (or add vfio-pci.ids=… yourself)")
        if not (add or remove or preset):
            raise OperationError(f"{where}: give arguments to add or remove, or the IOMMU preset")
        # The preset's arguments for either vendor take part in the conflict checks.
        variants = [list(add)]
        if preset == "iommu":
            extra = ["vfio-pci.ids=" + ",".join(clean_ids)] if clean_ids else []
            variants = [IOMMU_ARGS[v] + extra + add for v in sorted(IOMMU_ARGS)]
        for tokens in variants:
            problems = conflicts_in(tokens)
            if problems:
                raise OperationError(f"{where}: conflicting arguments: {'; '.join(problems)}")
            for token in remove:
                hit = [t for t in tokens if t == token or ("=" not in token and key_of(t) == token)]
                if hit:
                    raise OperationError(f"{where}: {hit[0]} is both added and removed")
        return {
            "op": self.name,
            "preset": preset,
            "vfio_pci_ids": clean_ids,
            "add": add,
            "remove": remove,
        }

    def summary(self, op: dict) -> str:
        parts = []
        if op.get("preset") == "iommu":
            text = "enable IOMMU for SR-IOV (per CPU vendor)"
            if op.get("vfio_pci_ids"):
                text += f", vfio-pci.ids={','.join(op['vfio_pci_ids'])}"
            parts.append(text)
        if op.get("add"):
            parts.append("add kernel arguments " + " ".join(op["add"]))
        if op.get("remove"):
            parts.append("remove kernel arguments " + " ".join(op["remove"]))
        return "; ".join(parts)

    # -- planning -------------------------------------------------------------------------
    def plan(self, op: dict, ctx: PlanContext, out: HostPlan) -> None:
        host = ctx.host
        add, error = resolve_add(op, host.cpu_vendor)
        remove = list(op.get("remove", []))
        if error:
            out.errors.append(f"{ctx.where}: {error}")
            return
        firmware = firmware_iommu_error(host) if wants_iommu(op, add) else None
        if firmware:
            out.errors.append(f"{ctx.where}: {firmware}")
        if not host.grub_file:
            out.errors.append(
                f"{ctx.where}: no /etc/default/grub on this host (kernel {host.kernel or 'unknown'}): the console "
                "edits kernel arguments only through GRUB defaults"
            )
            return
        if not host.grub_tool:
            out.errors.append(f"{ctx.where}: no tool to regenerate the boot configuration (update-grub, "
                              "grub2-mkconfig, grub-mkconfig or grubby) on this host")
            return
        out.errors.extend(f"{ctx.where}: {p}" for p in pf_ids_in(add, ctx.nics))
        current = " ".join((host.grub_cmdline_default or "").split())
        after = edit_value(current, add, remove)
        self._check_linux_line(ctx, out, add, remove)
        reboot_reasons = running_needs_reboot(host.cmdline, add, remove)
        out.before.setdefault(self.namespace, {})["grub_cmdline_linux_default"] = current
        out.after.setdefault(self.namespace, {})["grub_cmdline_linux_default"] = after
        tool = tool_words(host.grub_tool, add, remove)
        step = None
        if after != current:
            text = (f'{GRUB_VAR} in {host.grub_file}: "{current}" → "{after}"; regenerate the boot '
                    f"configuration with {tool}")
            step = {"op": self.name, "args": {"add": add, "remove": remove}}
        elif reboot_reasons:
            text = (f'{GRUB_VAR} already "{current}", but {"; ".join(reboot_reasons)}: regenerate the boot '
                    f"configuration with {tool} to be sure it has them")
            step = {"op": self.name, "args": {"add": add, "remove": remove, "regenerate": True}}
        else:
            text = f'{GRUB_VAR} already "{current}" and the running kernel has it: nothing to do'
        if step and (host.boot_config or {}).get("bls"):
            text += ("; BLS entries: also written where kernels installed later take their arguments from "
                     "(/etc/kernel/cmdline, kernelopts in grubenv)")
        text += f"; reboot required ({'; '.join(reboot_reasons)})" if reboot_reasons else "; no reboot required"
        grub = {"file": host.grub_file, "before": current, "after": after, "tool": host.grub_tool,
                "tool_words": tool, "reboot_required": bool(reboot_reasons), "reboot_reasons": reboot_reasons,
                "add": add, "remove": remove}
        out.add_action(self, text, step=step, label="kernel arguments", reboot_required=bool(reboot_reasons),
                       reboot_reasons=reboot_reasons, grub=grub)

    def _check_linux_line(self, ctx: PlanContext, out: HostPlan, add: list[str], remove: list[str]) -> None:
        """GRUB_CMDLINE_LINUX is on every boot entry too: a conflict there is not ours to edit."""
        line = ctx.host.grub_cmdline_linux or ""
        tokens = line.split()
        clash = clashes_with(tokens, add)
        if clash:
            out.errors.append(
                f"{ctx.where}: GRUB_CMDLINE_LINUX ({line!r}) keeps arguments that conflict with "
                f"the result: {'; '.join(clash)}; the console edits only {GRUB_VAR}"
            )
        for token in remove:
            if any(removed_by(t, [token]) for t in tokens):
                out.warnings.append(
                    f"{token} is also in GRUB_CMDLINE_LINUX, which the console does not edit: it stays on "
                    "the command line"
                )

    def _wanted(self, ctx: PlanContext) -> tuple[list[str], list[str]]:
        """This change's tokens and the ones the console applied earlier (minus what it removes)."""
        add, remove = wanted_tokens(ctx.operations_of(self.name), ctx.host.cpu_vendor)
        managed = [str(a) for a in (ctx.intent(self.name) or []) if not removed_by(str(a), remove)]
        return add + [a for a in managed if a not in add], remove

    def reboot_reasons(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        wanted, remove = self._wanted(ctx)
        return running_needs_reboot(ctx.host.cmdline, wanted, remove)

    def after_boot(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        wanted, remove = self._wanted(ctx)
        after = out.after.setdefault(self.namespace, {})
        checks = []
        for token in wanted:
            after[f"cmdline:{token}"] = True
        for token in remove:
            after[f"cmdline:{token}"] = False
        if wanted:
            checks.append("/proc/cmdline has " + " ".join(wanted))
        if remove:
            checks.append("/proc/cmdline lacks " + " ".join(remove))
        iommu_wanted = any(op.get("preset") == "iommu" for op in ctx.operations_of(self.name)) or (
            "intel_iommu=on" in wanted
        )
        if iommu_wanted:
            after["iommu_active"] = True
            checks.append("IOMMU active")
        return checks

    # -- execution ------------------------------------------------------------------------
    def resume(self, action: dict, lost, reread) -> Resume:
        # The file may have been edited before the tool ran: regenerate whatever the file says.
        return Resume.rerun(
            f"re-run of step {lost.seq}, interrupted by the loss of its worker (kernel_args is idempotent; the "
            "boot configuration is regenerated in any case)",
            args={**action["step"]["args"], "regenerate": True},
        )

    def intents(self, action: dict, current: dict) -> list[IntentValue]:
        """Earlier arguments minus the removed, plus the added."""
        args = action["step"]["args"]
        remove = list(args.get("remove") or [])
        wanted = [a for a in (current.get("") or []) if not removed_by(str(a), remove)]
        wanted += [a for a in args.get("add") or [] if a not in wanted]
        return [IntentValue("", wanted or None, " ".join(wanted))]

    # -- verification and drift -------------------------------------------------------------
    def observe(self, inventory: dict, keys) -> dict:
        grub = inventory.get("grub") or {}
        tokens = (inventory.get("cmdline") or "").split()
        seen = {}
        for key in keys:
            if key == "grub_cmdline_linux_default":
                seen[key] = " ".join((grub.get("cmdline_linux_default") or "").split())
            elif key.startswith("cmdline:"):
                token = key.removeprefix("cmdline:")
                seen[key] = any(t == token or ("=" not in token and key_of(t) == token) for t in tokens)
            elif key == "iommu_active":
                seen[key] = bool((inventory.get("iommu") or {}).get("active"))
        return seen

    def difference(self, key: str, want, got, word: str, names: dict) -> str:
        if key.startswith("cmdline:"):
            return f"/proc/cmdline {'lacks' if want else 'still has'} {key.removeprefix('cmdline:')} after the reboot"
        if key == "iommu_active":
            return "IOMMU is not active after the reboot"
        return f'{GRUB_VAR}: {word} "{want}", the host has "{got}"'

    def drift(self, host, nics: list, intents: list) -> list[str]:
        wanted = [str(a) for i in intents if i.operation == self.name for a in (i.value or [])]
        tokens = set((host.cmdline or "").split())
        missing = [arg for arg in wanted if arg not in tokens]
        if not missing:
            return []
        return [f"/proc/cmdline lacks {' '.join(missing)}, which the console applied to the boot "
                "configuration (not rebooted yet, or the grub configuration was changed)."]

    # -- the wizard -----------------------------------------------------------------------
    def from_form(self, cleaned: dict) -> dict | None:
        op = {
            "op": self.name,
            "preset": "iommu" if cleaned.get("iommu_preset") else None,
            "vfio_pci_ids": (cleaned.get("vfio_pci_ids") or "").strip(),
            "add": (cleaned.get("add") or "").split(),
            "remove": (cleaned.get("remove") or "").split(),
        }
        return op if (op["preset"] or op["vfio_pci_ids"] or op["add"] or op["remove"]) else None

    def to_form(self, op: dict) -> dict:
        return {"iommu_preset": op.get("preset") == "iommu", "vfio_pci_ids": ", ".join(op.get("vfio_pci_ids") or []),
                "add": " ".join(op.get("add") or []), "remove": " ".join(op.get("remove") or [])}
