"""`reboot`: reboot the hosts that need it (or every host), wait for them, verify after the boot.

    {"op": "reboot", "when": "if_needed"}                 # default; or "always"
    {"op": "reboot", "when": "always", "parallelism": 3}  # explicitly more hosts rebooting at once

"if_needed" reboots only hosts for which some operation gives a reason (`reboot_reasons`: the
running /proc/cmdline lacks configured kernel arguments, a kernel older than 3.8 needs a boot for a
new max_vfs count...), decided at plan time where approvers see it. Every operation then says what
must hold after the boot (`after_boot`), checked by the normal verification once the host is back
with a new boot id. The step asks the agent to refuse when guests run (rechecked at the time),
unless the change allows guest impact. A change with a reboot runs at most REBOOT_PARALLELISM
hosts at once (default 1) unless the operation says more.
"""

from __future__ import annotations

from django import forms
from django.conf import settings

from . import all_operations
from .base import HostPlan, Operation, OperationError, PlanContext

WHEN = ("if_needed", "always")


def duration_words(seconds: float) -> str:
    """130 -> '2m10s', 900 -> '15m', 45 -> '45s', 3700 -> '1h1m40s'."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if secs or not out:
        out += f"{secs}s"
    return out


def deadline_seconds() -> float:
    return float(settings.REBOOT_DEADLINE_SECONDS)


class RebootForm(forms.Form):
    when = forms.ChoiceField(
        choices=[("", "no reboot"), ("if_needed", "if needed"), ("always", "always")], required=False,
        label="Reboot",
        help_text="If needed: only hosts whose running kernel lacks the configured arguments, or whose kernel "
                  "(< 3.8) needs a reboot for a new VF count. Then wait for the host and verify.",
    )
    parallelism = forms.IntegerField(
        min_value=1, max_value=10000, required=False, label="Hosts rebooting at once",
        help_text="Default 1: a change with a reboot runs one host at a time unless you raise it here.",
    )


class Reboot(Operation):
    name = "reboot"
    title = "Reboot"
    phase = 90  # last: it decides from what the others planned
    max_per_change = 1
    awaits_boot = True
    form_class = RebootForm
    form_help = ("Per host the steps run in this order: kernel arguments → VF counts (persisted) → reboot → "
                 "wait for the new boot id → verify (/proc/cmdline, IOMMU, every persisted VF count).")

    @property
    def namespace(self) -> str:
        return "boot"

    def validate(self, op: dict, where: str) -> dict:
        self.check_fields(op, {"when", "parallelism"}, where)
        when = op.get("when") or "if_needed"
        if when not in WHEN:
            raise OperationError(f"{where}: when must be if_needed or always")
        parallelism = op.get("parallelism")
        if parallelism is not None and (
            isinstance(parallelism, bool) or not isinstance(parallelism, int) or not 1 <= parallelism <= 10000
        ):
            raise OperationError(f"{where}: parallelism must be a whole number, at least 1")
        return {"op": self.name, "when": when, "parallelism": parallelism}

    def summary(self, op: dict) -> str:
        words = "reboot if needed" if op["when"] == "if_needed" else "reboot every host"
        return words + (f" (up to {op['parallelism']} at once)" if op.get("parallelism") else "")

    def limit_parallelism(self, op: dict, parallelism: int) -> int:
        return min(parallelism, op.get("parallelism") or settings.REBOOT_PARALLELISM)

    def plan(self, op: dict, ctx: PlanContext, out: HostPlan) -> None:
        host = ctx.host
        reasons = ["requested: reboot every host"] if op["when"] == "always" else []
        for operation in all_operations():
            reasons += operation.reboot_reasons(ctx, out)
        if not reasons:
            out.add_action(self, "no reboot needed: the running kernel already has the configured arguments",
                           label="reboot")
            return
        guests = [g.get("name", "") for g in (host.running_guests or []) if isinstance(g, dict)]
        if guests:
            plural = "s" if len(guests) != 1 else ""
            text = f"rebooting {host.name} takes down {len(guests)} running guest{plural}: {', '.join(guests)}"
            if ctx.change.allow_guest_impact:
                out.warnings.append(text + " (allowed by the rollout policy)")
            else:
                out.errors.append(text + "; stop or migrate them first, or allow guest impact in the policy")
        checks = ["new boot id"]
        for operation in all_operations():
            checks += operation.after_boot(ctx, out)
        out.reboot_reasons = reasons
        text = (f"reboot {host.name} ({'; '.join(reasons)}); wait up to {duration_words(deadline_seconds())} for a "
                f"new boot id; verify: {', '.join(checks)}")
        out.add_action(self, text, label="reboot", reboot_reasons=reasons, guests=guests,
                       step={"op": self.name, "args": {"refuse_if_guests": not ctx.change.allow_guest_impact}})

    def from_form(self, cleaned: dict) -> dict | None:
        if not cleaned.get("when"):
            return None
        return {"op": self.name, "when": cleaned["when"], "parallelism": cleaned.get("parallelism")}

    def to_form(self, op: dict) -> dict:
        return {"when": op["when"], "parallelism": op.get("parallelism")}
