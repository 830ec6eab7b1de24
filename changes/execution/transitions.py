"""The state machines of rollouts and host runs: every change of state goes through here, is
checked against its table (a wrong transition raises), saved and audited."""

from __future__ import annotations

from django.utils import timezone

from audit.services import record

from ..models import ChangeRequest, HostRun, Rollout, Step
from .records import audit_step

HR = HostRun.State
RS = Rollout.State
WORKER = "worker"


class InvalidTransition(RuntimeError):
    """A state change the table does not allow: a defect in the engine, never user input."""


HOST_RUN_TRANSITIONS = {
    HR.PENDING: {HR.WAITING, HR.RUNNING, HR.CANCELLED, HR.SKIPPED, HR.FAILED},
    HR.WAITING: {HR.WAITING, HR.RUNNING, HR.CANCELLED, HR.SKIPPED, HR.FAILED},
    HR.RUNNING: {HR.SUCCEEDED, HR.FAILED, HR.DRIFTED, HR.CANCELLED, HR.SKIPPED, HR.REBOOTING},
    HR.REBOOTING: {HR.RUNNING, HR.FAILED, HR.CANCELLED},
    HR.SUCCEEDED: set(),
    HR.FAILED: set(),
    HR.DRIFTED: set(),
    HR.CANCELLED: set(),
    HR.SKIPPED: set(),
}

ROLLOUT_TRANSITIONS = {
    RS.PENDING: {RS.RUNNING, RS.CANCELLED, RS.FAILED},
    RS.RUNNING: {RS.SUCCEEDED, RS.FAILED, RS.PARTIALLY_FAILED, RS.CANCELLED},
    RS.SUCCEEDED: set(),
    RS.FAILED: set(),
    RS.PARTIALLY_FAILED: set(),
    RS.CANCELLED: set(),
}

INTERRUPTED = (
    "interrupted: the worker was lost during this call; its outcome is unknown "
    "(the host is re-read before anything is sent again)"
)


def check(table: dict, old: str, new: str, what: str) -> None:
    if new not in table[old]:
        raise InvalidTransition(f"{what}: {old} → {new} is not an allowed transition")


def set_host_run_state(run: HostRun, state: str, message: str, *, change_id: int, extra: dict | None = None) -> None:
    """Move a locked host run. Whoever drove it stops here (the lease ends); a finished one has
    every step closed, so no step of a finished host run ever shows as running."""
    old = run.state
    check(HOST_RUN_TRANSITIONS, old, state, f"host run {run.pk}")
    run.state = state
    run.message = message
    run.lease = ""
    if state in HostRun.FINISHED:
        run.finished_at = timezone.now()
    run.save()
    if state in HostRun.FINISHED:
        close_open_steps(run, change_id)
    record(
        "hostrun.state_changed",
        obj=run,
        host=run.host,
        change=ChangeRequest(pk=change_id),
        actor_name=WORKER,
        data={"from": old, "to": state, "message": message, "rollout": run.rollout_id, **(extra or {})},
    )


def set_rollout_state(rollout: Rollout, state: str, message: str) -> None:
    old = rollout.state
    check(ROLLOUT_TRANSITIONS, old, state, f"rollout {rollout.pk}")
    rollout.state = state
    rollout.message = message
    now = timezone.now()
    if state == RS.RUNNING and rollout.started_at is None:
        rollout.started_at = now
    if state in Rollout.FINISHED:
        rollout.finished_at = now
    rollout.save()
    record(
        "rollout.state_changed",
        obj=rollout,
        change=rollout.change,
        actor_name=WORKER,
        data={"from": old, "to": state, "message": message, "attempt": rollout.attempt},
    )


def close_open_steps(run: HostRun, change_id: int) -> list[Step]:
    """Close the steps of `run` that never finished (their worker was lost) as interrupted."""
    closed = []
    for step in Step.objects.select_for_update(no_key=True, of=("self",)).filter(host_run=run, finished_at=None):
        step.ok = False
        step.error_code = "interrupted"
        step.message = INTERRUPTED
        step.finished_at = timezone.now()
        step.save()
        audit_step(step, run, change_id)
        closed.append(step)
    return closed
