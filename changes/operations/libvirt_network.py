"""`libvirt_network`: a libvirt network that hands out a PF's VFs to guests (a VF pool, the
reference document's third way to give a VF to a guest), defined, started and autostarted — or
removed.

    {"op": "libvirt_network", "name": "sriov-eno49", "pf": "eno49", "state": "present", "autostart": true}
    {"op": "libvirt_network", "name": "sriov-eno49", "state": "absent"}

present: ``virsh net-define`` of ``<network><name>N</name><forward mode='hostdev' managed='yes'>
<pf dev='PF'/></forward></network>`` marked as the console's, ``net-start``, ``net-autostart``. A
network of that name that the console did not define and that differs is refused
(``network_exists``). absent: ``net-destroy`` + ``net-undefine``, refused while a running or
autostart guest uses it.

Namespace ``libvirt_network`` of the plan: ``<name>.present`` → True/False, and for present
``<name>.active``, ``<name>.autostart``, ``<name>.pf``. Intent: one per network (subject: its name).
"""

from __future__ import annotations

import re

from django import forms

from .base import HostPlan, IntentValue, Operation, OperationError, PlanContext
from .vf_ranges import check_pf, find_pf, needed_with

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")
STATES = ("present", "absent")
POOL_MODE = "hostdev"


def _network(inventory: dict, name: str) -> dict | None:
    return next((n for n in inventory.get("libvirt_networks") or [] if n.get("name") == name), None)


class LibvirtNetworkForm(forms.Form):
    name = forms.CharField(max_length=50, required=False, label="Network",
                           widget=forms.TextInput(attrs={"placeholder": "sriov-eno49"}))
    pf = forms.CharField(max_length=15, required=False, label="PF",
                         widget=forms.TextInput(attrs={"placeholder": "eno49"}))
    state = forms.ChoiceField(choices=[(s, s) for s in STATES], required=False, label="State")
    autostart = forms.BooleanField(required=False, initial=True, label="Autostart")


class LibvirtNetwork(Operation):
    name = "libvirt_network"
    title = "libvirt VF pool"
    phase = 40  # after the VFs exist and are bound
    form_class = LibvirtNetworkForm
    form_rows = 2
    form_help = ("A libvirt network with <forward mode='hostdev' managed='yes'><pf dev='…'/></forward>: guests "
                 "that use it get one of the PF's VFs. Absent removes a network the console defined (refused while "
                 "a running or autostart guest uses it).")

    # -- input ----------------------------------------------------------------------------
    def validate(self, op: dict, where: str) -> dict:
        self.check_fields(op, {"name", "pf", "state", "autostart"}, where)
        name = op.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name.strip()):
            raise OperationError(f"{where}: name must be 1-50 letters, digits, '_', '.' or '-'")
        state = op.get("state") or "present"
        if state not in STATES:
            raise OperationError(f"{where}: state must be present or absent")
        autostart = op.get("autostart", True)
        if not isinstance(autostart, bool):
            raise OperationError(f"{where}: autostart must be true or false")
        pf = op.get("pf")
        if state == "present" or pf not in (None, ""):
            pf = check_pf(pf, where)
        return {"op": self.name, "name": name.strip(), "pf": pf or None, "state": state, "autostart": autostart}

    def summary(self, op: dict) -> str:
        if op["state"] == "absent":
            return f"remove the libvirt network {op['name']}"
        return (f"libvirt VF pool {op['name']} over {op['pf']}"
                + (", autostarted" if op["autostart"] else ", not autostarted"))

    def needs(self, operations: list[dict]) -> set[str]:
        return needed_with(operations, self.name, "libvirt_networks")

    # -- planning -------------------------------------------------------------------------
    def plan(self, op: dict, ctx: PlanContext, out: HostPlan) -> None:
        name = op["name"]
        claim = (self.name, name)
        if claim in ctx.claimed:
            out.errors.append(f"{ctx.where}: network {name} is also in operation {ctx.claimed[claim]}")
            return
        ctx.claimed[claim] = ctx.number
        current = next((n for n in ctx.networks if n.name == name), None)
        before = out.before.setdefault(self.namespace, {})
        before[f"{name}.present"] = current is not None
        if op["state"] == "absent":
            self._plan_absent(op, ctx, out, current)
        else:
            self._plan_present(op, ctx, out, current)

    def _plan_present(self, op, ctx, out, current) -> None:
        name = op["name"]
        nic = find_pf(ctx.nics, op["pf"])
        if nic is None or not nic.sriov_capable:
            out.errors.append(f"{ctx.where}: PF missing: no SR-IOV capable NIC named or at {op['pf']} on "
                              f"{ctx.host.name}")
            return
        after = out.after.setdefault(self.namespace, {})
        after.update({f"{name}.present": True, f"{name}.active": True, f"{name}.autostart": op["autostart"],
                      f"{name}.pf": nic.name})
        same = current is not None and current.mode == POOL_MODE and current.pfs == [nic.name]
        if current is not None and not current.managed and not same:
            out.errors.append(f"{ctx.where}: {ctx.host.name} has a libvirt network {name} that SR-IOV Console did "
                              f"not define ({current.mode or 'no forward mode'} over "
                              f"{', '.join(current.pfs) or 'no PF'}); choose another name")
            return
        todo = []
        if current is None or not same:
            todo.append(f"define it (forward mode hostdev over {nic.name}, managed)")
        if current is None or not same or not current.active:
            todo.append("start it")
        if current is None or current.autostart != op["autostart"] or not same:
            todo.append("autostart it" if op["autostart"] else "no autostart")
        if not todo:
            out.add_action(self, f"libvirt network {name}: already a VF pool over {nic.name}, active"
                           + (", autostarted" if op["autostart"] else "") + ", nothing to do",
                           label=name)
            return
        if current is not None and not same and current.guests:
            out.warnings.append(f"network {name} is redefined while guests use it: {', '.join(current.guests)}")
        step = {"op": self.name, "args": {"name": name, "pf": nic.name, "pci_address": nic.pci_address,
                                          "state": "present", "autostart": op["autostart"]}}
        out.add_action(self, f"libvirt network {name} over {nic.name}: " + ", ".join(todo), step=step, label=name,
                       subject=f"network:{name}")
        if current is not None:
            for key, value in ((f"{name}.active", current.active), (f"{name}.autostart", current.autostart)):
                if value is not None:
                    out.before[self.namespace][key] = value

    def _plan_absent(self, op, ctx, out, current) -> None:
        name = op["name"]
        out.after.setdefault(self.namespace, {})[f"{name}.present"] = False
        if current is None:
            out.add_action(self, f"libvirt network {name}: not defined, nothing to do", label=name)
            return
        if not current.managed:
            out.errors.append(f"{ctx.where}: the libvirt network {name} was not defined by SR-IOV Console; the "
                              "console removes only its own networks")
            return
        if current.guests:
            out.errors.append(f"{ctx.where}: the libvirt network {name} is used by running or autostart guests "
                              f"({', '.join(current.guests)}); move them to another network first")
            return
        nic = find_pf(ctx.nics, current.pfs[0]) if current.pfs else None
        step = {"op": self.name, "args": {"name": name, "pf": nic.name if nic else (op["pf"] or None),
                                          "pci_address": nic.pci_address if nic else None, "state": "absent",
                                          "autostart": False}}
        out.add_action(self, f"libvirt network {name}: stop and undefine it", step=step, label=name,
                       subject=f"network:{name}")

    def after_boot(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        checks = []
        planned = out.after.get(self.namespace, {})
        for op in ctx.operations_of(self.name):
            if op["state"] == "present" and not op["autostart"] and planned.get(f"{op['name']}.present"):
                out.errors.append(f"network {op['name']} is not autostarted and would be inactive after the "
                                  "reboot; autostart it or do not reboot in this change")
            elif op["state"] == "present" and planned.get(f"{op['name']}.present"):
                checks.append(f"network {op['name']} active")
        for network in ctx.networks:
            if network.managed and network.autostart and f"{network.name}.present" not in planned:
                out.after.setdefault(self.namespace, {})[f"{network.name}.active"] = True
                checks.append(f"network {network.name} active")
        return checks

    # -- execution ------------------------------------------------------------------------
    def intents(self, action: dict, current: dict) -> list[IntentValue]:
        args = action["step"]["args"]
        if args["state"] == "absent":
            return [IntentValue(args["name"], None, "")]
        value = {"pf": args["pf"], "autostart": args["autostart"]}
        words = f"libvirt VF pool {args['name']} over {args['pf']}" + (", autostarted" if args["autostart"] else "")
        return [IntentValue(args["name"], value, words)]

    # -- verification and drift -------------------------------------------------------------
    def observe(self, inventory: dict, keys) -> dict:
        seen = {}
        for key in keys:
            name, _dot, field = key.rpartition(".")
            network = _network(inventory, name)
            if field == "present":
                seen[key] = network is not None
            elif network is None:
                seen[key] = None
            elif field == "pf":
                pfs = network.get("pfs") or []
                seen[key] = pfs[0] if len(pfs) == 1 else (pfs or None)
            else:
                seen[key] = network.get(field)
        return seen

    def difference(self, key: str, want, got, word: str, names: dict) -> str:
        name, _dot, field = key.rpartition(".")
        if field == "present":
            return f"libvirt network {name}: {word} {'defined' if want else 'no such network'}, the host " \
                   f"{'has it' if got else 'has none'}"
        if got is None:
            return f"libvirt network {name}: {word} {field} {want}, the host has no such network"
        return f"libvirt network {name}: {word} {field} {want}, the host has {got}"

    def drift(self, host, nics: list, intents: list) -> list[str]:
        networks = getattr(host, "observed_networks", None)
        if networks is None:
            networks = list(host.libvirt_networks.all())
        by_name = {n.name: n for n in networks}
        reasons = []
        for intent in sorted((i for i in intents if i.operation == self.name), key=lambda i: i.subject):
            want = intent.value or {}
            network = by_name.get(intent.subject)
            if network is None:
                reasons.append(f"The libvirt network {intent.subject}, which the console defined over "
                               f"{want.get('pf')}, is no longer defined on the host.")
                continue
            wrong = []
            if network.active is False:
                wrong.append("it is not active")
            if network.autostart is not None and network.autostart != want.get("autostart"):
                wrong.append("autostart is " + ("on" if network.autostart else "off"))
            if want.get("pf") and network.pfs != [want["pf"]]:
                wrong.append(f"it hands out VFs of {', '.join(network.pfs) or 'no PF'}, not {want['pf']}")
            if wrong:
                reasons.append(f"The libvirt network {intent.subject} differs from what the console applied: "
                               + "; ".join(wrong) + ".")
        return reasons

    # -- the wizard -----------------------------------------------------------------------
    def from_form(self, cleaned: dict) -> dict | None:
        name = (cleaned.get("name") or "").strip()
        if not name:
            return None
        return {"op": self.name, "name": name, "pf": (cleaned.get("pf") or "").strip() or None,
                "state": cleaned.get("state") or "present", "autostart": bool(cleaned.get("autostart"))}

    def to_form(self, op: dict) -> dict:
        return {"name": op["name"], "pf": op.get("pf") or "", "state": op["state"], "autostart": op["autostart"]}
