"""Discovery: run the agent's `inventory` on hypervisors and record what it saw.

    discover_hosts(hosts, *, actor=None) -> list[DiscoveryOutcome]
    apply_result(host_id, result, *, actor=None, target_key=None, started_at=None) -> DiscoveryOutcome
    compute_drift(host, nics=None) -> list[str]            # pure: reasons, empty when in line
    update_drift(host, *, actor=None, nics=None) -> bool   # sets drifted/drift_reasons, audits transitions

How it works: the SSH calls for all hosts run first, concurrently (remote.run_many_sync, at most
settings.DISCOVERY_CONCURRENCY at once, no database transaction open); then each host's result is
written in its own transaction with the host row locked (select_for_update), so one host's bad data
never loses another host's facts and a concurrent change executor never interleaves with it.

Observed facts only: discovery never writes the console's intent (Intent rows, written by the change
executor); drift is the difference (hosts/intents.py).

A failed discovery keeps the facts of the last good one and says why in `status_reason`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import remote
from audit.services import record
from metrics.instruments import observe_discovery

from .intents import drift_reasons
from .models import Hypervisor, Nic, VirtualFunction

logger = logging.getLogger("hosts.discovery")

Status = Hypervisor.Status

# Audit actor name when discovery runs on its own (Celery beat) rather than for a user.
SYSTEM_ACTOR = "worker"

# A few PCI ids worth naming in the UI (the agent reports ids only; pci.ids is not on every host).
PCI_VENDORS = {"8086": "Intel", "14e4": "Broadcom", "15b3": "Mellanox", "10de": "NVIDIA", "1077": "QLogic"}
PCI_DEVICES = {
    ("8086", "1521"): "I350 Gigabit Network Connection",
    ("8086", "1520"): "I350 Ethernet Controller Virtual Function",
    ("8086", "1572"): "Ethernet Controller X710 for 10GbE SFP+",
    ("8086", "154c"): "Ethernet Virtual Function 700 Series",
    ("8086", "10fb"): "82599ES 10-Gigabit SFI/SFP+ Network Connection",
    ("8086", "1528"): "Ethernet Controller 10-Gigabit X540-AT2",
    ("8086", "159b"): "Ethernet Controller E810-XXV for SFP",
    ("14e4", "1657"): "NetXtreme BCM5719 Gigabit Ethernet PCIe",
    ("15b3", "1017"): "MT27800 Family [ConnectX-5]",
    ("15b3", "1018"): "MT27800 Family [ConnectX-5 Virtual Function]",
    ("15b3", "1015"): "MT27710 Family [ConnectX-4 Lx]",
    ("15b3", "101b"): "MT28908 Family [ConnectX-6]",
}

# remote.AgentResult.kind → the host status it leads to.
FAILURE_STATUS = {
    "unreachable": Status.UNREACHABLE,
    "timeout": Status.UNREACHABLE,
    "auth_failed": Status.AUTH_FAILED,
    "sudo_failed": Status.AUTH_FAILED,
    "new_host_key": Status.HOST_KEY_PENDING,
    "host_key_mismatch": Status.HOST_KEY_MISMATCH,
    "agent_error": Status.ERROR,
    "malformed_response": Status.ERROR,
    "no_python": Status.ERROR,
}

# Observed facts whose change is worth a `host.state_changed` event (besides per-NIC VF counts).
WATCHED_FACTS = ("kernel", "boot_id", "cmdline", "iommu_active")


@dataclass
class DiscoveryOutcome:
    host_id: int
    name: str
    kind: str  # remote kind ("ok", "unreachable", ...), or "no_credential" / "superseded" / "gone"
    status: str  # the host's status afterwards ("" when the host was deleted meanwhile)
    message: str

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


# ---------------------------------------------------------------------------------------------
# Targets and the fan-out
# ---------------------------------------------------------------------------------------------


def build_target(host: Hypervisor) -> remote.HostTarget:
    """The SSH target for a host. The only place a credential's private key is decrypted."""
    return remote.HostTarget(
        name=host.name,
        address=host.address,
        port=host.port,
        username=host.username,
        private_key=host.credential.get_private_key(),
        known_host_key=host.host_key or None,
        accept_new_host_key=settings.HOST_KEY_TOFU,
        connect_timeout=settings.SSH_CONNECT_TIMEOUT,
        op_timeout=settings.SSH_OPERATION_TIMEOUT,
    )


def discover_hosts(hosts, *, actor=None) -> list[DiscoveryOutcome]:
    """Run `inventory` on every host (instances or a queryset) and record each result.

    actor: the user who asked (refresh button) or None for the periodic discovery. Permission is
    checked by the caller (the task / request_discovery); this function only does the work.
    Returns one DiscoveryOutcome per host, in input order.
    """
    hosts = list(hosts.select_related("credential") if hasattr(hosts, "select_related") else hosts)
    started_at = timezone.now()
    outcomes: dict[int, DiscoveryOutcome] = {}
    jobs, job_hosts = [], []
    for host in hosts:
        if host.credential_id is None:
            outcomes[host.pk] = _record_no_credential(host.pk, actor=actor, started_at=started_at)
            continue
        jobs.append((build_target(host), "inventory", {}))
        job_hosts.append(host)
    results = remote.run_many_sync(jobs, concurrency=settings.DISCOVERY_CONCURRENCY) if jobs else []
    for host, (target, _op, _args), result in zip(job_hosts, jobs, results, strict=True):
        observe_discovery(result)
        try:
            outcomes[host.pk] = apply_result(
                host.pk, result, actor=actor, target_key=target.known_host_key or "", started_at=started_at
            )
        except Exception:  # one host's unexpected data must not lose the others' results
            logger.exception("discovery: recording the result for %s failed", host.name)
            outcomes[host.pk] = DiscoveryOutcome(
                host.pk, host.name, "error", "", "recording the result failed"
            )
    return [outcomes[host.pk] for host in hosts]


def _actor_kwargs(actor) -> dict:
    return {"actor": actor} if actor is not None else {"actor_name": SYSTEM_ACTOR}


def _locked(host_id) -> Hypervisor | None:
    return Hypervisor.objects.select_for_update().filter(pk=host_id).first()


def _clear_request(host: Hypervisor, started_at) -> None:
    if host.discovery_requested_at and (started_at is None or host.discovery_requested_at <= started_at):
        host.discovery_requested_at = None


def _record_no_credential(host_id, *, actor, started_at) -> DiscoveryOutcome:
    with transaction.atomic():
        host = _locked(host_id)
        if host is None:
            return DiscoveryOutcome(host_id, "", "gone", "", "the host was deleted")
        now = timezone.now()
        message = "No SSH credential is assigned to this host; assign one, then refresh."
        host.status = Status.ERROR
        host.status_reason = message
        host.last_discovery_at = now
        host.last_discovery_ok = False
        host.last_discovery_message = message
        _clear_request(host, started_at)
        host.save()
        record(
            "host.discovery_failed",
            obj=host,
            host=host,
            data={"kind": "no_credential", "message": message},
            **_actor_kwargs(actor),
        )
        return DiscoveryOutcome(host.pk, host.name, "no_credential", host.status, message)


# ---------------------------------------------------------------------------------------------
# Recording one result
# ---------------------------------------------------------------------------------------------


def apply_result(host_id, result, *, actor=None, target_key=None, started_at=None) -> DiscoveryOutcome:
    """Record one remote.AgentResult of `inventory` for a host, in one transaction, row locked.

    target_key: the pinned key the SSH call was made with; when the pin changed meanwhile (an admin
    accepted or replaced it) the result is stale for key purposes and is not recorded.
    """
    with transaction.atomic():
        host = _locked(host_id)
        if host is None:
            return DiscoveryOutcome(host_id, result.host, "gone", "", "the host was deleted during discovery")
        if target_key is not None and (host.host_key or "") != target_key:
            return DiscoveryOutcome(
                host.pk,
                host.name,
                "superseded",
                host.status,
                "the pinned host key changed during discovery; the result was discarded",
            )
        now = timezone.now()
        kwargs = _actor_kwargs(actor)
        host.last_discovery_at = now
        _clear_request(host, started_at)

        if result.host_key_was_unknown and result.host_key and not host.host_key:
            _pin_tofu(host, result, now, kwargs)

        previous = (host.status, host.status_reason)
        if result.kind == "ok":
            _apply_inventory(host, result, now, kwargs)
        else:
            _apply_failure(host, result, now, kwargs)
        if _worth_an_event(actor, previous, host):
            _record_outcome(host, result, kwargs)
        return DiscoveryOutcome(host.pk, host.name, result.kind, host.status, host.status_reason)


def _pin_tofu(host, result, now, kwargs) -> None:
    """Trust on first use: the key the host presented is pinned without an admin (audited)."""
    fingerprint = result.host_key_fingerprint or remote.fingerprint(result.host_key)
    if host.pending_host_key_fingerprint != fingerprint:
        record(
            "host.key_first_seen",
            obj=host,
            host=host,
            data={"fingerprint": fingerprint, "host_key": result.host_key},
            **kwargs,
        )
    host.host_key = result.host_key
    host.host_key_fingerprint = fingerprint
    host.host_key_first_seen = host.host_key_first_seen or now
    host.host_key_accepted_at = now
    host.host_key_accepted_by = None
    host.pending_host_key = ""
    host.pending_host_key_fingerprint = ""
    host.pending_host_key_seen_at = None
    record(
        "host.key_accepted", obj=host, host=host, data={"fingerprint": fingerprint, "tofu": True}, **kwargs
    )


def _failure_reason(host: Hypervisor, result) -> str:
    """A sentence an operator can act on."""
    kind, message = result.kind, (result.message or "").strip()
    where = f"{host.address}:{host.port}"
    user = host.username
    cred = host.credential.name if host.credential_id else "?"
    if kind == "unreachable":
        text = (
            f"Cannot reach {where} over SSH ({message}). "
            f"Check that the host is up and port {host.port} is open."
        )
    elif kind == "timeout":
        text = f"No answer from {where} in time ({message}). The host or the network may be overloaded."
    elif kind == "auth_failed":
        text = (
            f"The SSH server on {where} rejected user {user!r} with the key of credential {cred!r}. "
            f"Install the credential's public key in ~{user}/.ssh/authorized_keys on the host."
        )
    elif kind == "sudo_failed":
        text = (
            f"Logged in as {user!r} but could not become root ({message}). "
            "Allow passwordless sudo for python3."
        )
    elif kind == "new_host_key":
        text = (
            f"The host presented an SSH host key the console has not seen before "
            f"({result.host_key_fingerprint}). An admin must compare and accept it before anything runs."
        )
    elif kind == "host_key_mismatch":
        expected = result.details.get("expected_fingerprint") or host.host_key_fingerprint
        text = (
            f"The host's SSH key changed: the pinned key is {expected}, the host presented "
            f"{result.host_key_fingerprint}. Nothing runs on this host until an admin checks why "
            f"(reinstall, or someone in the middle) and accepts the new key."
        )
    elif kind == "no_python":
        text = f"python3 is not available on the host ({message}). The agent needs python3 (3.6 or later)."
    elif kind == "malformed_response":
        text = f"The agent's answer could not be read ({message})."
    elif kind == "agent_error":
        text = f"The agent reported an error: {message}"
    else:
        text = message or kind
    return text


def _worth_an_event(actor, previous, host) -> bool:
    """Periodic discoveries that find nothing new leave no audit event (the host row keeps the time
    of the last one); a user's refresh, the first discovery or a change of status or reason does."""
    first = previous[0] == Hypervisor.Status.UNKNOWN
    return actor is not None or first or previous != (host.status, host.status_reason)


def _record_outcome(host, result, kwargs) -> None:
    if result.kind != "ok":
        data = {
            "kind": result.kind,
            "status": host.status,
            "message": result.message,
            "error_code": result.error_code,
            "duration": round(result.duration or 0.0, 3),
        }
        record("host.discovery_failed", obj=host, host=host, data=data, **kwargs)
        return
    present = [n for n in host.nics.all() if n.present]
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
    record("host.discovered", obj=host, host=host, data=data, **kwargs)


def _apply_failure(host, result, now, kwargs) -> None:
    kind = result.kind
    reason = _failure_reason(host, result)
    if host.facts_refreshed_at:
        reason += f" Facts shown are from {host.facts_refreshed_at:%Y-%m-%d %H:%M} UTC."

    if kind == "new_host_key":
        fingerprint = result.host_key_fingerprint or (
            remote.fingerprint(result.host_key) if result.host_key else ""
        )
        if fingerprint and fingerprint != host.pending_host_key_fingerprint:
            record(
                "host.key_first_seen",
                obj=host,
                host=host,
                data={"fingerprint": fingerprint, "host_key": result.host_key},
                **kwargs,
            )
            host.pending_host_key_seen_at = now
            host.host_key_first_seen = host.host_key_first_seen or now
        host.pending_host_key = result.host_key or ""
        host.pending_host_key_fingerprint = fingerprint
    elif kind == "host_key_mismatch":
        # Never touch the pinned key: keep what was presented aside for an admin to inspect.
        presented = result.host_key_fingerprint or ""
        if presented and (
            presented != host.pending_host_key_fingerprint or host.status != Status.HOST_KEY_MISMATCH
        ):
            record(
                "host.key_mismatch",
                obj=host,
                host=host,
                data={
                    "expected_fingerprint": result.details.get("expected_fingerprint")
                    or host.host_key_fingerprint,
                    "presented_fingerprint": presented,
                    "presented_host_key": result.host_key,
                },
                **kwargs,
            )
        if presented != host.pending_host_key_fingerprint:
            host.pending_host_key_seen_at = now
        host.pending_host_key = result.host_key or ""
        host.pending_host_key_fingerprint = presented

    host.status = FAILURE_STATUS.get(kind, Status.ERROR)
    host.status_reason = reason
    host.last_discovery_ok = False
    host.last_discovery_message = (result.message or kind)[:2000]
    host.save()


def _text(value, field_name, model=Hypervisor) -> str:
    """None → '' and cut to the column's length (agent data is not trusted to fit)."""
    if value is None:
        return ""
    text = str(value).strip()
    max_length = model._meta.get_field(field_name).max_length
    return text[:max_length] if max_length else text


def _int(value):
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _facts_snapshot(host) -> dict:
    return {name: getattr(host, name) for name in WATCHED_FACTS}


def _apply_inventory(host, result, now, kwargs) -> None:
    inv = result.result or {}
    first = host.facts_refreshed_at is None
    before = _facts_snapshot(host)

    os_info = inv.get("os") or {}
    grub = inv.get("grub") or {}
    iommu = inv.get("iommu") or {}
    host.hostname = _text(inv.get("hostname"), "hostname")
    host.machine_id = _text(inv.get("machine_id"), "machine_id")
    host.boot_id = _text(inv.get("boot_id"), "boot_id")
    host.kernel = _text(inv.get("kernel_release"), "kernel")
    host.os_id = _text(os_info.get("id"), "os_id")
    host.os_version = _text(os_info.get("version_id"), "os_version")
    host.os_name = _text(os_info.get("pretty_name"), "os_name")
    host.cpu_vendor = _text(inv.get("cpu_vendor"), "cpu_vendor")
    host.cmdline = _text(inv.get("cmdline"), "cmdline")
    host.grub_cmdline_linux = _text(grub.get("cmdline_linux"), "grub_cmdline_linux")
    host.grub_cmdline_default = _text(grub.get("cmdline_linux_default"), "grub_cmdline_default")
    host.grub_file = _text(
        grub.get("cmdline_linux_default_source") or (grub.get("files") or [""])[-1], "grub_file"
    )
    host.grub_tool = _text(inv.get("grub_tool"), "grub_tool")
    host.iommu_active = iommu.get("active") if isinstance(iommu.get("active"), bool) else None
    guests = inv.get("guests")
    if isinstance(guests, list):  # None: virsh failed, keep what we knew
        host.running_guests = [
            {"name": str(g.get("name", "")), "hostdev_pci": list(g.get("hostdev_pci") or [])}
            for g in guests
            if isinstance(g, dict)
        ]
    host.facts_refreshed_at = now
    host.last_contact_at = now
    host.status = Status.REACHABLE
    host.status_reason = ""
    if inv.get("guests_error"):
        host.status_reason = f"Running guests unknown: {inv['guests_error']}"
    host.last_discovery_ok = True
    host.last_discovery_message = "ok"
    if host.pending_host_key and result.host_key and result.host_key_fingerprint == host.host_key_fingerprint:
        # The host presents the pinned key again: a pending key from a mismatch is stale.
        host.pending_host_key = ""
        host.pending_host_key_fingerprint = ""
        host.pending_host_key_seen_at = None
    host.save()

    nic_changes = _apply_nics(host, inv.get("nics") or [], now, kwargs, first)

    after = _facts_snapshot(host)
    changed = {k for k in WATCHED_FACTS if before[k] != after[k]}
    if not first and (changed or nic_changes):
        data = {
            "before": {k: before[k] for k in sorted(changed)},
            "after": {k: after[k] for k in sorted(changed)},
        }
        if nic_changes:
            data["before"]["sriov_numvfs"] = {name: b for name, (b, _a) in nic_changes.items()}
            data["after"]["sriov_numvfs"] = {name: a for name, (_b, a) in nic_changes.items()}
        if "boot_id" in changed:
            data["rebooted"] = True
        record("host.state_changed", obj=host, host=host, data=data, **kwargs)

    nics = list(host.nics.all())
    update_drift(host, nics=nics, **({"actor": kwargs["actor"]} if "actor" in kwargs else {}))


def _apply_nics(host, reported, now, kwargs, first) -> dict[str, tuple]:
    """Upsert physical functions by PCI address and their VFs by index; returns VF-count changes."""
    existing = {nic.pci_address: nic for nic in host.nics.prefetch_related("vfs")}
    seen = set()
    numvfs_changes = {}
    for item in reported:
        if not isinstance(item, dict) or item.get("is_vf") or not item.get("pci_address"):
            continue  # VF netdevs are recorded under their PF
        pci = _text(item["pci_address"], "pci_address", Nic)
        if pci in seen:
            continue
        seen.add(pci)
        nic = existing.get(pci)
        is_new = nic is None
        came_back = nic is not None and not nic.present
        if is_new:
            nic = Nic(host=host, pci_address=pci)
        old_numvfs = None if is_new else nic.sriov_numvfs
        vendor_id = _text(item.get("vendor_id"), "vendor_id", Nic).lower()
        device_id = _text(item.get("device_id"), "device_id", Nic).lower()
        capable = bool(item.get("sriov_capable"))
        nic.name = _text(item.get("name"), "name", Nic)
        nic.vendor_id = vendor_id
        nic.device_id = device_id
        nic.vendor_name = PCI_VENDORS.get(vendor_id, nic.vendor_name or "")
        nic.device_name = PCI_DEVICES.get((vendor_id, device_id), nic.device_name or "")
        nic.driver = _text(item.get("driver"), "driver", Nic)
        nic.driver_version = _text(item.get("driver_version"), "driver_version", Nic)
        nic.firmware = _text(item.get("firmware_version"), "firmware", Nic)
        nic.mac = _text(item.get("mac"), "mac", Nic)
        nic.operstate = _text(item.get("operstate"), "operstate", Nic)
        nic.speed = _int(item.get("speed"))
        nic.mtu = _int(item.get("mtu"))
        nic.sriov_totalvfs = _int(item.get("sriov_totalvfs")) if capable else None
        nic.sriov_numvfs = _int(item.get("sriov_numvfs")) if capable else None
        nic.persisted = bool(item.get("managed"))
        nic.persisted_numvfs = _int(item.get("persisted_count"))
        nic.present = True
        nic.gone_at = None
        nic.last_seen_at = now
        nic.save()
        _apply_vfs(nic, item.get("vfs") or [], now)
        if not is_new and old_numvfs != nic.sriov_numvfs:
            numvfs_changes[nic.name] = (old_numvfs, nic.sriov_numvfs)
        if (is_new and not first) or came_back:
            record(
                "nic.appeared",
                obj=nic,
                host=host,
                data={
                    "name": nic.name,
                    "pci_address": pci,
                    "driver": nic.driver,
                    "returned": came_back,
                    "sriov_totalvfs": nic.sriov_totalvfs,
                },
                **kwargs,
            )
    for pci, nic in existing.items():
        if pci in seen or not nic.present:
            continue
        nic.present = False
        nic.gone_at = now
        nic.save(update_fields=["present", "gone_at"])
        nic.vfs.filter(present=True).update(present=False, gone_at=now)
        record(
            "nic.gone",
            obj=nic,
            host=host,
            data={
                "name": nic.name,
                "pci_address": pci,
                "driver": nic.driver,
                "last_seen_at": _iso(nic.last_seen_at),
            },
            **kwargs,
        )
    return numvfs_changes


def _apply_vfs(nic, reported, now) -> None:
    existing = {vf.index: vf for vf in nic.vfs.all()}
    seen = set()
    for item in reported:
        index = _int(item.get("index")) if isinstance(item, dict) else None
        if index is None or index < 0 or index in seen:
            continue
        seen.add(index)
        vf = existing.get(index) or VirtualFunction(nic=nic, index=index)
        vf.pci_address = _text(item.get("pci_address"), "pci_address", VirtualFunction)
        vf.netdev = _text(item.get("netdev"), "netdev", VirtualFunction)
        vf.mac = _text(item.get("mac"), "mac", VirtualFunction)
        vf.driver = _text(item.get("driver"), "driver", VirtualFunction)
        vf.guest = _text(", ".join(item.get("used_by") or []), "guest", VirtualFunction)
        vf.present = True
        vf.gone_at = None
        vf.last_seen_at = now
        vf.save()
    gone = [vf.pk for index, vf in existing.items() if index not in seen and vf.present]
    if gone:
        VirtualFunction.objects.filter(pk__in=gone).update(present=False, gone_at=now)


def _iso(value):
    return value.isoformat() if value else None


# ---------------------------------------------------------------------------------------------
# Drift: observed state vs the intent the console applied
# ---------------------------------------------------------------------------------------------


def compute_drift(host: Hypervisor, nics=None, intents=None) -> list[str]:
    """Sentences describing where the observed state differs from what the console applied.

    Pure (no writes). nics / intents: the host's rows if already loaded. Used by discovery and by
    the change executor after it applies something. An undiscovered host has no drift. Each
    operation that applied something says how the host differs (hosts/intents.py).
    """
    if host.facts_refreshed_at is None:
        return []
    nics = list(host.nics.all()) if nics is None else nics
    intents = list(host.intents.all()) if intents is None else intents
    if not intents:
        return []
    return drift_reasons(host, nics, intents)


def update_drift(host: Hypervisor, *, actor=None, nics=None, intents=None) -> bool:
    """Recompute and store host.drifted/drift_reasons; audit detected/cleared on transitions.

    Call inside the caller's transaction with the host row locked. Returns the new `drifted`.
    `host.drift_detected` is recorded when drift appears or its reasons change, and
    `host.drift_cleared` when it goes away.
    """
    reasons = compute_drift(host, nics, intents)
    drifted = bool(reasons)
    was, old_reasons = host.drifted, list(host.drift_reasons or [])
    if drifted == was and reasons == old_reasons:
        return drifted
    host.drifted = drifted
    host.drift_reasons = reasons
    host.save(update_fields=["drifted", "drift_reasons", "updated_at"])
    kwargs = _actor_kwargs(actor)
    if drifted:
        record(
            "host.drift_detected",
            obj=host,
            host=host,
            data={"reasons": reasons, "previous_reasons": old_reasons},
            **kwargs,
        )
    else:
        record("host.drift_cleared", obj=host, host=host, data={"previous_reasons": old_reasons}, **kwargs)
    return drifted
