"""What the VF operations share: a PF and a range of its VFs ("eno49#0-3", as the SR-IOV Network
Operator's pfNames), the VF count a plan leaves a PF with, the running-guest check, and plan words
grouped by range ("eno49#0-3: VLAN none → 100").

A VF is named in subjects and drift sentences as ``<PF PCI address>#<index>`` (an Intent subject,
and the mark the host and NIC pages look for to flag that VF).
"""

from __future__ import annotations

import re

from . import get, known
from .base import HostPlan, OperationError, PlanContext
from .validators import IFNAME_RE, PCI_RE

MAX_VF_INDEX = 4095  # sriov_totalvfs is a 16-bit field; no NIC offers more than a few hundred
RANGE_RE = re.compile(r"^(\d{1,4})(?:-(\d{1,4}))?$")


def parse_ranges(value, where: str) -> list[tuple[int, int]]:
    """"0-3,6" / [0, 1, 2] / 5 → sorted, merged (first, last) pairs; OperationError when invalid."""
    if isinstance(value, bool):
        raise OperationError(f"{where}: vfs must be VF indexes such as 0-3 or 0-3,6")
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, list):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            raise OperationError(f"{where}: vfs must be VF indexes such as 0-3 or 0-3,6")
        value = ",".join(str(i) for i in value)
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise OperationError(f"{where}: give the VFs, such as 0-3 or 0-3,6")
    pairs = []
    for part in value.replace(" ", "").split(","):
        match = RANGE_RE.match(part)
        if not match:
            raise OperationError(f"{where}: {part!r} is not a VF index or range such as 0-3")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if first > last or last > MAX_VF_INDEX:
            raise OperationError(f"{where}: {part!r}: a range goes from the lower index to the higher, "
                                 f"at most {MAX_VF_INDEX}")
        pairs.append((first, last))
    return merge(i for first, last in pairs for i in range(first, last + 1))


def merge(indexes) -> list[tuple[int, int]]:
    pairs: list[list[int]] = []
    for index in sorted(set(indexes)):
        if pairs and index == pairs[-1][1] + 1:
            pairs[-1][1] = index
        else:
            pairs.append([index, index])
    return [(first, last) for first, last in pairs]


def ranges_text(pairs) -> str:
    """[(0, 3), (6, 6)] → "0-3,6"."""
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in pairs)


def indexes_of(pairs) -> list[int]:
    return [i for first, last in pairs for i in range(first, last + 1)]


def check_pf(value, where: str) -> str:
    if not isinstance(value, str) or not (IFNAME_RE.match(value.strip()) or PCI_RE.match(value.strip().lower())):
        raise OperationError(f"{where}: pf must be a PF interface name such as eno49 or a PCI address such as "
                             "0000:04:00.0")
    value = value.strip()
    return value.lower() if PCI_RE.match(value.lower()) else value


def split_target(text: str) -> tuple[str, str]:
    """The wizard's "eno49#0-3" → ("eno49", "0-3"). Without "#" the VFs are "" (refused by validate:
    a change names the VFs it touches rather than taking every VF of the PF by default)."""
    pf, _sep, vfs = (text or "").strip().partition("#")
    return pf.strip(), vfs.strip()


def needed_with(operations: list[dict], name: str, what: str) -> set[str]:
    """Operation.needs of the VF operations: their inventory when the change has one of them, or a
    step that reboots (their after_boot checks what the host persisted)."""
    mine = any(o.get("op") == name for o in operations)
    boots = any(known(o.get("op")) and get(o["op"]).awaits_boot for o in operations)
    return {what} if mine or boots else set()


def find_pf(nics: list, pf: str):
    return next((n for n in nics if n.name == pf or n.pci_address == pf), None)


def vf_subject(pci: str, index: int) -> str:
    return f"{pci}#{index}"


def split_subject(subject: str) -> tuple[str, int | None]:
    pci, _sep, index = subject.partition("#")
    return pci, int(index) if index.isdigit() else None


def split_key(key: str) -> tuple[str, int | None, str]:
    """A plan key "<pf pci>#<index>.<field>" → (pci, index, field); the PCI address has a dot too."""
    pci, _sep, rest = key.partition("#")
    index, _dot, field = rest.partition(".")
    return pci, int(index) if index.isdigit() else None, field


def vf_mark(pci: str, index: int) -> str:
    """How a sentence names one VF so that the pages can flag it: "(0000:04:00.0#1)"."""
    return f"({vf_subject(pci, index)})"


def plan_pf(op: dict, ctx: PlanContext, out: HostPlan, claim: str):
    """The PF the operation names on this host, and the indexes of it the operation owns (claimed
    per VF: two operations of one kind in a change may not name the same VF). None when it cannot
    be planned (errors added)."""
    nic = find_pf(ctx.nics, op["pf"])
    if nic is None:
        out.errors.append(f"{ctx.where}: PF missing: no NIC named or at {op['pf']} on {ctx.host.name}")
        return None, []
    if not nic.sriov_capable:
        out.errors.append(f"{ctx.where}: {nic.name} ({nic.pci_address}) is not SR-IOV capable")
        return None, []
    count = planned_count(out, nic)
    ranges = parse_ranges(op["vfs"], ctx.where)
    wanted = indexes_of(ranges)
    missing = [i for i in wanted if i >= count]
    if missing:
        plural = "s" if count != 1 else ""
        when = " after this change" if recreated(out, nic) else ""
        out.errors.append(f"{ctx.where}: {nic.name}#{ranges_text(merge(missing))}: no such VF ({nic.name} has "
                          f"{count} VF{plural}{when})")
        return None, []
    keys = [(claim, nic.pci_address, i) for i in wanted]
    clash = sorted({ctx.claimed[key] for key in keys if key in ctx.claimed})
    if clash:
        out.errors.append(f"{ctx.where}: {nic.name}#{op['vfs']} overlaps the VFs of operation "
                          f"{', '.join(str(c) for c in clash)}")
        return None, []
    for key in keys:
        ctx.claimed[key] = ctx.number
    return nic, wanted


def planned_count(out: HostPlan, nic) -> int:
    """The VF count of the PF once the change's earlier phases ran (set_vfs plans "numvfs")."""
    return out.after.get("numvfs", {}).get(nic.pci_address, nic.sriov_numvfs or 0)


def recreated(out: HostPlan, nic) -> bool:
    """Whether this change re-creates the PF's VFs (their live settings start from the driver's
    defaults: the kernel removes and adds every VF when sriov_numvfs changes)."""
    return planned_count(out, nic) != (nic.sriov_numvfs or 0)


def guest_impact(ctx: PlanContext, out: HostPlan, nic, indexes: list[int], what: str) -> None:
    """Refuse (or, allowed by the policy, warn about) VFs of these indexes that running guests use."""
    used = [vf for vf in ctx.vfs_by_nic.get(nic.pk, []) if vf.index in set(indexes) and vf.guest]
    if not used:
        return
    names = ", ".join(f"VF {vf.index} ({vf.guest})" for vf in used)
    text = f"{nic.name}: {what} VFs that running guests use: {names}"
    if ctx.change.allow_guest_impact:
        out.warnings.append(text + "; allowed by the rollout policy")
    else:
        out.errors.append(text + "; stop or migrate them, or allow guest impact in the policy")


def grouped(nic, words: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """[(index, words)] → [("eno49#0-3", words)] with consecutive VFs of the same words together."""
    out: list[tuple[list[int], str]] = []
    for index, text in sorted(words):
        if out and out[-1][1] == text and out[-1][0][-1] == index - 1:
            out[-1][0].append(index)
        else:
            out.append(([index], text))
    return [(f"{nic.name}#{ranges_text(merge(ids))}" if len(ids) > 1 else f"{nic.name} VF {ids[0]}", text)
            for ids, text in out]


def vf_of(inventory: dict, pci: str, index: int) -> dict | None:
    """One VF of the agent's inventory, by its PF's PCI address and its index."""
    pf = next((n for n in inventory.get("nics", []) if n.get("pci_address") == pci and not n.get("is_vf")), None)
    if pf is None:
        pf = next((p for p in inventory.get("sriov_pfs", []) if p.get("pci_address") == pci), None)
    if pf is None:
        return None
    return next((vf for vf in pf.get("vfs") or [] if vf.get("index") == index), None)


def count_removed(intents: list, pci: str, index: int) -> bool:
    """Whether the VF count the console applied to the PF (set_vfs's intent) no longer has this VF:
    the console removed it on purpose, which is not drift of the VF's own intent."""
    return any(i.operation == "set_vfs" and i.subject == pci and isinstance(i.value, int) and i.value <= index
               for i in intents)


def nic_vfs(nic) -> list:
    """The NIC's VFs as discovery just recorded them (no query), else from the database."""
    vfs = getattr(nic, "observed_vfs", None)
    return list(vfs) if vfs is not None else list(nic.vfs.all())


def lost_when_recreated(ctx: PlanContext, out: HostPlan, operation: str, touched: str, words) -> None:
    """Warn about VFs whose console-applied `operation` intent is not persisted, on PFs this change
    re-creates the VFs of: the kernel removes and adds every VF, with the driver's defaults.
    touched: the plan's namespace whose "<pci>#<index>." keys mean this change applies them again."""
    again = out.after.get(touched, {})
    for nic in ctx.nics:
        if not nic.sriov_capable or not recreated(out, nic):
            continue
        lost = sorted(index for (name, subject), value in ctx.intents.items()
                      for pci, index in [split_subject(subject)]
                      if name == operation and pci == nic.pci_address and index is not None
                      and isinstance(value, dict) and not value.get("persisted")
                      and not any(k.startswith(f"{subject}.") for k in again))
        if lost:
            out.warnings.append(f"{nic.name}: this change re-creates its VFs; the {words} the console applied "
                                f"without persist to {nic.name}#{ranges_text(merge(lost))} are lost")
