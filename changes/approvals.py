"""Four-eyes approval, enforced here so every entry point (pages, the coming REST API) shares it.

Rules:
* only users with the `approve` permission vote; the requester never votes on their own change —
  not even an admin;
* one vote per user per submission (Approval unique on change, user, submission); every vote is
  kept; only votes of the change's current submission count (any edit → draft → a new submission);
* a vote carries the `approval_hash` of what the voter saw: plan hash, policy, required approvals,
  title, reason, targets, operations and the submission number; a mismatch is refused (the change
  was edited after the page was loaded);
* a single rejection rejects the change at once;
* an approval binds to the plan hash the approver saw; the plan is re-computed from the current
  inventory before each vote, and if it changed the change goes back to draft (earlier votes stop
  counting) and the vote is refused;
* quorum = `required_approvals` distinct approvers on the current plan hash → approved, and the
  change is scheduled in the same transaction;
* submitted changes older than APPROVAL_MAX_AGE expire (beat task `expire_approvals`).
"""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record
from console.roles import check_permission

from .models import Approval, ChangeRequest
from .services import ChangeError, immediate_constraints, lock, policy_of, replan, schedule, transition

State = ChangeRequest.State
COMMENT_MAX = 2000
STALE_VOTE = "the change was edited after you loaded it; review it again"


def approval_hash(change: ChangeRequest) -> str:
    """What a vote binds to: sha256 of the canonical JSON of everything the approver reviewed."""
    content = {
        "change": change.pk,
        "submission": change.submission,
        "plan_hash": change.plan_hash,
        "policy": policy_of(change),
        "required_approvals": change.required_approvals,
        "title": change.title,
        "reason": change.reason,
        "targets": change.targets,
        "operations": change.operations,
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _vote(
    change_id: int,
    user,
    decision: str,
    comment: str,
    plan_hash: str | None,
    approval_hash_seen: str | None,
    request=None,
) -> ChangeRequest:
    check_permission(user, "approve")
    comment = _checked_comment(decision, comment)
    if not approval_hash_seen:
        raise ChangeError("a vote must carry the approval_hash of the change you reviewed; " + STALE_VOTE)
    with transaction.atomic():
        immediate_constraints()
        change = lock(change_id)
        _check_voter(change, user, plan_hash, approval_hash_seen)
        replanned = decision == Approval.Decision.APPROVE and _replanned(change, user, plan_hash, request)
        if not replanned:
            vote = _cast(change, user, decision, comment)
            if decision == Approval.Decision.REJECT:
                _reject(change, user, vote, comment, request)
            else:
                _count_approval(change, user, vote, comment, request)
    if replanned:
        raise ChangeError(
            "the plan changed since the change was submitted (the inventory is different now); "
            "the change is back in draft and needs to be submitted and approved again"
        )
    return change


def _checked_comment(decision: str, comment: str) -> str:
    comment = (comment or "").strip()
    if len(comment) > COMMENT_MAX:
        raise ChangeError(f"the comment is longer than {COMMENT_MAX} characters")
    if decision == Approval.Decision.REJECT and not comment:
        raise ChangeError("say why you reject the change (a comment is required)")
    return comment


def _check_voter(change: ChangeRequest, user, plan_hash: str | None, approval_hash_seen: str) -> None:
    if change.requested_by_id == user.pk:
        raise PermissionDenied("you requested this change; someone else must approve or reject it")
    if change.state != State.SUBMITTED:
        raise ChangeError(f"a {change.get_state_display().lower()} change is not waiting for votes")
    if plan_hash is not None and plan_hash != change.plan_hash:
        raise ChangeError("the plan changed since you loaded the page; review the current plan and vote again")
    if approval_hash_seen != approval_hash(change):
        raise ChangeError(STALE_VOTE)
    if Approval.objects.filter(change=change, user=user, submission=change.submission).exists():
        raise ChangeError("you already voted on this plan")


def _replanned(change: ChangeRequest, user, plan_hash: str | None, request) -> bool:
    """Re-plan from the current inventory before an approval: a different (or now blocked) plan
    sends the change back to draft and the vote is refused."""
    plan, changed = replan(change)
    if not (changed or plan.blocked):
        return False
    change.submitted_at = None
    why = ("the inventory changed since the change was submitted: the plan is different now" if changed
           else "the plan has blocking errors now")
    transition(
        change, State.DRAFT, user=user, action="change.updated", request=request,
        message=why + "; the requester must review and submit it again",
        data={"replanned": True, "old_plan_hash": plan_hash, "plan_hash": change.plan_hash,
              "votes_invalidated": True},
    )
    return True


def _cast(change: ChangeRequest, user, decision: str, comment: str) -> Approval:
    try:
        with transaction.atomic():
            return Approval.objects.create(change=change, user=user, decision=decision, comment=comment,
                                           plan_hash=change.plan_hash, submission=change.submission)
    except IntegrityError:
        raise ChangeError("you already voted on this plan") from None


def _reject(change: ChangeRequest, user, vote: Approval, comment: str, request) -> None:
    change.decided_at = timezone.now()
    transition(
        change, State.REJECTED, user=user, action="change.rejected", request=request,
        message=f"rejected by {user.get_username()}: {comment}",
        data={"vote": vote.pk, "comment": comment, "plan_hash": change.plan_hash},
    )


def _count_approval(change: ChangeRequest, user, vote: Approval, comment: str, request) -> None:
    """Record the approval; at the quorum the change is approved and scheduled in this transaction."""
    votes = approvals_in(change)
    data = {"vote": vote.pk, "comment": comment, "plan_hash": change.plan_hash, "approvals": votes,
            "required": change.required_approvals, "quorum": votes >= change.required_approvals}
    if votes < change.required_approvals:
        record("change.approved", obj=change, change=change, actor=user, request=request, data=data)
        return
    change.decided_at = timezone.now()
    transition(
        change, State.APPROVED, user=user, action="change.approved", request=request,
        message=f"approved: {votes} of {change.required_approvals} required approvals", data=data,
    )
    schedule(change, user=user, request=request)


def approve(
    change_id: int, user, *, comment: str = "", approval_hash: str | None = None, plan_hash: str | None = None,
    request=None,
) -> ChangeRequest:
    """Approve what the caller reviewed: `approval_hash` (required) as shown with the change;
    `plan_hash`, when given, must match too."""
    return _vote(change_id, user, Approval.Decision.APPROVE, comment, plan_hash, approval_hash, request)


def reject(
    change_id: int, user, *, comment: str, approval_hash: str | None = None, plan_hash: str | None = None,
    request=None,
) -> ChangeRequest:
    return _vote(change_id, user, Approval.Decision.REJECT, comment, plan_hash, approval_hash, request)


def counts(vote: Approval, change: ChangeRequest) -> bool:
    """A vote counts only on the change's current submission (and plan)."""
    return vote.submission == change.submission and vote.plan_hash == change.plan_hash


def approvals_in(change: ChangeRequest) -> int:
    """Distinct approvers on the current submission and plan hash."""
    return (
        Approval.objects.filter(
            change=change,
            submission=change.submission,
            plan_hash=change.plan_hash,
            decision=Approval.Decision.APPROVE,
        )
        .exclude(user_id=change.requested_by_id)
        .values("user")
        .distinct()
        .count()
    )


def can_vote(change: ChangeRequest, user, votes=None) -> bool:
    from console.roles import has_permission

    if (
        change.state != State.SUBMITTED
        or change.requested_by_id == user.pk
        or not has_permission(user, "approve")
    ):
        return False
    votes = change.approvals.all() if votes is None else votes
    return not any(v.user_id == user.pk and v.submission == change.submission for v in votes)


def expire_stale_approvals(now=None) -> list[int]:
    """Submitted changes waiting longer than APPROVAL_MAX_AGE become expired (audited)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.APPROVAL_MAX_AGE)
    expired = []
    for change_id in ChangeRequest.objects.filter(state=State.SUBMITTED, submitted_at__lt=cutoff).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            change = lock(change_id)
            if change.state != State.SUBMITTED or change.submitted_at >= cutoff:
                continue
            hours = settings.APPROVAL_MAX_AGE / 3600
            change.decided_at = now
            transition(
                change,
                State.EXPIRED,
                action="change.expired",
                message=f"expired: no decision within {hours:g} hours of submission "
                f"(submitted {change.submitted_at:%Y-%m-%d %H:%M} UTC)",
                data={
                    "submitted_at": change.submitted_at.isoformat(),
                    "max_age_seconds": settings.APPROVAL_MAX_AGE,
                    "approvals": approvals_in(change),
                    "required": change.required_approvals,
                },
            )
            expired.append(change_id)
    return expired


def current_approval_hash(change_id: int) -> str:
    """The approval_hash of the change as stored now (what a fresh page or API GET shows)."""
    return approval_hash(ChangeRequest.objects.get(pk=change_id))
