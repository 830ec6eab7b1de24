"""The on-commit callbacks a service registers, without the audit witness's (one per audit event)."""

from audit import witness


def service_callbacks(callbacks) -> list:
    return [c for c in callbacks if not witness.is_witness_callback(c)]
