"""The `reboot` operation (issue 7) and the wait for the host to come back.

Operation format (validated by `Reboot.validate`)::

    {"op": "reboot", "when": "if_needed"}                 # default "if_needed"; or "always"
    {"op": "reboot", "when": "always", "parallelism": 3}  # explicitly more hosts rebooting at once

"if_needed" reboots only hosts whose running /proc/cmdline lacks the configured arguments (this
change's kernel_args and the console's earlier ones, Hypervisor.managed_kernel_args) or still has
removed ones, or whose kernel (< 3.8) needs a reboot for a new `max_vfs` count. It is decided at
plan time, where approvers see it.

Execution (changes/orchestration.py calls in here):

* before the reboot step the agent itself re-checks for running guests (`refuse_if_guests`),
  unless the change allows guest impact: a guest started since the plan stops the host run
  before the reboot;
* after the reboot step the host run becomes ``rebooting``; `await_boot(host_run_id, token)`
  (a Celery task, never sleeping) re-schedules itself every BOOT_POLL_SECONDS, each time trying
  one quick inventory, until the boot id differs from the one before the reboot (→ a ``boot_wait``
  step with that inventory, back to ``running``, run_host continues with the verification) or
  REBOOT_DEADLINE_SECONDS after the reboot step passed (→ failed "did not come back within 15m");
* one reboot per host run: a reboot step that was interrupted (worker lost) is never re-sent; the
  host run waits for a new boot id as if it had been sent.

Namespace ``boot`` of the plan's "after" (only for hosts that reboot), checked by the normal
verification after the boot: ``cmdline:<token>`` → True (must be on /proc/cmdline) or False (must
not be: a removed key or token), ``iommu_active`` → True when the IOMMU argument of the host's CPU
vendor is wanted, ``vfs:<pci>`` → the persisted VF count of a PF this change does not set (it must
come back after the boot; PFs set by the change are checked in the ``numvfs`` namespace).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .kernel_args import VENDOR_IOMMU_ON, OperationError, key_of, removed_by, running_needs_reboot, wanted_tokens

if TYPE_CHECKING:  # changes/operations.py imports this module at its end: no import cycle at runtime
    from .operations import HostPlan

logger = logging.getLogger("changes.reboots")

WHEN = ("if_needed", "always")
REBOOTING = "rebooting"  # HostRun.State.REBOOTING
BOOT_WAIT = "boot_wait"  # Step.Kind.BOOT_WAIT


def _setting(name, default):
    return getattr(settings, name, default)


def deadline_seconds() -> float:
    return float(_setting("REBOOT_DEADLINE_SECONDS", 900))


def duration_words(seconds: float) -> str:
    """130 -> '2m10s', 900 -> '15m', 45 -> '45s', 3700 -> '1h1m40s'."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or not out:
        out += f"{secs}s"
    return out


def reboot_op(operations: list[dict]) -> dict | None:
    return next((op for op in operations or [] if op.get("op") == Reboot.name), None)


def effective_parallelism(change) -> int:
    """A change with a reboot op runs at most the reboot parallelism at once (default
    REBOOT_PARALLELISM = 1), unless the reboot op says more explicitly."""
    op = reboot_op(change.operations)
    if op is None:
        return change.parallelism
    cap = op.get("parallelism") or int(_setting("REBOOT_PARALLELISM", 1))
    return max(1, min(change.parallelism, cap))


class Reboot:
    name = "reboot"
    namespace = "boot"
    phase = 2  # kernel args -> VF counts -> reboot

    # -- input ------------------------------------------------------------------------------
    def validate(self, op: dict, where: str) -> dict:
        allowed = {"op", "when", "parallelism"}
        unknown = set(op) - allowed
        if unknown:
            raise OperationError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
        when = op.get("when") or "if_needed"
        if when not in WHEN:
            raise OperationError(f"{where}: when must be if_needed or always")
        parallelism = op.get("parallelism")
        if parallelism is not None and (
            isinstance(parallelism, bool) or not isinstance(parallelism, int) or not 1 <= parallelism <= 10000
        ):
            raise OperationError(f"{where}: parallelism must be a whole number, at least 1")
        return {"op": self.name, "when": when, "parallelism": parallelism}

    def describe(self, op: dict) -> str:
        words = "reboot if needed" if op["when"] == "if_needed" else "reboot every host"
        if op.get("parallelism"):
            words += f" (up to {op['parallelism']} at once)"
        return words

    # -- planning ---------------------------------------------------------------------------
    def plan(
        self, op: dict, number: int, host, nics: list, vfs_by_nic: dict, change, out: HostPlan, claimed: dict
    ) -> None:
        where = f"operation {number}"
        if "reboot" in claimed:
            out.errors.append(f"{where}: operation {claimed['reboot']} already reboots; one reboot per change")
            return
        claimed["reboot"] = number
        add, remove = wanted_tokens(change.operations, host.cpu_vendor)
        managed = [str(a) for a in (host.managed_kernel_args or []) if not removed_by(str(a), remove)]
        wanted = add + [a for a in managed if a not in add]
        reasons = running_needs_reboot(host.cmdline, wanted, remove)
        from .operations import _legacy_kernel

        legacy = _legacy_kernel(host.kernel)
        if legacy:
            planned = out.after.get("numvfs", {})
            for nic in nics:
                if not nic.sriov_capable:
                    continue
                want = planned.get(nic.pci_address, nic.persisted_numvfs if nic.persisted else None)
                if want is not None and want != (nic.sriov_numvfs or 0):
                    reasons.append(
                        f"{nic.name}: {want} VFs take effect only at boot (kernel {host.kernel} < 3.8: max_vfs)"
                    )
        if op["when"] == "always":
            reasons = ["requested: reboot every host"] + reasons
        if not reasons:
            out.actions.append(
                {
                    "text": "no reboot needed: the running kernel already has the configured arguments",
                    "pf": None,
                    "label": "reboot",
                    "phase": self.phase,
                    "step": None,
                }
            )
            return
        guests = [g.get("name", "") for g in (host.running_guests or []) if isinstance(g, dict)]
        if guests:
            names = ", ".join(guests)
            plural = "s" if len(guests) != 1 else ""
            text = f"rebooting {host.name} takes down {len(guests)} running guest{plural}: {names}"
            if change.allow_guest_impact:
                out.warnings.append(text + " (allowed by the rollout policy)")
            else:
                out.errors.append(text + "; stop or migrate them first, or allow guest impact in the policy")
        # Counts set by this change without persistence would be gone after the reboot.
        for pci, count in out.after.get("numvfs", {}).items():
            action = next((a for a in out.actions if a.get("pci_address") == pci and a.get("step")), None)
            if action and not action["step"]["args"].get("persist", True) and count and not legacy:
                out.errors.append(
                    f"{action.get('pf') or pci}: {count} VFs are not persisted and would be gone after the "
                    "reboot; persist them or do not reboot in this change"
                )
        after = out.after.setdefault(self.namespace, {})
        checks = []
        for token in wanted:
            after[f"cmdline:{token}"] = True
        for token in remove:
            after[f"cmdline:{token}"] = False
        if wanted:
            checks.append("/proc/cmdline has " + " ".join(wanted))
        if remove:
            checks.append("/proc/cmdline lacks " + " ".join(remove))
        iommu_arg = VENDOR_IOMMU_ON.get((host.cpu_vendor or "").lower())
        if iommu_arg and iommu_arg in wanted:
            after["iommu_active"] = True
            checks.append("IOMMU active")
        set_here = out.after.get("numvfs", {})
        for nic in nics:
            if nic.pci_address in set_here:
                if set_here[nic.pci_address]:
                    checks.append(f"{nic.name} has {set_here[nic.pci_address]} VFs again")
                continue
            if nic.sriov_capable and nic.persisted and nic.persisted_numvfs is not None:
                after[f"vfs:{nic.pci_address}"] = nic.persisted_numvfs
                checks.append(f"{nic.name} has its persisted {nic.persisted_numvfs} VFs again")
        deadline = duration_words(deadline_seconds())
        text = (
            f"reboot {host.name} ({'; '.join(reasons)}); wait up to {deadline} for a new boot id; "
            f"verify: {', '.join(['new boot id'] + checks)}"
        )
        out.actions.append(
            {
                "text": text,
                "pf": None,
                "label": "reboot",
                "phase": self.phase,
                "reboot_reasons": reasons,
                "guests": guests,
                "pf_names": {n.pci_address: n.name for n in nics if f"vfs:{n.pci_address}" in after},
                "step": {"op": self.name, "args": {"refuse_if_guests": not change.allow_guest_impact}},
            }
        )

    # -- execution --------------------------------------------------------------------------
    def observe(self, inventory: dict, keys) -> dict:
        tokens = (inventory.get("cmdline") or "").split()
        by_pci = {n.get("pci_address"): n for n in inventory.get("nics", []) if not n.get("is_vf")}
        seen = {}
        for key in keys:
            if key.startswith("cmdline:"):
                token = key[len("cmdline:"):]
                seen[key] = any(t == token or ("=" not in token and key_of(t) == token) for t in tokens)
            elif key == "iommu_active":
                seen[key] = bool((inventory.get("iommu") or {}).get("active"))
            elif key.startswith("vfs:"):
                nic = by_pci.get(key[4:])
                seen[key] = None if nic is None else (nic.get("sriov_numvfs") or 0)
        return seen

    def difference(self, key: str, want, got, word: str, names: dict) -> str:
        if key.startswith("cmdline:"):
            token = key[len("cmdline:"):]
            return f"/proc/cmdline {'lacks' if want else 'still has'} {token} after the reboot"
        if key == "iommu_active":
            return "IOMMU is not active after the reboot"
        pci = key[4:]
        got_text = "no such PF" if got is None else f"{got} VFs"
        return (
            f"{names.get(pci, pci)} ({pci}): the persisted {want} VFs did not come back after the reboot, "
            f"the host has {got_text}"
        )


# ---------------------------------------------------------------------------------------------
# Execution: waiting for the boot (called from changes/orchestration.py and the await_boot task)
# ---------------------------------------------------------------------------------------------


def reboot_progress(steps: list) -> dict:
    """Where a host run is with its reboot, from its steps (the database is the truth):
    {"reboot_step": Step|None (the ok or interrupted reboot action), "interrupted": bool,
     "old_boot_id": str|None, "confirmed": Step|None (the ok boot_wait step after it)}."""
    reboot = None
    for step in steps:
        if step.kind == "action" and step.operation == Reboot.name and (
            step.ok or step.error_code == "interrupted" or step.finished_at is None
        ):
            reboot = step
    if reboot is None:
        return {"reboot_step": None, "interrupted": False, "old_boot_id": None, "confirmed": None}
    old = None
    if reboot.ok and isinstance(reboot.result, dict):
        old = reboot.result.get("boot_id")
    if not old:  # interrupted: the boot id of the last inventory before the reboot step
        for step in steps:
            if step.seq < reboot.seq and step.operation == "inventory" and step.ok and isinstance(step.result, dict):
                old = step.result.get("boot_id") or old
    confirmed = next(
        (s for s in steps if s.seq > reboot.seq and s.kind == BOOT_WAIT and s.ok), None
    )
    return {
        "reboot_step": reboot,
        "interrupted": not reboot.ok,
        "old_boot_id": old,
        "confirmed": confirmed,
    }


def waiting_message(host_name: str, since, now=None) -> str:
    now = now or timezone.now()
    return f"waiting for {host_name} to come back ({duration_words((now - since).total_seconds())})"


def run_message(run, now=None) -> str:
    """The host row's message: live elapsed time while the host reboots (steps prefetched)."""
    if run.state != REBOOTING:
        return run.message
    steps = list(run.steps.all())
    progress = reboot_progress(steps)
    since = progress["reboot_step"].started_at if progress["reboot_step"] else run.started_at
    if since is None:
        return run.message
    return waiting_message(run.host.name, since, now)


def enter_waiting(run, token: str, progress: dict) -> str:
    """After the reboot step: the host run becomes `rebooting` and await_boot is scheduled."""
    from .orchestration import LostOwnership, _set_state

    with transaction.atomic():
        from .models import HostRun

        locked = HostRun.objects.select_for_update(of=("self",)).select_related("host").get(pk=run.pk)
        if locked.owner != token or locked.is_finished:
            raise LostOwnership()
        if locked.state != REBOOTING:
            _set_state(
                locked,
                REBOOTING,
                f"waiting for {locked.host.name} to come back",
                change_id=run.rollout.change_id,
                extra={
                    "old_boot_id": progress["old_boot_id"],
                    "deadline_seconds": deadline_seconds(),
                    "reboot_step": progress["reboot_step"].pk,
                },
            )
        _enqueue_await(run.pk, token)
    return REBOOTING


def _enqueue_await(host_run_id: int, token: str) -> None:
    from .tasks import await_boot as await_boot_task

    countdown = float(_setting("BOOT_POLL_SECONDS", 5))
    transaction.on_commit(lambda: await_boot_task.apply_async((host_run_id, token), countdown=countdown))


def await_boot(host_run_id: int, token: str) -> str:
    """One look at a rebooting host: back with a new boot id → continue the host run; deadline
    passed → failed; otherwise re-schedule (never sleeps)."""
    import dataclasses

    import remote

    from .models import HostRun
    from .orchestration import _enqueue_run, _finish_run, _Heartbeat, _record_inventory, _target

    run = (
        HostRun.objects.select_related("rollout", "host", "host__credential", "plan_item")
        .filter(pk=host_run_id)
        .first()
    )
    if run is None or run.owner != token or run.state != REBOOTING:
        return "not mine"
    steps = list(run.steps.order_by("seq"))
    progress = reboot_progress(steps)
    reboot = progress["reboot_step"]
    if reboot is None:  # cannot happen: a rebooting host run has its reboot step
        _finish_run(run, token, "failed", "internal error: rebooting without a reboot step")
        return "failed"
    since = reboot.started_at
    now = timezone.now()
    HostRun.objects.filter(pk=run.pk, owner=token).update(heartbeat_at=now)
    host = run.host
    target = dataclasses.replace(
        _target(host),
        connect_timeout=float(_setting("BOOT_PROBE_TIMEOUT", 5)),
        op_timeout=min(float(_setting("SSH_OPERATION_TIMEOUT", 120)), 30.0),
    )
    beat = _Heartbeat(run.pk, token)  # a slow probe must not look like a dead worker
    beat.start()
    try:
        result = remote.run_agent_sync(target, "inventory", {}, request_id=f"hr{run.pk}-boot")
    finally:
        beat.stop()
    now = timezone.now()
    boot_id = (result.result or {}).get("boot_id") if result.ok else None
    elapsed = duration_words((now - since).total_seconds())
    if boot_id and boot_id != progress["old_boot_id"]:
        step = _record_probe(run, result, f"wait for boot: {host.name} came back after {elapsed}", ok=True)
        _record_inventory(host, result, target)
        with transaction.atomic():
            from .orchestration import LostOwnership, _set_state

            locked = HostRun.objects.select_for_update(of=("self",)).select_related("host").get(pk=run.pk)
            if locked.owner != token or locked.state != REBOOTING:
                raise LostOwnership()
            _set_state(
                locked,
                "running",
                f"{host.name} came back after {elapsed}; verifying",
                change_id=run.rollout.change_id,
                extra={"old_boot_id": progress["old_boot_id"], "new_boot_id": boot_id, "step": step.pk},
            )
            _enqueue_run(run.pk, token)
        return "booted"
    deadline = (reboot.finished_at or since) + timedelta(seconds=deadline_seconds())
    if now >= deadline:
        if result.ok:
            last = f"it is up with the same boot id {boot_id}: the reboot did not happen"
        else:
            last = f"last attempt: {result.kind}: {result.message}"
        step = _record_probe(
            run, result, f"wait for boot: {host.name} not back within {duration_words(deadline_seconds())}",
            ok=False, error_code="boot_timeout",
        )
        _finish_run(
            run,
            token,
            "failed",
            f"{host.name} did not come back within {duration_words(deadline_seconds())} ({last})",
            {"step": step.pk, "old_boot_id": progress["old_boot_id"]},
        )
        return "failed"
    _enqueue_await_now(run.pk, token)
    logger.info("host run %s: %s not back yet (%s, %s)", run.pk, host.name, elapsed, result.kind)
    return "waiting"


def _enqueue_await_now(host_run_id: int, token: str) -> None:
    with transaction.atomic():
        _enqueue_await(host_run_id, token)


def _record_probe(run, result, description: str, *, ok: bool, error_code: str = ""):
    """The boot_wait step: the transcript of the probe that decided (not every poll)."""
    from .models import Step
    from .orchestration import _audit_step, _fill_step

    with transaction.atomic():
        seq = (run.steps.order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
        step = Step.objects.create(
            host_run=run,
            seq=seq,
            kind=BOOT_WAIT,
            operation="inventory",
            description=description[:300],
            request=result.request or {"op": "inventory", "args": {}},
            started_at=result.started_at or timezone.now(),
        )
        _fill_step(step, result)
        if not ok:
            step.ok = False
            step.error_code = error_code
            step.message = description + (f"; {result.message}" if result.message else "")
            step.save()
        _audit_step(step, run, run.rollout.change_id)
    return step


def await_boot_task(host_run_id: int, token: str) -> str:
    """The await_boot task's body: a lost ownership ends the chain quietly; an unexpected error
    fails the host run with the reason (a chain that raises would otherwise stop silently)."""
    from .models import HostRun
    from .orchestration import LostOwnership, _finish_run

    try:
        return await_boot(host_run_id, token)
    except LostOwnership:
        return "lost ownership"
    except Exception as exc:
        logger.exception("await_boot of host run %s failed unexpectedly", host_run_id)
        run = HostRun.objects.select_related("rollout", "host").filter(pk=host_run_id).first()
        if run is None:
            return "gone"
        try:
            _finish_run(run, token, "failed", f"internal error while waiting for the boot: {type(exc).__name__}: {exc}")
        except LostOwnership:
            return "lost ownership"
        return "failed"
