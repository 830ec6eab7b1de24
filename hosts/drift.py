"""Drift: where the observed state differs from the intent the console applied.

    update_drift(hosts, *, actor=None, nics=None, intents=None) -> list[Hypervisor]

The intent is what the change executor recorded (Intent rows); the observed state is what discovery
stored; each operation words the difference (its drift source, hosts/intents.py). `update_drift`
recomputes the reasons of a chunk of hosts, stores `drifted` / `drift_reasons` of those whose
reasons changed (one bulk UPDATE) and audits the transitions (one append): `host.drift_detected`
when drift appears or its reasons change, `host.drift_cleared` when it goes away. Hosts whose drift
did not change cost nothing.

Each host's NICs: `nics[host.pk]` when a mapping is given (discovery has them loaded already),
else `host.nics.all()` (prefetch them, or every host costs a query); their intents are loaded in
one query. Call inside the caller's transaction with the host rows locked.
"""

from __future__ import annotations

from audit.services import record_many

from .intents import drift_reasons, intents_of
from .models import Hypervisor

SYSTEM_ACTOR = "worker"


def update_drift(hosts, *, actor=None, nics=None, intents=None) -> list[Hypervisor]:
    """Recompute, store and audit drift for `hosts`; returns the hosts whose drift changed.
    intents: {host id: [Intent]} when loaded already (else one query for all of them)."""
    hosts = list(hosts)
    intents = intents_of([h.pk for h in hosts]) if intents is None else intents
    changed = []
    for host in hosts:
        reasons = reasons_for(host, nics[host.pk] if nics is not None else host.nics.all(), intents.get(host.pk, []))
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


def reasons_for(host: Hypervisor, nics, intents) -> list[str]:
    """Sentences describing the differences, empty when in line. An undiscovered host, or one the
    console applied nothing to, has none."""
    if host.facts_refreshed_at is None or not intents:
        return []
    return drift_reasons(host, nics, intents)
