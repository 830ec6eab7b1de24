"""Drift in each operation's words: registered with hosts.intents at start-up (apps.py)."""

from . import operations


def operation_drift(host, nics: list, intents: list) -> list[str]:
    reasons: list[str] = []
    for operation in operations.all_operations():
        reasons.extend(operation.drift(host, nics, intents))
    return reasons
