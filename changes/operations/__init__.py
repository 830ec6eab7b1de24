"""The registry of change operations (one module each in this package; see base.py).

Operations register explicitly: ``settings.CHANGE_OPERATIONS`` lists their classes by dotted
path, in the order the wizard shows them. Everything else asks this registry.
"""

from __future__ import annotations

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .base import HostPlan, IntentValue, Operation, OperationError, PlanContext, Resume

__all__ = [
    "HostPlan", "IntentValue", "Operation", "OperationError", "PlanContext", "Resume",
    "action_op", "all_operations", "get", "known", "summaries", "validate_operations",
]

MAX_OPERATIONS = 20
_registry: dict[str, Operation] | None = None


def _build() -> dict[str, Operation]:
    found: dict[str, Operation] = {}
    for path in settings.CHANGE_OPERATIONS:
        operation = import_string(path)()
        if not operation.name or operation.name in found:
            raise ValueError(f"{path}: an operation needs a unique name (got {operation.name!r})")
        found[operation.name] = operation
    return found


def registry() -> dict[str, Operation]:
    global _registry
    if _registry is None:
        _registry = _build()
    return _registry


@receiver(setting_changed)
def _forget(setting, **kwargs):
    global _registry
    if setting == "CHANGE_OPERATIONS":
        _registry = None


def all_operations() -> list[Operation]:
    """In the order of settings.CHANGE_OPERATIONS (the wizard's order)."""
    return list(registry().values())


def known(name) -> bool:
    return isinstance(name, str) and name in registry()


def get(name: str) -> Operation:
    return registry()[name]


def action_op(action: dict) -> str:
    """The operation that planned an action (plans stored before actions named it: the step's op)."""
    return action.get("op") or (action.get("step") or {}).get("op") or ""


def in_phase_order(operations: list[dict]) -> list[tuple[int, dict]]:
    """(number, op) pairs, numbered as given, sorted by each operation's phase."""
    numbered = list(enumerate(operations, start=1))
    numbered.sort(key=lambda pair: get(pair[1]["op"]).phase)
    return numbered


def validate_operations(operations) -> list[dict]:
    if not isinstance(operations, list) or not operations:
        raise OperationError("give at least one operation")
    if len(operations) > MAX_OPERATIONS:
        raise OperationError(f"at most {MAX_OPERATIONS} operations per change")
    normal, counts = [], {}
    for number, op in enumerate(operations, start=1):
        where = f"operation {number}"
        if not isinstance(op, dict):
            raise OperationError(f"{where}: must be an object")
        if not known(op.get("op")):
            raise OperationError(f"{where}: unknown op {str(op.get('op'))[:50]!r}; known: {', '.join(registry())}")
        operation = get(op["op"])
        counts[operation.name] = counts.get(operation.name, 0) + 1
        if operation.max_per_change and counts[operation.name] > operation.max_per_change:
            raise OperationError(f"{where}: at most {operation.max_per_change} {operation.name} per change")
        normal.append(operation.validate(op, where))
    return normal


def summaries(operations: list[dict]) -> list[str]:
    """Each operation in its own words, for the change page and the audit."""
    return [get(op["op"]).summary(op) if known(op.get("op")) else f"unknown op {op.get('op')}" for op in operations]


def limit_parallelism(operations: list[dict], parallelism: int) -> int:
    for op in operations:
        if known(op.get("op")):
            parallelism = get(op["op"]).limit_parallelism(op, parallelism)
    return max(1, parallelism)
