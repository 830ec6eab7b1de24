"""Retry: run again, as a new rollout of the same approved plan, every host of a change that did
not succeed — failed, skipped (halted, the window closed) or cancelled — saying which, and only
where re-planning the host from the inventory gives the same plan. Every refusal is audited."""

from __future__ import annotations

from django.db import transaction

from audit.services import record
from console.roles import check_permission, has_permission
from hosts.models import Hypervisor

from .execution.transitions import HR
from .models import ChangeRequest, HostRun, PlanItem, Rollout
from .planning import compute_plan, host_errors
from .services import lock, lock_hosts_for_reference, schedule
from .states import ChangeError

State = ChangeRequest.State
RETRYABLE = (State.FAILED, State.PARTIALLY_FAILED, State.CANCELLED)
# Host-run outcomes a retry runs again: never attempted (skipped, cancelled) or failed.
RETRY_STATES = (HR.FAILED, HR.SKIPPED, HR.CANCELLED)
# Last-contact statuses that do not stop a retry: the host run's drift check re-reads the host live.
REREAD_STATUSES = (Hypervisor.Status.UNREACHABLE, Hypervisor.Status.ERROR)


def retry_candidates(change: ChangeRequest) -> tuple[list[PlanItem], list[str], dict]:
    """Plan items whose host has not succeeded in any attempt and whose latest attempt failed,
    was skipped or was cancelled; why others cannot run again; and counts by latest outcome."""
    latest: dict[int, HostRun] = {}
    for run in HostRun.objects.filter(rollout__change=change).select_related("plan_item", "host", "rollout") \
            .order_by("rollout__attempt"):
        latest[run.plan_item_id] = run
    succeeded = set(HostRun.objects.filter(rollout__change=change, state=HR.SUCCEEDED)
                    .values_list("plan_item_id", flat=True))
    items, problems, counts = [], [], {}
    for item_id, run in latest.items():
        if item_id in succeeded:
            continue
        if run.state in RETRY_STATES:
            items.append(run.plan_item)
            counts[run.state] = counts.get(run.state, 0) + 1
        elif run.state == HR.DRIFTED:
            problems.append(f"{run.host.name} drifted from the plan: a new change is needed for it")
    items.sort(key=lambda item: item.order)
    return items, problems, counts


def retry_offer(change: ChangeRequest) -> str | None:
    """What Retry would run, in words ("3 hosts: 1 failed, 2 skipped"), or None when nothing."""
    items, _problems, counts = retry_candidates(change)
    return retry_words(counts) if items else None


def retry_words(counts: dict) -> str:
    """"3 hosts: 1 failed, 2 skipped"."""
    total = sum(counts.values())
    parts = [f"{n} {state}" for state, n in sorted(counts.items())]
    return f"{total} host{'s' if total != 1 else ''}: {', '.join(parts)}" if total else "no host"


def retry_change(change_id: int, user, *, request=None) -> Rollout:
    """Run again, as a new rollout of the same approved plan, every host that did not succeed
    (failed, skipped or cancelled) — only where re-planning it from the inventory gives the same
    plan. A host the console last saw unreachable (or whose agent failed) is retried too: its host
    run re-reads it before anything is written (the drift check). Every refusal is audited."""
    check_permission(user, "operate")
    with transaction.atomic():
        change = lock(change_id)
        if change.state not in RETRYABLE:
            refused = f"a {change.get_state_display().lower()} change has nothing to retry"
        elif not change.rollouts.exists():
            refused = "this change never ran: it has nothing to retry"
        else:
            items, problems, _counts = retry_candidates(change)
            _replan_problems(change, items, problems)
            if not problems and items:
                parent = change.rollouts.order_by("-attempt").first()
                return schedule(change, user=user, items=items, parent=parent, action="change.retried",
                                request=request)
            refused = "cannot retry: " + "; ".join(problems or ["every host of the plan has succeeded"]) + "."
    with transaction.atomic():
        record("change.retry_refused", obj=change, change=change, actor=user, request=request,
               data={"reason": refused})
    raise ChangeError(refused)


def _replan_problems(change: ChangeRequest, items: list[PlanItem], problems: list[str]) -> None:
    """Adds to `problems` the hosts whose plan no longer holds. What the inventory says about a
    host's last contact (unreachable, the agent failed) is not a reason: the host run re-reads it."""
    lock_hosts_for_reference([item.host_id for item in items])
    if not items:
        return
    fresh = {p.host.pk: p for p in compute_plan(change, [item.host for item in items]).hosts}
    for item in items:
        now = fresh[item.host_id]
        passing = set(host_errors(item.host)) if item.host.status in REREAD_STATUSES else set()
        errors = [e for e in now.plan.errors if e not in passing]
        if errors:
            problems.append(f"{item.host.name}: {'; '.join(errors)}")
        elif now.item_hash != item.item_hash:
            problems.append(f"{item.host.name}: the host no longer matches the approved plan (its inventory "
                            "changed since the approval): a new change is needed for it")


def can_retry(change: ChangeRequest, user) -> bool:
    return change.state in RETRYABLE and has_permission(user, "operate")
