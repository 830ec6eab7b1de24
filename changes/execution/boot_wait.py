"""Waiting for a host to come back after a step that reboots it (an operation with
`awaits_boot`), without a sleeping worker.

After the step the host run becomes ``rebooting`` and `await_boot` (a Celery task) re-schedules
itself every BOOT_POLL_SECONDS, each time trying one quick inventory, until the boot id differs from
the one before the reboot (→ a ``boot_wait`` step with that inventory, back to ``running``, the
host run goes on with the verification) or REBOOT_DEADLINE_SECONDS after the step (→ failed).
One reboot per host run: a reboot step that was interrupted (worker lost) is never sent again;
the host run waits for a new boot id as if it had been sent.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import remote

from .. import dispatch, operations
from ..models import HostRun, Step
from ..operations.reboot import deadline_seconds, duration_words
from .compare import record_inventory
from .locks import lock_host_run
from .ownership import Heartbeat, LostOwnership, finish
from .steps import record_result, ssh_target
from .transitions import HR, set_host_run_state

logger = logging.getLogger("changes.execution")


def boot_actions(item) -> set[int]:
    """Indexes of the plan item's actions whose step reboots the host."""
    return {
        index for index, action in enumerate(item.actions)
        if action.get("step") and operations.known(operations.action_op(action))
        and operations.get(operations.action_op(action)).awaits_boot
    }


def reboot_progress(steps: list, boot_indexes: set[int]) -> dict:
    """Where a host run is with its reboot, from its steps (the database is the truth):
    {"reboot_step": Step|None (the sent, or possibly sent, reboot), "old_boot_id": str|None,
     "confirmed": Step|None (the ok boot_wait step after it)}."""
    reboot = None
    for step in steps:
        if step.kind == Step.Kind.ACTION and step.action_index in boot_indexes and (
            step.ok or step.error_code == "interrupted" or step.finished_at is None
        ):
            reboot = step
    if reboot is None:
        return {"reboot_step": None, "old_boot_id": None, "confirmed": None}
    old = reboot.result.get("boot_id") if reboot.ok and isinstance(reboot.result, dict) else None
    if not old:  # interrupted: the boot id of the last inventory before the reboot step
        for step in steps:
            if step.seq < reboot.seq and step.operation == "inventory" and step.ok and isinstance(step.result, dict):
                old = step.result.get("boot_id") or old
    confirmed = next((s for s in steps if s.seq > reboot.seq and s.kind == Step.Kind.BOOT_WAIT and s.ok), None)
    return {"reboot_step": reboot, "old_boot_id": old, "confirmed": confirmed}


def progress_of(run: HostRun) -> dict:
    return reboot_progress(list(run.steps.order_by("seq")), boot_actions(run.plan_item))


def waiting_message(host_name: str, since, now=None) -> str:
    now = now or timezone.now()
    return f"waiting for {host_name} to come back ({duration_words((now - since).total_seconds())})"


def run_message(run, now=None) -> str:
    """The host row's message: the live elapsed time while the host reboots (steps prefetched)."""
    if run.state != HR.REBOOTING:
        return run.message
    progress = reboot_progress(list(run.steps.all()), boot_actions(run.plan_item))
    since = progress["reboot_step"].started_at if progress["reboot_step"] else run.started_at
    return run.message if since is None else waiting_message(run.host.name, since, now)


def enter_waiting(run: HostRun, token: str, progress: dict) -> str:
    """After the reboot step: the host run becomes `rebooting` and await_boot is scheduled."""
    with transaction.atomic():
        locked = lock_host_run(run.pk, "host")
        if locked is None or locked.owner != token or locked.is_finished:
            raise LostOwnership()
        if locked.state != HR.REBOOTING:
            set_host_run_state(
                locked, HR.REBOOTING, f"waiting for {locked.host.name} to come back", change_id=run.rollout.change_id,
                extra={"old_boot_id": progress["old_boot_id"], "deadline_seconds": deadline_seconds(),
                       "reboot_step": progress["reboot_step"].pk},
            )
        dispatch.await_boot(run.pk, token)
    return HR.REBOOTING


def probe_target(host):
    return dataclasses.replace(
        ssh_target(host),
        connect_timeout=float(settings.BOOT_PROBE_TIMEOUT),
        op_timeout=min(float(settings.SSH_OPERATION_TIMEOUT), 30.0),
    )


def await_boot(host_run_id: int, token: str) -> str:
    """One look at a rebooting host: back with a new boot id → continue the host run; deadline
    passed → failed; otherwise re-schedule (never sleeps)."""
    run = (HostRun.objects.select_related("rollout", "host", "host__credential", "plan_item")
           .filter(pk=host_run_id).first())
    if run is None or run.owner != token or run.state != HR.REBOOTING:
        return "not mine"
    progress = progress_of(run)
    reboot = progress["reboot_step"]
    if reboot is None:  # cannot happen: a rebooting host run has its reboot step
        finish(run, token, HR.FAILED, "internal error: rebooting without a reboot step")
        return HR.FAILED
    HostRun.objects.filter(pk=run.pk, owner=token).update(heartbeat_at=timezone.now())
    target = probe_target(run.host)
    beat = Heartbeat(run.pk, token).start()  # a slow probe must not look like a dead worker
    try:
        result = remote.run_agent_sync(target, "inventory", {}, request_id=f"hr{run.pk}-boot")
    finally:
        beat.stop()
    boot_id = (result.result or {}).get("boot_id") if result.ok else None
    if boot_id and boot_id != progress["old_boot_id"]:
        return _came_back(run, token, result, target, progress, boot_id)
    deadline = (reboot.finished_at or reboot.started_at) + timedelta(seconds=deadline_seconds())
    if timezone.now() >= deadline:
        return _not_back(run, token, result, boot_id, progress)
    with transaction.atomic():
        dispatch.await_boot(run.pk, token)
    logger.debug("host run %s: %s not back yet (%s)", run.pk, run.host.name, result.kind)
    return "waiting"


def _came_back(run, token, result, target, progress, boot_id) -> str:
    host = run.host
    elapsed = duration_words((timezone.now() - progress["reboot_step"].started_at).total_seconds())
    step = record_result(run, result, kind=Step.Kind.BOOT_WAIT, description=f"{host.name} came back after {elapsed}")
    record_inventory(host, result, target)
    with transaction.atomic():
        locked = lock_host_run(run.pk, "host")
        if locked is None or locked.owner != token or locked.state != HR.REBOOTING:
            raise LostOwnership()
        set_host_run_state(
            locked, HR.RUNNING, f"{host.name} came back after {elapsed}; verifying", change_id=run.rollout.change_id,
            extra={"old_boot_id": progress["old_boot_id"], "new_boot_id": boot_id, "step": step.pk},
        )
        dispatch.run_host(run.pk, token)
    return "booted"


def _not_back(run, token, result, boot_id, progress) -> str:
    host = run.host
    limit = duration_words(deadline_seconds())
    if result.ok:
        last = f"it is up with the same boot id {boot_id}: the reboot did not happen"
    else:
        last = f"last attempt: {result.kind}: {result.message}"
    step = record_result(run, result, kind=Step.Kind.BOOT_WAIT, description=f"{host.name} not back within {limit}",
                         ok=False, error_code="boot_timeout")
    finish(run, token, HR.FAILED, f"{host.name} did not come back within {limit} ({last})",
           {"step": step.pk, "old_boot_id": progress["old_boot_id"]})
    return HR.FAILED


def await_boot_task(host_run_id: int, token: str) -> str:
    """The task's body: a lost ownership ends the chain quietly; an unexpected error fails the
    host run with the reason (a chain that raised would otherwise stop silently)."""
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
            finish(run, token, HR.FAILED, f"internal error while waiting for the boot: {type(exc).__name__}: {exc}")
        except LostOwnership:
            return "lost ownership"
        return HR.FAILED
