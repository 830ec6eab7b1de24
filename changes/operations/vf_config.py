"""`vf_config`: what the PF assigns to a range of its VFs (MAC, VLAN and QoS, spoofchk, trust, link
state, TX rates), and whether it comes back after a reboot and after the VFs are re-created.

    {"op": "vf_config", "pf": "eno49", "vfs": "0-3", "vlan": 100, "trust": true, "persist": true}
    {"op": "vf_config", "pf": "0000:04:00.0", "vfs": "4", "mac": "stable", "spoofchk": false}

A field left out is left as it is. ``mac`` is an address for one VF, or "stable" for any range: a
locally administered unicast address the agent derives from the host's machine id and the VF's PCI
address, the same on every run (igb/ixgbe VFs come up with 00:00:00:00:00:00, which some guests
refuse). ``qos`` (0-7) only with ``vlan``; rates in Mbit/s (0 = no limit), min ≤ max.

Namespace ``vf_config`` of the plan: ``<pf pci>#<index>.<field>`` → value (``.mac_stable`` → True
for "stable"), and ``.persisted.<field>`` / ``.persisted`` → None for what the managed persistence
holds. Intent: one per VF (subject ``<pf pci>#<index>``), the settings the console applied.
"""

from __future__ import annotations

import re

from django import forms

from .base import HostPlan, IntentValue, Operation, OperationError, PlanContext
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

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
STABLE = "stable"
LINK_STATES = ("auto", "enable", "disable")
# The settings in the order the plan words them: field → (words, model attribute).
FIELDS = {
    "mac": ("MAC", "admin_mac"),
    "vlan": ("VLAN", "vlan"),
    "qos": ("QoS", "qos"),
    "spoofchk": ("spoofchk", "spoofchk"),
    "trust": ("trust", "trust"),
    "link_state": ("link state", "link_state"),
    "max_tx_rate": ("max TX rate", "max_tx_rate"),
    "min_tx_rate": ("min TX rate", "min_tx_rate"),
}
PERSISTED = "persisted"


def shown(field: str, value) -> str:
    """A setting in words: VLAN 0 → none, booleans on/off, rate 0 → no limit."""
    if value is None or value == "":
        return "unknown"
    if field == "mac":
        return "stable (from the machine id)" if value == STABLE else value
    if field == "vlan" and value == 0:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if field in ("max_tx_rate", "min_tx_rate"):
        return "no limit" if value == 0 else f"{value} Mbit/s"
    return str(value)


def stable_looking(mac) -> bool:
    """A locally administered unicast address other than zero: what "stable" gives (the agent
    derives which one; the console checks its kind)."""
    if not isinstance(mac, str) or not MAC_RE.match(mac.lower()) or mac == "00:00:00:00:00:00":
        return False
    first = int(mac[:2], 16)
    return bool(first & 0x02) and not first & 0x01


def observed(vf, field: str):
    value = getattr(vf, FIELDS[field][1])
    return None if value == "" else value


def matches(field: str, want, got) -> bool:
    if field == "mac" and want == STABLE:
        return stable_looking(got)
    return got == want


def _check_int(op, key, low, high, where):
    value = op.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OperationError(f"{where}: {key} must be a whole number from {low} to {high}")
    return value


class VfConfigForm(forms.Form):
    target = forms.CharField(max_length=60, required=False, label="PF#VFs",
                             widget=forms.TextInput(attrs={"placeholder": "eno49#0-3"}))
    mac = forms.CharField(max_length=17, required=False, label="MAC",
                          widget=forms.TextInput(attrs={"placeholder": "stable"}))
    vlan = forms.IntegerField(min_value=0, max_value=4095, required=False, label="VLAN")
    qos = forms.IntegerField(min_value=0, max_value=7, required=False, label="QoS")
    spoofchk = forms.ChoiceField(choices=[("", "—"), ("on", "on"), ("off", "off")], required=False, label="Spoofchk")
    trust = forms.ChoiceField(choices=[("", "—"), ("on", "on"), ("off", "off")], required=False, label="Trust")
    link_state = forms.ChoiceField(choices=[("", "—")] + [(s, s) for s in LINK_STATES], required=False,
                                   label="Link state")
    max_tx_rate = forms.IntegerField(min_value=0, max_value=1000000, required=False, label="Max Mbit/s")
    min_tx_rate = forms.IntegerField(min_value=0, max_value=1000000, required=False, label="Min Mbit/s")
    persist = forms.BooleanField(required=False, initial=True, label="Persist")


class VfConfig(Operation):
    name = "vf_config"
    title = "VF settings"
    phase = 30  # after set_vfs: the VFs exist with their final count
    form_class = VfConfigForm
    form_rows = 4
    form_help = ("PF#VFs: the PF's name or PCI address and its VFs (eno49#0-3, eno49#4,6). An empty field leaves "
                 "the setting as it is. MAC: one address for one VF, or \"stable\" (derived from the machine id "
                 "and the VF's PCI address). Persist: the settings come back after a reboot and after the VFs "
                 "are re-created.")

    # -- input ----------------------------------------------------------------------------
    def validate(self, op: dict, where: str) -> dict:
        self.check_fields(op, {"pf", "vfs", "persist", *FIELDS}, where)
        pf = check_pf(op.get("pf"), where)
        ranges = parse_ranges(op.get("vfs"), where)
        settings = self._settings(op, where)
        if not settings:
            raise OperationError(f"{where}: give at least one setting ({', '.join(FIELDS)})")
        mac = settings.get("mac")
        if mac not in (None, STABLE) and sum(b - a + 1 for a, b in ranges) > 1:
            raise OperationError(f"{where}: one MAC address for several VFs would give them the same address; "
                                 'give one VF, or "stable"')
        persist = op.get("persist", True)
        if not isinstance(persist, bool):
            raise OperationError(f"{where}: persist must be true or false")
        return {"op": self.name, "pf": pf, "vfs": ranges_text(ranges), **settings, "persist": persist}

    def _settings(self, op: dict, where: str) -> dict:
        settings = {}
        mac = op.get("mac")
        if mac is not None:
            mac = mac.strip().lower() if isinstance(mac, str) else mac
            if mac != STABLE and not (isinstance(mac, str) and MAC_RE.match(mac) and not int(mac[:2], 16) & 1):
                raise OperationError(f'{where}: mac must be a unicast address such as 02:00:00:00:00:01 or "stable"')
            settings["mac"] = mac
        for key, low, high in (("vlan", 0, 4095), ("qos", 0, 7), ("max_tx_rate", 0, 10**6), ("min_tx_rate", 0, 10**6)):
            value = _check_int(op, key, low, high, where)
            if value is not None:
                settings[key] = value
        if "qos" in settings and "vlan" not in settings:
            raise OperationError(f"{where}: qos goes with a vlan (the priority of its tagged frames)")
        low, high = settings.get("min_tx_rate"), settings.get("max_tx_rate")
        if low and high and low > high:
            raise OperationError(f"{where}: min_tx_rate ({low}) is above max_tx_rate ({high})")
        for key in ("spoofchk", "trust"):
            if op.get(key) is not None:
                if not isinstance(op[key], bool):
                    raise OperationError(f"{where}: {key} must be true or false")
                settings[key] = op[key]
        if op.get("link_state") is not None:
            if op["link_state"] not in LINK_STATES:
                raise OperationError(f"{where}: link_state must be one of {', '.join(LINK_STATES)}")
            settings["link_state"] = op["link_state"]
        return settings

    @staticmethod
    def settings_of(op: dict) -> dict:
        return {key: op[key] for key in FIELDS if key in op}

    def summary(self, op: dict) -> str:
        words = ", ".join(f"{FIELDS[k][0]} {shown(k, v)}" for k, v in self.settings_of(op).items())
        tail = ", persisted" if op["persist"] else ", not persisted"
        return f"VF settings of {op['pf']}#{op['vfs']}: {words}{tail}"

    def needs(self, operations: list[dict]) -> set[str]:
        return needed_with(operations, self.name, "vfs")

    # -- planning -------------------------------------------------------------------------
    def plan(self, op: dict, ctx: PlanContext, out: HostPlan) -> None:
        nic, indexes = plan_pf(op, ctx, out, self.name)
        if nic is None:
            return
        settings = self.settings_of(op)
        guest_impact(ctx, out, nic, indexes, "changes the settings of")
        fresh = recreated(out, nic)
        if fresh:
            out.warnings.append(f"{nic.name}: this change re-creates its VFs; the settings of "
                                f"{nic.name}#{op['vfs']} are applied after that")
        by_index = {vf.index: vf for vf in ctx.all_vfs.get(nic.pk, [])}
        before, after = out.before.setdefault(self.namespace, {}), out.after.setdefault(self.namespace, {})
        words, send = [], []
        for index in indexes:
            vf = None if fresh else by_index.get(index)
            subject = vf_subject(nic.pci_address, index)
            text, needed = self._vf_words(vf, settings, op["persist"])
            for key, value in settings.items():
                current = observed(vf, key) if vf else None
                if current is not None:
                    before[f"{subject}.{key}"] = current
                after[f"{subject}.mac_stable" if (key, value) == ("mac", STABLE) else f"{subject}.{key}"] = \
                    True if (key, value) == ("mac", STABLE) else value
            self._persisted_after(after, subject, settings, op["persist"])
            words.append((index, text))
            if needed:
                send.append({"index": index, **settings})
        self._add_actions(op, ctx, out, nic, words, send)

    @staticmethod
    def _persisted_after(after: dict, subject: str, settings: dict, persist: bool) -> None:
        if not persist:
            after[f"{subject}.{PERSISTED}"] = None
            return
        for key, value in settings.items():
            if (key, value) == ("mac", STABLE):
                after[f"{subject}.{PERSISTED}.mac_stable"] = True
            else:
                after[f"{subject}.{PERSISTED}.{key}"] = value

    @staticmethod
    def _vf_words(vf, settings: dict, persist: bool) -> tuple[str, bool]:
        """This VF's change in words ("VLAN none → 100, trust off → on; persisted"), and whether it
        needs a step."""
        changes, same = [], []
        for key, value in settings.items():
            current = observed(vf, key) if vf else None
            if vf is not None and matches(key, value, current):
                same.append(f"{FIELDS[key][0]} {shown(key, current)}")
            else:
                now = "default" if vf is None else shown(key, current)
                changes.append(f"{FIELDS[key][0]} {now} → {shown(key, value)}")
        held = (vf.persisted_settings or {}) if vf is not None else {}
        if persist:
            stored = all(held.get(k) == v or (k == "mac" and v == STABLE and stable_looking(held.get(k)))
                         for k, v in settings.items())
            tail = "; persisted" if stored or changes else "; record them so they survive a reboot"
        else:
            stored = vf is None or vf.persisted_settings is None
            tail = "; not persisted" if stored else "; no longer persisted (the live settings stay)"
        if not changes:
            text = "already " + ", ".join(same)
            return text + ("" if stored else tail), not stored
        return ", ".join(changes) + tail, True

    def _add_actions(self, op, ctx, out, nic, words, send) -> None:
        if not send:
            for label, text in grouped(nic, words):
                out.add_action(self, f"{label}: {text}, nothing to do", label=label)
            return
        text = "; ".join(f"{label}: {text}" for label, text in grouped(nic, words))
        step = {"op": self.name, "args": {
            "pf": nic.name, "pci_address": nic.pci_address, "vfs": send, "persist": op["persist"],
            "allow_guest_impact": bool(ctx.change.allow_guest_impact),
        }}
        label = f"{nic.name}#{ranges_text(merge(v['index'] for v in send))}"
        subject = f"{nic.pci_address}#{label.partition('#')[2]}"
        action = out.add_action(self, text, step=step, label=label, subject=subject)
        if op["persist"]:
            action["tags"].append("persisted")

    def after_boot(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        checks = []
        for action in out.actions:
            step = action.get("step")
            if action.get("op") == self.name and step and not step["args"]["persist"]:
                out.errors.append(f"{action['label']}: the VF settings are not persisted and would be gone after the "
                                  "reboot; persist them or do not reboot in this change")
            elif action.get("op") == self.name and step:
                checks.append(f"the settings of {action['label']} are back")
        after = out.after.setdefault(self.namespace, {})
        for nic in ctx.nics:
            kept = [vf for vf in ctx.all_vfs.get(nic.pk, [])
                    if vf.persisted_settings and vf.index < planned_count(out, nic)
                    and not any(k.startswith(vf_subject(nic.pci_address, vf.index) + ".") for k in after)]
            for vf in kept:
                for key, value in vf.persisted_settings.items():
                    if key in FIELDS:
                        stable = (key, value) == ("mac", STABLE)
                        after[f"{vf_subject(nic.pci_address, vf.index)}.{'mac_stable' if stable else key}"] = \
                            True if stable else value
            if kept:
                checks.append(f"the persisted settings of {nic.name}#{ranges_text(merge(vf.index for vf in kept))} "
                              "are back")
        if not after:
            out.after.pop(self.namespace, None)
        return checks

    def after_plan(self, ctx: PlanContext, out: HostPlan) -> None:
        lost_when_recreated(ctx, out, self.name, self.namespace, "settings")

    # -- execution ------------------------------------------------------------------------
    def intents(self, action: dict, current: dict) -> list[IntentValue]:
        args = action["step"]["args"]
        out = []
        for item in args["vfs"]:
            subject = vf_subject(args["pci_address"], item["index"])
            value = {k: v for k, v in (current.get(subject) or {}).items() if k in FIELDS}
            value.update({k: v for k, v in item.items() if k in FIELDS})
            value[PERSISTED] = bool(args["persist"])
            words = ", ".join(f"{FIELDS[k][0]} {shown(k, v)}" for k, v in value.items() if k in FIELDS)
            out.append(IntentValue(subject, value, f"VF {item['index']}: {words}"
                                   + ("" if args["persist"] else " (not persisted)")))
        return out

    # -- verification and drift -------------------------------------------------------------
    def observe(self, inventory: dict, keys) -> dict:
        seen = {}
        for key in keys:
            pci, index, field = split_key(key)
            vf = vf_of(inventory, pci, index) if index is not None else None
            seen[key] = None if vf is None else _observed_key(vf, field)
        return seen

    def difference(self, key: str, want, got, word: str, names: dict) -> str:
        pci, index, field = split_key(key)
        who = f"{names.get(pci, pci)} VF {index} {vf_mark(pci, index)}"
        if field == PERSISTED:
            return f"{who}: {word} no persisted settings, the host persists {got!r}"
        persisted = field.startswith(PERSISTED + ".")
        field = field.removeprefix(PERSISTED + ".")
        if field == "mac_stable":
            what, want_text, got_text = "MAC", "a stable address", "not that kind of address"
        else:
            what, want_text, got_text = FIELDS.get(field, (field, ""))[0], shown(field, want), shown(field, got)
        where = "persisted " if persisted else ""
        return f"{who}: {word} {where}{what} {want_text}, the host has {got_text}"

    def drift(self, host, nics: list, intents: list) -> list[str]:
        by_pci = {nic.pci_address: nic for nic in nics}
        reasons = []
        for intent in sorted((i for i in intents if i.operation == self.name), key=lambda i: i.subject):
            pci, index = split_subject(intent.subject)
            nic = by_pci.get(pci)
            mark = vf_mark(pci, index)
            if nic is None or not nic.present:
                reasons.append(f"{pci} VF {index} {mark} was configured by the console but the host no longer "
                               "reports its PF.")
                continue
            vf = next((v for v in nic_vfs(nic) if v.index == index and v.present), None)
            if vf is None and count_removed(intents, pci, index):
                continue
            if vf is None:
                reasons.append(f"{nic.name} VF {index} {mark} was configured by the console but no longer exists "
                               "(the VF count changed?).")
                continue
            reasons.extend(self._vf_drift(nic, vf, intent.value or {}, mark))
        return reasons

    @staticmethod
    def _vf_drift(nic, vf, value: dict, mark: str) -> list[str]:
        wrong = []
        for key, want in value.items():
            if key not in FIELDS:
                continue
            got = observed(vf, key)
            if got is not None and not matches(key, want, got):
                wrong.append((key, want, got))
        reasons = []
        if wrong:
            has = ", ".join(f"{FIELDS[k][0]} {shown(k, g)}" for k, _w, g in wrong)
            applied = ", ".join(f"{FIELDS[k][0]} {shown(k, w)}" for k, w, _g in wrong)
            hint = "" if value.get(PERSISTED) else " (not persisted: lost at a reboot or when the VFs were re-created?)"
            reasons.append(f"{nic.name} VF {vf.index} {mark} has {has}; the console applied {applied}{hint}.")
        if value.get(PERSISTED) and vf.persisted_settings is None and nic.vf_settings_known:
            reasons.append(f"{nic.name} VF {vf.index} {mark}: the console persisted its settings, but the host no "
                           "longer holds them for the next boot.")
        return reasons

    # -- the wizard -----------------------------------------------------------------------
    def from_form(self, cleaned: dict) -> dict | None:
        pf, vfs = split_target(cleaned.get("target") or "")
        if not pf:
            return None
        op = {"op": self.name, "pf": pf, "vfs": vfs, "persist": bool(cleaned.get("persist"))}
        if (cleaned.get("mac") or "").strip():
            op["mac"] = cleaned["mac"].strip()
        for key in ("vlan", "qos", "max_tx_rate", "min_tx_rate"):
            if cleaned.get(key) is not None:
                op[key] = cleaned[key]
        for key in ("spoofchk", "trust"):
            if cleaned.get(key):
                op[key] = cleaned[key] == "on"
        if cleaned.get("link_state"):
            op["link_state"] = cleaned["link_state"]
        return op

    def to_form(self, op: dict) -> dict:
        data = {"target": f"{op['pf']}#{op['vfs']}", "persist": op["persist"]}
        for key in ("mac", "vlan", "qos", "max_tx_rate", "min_tx_rate", "link_state"):
            if key in op:
                data[key] = op[key]
        for key in ("spoofchk", "trust"):
            if key in op:
                data[key] = "on" if op[key] else "off"
        return data


def _observed_key(vf: dict, field: str):
    """One key of the namespace from the agent's VF entry."""
    if field == PERSISTED:
        return vf.get("persisted_settings")
    if field.startswith(PERSISTED + "."):
        held = vf.get("persisted_settings") or {}
        field = field.removeprefix(PERSISTED + ".")
        if field == "mac_stable":
            return held.get("mac") == STABLE or stable_looking(held.get("mac"))
        return held.get(field)
    if field == "mac_stable":
        return stable_looking(vf.get("admin_mac"))
    if field == "mac":
        return (vf.get("admin_mac") or "").lower() or None
    return vf.get(field)
