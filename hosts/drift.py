"""Drift: where the observed state differs from the intent the console applied.

    update_drift(hosts, *, actor=None, nics=None) -> list[Hypervisor]

The intent is what the change executor recorded (Nic.managed_numvfs, Hypervisor.managed_kernel_args);
the observed state is what discovery stored. `update_drift` recomputes the reasons of a chunk of
hosts, stores `drifted` / `drift_reasons` of those whose reasons changed (one bulk UPDATE) and
audits the transitions (one append): `host.drift_detected` when drift appears or its reasons
change, `host.drift_cleared` when it goes away. Hosts whose drift did not change cost nothing.

Each host's NICs: `nics[host.pk]` when a mapping is given (discovery has them loaded already),
else `host.nics.all()` (prefetch them, or every host costs a query). Call inside the caller's
transaction with the host rows locked.
"""

from __future__ import annotations

from audit.services import record_many

from .models import Hypervisor

SYSTEM_ACTOR = "worker"


def update_drift(hosts, *, actor=None, nics=None) -> list[Hypervisor]:
    """Recompute, store and audit drift for `hosts`; returns the hosts whose drift changed."""
    changed = []
    for host in hosts:
        reasons = _reasons(host, nics[host.pk] if nics is not None else host.nics.all())
        old_reasons = list(host.drift_reasons or [])
        if bool(reasons) == host.drifted and reasons == old_reasons:
            continue
        host.drifted = bool(reasons)
        host.drift_reasons = reasons
        changed.append((host, old_reasons))
    if not changed:
        return []
    Hypervisor.objects.bulk_update([host for host, _old in changed], ["drifted", "drift_reasons"])
    who = {"actor": actor} if actor is not None else {"actor_name": SYSTEM_ACTOR}
    record_many([_event(host, old_reasons, who) for host, old_reasons in changed])
    return [host for host, _old in changed]


def _event(host, old_reasons, who) -> dict:
    if host.drifted:
        data = {"reasons": host.drift_reasons, "previous_reasons": old_reasons}
        return {"action": "host.drift_detected", "obj": host, "host": host, "data": data, **who}
    return {"action": "host.drift_cleared", "obj": host, "host": host, "data": {"previous_reasons": old_reasons},
            **who}


def _reasons(host: Hypervisor, nics) -> list[str]:
    """Sentences describing the differences, empty when in line. An undiscovered host has none."""
    if host.facts_refreshed_at is None:
        return []
    reasons = []
    for nic in sorted(nics, key=lambda n: n.pci_address):
        if nic.managed_numvfs is None:
            continue
        if not nic.present:
            reasons.append(
                f"{nic.name} ({nic.pci_address}) was configured by the console with {nic.managed_numvfs} VFs "
                f"but the host no longer reports it."
            )
        elif nic.sriov_numvfs != nic.managed_numvfs:
            observed = "no VF count" if nic.sriov_numvfs is None else f"{nic.sriov_numvfs} VFs"
            hint = " (the count did not survive a reboot?)" if nic.sriov_numvfs == 0 else ""
            reasons.append(
                f"{nic.name} ({nic.pci_address}) has {observed}; "
                f"the console applied {nic.managed_numvfs}{hint}."
            )
    wanted = [str(arg) for arg in (host.managed_kernel_args or [])]
    if wanted:
        tokens = set((host.cmdline or "").split())
        missing = [arg for arg in wanted if arg not in tokens]
        if missing:
            reasons.append(
                f"/proc/cmdline lacks {' '.join(missing)}, which the console applied to the boot "
                f"configuration (not rebooted yet, or the grub configuration was changed)."
            )
    return reasons
