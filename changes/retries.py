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
from .planning import compute_plan
from .services import lock, lock_hosts_for_reference, schedule
from .states import ChangeError

State = ChangeRequest.State
RETRYABLE = (State.FAILED, State.PARTIALLY_FAILED, State.CANCELLED)
# Host-run outcomes a retry runs again: never attempted (skipped, cancelled) or failed.
RETRY_STATES = (HR.FAILED, HR.SKIPPED, HR.CANCELLED)


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
    plan. A host whose inventory cannot tell (unreachable at the last contact...) is re-read now,
    and the message says to retry once it answers. Every refusal is audited."""
    check_permission(user, "operate")
    stale = []
    with transaction.atomic():
        change = lock(change_id)
        if change.state not in RETRYABLE:
            refused = f"a {change.get_state_display().lower()} change has nothing to retry"
        elif not change.rollouts.exists():
            refused = "this change never ran: it has nothing to retry"
        else:
            items, problems, _counts = retry_candidates(change)
            stale = _replan_problems(change, items, problems)
            if not (problems or stale) and items:
                parent = change.rollouts.order_by("-attempt").first()
                return schedule(change, user=user, items=items, parent=parent, action="change.retried",
                                request=request)
            refused = _retry_refusal(items, problems, stale)
    _record_refusal(change, user, refused, request, stale)
    raise ChangeError(refused)


def _replan_problems(change: ChangeRequest, items: list[PlanItem], problems: list[str]) -> list:
    """Adds to `problems` the hosts whose plan no longer holds; returns the hosts to re-read."""
    lock_hosts_for_reference([item.host_id for item in items])
    if not items:
        return []
    fresh = {p.host.pk: p for p in compute_plan(change, [item.host for item in items]).hosts}
    stale = []
    for item in items:
        now = fresh[item.host_id]
        if now.plan.errors and item.host.status != Hypervisor.Status.REACHABLE:
            stale.append(item.host)
        elif now.plan.errors:
            problems.append(f"{item.host.name}: {'; '.join(now.plan.errors)}")
        elif now.item_hash != item.item_hash:
            problems.append(f"{item.host.name}: the host no longer matches the approved plan (its inventory "
                            "changed since the approval): a new change is needed for it")
    return stale


def _retry_refusal(items, problems: list[str], stale: list) -> str:
    parts = list(problems)
    if stale:
        names = ", ".join(h.name for h in stale)
        parts.append(f"{names}: not reachable at the last contact; re-reading {'it' if len(stale) == 1 else 'them'} "
                     "now: press Retry again once the host page shows it reachable")
    if not items and not parts:
        parts.append("every host of the plan has succeeded")
    return "cannot retry yet: " + "; ".join(parts) + "."


def _record_refusal(change: ChangeRequest, user, refused: str, request, stale: list) -> None:
    """A refused retry is kept in the audit (the attempt matters to a reviewer), and the hosts whose
    inventory is too old to decide are re-read."""
    from hosts.services import request_discovery

    with transaction.atomic():
        record("change.retry_refused", obj=change, change=change, actor=user, request=request,
               data={"reason": refused})
        for host in stale:
            request_discovery(host, user)


def can_retry(change: ChangeRequest, user) -> bool:
    return change.state in RETRYABLE and has_permission(user, "operate")
