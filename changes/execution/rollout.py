"""Moving a rollout forward: canary first, then up to the parallelism, halting at the failure
threshold, inside the window; and its outcome, which is also the change's.

`advance(rollout_id)` is idempotent and locks change → rollout → host runs (the lock order of
locks.py). A rollout's state is about its own attempt; the change's state is about the plan: it
succeeded only when every host of the plan has succeeded in some attempt.
"""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from .. import dispatch, operations
from ..models import ChangeRequest, HostRun, Rollout
from ..states import transition
from .locks import lock_change, lock_host_runs, lock_rollout
from .transitions import HR, RS, set_host_run_state, set_rollout_state

CS = ChangeRequest.State
MAX_WINDOW_COUNTDOWN = 300.0  # seconds; recovery advances every rollout every 30 s anyway


def effective_parallelism(change: ChangeRequest) -> int:
    return operations.limit_parallelism(change.operations, change.parallelism)


def advance(rollout_id: int) -> str:
    """Move a rollout forward as far as it can go now. Safe to call any number of times."""
    with transaction.atomic():
        change_id = Rollout.objects.filter(pk=rollout_id).values_list("change_id", flat=True).first()
        if change_id is None:
            return "gone"
        change = lock_change(change_id)
        rollout = lock_rollout(rollout_id)
        rollout.change = change
        if rollout.is_finished:
            return rollout.state
        return Advance(change, rollout, lock_host_runs(rollout)).step(timezone.now())


class Advance:
    def __init__(self, change: ChangeRequest, rollout: Rollout, runs: list[HostRun]):
        self.change, self.rollout, self.runs = change, rollout, runs
        self.holding = [r for r in runs if r.state in HostRun.HOLDING]

    def stop_open(self, state: str, message: str) -> None:
        for run in self.runs:
            if run.state in (HR.PENDING, HR.WAITING):
                set_host_run_state(run, state, message, change_id=self.change.pk)

    def end_or(self, waiting: str) -> str:
        return waiting if self.holding else finish(self.rollout, self.change, self.runs)

    def step(self, now) -> str:
        change, rollout = self.change, self.rollout
        if rollout.cancel_requested_at or change.state == CS.CANCELLED:
            self.stop_open(HR.CANCELLED, "cancelled before it started")
            return self.end_or("cancelling")
        if rollout.state == RS.PENDING and change.not_before and now < change.not_before:
            return self.wait_for_window(now)
        if change.not_after and now > change.not_after:
            self.stop_open(HR.SKIPPED, f"skipped: the window closed at {change.not_after:%Y-%m-%d %H:%M} UTC")
            return self.end_or("window closed")
        why = self.halt_reason()
        if why:
            if not rollout.halted:
                rollout.halted = True
                rollout.message = why
                rollout.save(update_fields=["halted", "message"])
            self.stop_open(HR.SKIPPED, why)
            return self.end_or("halting")
        if rollout.state == RS.PENDING:
            set_rollout_state(rollout, RS.RUNNING, "")
            if change.state == CS.SCHEDULED:
                transition(change, CS.RUNNING, action="rollout.state_changed",
                           message=f"rollout {rollout.attempt} running", data={"rollout": rollout.pk})
        return self.dispatch_more(now)

    def wait_for_window(self, now) -> str:
        change, rollout = self.change, self.rollout
        message = f"waiting for the window: not before {change.not_before:%Y-%m-%d %H:%M} UTC"
        if rollout.message != message:  # the first time only; recovery covers a lost wake-up
            rollout.message = message
            rollout.save(update_fields=["message"])
            # Capped: a days-long countdown would sit in the broker (acks_late) for days.
            wait = (change.not_before - now).total_seconds()
            dispatch.advance_rollout(rollout.pk, countdown=min(max(wait, 1.0), MAX_WINDOW_COUNTDOWN))
        return "window"

    def halt_reason(self) -> str:
        failures = [r for r in self.runs if r.state in HostRun.FAILURES]
        canary = next((r for r in failures if r.is_canary), None)
        if canary is not None:
            return f"halted: canary {canary.host.name} {canary.state}"
        if len(failures) >= self.change.failure_threshold:
            return f"halted after {len(failures)} failure{'s' if len(failures) != 1 else ''}"
        return ""

    def dispatch_more(self, now) -> str:
        runs = self.runs
        in_flight = [r for r in runs if r.state in (HR.RUNNING, HR.REBOOTING, HR.WAITING)
                     or (r.state == HR.PENDING and r.dispatched_at is not None)]
        open_canaries = [r for r in runs if r.is_canary and not r.is_finished]
        if open_canaries:
            if not in_flight:
                start(open_canaries[0], now)
            return "canary"
        undispatched = [r for r in runs if r.state == HR.PENDING and r.dispatched_at is None]
        slots = effective_parallelism(self.change) - len(in_flight)
        for run in undispatched[: max(slots, 0)]:
            start(run, now)
        if all(r.is_finished for r in runs):
            return finish(self.rollout, self.change, runs)
        return "running"


def start(run: HostRun, now) -> None:
    token = uuid.uuid4().hex
    run.dispatched_at = now
    run.heartbeat_at = now
    run.owner = token
    run.message = "queued for a worker"
    run.save(update_fields=["dispatched_at", "heartbeat_at", "owner", "message"])
    dispatch.run_host(run.pk, token)


def finish(rollout: Rollout, change: ChangeRequest, runs: list[HostRun]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    succeeded = counts.get(HR.SUCCEEDED, 0)
    if rollout.cancel_requested_at or change.state == CS.CANCELLED:
        state = RS.CANCELLED
    elif succeeded == len(runs):
        state = RS.SUCCEEDED
    elif succeeded == 0:
        state = RS.FAILED
    else:
        state = RS.PARTIALLY_FAILED
    message = summary + (f"; {rollout.message}" if rollout.halted and rollout.message else "")
    set_rollout_state(rollout, state, message)
    if state != RS.CANCELLED and change.state in (CS.SCHEDULED, CS.RUNNING):
        outcome, words = plan_outcome(change)
        transition(change, outcome, action="rollout.state_changed",
                   message=f"rollout {rollout.attempt}: {message}{words}", data={"rollout": rollout.pk})
    return state


def plan_outcome(change: ChangeRequest) -> tuple[str, str]:
    """The change's state from every attempt: succeeded only when every host of the plan has
    succeeded in some rollout; failed when none has."""
    hosts = set(change.plan_items.values_list("host_id", flat=True))
    done = set(HostRun.objects.filter(rollout__change=change, state=HR.SUCCEEDED).values_list("host_id", flat=True))
    if hosts and done >= hosts:
        return CS.SUCCEEDED, ""
    missing = len(hosts - done)
    words = f"; {missing} of {len(hosts)} host{'s' if len(hosts) != 1 else ''} of the plan not done"
    return (CS.FAILED if not done else CS.PARTIALLY_FAILED), words
