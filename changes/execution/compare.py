"""Re-reading a host and comparing it with the plan: the drift check before the first write
(against the plan's "before") and the verification after the last (against its "after"). Each
namespace of the plan belongs to one operation, which observes and words its own keys."""

from __future__ import annotations

import logging

from .. import operations
from ..models import Step
from .steps import call_agent

logger = logging.getLogger("changes.execution")


def owner_of(namespace: str):
    return next((op for op in operations.all_operations() if op.namespace == namespace), None)


def observe(expected: dict, inventory: dict) -> dict:
    seen = {}
    for namespace, values in expected.items():
        op = owner_of(namespace)
        seen[namespace] = op.observe(inventory, values.keys()) if op else {}
    return seen


def differences(expected: dict, seen: dict, names: dict, word: str) -> list[str]:
    out = []
    for namespace, values in expected.items():
        op = owner_of(namespace)
        for key, want in values.items():
            got = seen.get(namespace, {}).get(key)
            if got != want:
                out.append(op.difference(key, want, got, word, names) if op else
                           f"{namespace}.{key}: {word} {want!r}, the host has {got!r} (no operation owns it)")
    return out


def names_for(host, item) -> dict:
    """subject → what people call it: the host's NIC names, then the plan's own labels."""
    names = {nic.pci_address: nic.label for nic in host.nics.all()}
    for action in item.actions:
        if action.get("subject") and action.get("label"):
            names[action["subject"]] = action["label"]
    return names


def record_inventory(host, result, target) -> None:
    """Keep the console's inventory current with what the executor just read (never fatal)."""
    from hosts.discovery import apply_result

    try:
        apply_result(host.pk, result, target_key=target.known_host_key or "")
    except Exception:
        logger.exception("recording the inventory of %s failed", host.name)


def reread(run, token, target, host, *, kind: str, description: str):
    """One recorded inventory step; returns (step, result) and updates the console's inventory."""
    step, result = call_agent(run, token, target, "inventory", {}, kind=kind, description=description)
    record_inventory(host, result, target)
    return step, result


def reread_and_compare(run, token, target, host, *, kind: str, description: str, expected: dict, names: dict,
                       word: str):
    """Returns (step, seen, differences); seen is None when the host could not be read, and then
    differences holds the transport's message."""
    step, result = reread(run, token, target, host, kind=kind, description=description)
    if not result.ok:
        return step, None, [result.message]
    seen = observe(expected, result.result or {})
    return step, seen, differences(expected, seen, names, word)


VERIFY = Step.Kind.VERIFY
DRIFT_CHECK = Step.Kind.DRIFT_CHECK
