"""Recording discovery results, in bulk per chunk of hosts.

    record_results(items, *, actor=None, started_at=None) -> list[DiscoveryOutcome]

One transaction per chunk: the chunk's host rows are locked (select_for_update, in pk order) and
read with their NICs and VFs (3 queries), every result is compared in Python with what is stored,
and only what differs is written: one bulk INSERT/UPDATE per level (host, NIC, VF) whatever the
number of NICs and VFs, then drift (hosts.drift) and the audit events (one append). A repeat
discovery that finds nothing new writes only the host rows' discovery times.

A result whose pinned key changed meanwhile (an admin accepted or replaced it during the call) is
discarded, never half-applied. One host's unexpected data never loses the others' results: it is
reported as an error and left out; should the chunk's writes fail, each host is retried alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

import remote
from audit.services import record_many

from .. import drift
from ..models import Hypervisor, LibvirtNetwork, Nic, VirtualFunction
from .bulk import update_rows
from .facts import WATCHED_FACTS, apply_facts, nic_items, text
from .failures import FAILURE_STATUS, NO_CREDENTIAL, failure_reason
from .networks import plan_networks

logger = logging.getLogger("hosts.discovery")

Status = Hypervisor.Status

# Audit actor name when discovery runs on its own (Celery beat) rather than for a user.
SYSTEM_ACTOR = "worker"


@dataclass
class DiscoveryOutcome:
    host_id: int
    name: str
    kind: str  # remote kind ("ok", "unreachable", ...), or "no_credential" / "superseded" / "gone" / "error"
    status: str  # the host's status afterwards ("" when the host was deleted meanwhile)
    message: str

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


@dataclass
class Item:
    """One host's result to record. result None: the host has no credential (nothing was run).
    target_key: the pinned key the SSH call was made with (None: do not compare)."""

    host_id: int
    result: remote.AgentResult | None
    target_key: str | None = None


@dataclass
class Writes:
    """What one host (then the whole chunk) needs written; objects already carry the new values."""

    host_fields: set = field(default_factory=set)
    new_nics: list = field(default_factory=list)
    nics: dict = field(default_factory=dict)  # Nic → changed field names
    new_vfs: list = field(default_factory=list)
    vfs: dict = field(default_factory=dict)  # VirtualFunction → changed field names
    new_networks: list = field(default_factory=list)
    networks: dict = field(default_factory=dict)  # LibvirtNetwork → changed field names
    gone_networks: list = field(default_factory=list)  # pks
    events: list = field(default_factory=list)  # (action, obj, data), obj's pk read at append time

    def merge(self, other: Writes) -> None:
        self.new_nics += other.new_nics
        self.nics.update(other.nics)
        self.new_vfs += other.new_vfs
        self.vfs.update(other.vfs)
        self.new_networks += other.new_networks
        self.networks.update(other.networks)
        self.gone_networks += other.gone_networks


def record_results(items: list[Item], *, actor=None, started_at=None) -> list[DiscoveryOutcome]:
    """Record a chunk of results (see the module docstring); one outcome per item, in order."""
    try:
        with transaction.atomic():
            return _record_chunk(items, actor, started_at)
    except Exception:
        if len(items) == 1:
            raise
        logger.exception("discovery: writing a chunk of %d hosts failed; recording them one by one", len(items))
    return [_record_alone(item, actor, started_at) for item in items]


def _record_alone(item: Item, actor, started_at) -> DiscoveryOutcome:
    try:
        with transaction.atomic():
            return _record_chunk([item], actor, started_at)[0]
    except Exception:
        logger.exception("discovery: recording the result for host %s failed", item.host_id)
        return DiscoveryOutcome(item.host_id, "", "error", "", "recording the result failed")


@dataclass
class Rows:
    """The chunk's stored NICs per host and VFs per NIC (plain lists: no queryset per instance)."""

    nics: dict = field(default_factory=dict)  # host id → [Nic]
    vfs: dict = field(default_factory=dict)  # NIC id → [VirtualFunction]
    networks: dict = field(default_factory=dict)  # host id → [LibvirtNetwork]


def _locked(ids) -> tuple[dict[int, Hypervisor], Rows]:
    hosts = Hypervisor.objects.select_for_update(of=("self",)).select_related("credential")
    hosts = {host.pk: host for host in hosts.filter(pk__in=ids).order_by("pk")}
    rows = Rows({pk: [] for pk in hosts}, networks={pk: [] for pk in hosts})
    for network in LibvirtNetwork.objects.filter(host_id__in=list(hosts)).order_by() if hosts else []:
        rows.networks[network.host_id].append(network)
    nics = list(Nic.objects.filter(host_id__in=list(hosts)).order_by()) if hosts else []
    for nic in nics:
        nic.host = hosts[nic.host_id]  # str(nic) and seen_at without a query
        rows.nics[nic.host_id].append(nic)
        rows.vfs[nic.pk] = []
    if nics:
        by_id = {nic.pk: nic for nic in nics}
        for vf in VirtualFunction.objects.filter(nic__host_id__in=list(hosts)).order_by():
            vf.nic = by_id[vf.nic_id]
            rows.vfs[vf.nic_id].append(vf)
    return hosts, rows


def _record_chunk(items: list[Item], actor, started_at) -> list[DiscoveryOutcome]:
    hosts, rows = _locked([item.host_id for item in items])
    now = timezone.now()
    chunk = Writes()
    written, discovered, outcomes = [], [], []
    for item in items:
        host = hosts.get(item.host_id)
        if host is None:
            outcomes.append(DiscoveryOutcome(item.host_id, "", "gone", "", "the host was deleted during discovery"))
            continue
        if item.target_key is not None and (host.host_key or "") != item.target_key:
            outcomes.append(DiscoveryOutcome(
                host.pk, host.name, "superseded", host.status,
                "the pinned host key changed during discovery; the result was discarded",
            ))
            continue
        try:
            writes = Writes()
            kind = _plan_host(host, item.result, now, actor, started_at, rows, writes)
        except Exception:  # one host's unexpected data must not lose the others' results
            logger.exception("discovery: recording the result for %s failed", host.name)
            outcomes.append(DiscoveryOutcome(host.pk, host.name, "error", "", "recording the result failed"))
            continue
        chunk.merge(writes)
        chunk.host_fields |= writes.host_fields
        chunk.events += [(action, obj, host, data) for action, obj, data in writes.events]
        written.append(host)
        if kind == "ok":
            discovered.append(host)
        outcomes.append(DiscoveryOutcome(host.pk, host.name, kind, host.status, host.status_reason))
    _write(chunk, written)
    drift.update_drift(discovered, actor=actor, nics=rows.nics)
    _audit(chunk.events, actor)
    return outcomes


def _write(chunk: Writes, hosts: list[Hypervisor]) -> None:
    """Bulk writes, parents first so new children get their parent's id."""
    Nic.objects.bulk_create(chunk.new_nics)
    for vf in chunk.new_vfs:
        vf.nic = vf.nic  # the NIC may have got its id just now
    _bulk_update(Nic, list(chunk.nics), set().union(*chunk.nics.values()))
    VirtualFunction.objects.bulk_create(chunk.new_vfs)
    _bulk_update(VirtualFunction, list(chunk.vfs), set().union(*chunk.vfs.values()))
    if chunk.gone_networks:
        LibvirtNetwork.objects.filter(pk__in=chunk.gone_networks).delete()
    LibvirtNetwork.objects.bulk_create(chunk.new_networks)
    _bulk_update(LibvirtNetwork, list(chunk.networks), set().union(*chunk.networks.values()))
    _bulk_update(Hypervisor, hosts, chunk.host_fields)


def _bulk_update(model, objs, fields) -> None:
    """At most two statements: the fields every object has the same value for (discovery times,
    a status...) in one plain UPDATE, the others in one UPDATE … FROM VALUES (hosts/discovery/bulk.py)."""
    if not objs or not fields:
        return
    attnames = {name: model._meta.get_field(name).attname for name in fields}
    first = objs[0]
    common = {
        attname: getattr(first, attname)
        for attname in attnames.values()
        if all(getattr(obj, attname) == getattr(first, attname) for obj in objs)
    }
    if common:
        model.objects.filter(pk__in=[obj.pk for obj in objs]).update(**common)
    update_rows(model, objs, sorted(name for name, attname in attnames.items() if attname not in common))


def _audit(events, actor) -> None:
    who = {"actor": actor} if actor is not None else {"actor_name": SYSTEM_ACTOR}
    record_many([{"action": action, "obj": obj, "host": host, "data": data, **who}
                 for action, obj, host, data in events])


# ---------------------------------------------------------------------------------------------
# One host: compare, set what differs, collect writes and events
# ---------------------------------------------------------------------------------------------


def _set(obj, changed: set, **values) -> None:
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed.add(name)


def _plan_host(host, result, now, actor, started_at, rows: Rows, writes: Writes) -> str:
    """Returns the outcome kind; `host` and its NICs/VFs carry the new values afterwards."""
    previous = (host.status, host.status_reason)
    changed = writes.host_fields
    _set(host, changed, last_discovery_at=now)
    if host.discovery_requested_at and (started_at is None or host.discovery_requested_at <= started_at):
        _set(host, changed, discovery_requested_at=None)
    if result is None:
        _plan_no_credential(host, changed, writes)
        return "no_credential"
    if result.host_key_was_unknown and result.host_key and not host.host_key:
        _pin_tofu(host, result, now, writes)
    nics = rows.nics[host.pk]
    if result.kind == "ok":
        _plan_inventory(host, result, now, rows, writes)
    else:
        _plan_failure(host, result, now, writes)
    if actor is not None or previous[0] == Status.UNKNOWN or previous != (host.status, host.status_reason):
        # Periodic discoveries that find nothing new leave no audit event (the host row keeps the
        # time of the last one); a user's refresh, the first discovery or a new status/reason does.
        writes.events.append(_outcome_event(host, result, nics + writes.new_nics))
    return result.kind


def _plan_no_credential(host, changed, writes) -> None:
    _set(host, changed, status=Status.ERROR, status_reason=NO_CREDENTIAL, last_discovery_ok=False,
         last_discovery_message=NO_CREDENTIAL)
    writes.events.append(("host.discovery_failed", host, {"kind": "no_credential", "message": NO_CREDENTIAL}))


def _outcome_event(host, result, nics) -> tuple:
    if result.kind != "ok":
        data = {
            "kind": result.kind,
            "status": host.status,
            "message": result.message,
            "error_code": result.error_code,
            "duration": round(result.duration or 0.0, 3),
        }
        return ("host.discovery_failed", host, data)
    present = [nic for nic in nics if nic.present]
    data = {
        "kernel": host.kernel,
        "os": host.os_name,
        "iommu_active": host.iommu_active,
        "nics": len(present),
        "sriov_nics": sum(1 for n in present if n.sriov_capable),
        "vfs": sum(n.sriov_numvfs or 0 for n in present if n.sriov_capable),
        "tofu": bool(result.host_key_was_unknown),
        "duration": round(result.duration or 0.0, 3),
        "agent_sha256": result.agent_sha256,
    }
    return ("host.discovered", host, data)


def _pin_tofu(host, result, now, writes) -> None:
    """Trust on first use: the key the host presented is pinned without an admin (audited)."""
    fingerprint = result.host_key_fingerprint or remote.fingerprint(result.host_key)
    if host.pending_host_key_fingerprint != fingerprint:
        writes.events.append(
            ("host.key_first_seen", host, {"fingerprint": fingerprint, "host_key": result.host_key})
        )
    _set(host, writes.host_fields, host_key=result.host_key, host_key_fingerprint=fingerprint,
         host_key_first_seen=host.host_key_first_seen or now, host_key_accepted_at=now,
         host_key_accepted_by=None, pending_host_key="", pending_host_key_fingerprint="",
         pending_host_key_seen_at=None)
    writes.events.append(("host.key_accepted", host, {"fingerprint": fingerprint, "tofu": True}))


def _plan_failure(host, result, now, writes) -> None:
    kind = result.kind
    changed = writes.host_fields
    reason = failure_reason(host, result)
    if kind == "new_host_key":
        fingerprint = result.host_key_fingerprint or (
            remote.fingerprint(result.host_key) if result.host_key else ""
        )
        if fingerprint and fingerprint != host.pending_host_key_fingerprint:
            writes.events.append(
                ("host.key_first_seen", host, {"fingerprint": fingerprint, "host_key": result.host_key})
            )
            _set(host, changed, pending_host_key_seen_at=now, host_key_first_seen=host.host_key_first_seen or now)
        _set(host, changed, pending_host_key=result.host_key or "", pending_host_key_fingerprint=fingerprint)
    elif kind == "host_key_mismatch":
        _plan_mismatch(host, result, now, writes)
    _set(host, changed, status=FAILURE_STATUS.get(kind, Status.ERROR), status_reason=reason,
         last_discovery_ok=False, last_discovery_message=(result.message or kind)[:2000])


def _plan_mismatch(host, result, now, writes) -> None:
    # Never touch the pinned key: keep what was presented aside for an admin to inspect.
    presented = result.host_key_fingerprint or ""
    if presented and (presented != host.pending_host_key_fingerprint or host.status != Status.HOST_KEY_MISMATCH):
        data = {
            "expected_fingerprint": result.details.get("expected_fingerprint") or host.host_key_fingerprint,
            "presented_fingerprint": presented,
            "presented_host_key": result.host_key,
        }
        writes.events.append(("host.key_mismatch", host, data))
    if presented != host.pending_host_key_fingerprint:
        _set(host, writes.host_fields, pending_host_key_seen_at=now)
    _set(host, writes.host_fields, pending_host_key=result.host_key or "", pending_host_key_fingerprint=presented)


def _plan_inventory(host, result, now, rows, writes) -> None:
    inv = result.result or {}
    first = host.facts_refreshed_at is None
    seen_until = host.facts_refreshed_at  # the last discovery that saw what is present now
    before = {name: getattr(host, name) for name in WATCHED_FACTS}
    changed = writes.host_fields
    apply_facts(host, inv, changed)
    reason = "; ".join(f"{what} unknown: {inv[key]}" for what, key in (
        ("Running guests", "guests_error"), ("Guests that start at boot", "defined_guests_error")) if inv.get(key))
    _set(host, changed, facts_refreshed_at=now, last_contact_at=now, status=Status.REACHABLE,
         status_reason=reason, last_discovery_ok=True, last_discovery_message="ok")
    if host.pending_host_key and result.host_key and result.host_key_fingerprint == host.host_key_fingerprint:
        # The host presents the pinned key again: a pending key from a mismatch is stale.
        _set(host, changed, pending_host_key="", pending_host_key_fingerprint="", pending_host_key_seen_at=None)

    numvfs_changes = _plan_nics(host, nic_items(inv), now, seen_until, first, rows, writes)
    # What drift (the operations' drift()) reads of this host without a query of its own.
    host.observed_networks = plan_networks(host, inv, rows.networks[host.pk], writes)
    _set(host, changed, **_nic_figures(rows.nics[host.pk] + writes.new_nics))
    if changed - {"last_discovery_at", "facts_refreshed_at", "last_contact_at", "discovery_requested_at"}:
        _set(host, changed, updated_at=now)

    after = {name: getattr(host, name) for name in WATCHED_FACTS}
    facts = sorted(name for name in WATCHED_FACTS if before[name] != after[name])
    if not first and (facts or numvfs_changes):
        data = {"before": {k: before[k] for k in facts}, "after": {k: after[k] for k in facts}}
        if numvfs_changes:
            data["before"]["sriov_numvfs"] = {name: b for name, (b, _a) in numvfs_changes.items()}
            data["after"]["sriov_numvfs"] = {name: a for name, (_b, a) in numvfs_changes.items()}
        if "boot_id" in facts:
            data["rebooted"] = True
        writes.events.append(("host.state_changed", host, data))


def _nic_figures(nics) -> dict:
    """The per-host figures the host list shows and sorts on, kept on the host row."""
    sriov = [nic for nic in nics if nic.present and (nic.sriov_totalvfs or 0) > 0]
    return {
        "sriov_nics": len(sriov),
        "vfs_configured": sum(nic.sriov_numvfs or 0 for nic in sriov),
        "vfs_capacity": sum(nic.sriov_totalvfs for nic in sriov),
    }


def _plan_nics(host, reported, now, seen_until, first, rows, writes) -> dict[str, tuple]:
    """Physical functions by PCI address, their VFs by index; returns the VF-count changes."""
    existing = {nic.pci_address: nic for nic in rows.nics[host.pk]}
    seen = set()
    numvfs_changes = {}
    for item in reported:
        if not isinstance(item, dict) or item.get("is_vf") or not item.get("pci_address"):
            continue  # VF netdevs are recorded under their PF
        pci = text(Nic, "pci_address", item["pci_address"])
        if pci in seen:
            continue
        seen.add(pci)
        nic = existing.get(pci)
        is_new, came_back = nic is None, nic is not None and not nic.present
        old_numvfs = None if is_new else nic.sriov_numvfs
        nic = nic or Nic(host=host, pci_address=pci, last_seen_at=now)
        changed: set = set()
        apply_facts(nic, item, changed)
        _set(nic, changed, present=True, gone_at=None)
        if is_new:
            writes.new_nics.append(nic)
        elif changed:
            _set(nic, changed, last_seen_at=now)
            writes.nics[nic] = changed
        _plan_vfs(nic, item.get("vfs") or [], now, seen_until, [] if is_new else rows.vfs[nic.pk], writes)
        if not is_new and old_numvfs != nic.sriov_numvfs:
            numvfs_changes[nic.label] = (old_numvfs, nic.sriov_numvfs)
        if (is_new and not first) or came_back:
            data = {"name": nic.label, "pci_address": pci, "driver": nic.driver, "returned": came_back,
                    "sriov_totalvfs": nic.sriov_totalvfs}
            writes.events.append(("nic.appeared", nic, data))
    for pci, nic in existing.items():
        if pci not in seen and nic.present:
            _plan_gone_nic(nic, now, seen_until, rows.vfs[nic.pk], writes)
    return numvfs_changes


def _plan_gone_nic(nic, now, seen_until, vfs, writes) -> None:
    """Marked gone, never deleted (its history and the intent on it stay visible)."""
    changed = writes.nics.setdefault(nic, set())
    _set(nic, changed, present=False, gone_at=now, last_seen_at=seen_until or nic.last_seen_at)
    for vf in vfs:
        if vf.present:
            _set(vf, writes.vfs.setdefault(vf, set()), present=False, gone_at=now,
                 last_seen_at=seen_until or vf.last_seen_at)
    data = {"name": nic.label, "pci_address": nic.pci_address, "driver": nic.driver,
            "last_seen_at": nic.last_seen_at.isoformat() if nic.last_seen_at else None}
    writes.events.append(("nic.gone", nic, data))


def _plan_vfs(nic, reported, now, seen_until, stored, writes) -> None:
    existing = {vf.index: vf for vf in stored}
    seen = set()
    nic.observed_vfs = list(stored)  # what drift reads of this NIC's VFs without a query of its own
    for item in reported:
        index = _index(item)
        if index is None or index in seen:
            continue
        seen.add(index)
        vf = existing.get(index)
        is_new = vf is None
        vf = vf or VirtualFunction(nic=nic, index=index, last_seen_at=now)
        changed: set = set()
        apply_facts(vf, item, changed)
        _set(vf, changed, present=True, gone_at=None)
        if is_new:
            writes.new_vfs.append(vf)
            nic.observed_vfs.append(vf)
        elif changed:
            _set(vf, changed, last_seen_at=now)
            writes.vfs[vf] = changed
    for index, vf in existing.items():
        if index not in seen and vf.present:
            _set(vf, writes.vfs.setdefault(vf, set()), present=False, gone_at=now,
                 last_seen_at=seen_until or vf.last_seen_at)


def _index(item):
    if not isinstance(item, dict):
        return None
    try:
        index = int(item.get("index"))
    except (TypeError, ValueError):
        return None
    return index if index >= 0 else None
