"""The change state machine: every transition goes through `transition()` (allowed-transition
table, the change row locked by the caller, audited in the same transaction)."""

from __future__ import annotations

from audit.services import record

from .models import ChangeRequest

State = ChangeRequest.State
WORKER = "worker"

TRANSITIONS = {
    State.DRAFT: {State.SUBMITTED, State.CANCELLED},
    State.SUBMITTED: {State.APPROVED, State.REJECTED, State.EXPIRED, State.DRAFT, State.CANCELLED},
    State.APPROVED: {State.SCHEDULED, State.CANCELLED},
    State.SCHEDULED: {State.RUNNING, State.CANCELLED, State.SUCCEEDED, State.FAILED, State.PARTIALLY_FAILED},
    State.RUNNING: {State.SUCCEEDED, State.FAILED, State.PARTIALLY_FAILED, State.CANCELLED},
    # A retry schedules the hosts that did not succeed as a new rollout of the same approved plan.
    State.FAILED: {State.SCHEDULED},
    State.PARTIALLY_FAILED: {State.SCHEDULED},
    State.CANCELLED: {State.SCHEDULED},
    State.REJECTED: set(),
    State.EXPIRED: set(),
    State.SUCCEEDED: set(),
}
EDITABLE = (State.DRAFT, State.SUBMITTED)
CANCELLABLE = (State.DRAFT, State.SUBMITTED, State.APPROVED, State.SCHEDULED, State.RUNNING)
FINISHED = (State.SUCCEEDED, State.FAILED, State.PARTIALLY_FAILED, State.CANCELLED, State.REJECTED, State.EXPIRED)


class ChangeError(Exception):
    """A refused action; `message` is for people (shown as is)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def actor_kwargs(user) -> dict:
    return {"actor": user} if user is not None else {"actor_name": WORKER}


def transition(change: ChangeRequest, new_state: str, *, user=None, action: str, message: str = "",
               data: dict | None = None, request=None) -> ChangeRequest:
    """Move a locked change to new_state if the table allows it, and audit `action`."""
    old = change.state
    if new_state not in TRANSITIONS[old]:
        raise ChangeError(f"a {change.get_state_display().lower()} change cannot become {new_state}")
    change.state = new_state
    change.state_message = message
    change.save(update_fields=["state", "state_message", "updated_at", "submitted_at", "submission", "decided_at",
                               "plan_hash", "plan_computed_at", "plan_blocked"])
    record(
        action, obj=change, change=change, request=request,
        data={"from": old, "to": new_state, **({"message": message} if message else {}), **(data or {})},
        **actor_kwargs(user),
    )
    return change
