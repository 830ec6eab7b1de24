"""The plan: per host, observed before, expected after, ordered actions, errors and warnings.

Computed from the console's inventory (the database) — never from the live host — so that it is
cheap, repeatable and the same for the requester and the approvers. The live host is compared with
the plan's "before" at execution time (the drift check). The plan hash (sha256 over canonical JSON
of host ids, before, after and machine steps) is what approvals bind to.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from hosts.intents import intents_of
from hosts.models import Hypervisor, LibvirtNetwork, Nic, VirtualFunction

from .operations import HostPlan, PlanContext, all_operations, get, in_phase_order

# Nic columns planning never reads (fewer bytes and less model work on big fleets).
NIC_DEFERRED = ("vendor_name", "device_name", "driver_version", "firmware", "mac", "operstate", "speed",
                "first_seen_at", "last_seen_at", "gone_at")

HOST_STATUS_ERRORS = {
    Hypervisor.Status.UNKNOWN: "never discovered: run discovery on this host first",
    Hypervisor.Status.UNREACHABLE: "host unreachable at the last contact",
    Hypervisor.Status.AUTH_FAILED: "SSH authentication failed at the last contact",
    Hypervisor.Status.HOST_KEY_PENDING: "host key not trusted: a new key is pending acceptance",
    Hypervisor.Status.HOST_KEY_MISMATCH: "host key mismatch: the host presented a different key",
    Hypervisor.Status.ERROR: "the agent failed at the last discovery",
}


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(data) -> str:
    return hashlib.sha256(canonical(data).encode()).hexdigest()


@dataclass
class PlannedHost:
    host: Hypervisor
    plan: HostPlan
    order: int

    @property
    def hash_material(self) -> dict:
        return {
            "host": self.host.pk,
            "before": self.plan.before,
            "after": self.plan.after,
            "steps": [a["step"] for a in self.plan.actions if a.get("step")],
        }

    @property
    def item_hash(self) -> str:
        return sha256(self.hash_material)


@dataclass
class Plan:
    hosts: list
    errors: list  # change-level errors (targets / operations)

    @property
    def blocked(self) -> bool:
        return bool(self.errors) or any(p.plan.errors for p in self.hosts)

    @property
    def hash(self) -> str:
        return sha256([p.hash_material for p in self.hosts])

    @property
    def hosts_rows(self) -> list[dict]:
        return [
            {"host": p.host, "actions": p.plan.actions, "errors": p.plan.errors, "warnings": p.plan.warnings}
            for p in self.hosts
        ]

    @property
    def counts(self) -> dict:
        return {
            "hosts": len(self.hosts),
            "errors": len(self.errors) + sum(len(p.plan.errors) for p in self.hosts),
            "warnings": sum(len(p.plan.warnings) for p in self.hosts),
            "writes": sum(1 for p in self.hosts for a in p.plan.actions if a.get("step")),
        }


def host_errors(host: Hypervisor) -> list[str]:
    errors = []
    if host.status in HOST_STATUS_ERRORS:
        why = HOST_STATUS_ERRORS[host.status]
        if host.status_reason:
            why += f" ({host.status_reason})"
        errors.append(why)
    elif not host.host_key:
        errors.append("host key not trusted: no key is pinned for this host")
    if host.credential_id is None:
        errors.append("no SSH credential is assigned to this host")
    return errors


def compute_plan(change, hosts: list[Hypervisor], now=None) -> Plan:
    """Plan `change.operations` (already validated) for `hosts`. A constant number of queries."""
    now = now or timezone.now()
    max_age = timedelta(seconds=getattr(settings, "PLAN_INVENTORY_MAX_AGE", 3600))
    host_ids = [h.pk for h in hosts]
    nics_by_host: dict[int, list[Nic]] = {}
    nics = Nic.objects.filter(host_id__in=host_ids, present=True).defer(*NIC_DEFERRED)
    for nic in nics.order_by("host_id", "pci_address"):
        nics_by_host.setdefault(nic.host_id, []).append(nic)
    # Only VFs that a guest uses matter to planning (the guest-impact check): the others are not loaded.
    vfs_by_nic: dict[int, list[VirtualFunction]] = {}
    held = VirtualFunction.objects.filter(nic__host_id__in=host_ids, present=True).exclude(guest="")
    for vf in held.only("nic_id", "index", "guest").order_by("nic_id", "index"):
        vfs_by_nic.setdefault(vf.nic_id, []).append(vf)

    all_vfs, networks = extra_inventory(change.operations, host_ids)
    intents = intents_of(host_ids)
    ordered = in_phase_order(change.operations)
    planned = []
    for order, host in enumerate(hosts):
        out = HostPlan()
        out.errors.extend(host_errors(host))
        out.warnings.extend(inventory_age_warnings(host, now, max_age, out))
        ctx = PlanContext(
            host=host,
            nics=nics_by_host.get(host.pk, []),
            vfs_by_nic=vfs_by_nic,
            intents={(i.operation, i.subject): i.value for i in intents.get(host.pk, [])},
            change=change,
            all_vfs=all_vfs,
            networks=networks.get(host.pk, []),
        )
        # Per host, whatever the order they were given in, by phase (kernel args → VF counts →
        # reboot: the reboot decides from what the others planned). Numbers stay the requester's.
        for number, op in ordered:
            ctx.number = number
            get(op["op"]).plan(op, ctx, out)
        for operation in all_operations():
            operation.after_plan(ctx, out)
        if not out.errors and not any(a.get("step") for a in out.actions):
            out.warnings.append("nothing to change on this host")
        planned.append(PlannedHost(host=host, plan=out, order=order))
    return Plan(hosts=planned, errors=[])


def extra_inventory(operations: list[dict], host_ids: list[int]) -> tuple[dict, dict]:
    """What the operations ask for besides NICs (Operation.needs): every present VF by NIC id,
    libvirt networks by host id. One query each, only when asked for."""
    needs = set().union(*(operation.needs(operations) for operation in all_operations()))
    all_vfs: dict[int, list[VirtualFunction]] = {}
    networks: dict[int, list[LibvirtNetwork]] = {}
    if "vfs" in needs:
        for vf in VirtualFunction.objects.filter(nic__host_id__in=host_ids, present=True).order_by("nic_id", "index"):
            all_vfs.setdefault(vf.nic_id, []).append(vf)
    if "libvirt_networks" in needs:
        for network in LibvirtNetwork.objects.filter(host_id__in=host_ids).order_by("host_id", "name"):
            networks.setdefault(network.host_id, []).append(network)
    return all_vfs, networks


def inventory_age_warnings(host: Hypervisor, now, max_age, out: HostPlan) -> list[str]:
    if host.facts_refreshed_at is None:
        if host.status != Hypervisor.Status.UNKNOWN:
            out.errors.append("no inventory yet: run discovery on this host first")
        return []
    if now - host.facts_refreshed_at > max_age:
        age = int((now - host.facts_refreshed_at).total_seconds() // 60)
        return [f"inventory is {age} minutes old; refresh it for an exact plan"]
    return []
