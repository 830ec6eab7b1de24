"""Four-eyes approval and the change state machine, through the services (no worker needed:
on_commit callbacks that would enqueue tasks are captured, not run)."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.test import override_settings
from django.utils import timezone

from audit.models import AuditEvent
from changes import approvals, retries, services
from changes.models import Approval, ChangeRequest, HostRun, Rollout
from tests.conftest import make_user
from tests.support.callbacks import service_callbacks

from .conftest import change_data, make_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def host(credential):
    return make_host("hv1", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])


@pytest.fixture
def submitted(host, operator, django_capture_on_commit_callbacks):
    change = services.create_change(change_data([host.pk]), operator)
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    return change


def seen(change):
    """The approval_hash a voter loading the change now would send back."""
    return approvals.current_approval_hash(change.pk)


def actions(change):
    return list(
        AuditEvent.objects.filter(change_id=change.pk).order_by("id").values_list("action", flat=True)
    )


def test_requester_can_never_approve_even_as_admin(
    host, admin_user, approver, django_capture_on_commit_callbacks
):
    change = services.create_change(change_data([host.pk]), admin_user)
    services.submit_change(change.pk, admin_user)
    change.refresh_from_db()
    with pytest.raises(PermissionDenied, match="someone else"):
        approvals.approve(change.pk, admin_user, approval_hash=seen(change))
    with pytest.raises(PermissionDenied):
        approvals.reject(change.pk, admin_user, comment="no", approval_hash=seen(change))
    assert Approval.objects.count() == 0
    approvals.approve(change.pk, approver, comment="looks right", approval_hash=seen(change))
    change.refresh_from_db()
    assert change.state == "scheduled"


def test_operator_without_approve_permission_cannot_vote(submitted, viewer):
    with pytest.raises(PermissionDenied):
        approvals.approve(submitted.pk, viewer, approval_hash=seen(submitted))


def test_approval_schedules_a_rollout_with_host_runs(submitted, approver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        approvals.approve(submitted.pk, approver, comment="ok", approval_hash=seen(submitted))
    submitted.refresh_from_db()
    assert submitted.state == "scheduled"
    rollout = Rollout.objects.get(change=submitted)
    assert rollout.attempt == 1 and rollout.plan_hash == submitted.plan_hash
    assert list(rollout.host_runs.values_list("state", flat=True)) == ["pending"]
    # advance_rollout, after commit (besides the audit witness lines of the events)
    assert len(service_callbacks(callbacks)) == 1
    assert actions(submitted) == [
        "change.created",
        "change.submitted",
        "change.approved",
        "change.scheduled",
        "rollout.state_changed",
    ]


@override_settings(CHANGE_APPROVALS_REQUIRED=2)
def test_quorum_one_vote_each_and_votes_are_kept(
    host, operator, approver, second_approver, django_capture_on_commit_callbacks
):
    change = services.create_change(change_data([host.pk]), operator)
    assert change.required_approvals == 2
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    approvals.approve(change.pk, approver, comment="first", approval_hash=seen(change))
    change.refresh_from_db()
    assert change.state == "submitted" and approvals.approvals_in(change) == 1
    with pytest.raises(services.ChangeError, match="already voted"):
        approvals.approve(change.pk, approver, approval_hash=seen(change))
    approvals.approve(change.pk, second_approver, comment="second", approval_hash=seen(change))
    change.refresh_from_db()
    assert change.state == "scheduled"
    assert [v.comment for v in change.approvals.order_by("id")] == ["first", "second"]


def test_one_rejection_rejects_at_once_and_needs_a_comment(host, operator, approver, second_approver):
    with override_settings(CHANGE_APPROVALS_REQUIRED=2):
        change = services.create_change(change_data([host.pk]), operator)
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    approvals.approve(change.pk, approver, approval_hash=seen(change))
    with pytest.raises(services.ChangeError, match="comment is required"):
        approvals.reject(change.pk, second_approver, comment=" ", approval_hash=seen(change))
    approvals.reject(change.pk, second_approver, comment="wrong rack", approval_hash=seen(change))
    change.refresh_from_db()
    assert change.state == "rejected"
    assert "wrong rack" in change.state_message
    with pytest.raises(services.ChangeError, match="not waiting for votes"):
        approvals.approve(change.pk, make_user("third", "approver"), approval_hash=seen(change))
    assert change.approvals.count() == 2


def test_vote_binds_to_the_plan_hash_and_a_changed_plan_needs_new_votes(submitted, host, approver, operator):
    with pytest.raises(services.ChangeError, match="plan changed since you loaded"):
        approvals.approve(
            submitted.pk,
            approver,
            plan_hash="0" * 64,
            approval_hash=seen(submitted),
        )
    # The inventory moves between submission and the vote: the plan is different now.
    host.nics.update(sriov_numvfs=0, sriov_totalvfs=3)
    with pytest.raises(services.ChangeError, match="back in draft"):
        approvals.approve(submitted.pk, approver, approval_hash=seen(submitted))
    submitted.refresh_from_db()
    assert submitted.state == "draft" and submitted.plan_blocked
    assert Approval.objects.count() == 0


def test_editing_a_submitted_change_returns_it_to_draft_and_old_votes_stop_counting(
    host, operator, approver, second_approver, django_capture_on_commit_callbacks
):
    with override_settings(CHANGE_APPROVALS_REQUIRED=2):
        change = services.create_change(change_data([host.pk]), operator)
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    approvals.approve(change.pk, approver, approval_hash=seen(change))
    old_hash = change.plan_hash
    services.update_change(
        change.pk,
        change_data(
            [host.pk], ops=[{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 5}]
        ),
        operator,
    )
    change.refresh_from_db()
    assert change.state == "draft" and change.plan_hash != old_hash
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    assert approvals.approvals_in(change) == 0
    # The same approver may vote again on the new plan; both votes are kept.
    approvals.approve(change.pk, approver, approval_hash=seen(change))
    approvals.approve(change.pk, second_approver, approval_hash=seen(change))
    change.refresh_from_db()
    assert change.state == "scheduled" and change.approvals.count() == 3


def test_only_the_requester_edits_and_submits(submitted, host):
    other = make_user("olga", "operator")
    with pytest.raises(PermissionDenied):
        services.update_change(submitted.pk, change_data([host.pk]), other)
    with pytest.raises(PermissionDenied):
        services.submit_change(submitted.pk, other)


@override_settings(APPROVAL_MAX_AGE=3600)
def test_expiry(submitted):
    assert approvals.expire_stale_approvals() == []
    ChangeRequest.objects.filter(pk=submitted.pk).update(submitted_at=timezone.now() - timedelta(hours=2))
    assert approvals.expire_stale_approvals() == [submitted.pk]
    submitted.refresh_from_db()
    assert submitted.state == "expired"
    assert submitted.state_message.startswith("expired: no decision within 1 hours")
    assert actions(submitted)[-1] == "change.expired"


def test_transition_table_refuses_the_impossible(submitted, operator):
    with pytest.raises(services.ChangeError, match="cannot be submitted"):
        services.submit_change(submitted.pk, operator)
    services.cancel_change(submitted.pk, operator, reason="not needed")
    with pytest.raises(services.ChangeError, match="cannot be cancelled"):
        services.cancel_change(submitted.pk, operator)
    with pytest.raises(services.ChangeError, match="nothing to retry"):
        retries.retry_change(submitted.pk, operator)


def test_at_most_one_running_host_run_per_host_is_enforced_by_the_database(
    submitted, host, approver, operator, django_capture_on_commit_callbacks
):
    from django.db import IntegrityError, transaction

    approvals.approve(submitted.pk, approver, approval_hash=seen(submitted))
    second = services.create_change(change_data([host.pk]), operator)
    services.submit_change(second.pk, operator)
    second.refresh_from_db()
    approvals.approve(second.pk, approver, approval_hash=seen(second))
    first_run, second_run = HostRun.objects.order_by("id")
    HostRun.objects.filter(pk=first_run.pk).update(state="running")
    with pytest.raises(IntegrityError), transaction.atomic():
        HostRun.objects.filter(pk=second_run.pk).update(state="running")
