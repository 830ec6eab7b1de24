"""Steps: one agent call each, recorded before the call (so a lost worker leaves a trace) and
filled after it, with its full transcript; every finished step is audited."""

from __future__ import annotations

import dataclasses

from django.db import transaction
from django.utils import timezone

import remote

from ..models import HostRun, Step
from .locks import lock_host_run, lock_step
from .ownership import Heartbeat, LostOwnership, mine
from .records import audit_step, fill


def next_seq(run: HostRun) -> int:
    return (run.steps.order_by("-seq").values_list("seq", flat=True).first() or 0) + 1


def ssh_target(host):
    from hosts.discovery import build_target

    # Never trust a new host key in the middle of a change, whatever the TOFU setting.
    return dataclasses.replace(build_target(host), accept_new_host_key=False)


def call_agent(run: HostRun, token: str, target, op: str, args: dict, *, kind: str, description: str,
               action_index: int | None = None, note: str = "") -> tuple[Step, remote.AgentResult]:
    """One agent call as one Step. Raises LostOwnership when the host run is no longer ours
    (after recording what the host answered: a result is never dropped)."""
    change_id = run.rollout.change_id
    with transaction.atomic():
        locked = lock_host_run(run.pk)
        if locked is None or not mine(locked, run, token) or locked.is_finished:
            raise LostOwnership()
        seq = next_seq(locked)
        step = Step.objects.create(
            host_run=locked, seq=seq, kind=kind, action_index=action_index, operation=op,
            description=description[:300], note=note, started_at=timezone.now(),
            request={"op": op, "args": args, "request_id": f"c{change_id}-hr{run.pk}-s{seq}"},
        )
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["heartbeat_at"])
    beat = Heartbeat(run.pk, token, run.lease).start()
    try:
        result = remote.run_agent_sync(target, op, args, request_id=step.request["request_id"])
    finally:
        beat.stop()
    with transaction.atomic():
        locked = lock_host_run(run.pk)
        step = lock_step(step.pk)
        if step.finished_at is None:
            fill(step, result)
            audit_step(step, run, change_id)
        else:
            # The replacing worker closed this step as interrupted while we were in the agent
            # call: what the host answered is kept (and audited) as a step of its own.
            step = record_late_result(locked, step, result, run, change_id)
        lost = beat.lost or not mine(locked, run, token)
    if lost:  # raised after the commit: the result recorded above is kept
        raise LostOwnership()
    return step, result


def record_late_result(locked: HostRun, step: Step, result, run: HostRun, change_id: int) -> Step:
    late = Step.objects.create(
        host_run=locked, seq=next_seq(locked), kind=step.kind, action_index=step.action_index,
        operation=step.operation, description=step.description, request=step.request,
        started_at=step.started_at, note=f"late result of step {step.seq} from the replaced worker",
    )
    fill(late, result)
    audit_step(late, run, change_id)
    return late


def record_without_call(run: HostRun, token: str, *, kind: str, operation: str, description: str,
                        request: dict, result: dict, message: str, note: str, action_index=None) -> Step:
    """A Step that records a fact established without an agent call (e.g. an action the lost
    worker completed, proven by a re-read)."""
    now = timezone.now()
    with transaction.atomic():
        locked = lock_host_run(run.pk)
        if locked is None or not mine(locked, run, token) or locked.is_finished:
            raise LostOwnership()
        step = Step.objects.create(
            host_run=locked, seq=next_seq(locked), kind=kind, action_index=action_index, operation=operation,
            description=description[:300], request=request, result=result, ok=True, kind_of_result="ok",
            message=message, note=note, started_at=now, finished_at=now,
        )
        audit_step(step, run, run.rollout.change_id)
    return step


def record_result(run: HostRun, result, *, kind: str, description: str, ok: bool | None = None,
                  error_code: str = "") -> Step:
    """A Step for a call made without a step row first (a boot probe: only the one that decides
    is kept, not every poll). ``ok``/``error_code`` override the call's own outcome."""
    with transaction.atomic():
        locked = lock_host_run(run.pk)
        step = Step.objects.create(
            host_run=locked, seq=next_seq(locked), kind=kind, operation=(result.request or {}).get("op", "inventory"),
            description=description[:300], request=result.request or {"op": "inventory", "args": {}},
            started_at=result.started_at or timezone.now(),
        )
        fill(step, result)
        if ok is False:
            step.ok = False
            step.error_code = error_code
            step.message = description + (f"; {result.message}" if result.message else "")
            step.save()
        audit_step(step, run, run.rollout.change_id)
    return step
