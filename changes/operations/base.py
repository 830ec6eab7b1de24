"""The operation contract: what one kind of change operation declares.

An operation is one class in one module of this package, registered by dotted path in
``settings.CHANGE_OPERATIONS``. The engine (planning, execution, verification, drift), the
wizard, the API and the pages only ever call the methods below; none of them knows an
operation's name. docs/architecture.md ("Adding an operation") walks through writing one.

Lifecycle of one operation ``op`` (the validated dict ``{"op": name, ...}``) in a change:

1. ``validate(op, where)`` normalises the requester's input or raises OperationError.
2. ``plan(op, ctx, out)`` adds to one host's HostPlan, computed from the inventory: its part
   of ``before`` and ``after`` (under ``self.namespace``), ordered actions in words, each with
   the agent ``step`` that applies it (or none), blocking errors, warnings, and its impact
   (``out.reboot_reasons`` for what needs a reboot). Operations plan in ``phase`` order.
3. Execution sends each action's step to the agent. Afterwards ``intents(action, current)``
   says what the console now wants to stay so (stored as hosts.Intent rows), and the engine
   re-reads the host and compares ``after`` with ``observe``/``difference``.
4. Discovery compares observations with the stored intents through ``drift``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django import forms


class OperationError(ValueError):
    """Invalid operation input; the message is for people (prefixed with the operation number)."""


@dataclass
class HostPlan:
    """What planning builds for one host before it becomes a PlanItem.

    actions: [{"text", "op", "label", "subject", "step": {"op", "args"} | None, "tags": [...], ...}]
    """

    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    actions: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    reboot_reasons: list = field(default_factory=list)

    def add_action(self, operation: Operation, text: str, *, step=None, label="", subject="", **extra) -> dict:
        action = {"text": text, "op": operation.name, "label": label or operation.title, "subject": subject,
                  "step": step, "tags": [], **extra}
        self.actions.append(action)
        return action


@dataclass
class PlanContext:
    """One host as the inventory knows it, for one operation of one change."""

    host: Any  # hosts.models.Hypervisor
    nics: list  # its present Nic rows
    vfs_by_nic: dict  # nic id -> [VirtualFunction used by a guest]
    intents: dict  # (operation name, subject) -> Intent value
    change: Any  # changes.models.ChangeRequest (perhaps not saved yet: the live preview)
    number: int = 0  # the operation's number in the change, as the requester gave it
    claimed: dict = field(default_factory=dict)  # shared by the operations of one host
    # Loaded only when an operation asks for them (Operation.needs): every present VF of the host's
    # NICs with all its facts (nic id -> [VirtualFunction] by index), and its libvirt networks.
    all_vfs: dict = field(default_factory=dict)
    networks: list = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"operation {self.number}"

    def intent(self, operation: str, subject: str = ""):
        return self.intents.get((operation, subject))

    def operations_of(self, name: str) -> list[dict]:
        return [op for op in self.change.operations if op.get("op") == name]


@dataclass
class IntentValue:
    """One thing an applied action makes the console want (hosts.Intent); value None forgets it."""

    subject: str
    value: Any
    summary: str


@dataclass
class Resume:
    """What to do with an action whose step was interrupted (its worker was lost mid-call)."""

    outcome: str  # "rerun", "done" (the lost worker applied it), "drifted" or "failed" (host unreadable)
    note: str = ""
    args: dict | None = None  # rerun with these arguments (default: the planned ones)
    message: str = ""  # done/drifted: for the step or the host run
    observed: Any = None

    @classmethod
    def rerun(cls, note: str, args: dict | None = None) -> Resume:
        return cls("rerun", note=note, args=args)


class Operation:
    """Base class with the defaults; an operation overrides what it needs."""

    name: str = ""
    title: str = ""  # for people: "Set the VF count"
    phase: int = 50  # planning and execution order on a host (lower first)
    max_per_change: int | None = None
    # A successful step of this operation reboots the host: the engine then waits for a new boot
    # id (never sends the step twice in one host run) before it goes on.
    awaits_boot: bool = False
    form_class: type[forms.Form] | None = None
    form_rows: int = 1  # how many of it the wizard offers
    form_help: str = ""

    @property
    def namespace(self) -> str:
        """The key of the plan's before/after that this operation owns."""
        return self.name

    # -- input ----------------------------------------------------------------------------
    def validate(self, op: dict, where: str) -> dict:
        raise NotImplementedError

    def summary(self, op: dict) -> str:
        """One line for the change page ("set 4 VFs on PF eno49, persisted")."""
        return self.title

    def check_fields(self, op: dict, allowed: set, where: str) -> None:
        unknown = set(op) - allowed - {"op"}
        if unknown:
            raise OperationError(f"{where}: unknown fields {', '.join(sorted(unknown))}")

    # -- planning -------------------------------------------------------------------------
    def plan(self, op: dict, ctx: PlanContext, out: HostPlan) -> None:
        raise NotImplementedError

    def reboot_reasons(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        """Why a host needs a reboot for what this operation owns (asked of every operation by an
        operation that reboots, whether or not the change has this one)."""
        return []

    def after_boot(self, ctx: PlanContext, out: HostPlan) -> list[str]:
        """When the host reboots in this change: add to ``out.after[self.namespace]`` what must hold
        after the boot; return the checks in words. May add blocking errors."""
        return []

    def needs(self, operations: list[dict]) -> set[str]:
        """What planning must load besides the NICs for a change with these operations (whether or
        not they include this one: after_boot is asked of every operation): "vfs" (every present
        VF with its facts, ``ctx.all_vfs``) and/or "libvirt_networks" (``ctx.networks``)."""
        return set()

    def after_plan(self, ctx: PlanContext, out: HostPlan) -> None:
        """Asked of every operation once all of a host's operations planned (whether or not the
        change has this one): warnings about what the others' actions do to what this one owns."""

    def limit_parallelism(self, op: dict, parallelism: int) -> int:
        """Hosts at once for a change with this operation (a reboot caps it)."""
        return parallelism

    # -- execution ------------------------------------------------------------------------
    def resume(self, action: dict, lost, reread) -> Resume:
        """An earlier attempt of this action's step was interrupted. ``lost`` is that Step;
        ``reread()`` records an inventory of the host and returns its result (None if the host
        could not be read). The default re-runs the step: agent operations are idempotent."""
        return Resume.rerun(
            f"re-run of step {lost.seq}, interrupted by the loss of its worker "
            f"({self.name} is idempotent: what is already so is not written again)"
        )

    def intents(self, action: dict, current: dict) -> list[IntentValue]:
        """What the console wants to stay so once ``action`` succeeded. ``current``: the host's
        intents of this operation, subject -> value."""
        return []

    # -- verification and drift -------------------------------------------------------------
    def observe(self, inventory: dict, keys) -> dict:
        """Values for ``keys`` (of this operation's namespace) from an agent inventory."""
        return {}

    def difference(self, key: str, want, got, word: str, names: dict) -> str:
        """A sentence for a key whose observed value is not the expected one. ``word`` is
        "expected" (verification) or "the plan saw" (drift check); names: subject -> label."""
        return f"{self.title}: {key}: {word} {want!r}, the host has {got!r}"

    def drift(self, host, nics: list, intents: list) -> list[str]:
        """Sentences for where ``host`` (as discovered) differs from this operation's intents."""
        return []

    # -- the wizard -----------------------------------------------------------------------
    def from_form(self, cleaned: dict) -> dict | None:
        """One operation from one filled-in form of ``form_class`` (None when left empty)."""
        return None

    def to_form(self, op: dict) -> dict:
        """The initial data of ``form_class`` for an existing operation."""
        return {}
