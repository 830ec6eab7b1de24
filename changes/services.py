"""Change lifecycle services: create, edit, re-plan, submit, schedule, cancel, retry.

Every transition goes through `states.transition()` (allowed-transition table, row locked,
audited in the same transaction). Views, the API and tasks call these; permissions are checked
here, at the entry points. Approvals are in changes/approvals.py, execution in changes/execution/.
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from audit.services import record
from console.roles import check_permission, has_permission
from hosts.models import Hypervisor

from . import dispatch
from .execution.locks import immediate_constraints, lock_change, lock_host_runs, lock_rollout
from .execution.transitions import HR, set_host_run_state
from .models import ChangeRequest, HostRun, PlanItem, Rollout
from .operations import OperationError, validate_operations
from .planning import Plan, compute_plan
from .states import CANCELLABLE, EDITABLE, FINISHED, ChangeError, actor_kwargs, transition
from .targets import TargetError, resolve_targets, validate_targets

__all__ = ["CANCELLABLE", "EDITABLE", "FINISHED", "ChangeError", "immediate_constraints", "lock", "transition"]

State = ChangeRequest.State

POLICY_FIELDS = (
    "parallelism",
    "canary_count",
    "max_failures",
    "not_before",
    "not_after",
    "allow_guest_impact",
)


def lock(change_id: int) -> ChangeRequest:
    return lock_change(change_id)


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
            HostRun(rollout=rollout, host_id=item.host_id, plan_item=item, order=position,
                    is_canary=position < canaries)
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
    dispatch.advance_rollout(rollout.pk)
    return rollout


def cancel_change(change_id: int, user, *, reason: str = "", request=None) -> ChangeRequest:
    """Cancel: pending host runs stop; a host waiting to come back from its reboot stops being
    waited for at once; a host in the middle of a step finishes that step. Not a rollback."""
    check_permission(user, "operate")
    with transaction.atomic():
        change = lock(change_id)
        if change.state not in CANCELLABLE:
            raise ChangeError(f"a {change.get_state_display().lower()} change cannot be cancelled")
        was = change.state
        latest = change.rollouts.order_by("-attempt").values_list("pk", flat=True).first()
        rollout = lock_rollout(latest) if latest else None
        message = "cancelled by " + user.get_username() + (f": {reason}" if reason else "")
        left = _stop_boot_waits(change, rollout) if rollout is not None and not rollout.is_finished else []
        if left:
            message += "; " + mid_reboot_words(left)
        transition(
            change,
            State.CANCELLED,
            user=user,
            action="change.cancelled",
            request=request,
            message=message,
            data={"reason": reason, "was": was, "left_mid_reboot": left},
        )
        if rollout is not None and not rollout.is_finished:
            rollout.cancel_requested_at = timezone.now()
            rollout.save(update_fields=["cancel_requested_at"])
            dispatch.advance_rollout(rollout.pk)
    return change


def _stop_boot_waits(change: ChangeRequest, rollout: Rollout) -> list[str]:
    """Host runs waiting for their host to come back end now; returns the hosts' names."""
    left = []
    for run in lock_host_runs(rollout):
        if run.state == HR.REBOOTING:
            set_host_run_state(
                run, HR.CANCELLED,
                f"cancelled while waiting for {run.host.name} to come back from its reboot: nothing after the "
                "reboot was verified. Check that the host is up, then refresh it and look at its kernel "
                "arguments and VF counts.",
                change_id=change.pk,
            )
            left.append(run.host.name)
    return left


def mid_reboot_words(names: list[str]) -> str:
    return (f"{len(names)} host{'s' if len(names) != 1 else ''} left mid-reboot ({', '.join(names)}): check that "
            "they came back, refresh them and compare their kernel arguments and VF counts with the plan")


def can_cancel(change: ChangeRequest, user) -> bool:
    return change.state in CANCELLABLE and has_permission(user, "operate")
