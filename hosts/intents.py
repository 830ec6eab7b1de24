"""What the console applied to hosts (Intent rows) and the drift of what is observed from it.

The hosts app stores intents and drift; it does not know what an intent means. The apps that
apply changes register a drift source at start-up (`register_drift_source`, from their
AppConfig.ready): a function `(host, nics, intents) -> [sentence, ...]` called after every
discovery and every change, so that each operation says in its own words how the host differs
from what it applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db import transaction
from django.utils import timezone

from .models import Hypervisor, Intent, Nic

DriftSource = Callable[[Hypervisor, list, list], list]
_sources: list[DriftSource] = []


def register_drift_source(source: DriftSource) -> None:
    if source not in _sources:
        _sources.append(source)


def drift_reasons(host: Hypervisor, nics: Iterable[Nic], intents: Iterable[Intent]) -> list[str]:
    """Every registered source's sentences for this host (empty when it is as intended)."""
    nics, intents = list(nics), list(intents)
    reasons: list[str] = []
    for source in _sources:
        reasons.extend(source(host, nics, intents))
    return reasons


def intents_of(host_ids: Iterable[int]) -> dict[int, list[Intent]]:
    """The intents of several hosts in one query."""
    out: dict[int, list[Intent]] = {}
    for intent in Intent.objects.filter(host_id__in=list(host_ids)).order_by("operation", "subject"):
        out.setdefault(intent.host_id, []).append(intent)
    return out


def record_intent(host_id: int, operation: str, subject: str, value, summary: str, change_id=None) -> None:
    """Store (or replace) one intent; `value=None` forgets it (the console no longer owns it)."""
    with transaction.atomic():
        if value is None:
            Intent.objects.filter(host_id=host_id, operation=operation, subject=subject).delete()
            return
        Intent.objects.update_or_create(
            host_id=host_id,
            operation=operation,
            subject=subject,
            defaults={"value": value, "summary": summary[:300], "change_id": change_id,
                      "applied_at": timezone.now()},
        )


def annotate_nics(host: Hypervisor, nics: Iterable[Nic], intents: Iterable[Intent] | None = None) -> None:
    """For the pages: each NIC gets `intents` (what the console applied to it, any operation) and
    `drift` (the host's drift sentences that name its PCI address: every drift source names the
    subject it is about)."""
    intents = list(host.intents.all()) if intents is None else list(intents)
    reasons = list(host.drift_reasons or [])
    for nic in nics:
        mine = [i for i in intents if i.subject.split("#")[0] == nic.pci_address]
        # One VF's intents (subject "<pci>#<index>") are shown with that VF (annotate_vfs).
        nic.vf_intents = [i for i in mine if i.subject.partition("#")[2].isdigit()]
        nic.intents = [i for i in mine if i not in nic.vf_intents]
        nic.drift = [r for r in reasons if nic.pci_address in r]


def annotate_vfs(nic: Nic, vfs: Iterable) -> None:
    """For the pages, after annotate_nics: each VF gets `intents` (what the console applied to that
    VF: subject ``<pf pci>#<index>``) and `drift` (the NIC's drift sentences that name it as
    ``(<pf pci>#<index>)``)."""
    intents = getattr(nic, "vf_intents", [])
    reasons = getattr(nic, "drift", [])
    for vf in vfs:
        subject = f"{nic.pci_address}#{vf.index}"
        vf.intents = [i for i in intents if i.subject == subject]
        vf.drift = [r for r in reasons if f"({subject})" in r]
