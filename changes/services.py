"""Change lifecycle services: create, edit, re-plan, submit, schedule, cancel, retry.

Every transition goes through `transition()` (allowed-transition table, row locked with
select_for_update, audited in the same transaction). Views, tasks and the coming REST API call
these; permissions are checked here, at the entry points. Approvals are in changes/approvals.py,
execution in changes/orchestration.py.
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from audit.services import record
from console.roles import check_permission, has_permission
from hosts.models import Hypervisor

from .models import ChangeRequest, HostRun, PlanItem, Rollout
from .operations import OperationError, validate_operations
from .planning import Plan, compute_plan
from .targets import TargetError, resolve_targets, validate_targets

State = ChangeRequest.State

# The change state machine. Anything not listed is refused.
TRANSITIONS = {
    State.DRAFT: {State.SUBMITTED, State.CANCELLED},
    State.SUBMITTED: {State.APPROVED, State.REJECTED, State.EXPIRED, State.DRAFT, State.CANCELLED},
    State.APPROVED: {State.SCHEDULED, State.CANCELLED},
    State.SCHEDULED: {State.RUNNING, State.CANCELLED, State.SUCCEEDED, State.FAILED, State.PARTIALLY_FAILED},
    State.RUNNING: {State.SUCCEEDED, State.FAILED, State.PARTIALLY_FAILED, State.CANCELLED},
    State.FAILED: {State.SCHEDULED},  # retry of the failed hosts
    State.PARTIALLY_FAILED: {State.SCHEDULED},
    State.REJECTED: set(),
    State.EXPIRED: set(),
    State.SUCCEEDED: set(),
    State.CANCELLED: set(),
}
EDITABLE = (State.DRAFT, State.SUBMITTED)
CANCELLABLE = (State.DRAFT, State.SUBMITTED, State.APPROVED, State.SCHEDULED, State.RUNNING)
RETRYABLE = (State.FAILED, State.PARTIALLY_FAILED)
FINISHED = (
    State.SUCCEEDED,
    State.FAILED,
    State.PARTIALLY_FAILED,
    State.CANCELLED,
    State.REJECTED,
    State.EXPIRED,
)

POLICY_FIELDS = (
    "parallelism",
    "canary_count",
    "max_failures",
    "not_before",
    "not_after",
    "allow_guest_impact",
)
WORKER = "worker"


class ChangeError(Exception):
    """A refused action; `message` is for people (shown as is)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def actor_kwargs(user) -> dict:
    return {"actor": user} if user is not None else {"actor_name": WORKER}


def lock(change_id: int) -> ChangeRequest:
    return ChangeRequest.objects.select_for_update(of=("self",)).get(pk=change_id)


def immediate_constraints() -> None:
    """PostgreSQL: check foreign keys at each INSERT/UPDATE of this transaction, not at COMMIT.

    Django creates FKs DEFERRABLE INITIALLY DEFERRED, so their FOR KEY SHARE locks on the referenced
    rows (users, hosts, the change) would otherwise be taken at COMMIT — after audit.record() took
    the chain's advisory lock, which is the lock-order inversion docs/audit.md warns about. Call it
    first thing in a service transaction. SQLite serialises writers anyway.
    """
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def transition(
    change: ChangeRequest,
    new_state: str,
    *,
    user=None,
    action: str,
    message: str = "",
    data: dict | None = None,
    request=None,
) -> ChangeRequest:
    """Move a locked change to new_state if the table allows it, and audit `action`."""
    old = change.state
    if new_state not in TRANSITIONS[old]:
        raise ChangeError(f"a {change.get_state_display().lower()} change cannot become {new_state}")
    change.state = new_state
    change.state_message = message
    change.save(
        update_fields=[
            "state",
            "state_message",
            "updated_at",
            "submitted_at",
            "submission",
            "decided_at",
            "plan_hash",
            "plan_computed_at",
            "plan_blocked",
        ]
    )
    record(
        action,
        obj=change,
        change=change,
        request=request,
        data={"from": old, "to": new_state, **({"message": message} if message else {}), **(data or {})},
        **actor_kwargs(user),
    )
    return change


# ---------------------------------------------------------------------------------------------
# Input validation and planning
# ---------------------------------------------------------------------------------------------


def clean_input(data: dict) -> dict:
    """Validate a change's fields; raise ValidationError({field: [messages]}) on bad input."""
    errors: dict[str, list[str]] = {}
    clean = {}
    title = (data.get("title") or "").strip()
    if not title:
        errors.setdefault("title", []).append("Give the change a title.")
    elif len(title) > 200:
        errors.setdefault("title", []).append("At most 200 characters.")
    clean["title"] = title
    reason = (data.get("reason") or "").strip()
    if not reason:
        errors.setdefault("reason", []).append("A reason is required for every change.")
    clean["reason"] = reason
    try:
        clean["targets"] = validate_targets(data.get("targets") or {})
    except TargetError as exc:
        errors.setdefault("targets", []).append(str(exc))
    try:
        clean["operations"] = validate_operations(data.get("operations"))
    except OperationError as exc:
        errors.setdefault("operations", []).append(str(exc))
    for name, minimum in (("parallelism", 1), ("canary_count", 0), ("max_failures", 0)):
        value = data.get(name, {"parallelism": 1, "canary_count": 0, "max_failures": 1}[name])
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value > 10000:
            errors.setdefault(name, []).append(f"A whole number, at least {minimum}.")
        clean[name] = value
    clean["not_before"] = data.get("not_before")
    clean["not_after"] = data.get("not_after")
    if clean["not_before"] and clean["not_after"] and clean["not_after"] <= clean["not_before"]:
        errors.setdefault("not_after", []).append("The window must end after it starts.")
    clean["allow_guest_impact"] = bool(data.get("allow_guest_impact", False))
    if errors:
        raise ValidationError(errors)
    return clean


def preview_plan(data: dict) -> tuple[dict, Plan]:
    """Validate and plan without writing anything (the wizard's live preview)."""
    clean = clean_input(data)
    try:
        hosts = resolve_targets(clean["targets"])
    except TargetError as exc:
        raise ValidationError({"targets": [str(exc)]}) from None
    draft = ChangeRequest(**clean)
    plan = compute_plan(draft, hosts)
    if not hosts:
        plan.errors.append("the targets match no host")
    return clean, plan


def _store_plan(change: ChangeRequest, plan: Plan) -> None:
    change.plan_items.all().delete()
    PlanItem.objects.bulk_create(
        [
            PlanItem(
                change=change,
                host=p.host,
                order=p.order,
                before=p.plan.before,
                after=p.plan.after,
                actions=p.plan.actions,
                errors=p.plan.errors,
                warnings=p.plan.warnings,
                item_hash=p.item_hash,
            )
            for p in plan.hosts
        ]
    )
    change.plan_hash = plan.hash
    change.plan_computed_at = timezone.now()
    change.plan_blocked = plan.blocked
    change.state_message = "; ".join(plan.errors)


def replan(change: ChangeRequest) -> tuple[Plan, bool]:
    """Recompute and store the plan of a locked change; returns (plan, hash_changed).

    The targets are resolved again only while the change is a draft or submitted; afterwards the
    hosts frozen in the plan are kept.
    """
    try:
        hosts = resolve_targets(change.targets)
        errors = [] if hosts else ["the targets match no host"]
    except TargetError as exc:
        hosts, errors = [], [str(exc)]
    lock_hosts_for_reference([h.pk for h in hosts])
    plan = compute_plan(change, hosts)
    plan.errors.extend(errors)
    old = change.plan_hash
    _store_plan(change, plan)
    return plan, old != plan.hash


def lock_hosts_for_reference(host_ids) -> None:
    """Take now the FOR KEY SHARE row locks that the (deferred) foreign-key checks of new PlanItem /
    HostRun rows would otherwise take at COMMIT.

    Why: audit.record() holds the audit chain's advisory lock until commit, and discovery locks a
    host row FOR UPDATE and then records. A transaction of ours that recorded first and met the host
    row only at commit would wait for discovery while discovery waits for the chain: a deadlock
    (seen in the tests). Locks here are always taken before the first audit record. PostgreSQL only;
    SQLite serialises writers anyway.
    """
    ids = sorted({int(i) for i in host_ids})
    if not ids or connection.vendor != "postgresql":
        return
    table = connection.ops.quote_name(Hypervisor._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE", [ids])


def _apply_fields(change: ChangeRequest, clean: dict) -> None:
    for name, value in clean.items():
        setattr(change, name, value)


# ---------------------------------------------------------------------------------------------
# Create, edit, submit
# ---------------------------------------------------------------------------------------------


def create_change(data: dict, user, *, request=None) -> ChangeRequest:
    check_permission(user, "operate")
    clean = clean_input(data)
    with transaction.atomic():
        immediate_constraints()
        change = ChangeRequest(requested_by=user, required_approvals=settings.CHANGE_APPROVALS_REQUIRED)
        _apply_fields(change, clean)
        change.save()
        plan, _ = replan(change)
        change.save()
        record(
            "change.created",
            obj=change,
            change=change,
            request=request,
            actor=user,
            data={
                "title": change.title,
                "reason": change.reason,
                "targets": change.targets,
                "operations": change.operations,
                "policy": policy_of(change),
                "plan_hash": change.plan_hash,
                "hosts": len(plan.hosts),
                "blocked": plan.blocked,
            },
        )
    return change


def policy_of(change: ChangeRequest) -> dict:
    return {
        "parallelism": change.parallelism,
        "canary_count": change.canary_count,
        "max_failures": change.max_failures,
        "allow_guest_impact": change.allow_guest_impact,
        "not_before": change.not_before.isoformat() if change.not_before else None,
        "not_after": change.not_after.isoformat() if change.not_after else None,
    }


def update_change(change_id: int, data: dict, user, *, request=None) -> ChangeRequest:
    """Edit a draft or submitted change. A submitted change goes back to draft: its votes no
    longer count (they bind to the old plan hash) and it must be submitted again."""
    check_permission(user, "operate")
    clean = clean_input(data)
    with transaction.atomic():
        immediate_constraints()
        change = lock(change_id)
        if change.requested_by_id != user.pk:
            raise PermissionDenied("only the requester can edit a change")
        if change.state not in EDITABLE:
            raise ChangeError(f"a {change.get_state_display().lower()} change cannot be edited")
        before = {
            "title": change.title,
            "reason": change.reason,
            "targets": change.targets,
            "operations": change.operations,
            "policy": policy_of(change),
            "plan_hash": change.plan_hash,
        }
        _apply_fields(change, clean)
        replan(change)
        was_submitted = change.state == State.SUBMITTED
        if was_submitted:
            change.submitted_at = None
            change.state = State.DRAFT
        change.save()
        after = {
            "title": change.title,
            "reason": change.reason,
            "targets": change.targets,
            "operations": change.operations,
            "policy": policy_of(change),
            "plan_hash": change.plan_hash,
        }
        record(
            "change.updated",
            obj=change,
            change=change,
            request=request,
            actor=user,
            data={
                "before": before,
                "after": after,
                **(
                    {"from": State.SUBMITTED, "to": State.DRAFT, "votes_invalidated": True}
                    if was_submitted
                    else {}
                ),
            },
        )
    return change


def submit_change(change_id: int, user, *, request=None) -> ChangeRequest:
    """Re-plan from the current inventory and submit for approval (refused when blocked)."""
    check_permission(user, "operate")
    with transaction.atomic():
        immediate_constraints()
        change = lock(change_id)
        if change.requested_by_id != user.pk:
            raise PermissionDenied("only the requester can submit a change")
        if change.state != State.DRAFT:
            raise ChangeError(f"a {change.get_state_display().lower()} change cannot be submitted")
        plan, _ = replan(change)
        if plan.blocked:
            change.save()
            raise ChangeError("the plan has blocking errors; fix them (or the hosts) before submitting")
        change.submitted_at = timezone.now()
        # A new submission: votes cast on an earlier one (before an edit) no longer count.
        change.submission += 1
        transition(
            change,
            State.SUBMITTED,
            user=user,
            action="change.submitted",
            request=request,
            data={
                "plan_hash": change.plan_hash,
                "required_approvals": change.required_approvals,
                "submission": change.submission,
            },
        )
    return change


# ---------------------------------------------------------------------------------------------
# Scheduling, cancel, retry
# ---------------------------------------------------------------------------------------------


def schedule(
    change: ChangeRequest,
    *,
    user=None,
    items=None,
    parent: Rollout | None = None,
    action: str = "change.scheduled",
    request=None,
) -> Rollout:
    """Create the next rollout of a locked change for `items` (default: the whole plan) and
    enqueue advance_rollout once the transaction commits."""
    items = list(change.plan_items.order_by("order")) if items is None else items
    attempt = (change.rollouts.order_by("-attempt").values_list("attempt", flat=True).first() or 0) + 1
    rollout = Rollout.objects.create(
        change=change, attempt=attempt, parent=parent, plan_hash=change.plan_hash, created_by=user
    )
    canaries = change.canary_count
    HostRun.objects.bulk_create(
        [
            HostRun(
                rollout=rollout,
                host_id=item.host_id,
                plan_item=item,
                order=position,
                is_canary=position < canaries,
            )
            for position, item in enumerate(items)
        ]
    )
    change.decided_at = change.decided_at or timezone.now()
    transition(
        change,
        State.SCHEDULED,
        user=user,
        action=action,
        request=request,
        data={
            "rollout": rollout.pk,
            "attempt": attempt,
            "hosts": len(items),
            "plan_hash": change.plan_hash,
            **({"parent_rollout": parent.pk} if parent else {}),
        },
    )
    record(
        "rollout.state_changed",
        obj=rollout,
        change=change,
        data={"from": None, "to": rollout.state, "attempt": attempt},
        **actor_kwargs(user),
    )
    from .tasks import advance_rollout

    rollout_id = rollout.pk
    transaction.on_commit(lambda: advance_rollout.delay(rollout_id))
    return rollout


def cancel_change(change_id: int, user, *, reason: str = "", request=None) -> ChangeRequest:
    """Cancel: pending host runs stop; running ones finish their current step. Not a rollback."""
    check_permission(user, "operate")
    with transaction.atomic():
        immediate_constraints()
        change = lock(change_id)
        if change.state not in CANCELLABLE:
            raise ChangeError(f"a {change.get_state_display().lower()} change cannot be cancelled")
        was = change.state
        now = timezone.now()
        rollout = change.rollouts.select_for_update(of=("self",)).order_by("-attempt").first()
        message = "cancelled by " + user.get_username() + (f": {reason}" if reason else "")
        transition(
            change,
            State.CANCELLED,
            user=user,
            action="change.cancelled",
            request=request,
            message=message,
            data={"reason": reason, "was": was},
        )
        if rollout is not None and not rollout.is_finished:
            rollout.cancel_requested_at = now
            rollout.save(update_fields=["cancel_requested_at"])
            from .tasks import advance_rollout

            rollout_id = rollout.pk
            transaction.on_commit(lambda: advance_rollout.delay(rollout_id))
    return change


def retryable_items(change: ChangeRequest) -> tuple[list[PlanItem], list[str]]:
    """The plan items of the last rollout's failed hosts, and why others cannot be retried.

    Only FAILED hosts are retried; skipped hosts (halted, window closed: never attempted) are not —
    a new change covers them (docs/changes.md, "Retry")."""
    rollout = change.rollouts.order_by("-attempt").first()
    if rollout is None:
        return [], ["this change never ran"]
    runs = rollout.host_runs.filter(
        state__in=(HostRun.State.FAILED, HostRun.State.DRIFTED)
    ).select_related("plan_item", "host")
    items, problems = [], []
    for run in runs:
        if run.state == HostRun.State.DRIFTED:
            problems.append(f"{run.host.name} drifted from the plan")
        else:
            items.append(run.plan_item)
    return items, problems


def retry_change(change_id: int, user, *, request=None) -> Rollout:
    """Re-run only the failed hosts of a finished change (not the skipped ones, which never ran),
    as a new rollout approved from the same plan — only when re-planning those hosts gives the
    same plan."""
    check_permission(user, "operate")
    with transaction.atomic():
        immediate_constraints()
        change = lock(change_id)
        if change.state not in RETRYABLE:
            raise ChangeError(f"a {change.get_state_display().lower()} change has nothing to retry")
        items, problems = retryable_items(change)
        lock_hosts_for_reference([item.host_id for item in items])
        if items:
            hosts = [item.host for item in items]
            plan = compute_plan(change, hosts)
            fresh = {p.host.pk: p for p in plan.hosts}
            for item in items:
                now = fresh[item.host_id]
                if now.plan.errors:
                    problems.append(f"{item.host.name}: {'; '.join(now.plan.errors)}")
                elif now.item_hash != item.item_hash:
                    problems.append(f"{item.host.name}: the host no longer matches the approved plan")
        if problems or not items:
            raise ChangeError(
                "cannot retry: "
                + ("; ".join(problems) or "no failed hosts")
                + ". The approved plan no longer holds; create a new change."
            )
        parent = change.rollouts.order_by("-attempt").first()
        rollout = schedule(
            change, user=user, items=items, parent=parent, action="change.retried", request=request
        )
    return rollout


def can_cancel(change: ChangeRequest, user) -> bool:
    return change.state in CANCELLABLE and has_permission(user, "operate")


def can_retry(change: ChangeRequest, user) -> bool:
    return change.state in RETRYABLE and has_permission(user, "operate")
