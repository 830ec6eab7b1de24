"""Votes bind to what the approver saw; one execution per host run (leases, the window at claim,
the resume cap, the holder of a host); bad input of the change form. DB rows only, no worker:
on_commit callbacks are captured, not run."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from changes import approvals, retries, services
from changes.execution.ownership import LostOwnership, claim, finish
from changes.execution.recovery import resume_stale
from changes.execution.rollout import advance
from changes.models import Approval, ChangeRequest, HostRun, Rollout, Step

from .conftest import change_data, make_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def host(credential):
    return make_host("hv1", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])


def submit(change):
    services.submit_change(change.pk, change.requested_by)
    return ChangeRequest.objects.get(pk=change.pk)


def edit(change, **changes):
    data = change_data(change.targets["host_ids"], **changes)
    services.update_change(change.pk, data, change.requested_by)
    return ChangeRequest.objects.get(pk=change.pk)


# -- 1. votes bind to the submission and to everything the approver saw ---------------------------


@override_settings(CHANGE_APPROVALS_REQUIRED=2)
def test_a_policy_only_edit_after_a_vote_makes_the_old_vote_stop_counting(
    host, operator, approver, second_approver, django_capture_on_commit_callbacks
):
    change = submit(services.create_change(change_data([host.pk]), operator))
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    # The requester widens the rollout (plan hash unchanged) and submits again.
    edited = submit(edit(change, parallelism=50, max_failures=40, allow_guest_impact=False))
    assert edited.plan_hash == change.plan_hash and edited.submission == change.submission + 1
    assert approvals.approvals_in(edited) == 0
    approvals.approve(edited.pk, second_approver, approval_hash=approvals.current_approval_hash(edited.pk))
    edited.refresh_from_db()
    assert edited.state == "submitted", "an old vote on the unedited policy was counted"
    assert Approval.objects.filter(change=edited).count() == 2  # every vote is kept
    # The first approver may vote again on the new submission.
    approvals.approve(edited.pk, approver, approval_hash=approvals.current_approval_hash(edited.pk))
    edited.refresh_from_db()
    assert edited.state == "scheduled"


def test_a_vote_from_a_stale_page_is_refused(host, operator, approver, django_capture_on_commit_callbacks):
    change = submit(services.create_change(change_data([host.pk]), operator))
    loaded = approvals.current_approval_hash(change.pk)
    submit(edit(change, title="VFs for the rack (now with a later window)", parallelism=5))
    with pytest.raises(services.ChangeError, match="edited after you loaded it; review it again"):
        approvals.approve(change.pk, approver, plan_hash=change.plan_hash, approval_hash=loaded)
    assert not Approval.objects.exists()
    assert ChangeRequest.objects.get(pk=change.pk).state == "submitted"


def test_a_vote_without_the_approval_hash_is_refused(host, operator, approver):
    change = submit(services.create_change(change_data([host.pk]), operator))
    with pytest.raises(services.ChangeError, match="approval_hash"):
        approvals.approve(change.pk, approver, plan_hash=change.plan_hash)
    assert not Approval.objects.exists()


def test_web_vote_from_a_stale_page_is_refused_and_the_form_shows_the_policy(
    host, operator, approver, client_for, django_capture_on_commit_callbacks
):
    change = submit(services.create_change(change_data([host.pk]), operator))
    c = client_for(approver)
    page = c.get(change.get_absolute_url()).content.decode()
    loaded = approvals.current_approval_hash(change.pk)
    assert f'value="{loaded}"' in page and 'id="vote-policy"' in page and "parallelism 1" in page
    submit(edit(change, parallelism=9))
    response = c.post(
        reverse("changes:approve", args=[change.pk]),
        {"plan_hash": change.plan_hash, "approval_hash": loaded, "comment": "ok"},
        follow=True,
    )
    assert "edited after you loaded it" in response.content.decode()
    assert ChangeRequest.objects.get(pk=change.pk).state == "submitted" and not Approval.objects.exists()


# -- 3. one execution per host run: a duplicate delivery exits while the first one beats ----------


def scheduled_run(host, operator, approver, capture, **policy):
    change = submit(services.create_change(change_data([host.pk], **policy), operator))
    with capture():
        approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    rollout = Rollout.objects.get(change=change)
    with capture():
        advance(rollout.pk)
    run = HostRun.objects.get(rollout=rollout)
    assert run.owner and run.dispatched_at
    return change, run


def test_a_second_delivery_of_the_same_message_does_not_drive_the_host_run_twice(
    host, operator, approver, django_capture_on_commit_callbacks
):
    _change, run = scheduled_run(host, operator, approver, django_capture_on_commit_callbacks)
    first = claim(run.pk, run.owner)
    assert first is not None and first.lease
    with django_capture_on_commit_callbacks():
        assert claim(run.pk, run.owner) is None  # heartbeat fresh: the first one drives
    # The first execution dies: once its heartbeat is stale, a delivery takes over with a new lease.
    HostRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    again = claim(run.pk, run.owner)
    assert again is not None and again.lease != first.lease and again.resumed_count == 1
    # The replaced execution can no longer write.
    with pytest.raises(LostOwnership):
        finish(first, run.owner, HostRun.State.SUCCEEDED, "done")


# -- 4. the maintenance window is enforced when a host run is claimed -----------------------------


def test_a_host_run_claimed_after_the_window_closed_is_skipped(
    host, operator, approver, django_capture_on_commit_callbacks
):
    change, run = scheduled_run(
        host, operator, approver, django_capture_on_commit_callbacks, not_after=timezone.now() + timedelta(hours=1)
    )
    ChangeRequest.objects.filter(pk=change.pk).update(not_after=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks():
        assert claim(run.pk, run.owner) is None
    run.refresh_from_db()
    assert run.state == "skipped" and run.message.startswith("skipped: the maintenance window closed at")


# -- 8. resumes are capped ------------------------------------------------------------------------


def test_a_host_run_resumed_three_times_is_failed_at_the_fourth_loss(
    host, operator, approver, django_capture_on_commit_callbacks
):
    _change, run = scheduled_run(host, operator, approver, django_capture_on_commit_callbacks)
    HostRun.objects.filter(pk=run.pk).update(
        state="running", resumed_count=3, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    # The lost worker was in the middle of a verify call.
    open_step = Step.objects.create(host_run=run, seq=3, kind="verify", operation="inventory",
                                    started_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks():
        assert resume_stale() == []
    run.refresh_from_db()
    assert run.state == "failed" and run.message.startswith("gave up after 3 worker losses")
    # A finished host run has no step left "running": it is closed as interrupted, and audited.
    open_step.refresh_from_db()
    assert open_step.finished_at is not None and open_step.error_code == "interrupted"
    assert AuditEvent.objects.filter(action="step.finished", data__step=open_step.pk).exists()


# -- the holder of a host: a rebooting host run holds it too --------------------------------------


def test_waiting_names_the_change_whose_host_run_is_rebooting(
    host, operator, approver, django_capture_on_commit_callbacks
):
    first, run1 = scheduled_run(host, operator, approver, django_capture_on_commit_callbacks)
    HostRun.objects.filter(pk=run1.pk).update(state="rebooting")
    _second, run2 = scheduled_run(host, operator, approver, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks():
        assert claim(run2.pk, run2.owner) is None
    run2.refresh_from_db()
    assert run2.state == "waiting" and run2.message == f"waiting: host is held by change #{first.pk}"


# -- retry runs every host that did not succeed ----------------------------------------------------


def test_retry_runs_the_failed_and_the_skipped_hosts(
    credential, operator, approver, django_capture_on_commit_callbacks
):
    hosts = [make_host(f"hv{i}", credential=credential, nics=[("eno49", "0000:04:00.0", 0)]) for i in (1, 2, 3)]
    change = submit(services.create_change(change_data([h.pk for h in hosts]), operator))
    with django_capture_on_commit_callbacks():
        approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    rollout = Rollout.objects.get(change=change)
    done, failed, skipped = rollout.host_runs.order_by("order")
    HostRun.objects.filter(pk=done.pk).update(state="succeeded", message="1 step applied and verified")
    HostRun.objects.filter(pk=failed.pk).update(state="failed", message="eno49: agent error")
    HostRun.objects.filter(pk=skipped.pk).update(state="skipped", message="halted after 1 failure")
    Rollout.objects.filter(pk=rollout.pk).update(state="partially_failed")
    ChangeRequest.objects.filter(pk=change.pk).update(state="partially_failed")
    assert retries.retry_offer(ChangeRequest.objects.get(pk=change.pk)) == "2 hosts: 1 failed, 1 skipped"
    with django_capture_on_commit_callbacks():
        retry = retries.retry_change(change.pk, operator)
    assert list(retry.host_runs.order_by("order").values_list("host_id", flat=True)) == [
        failed.host_id, skipped.host_id
    ]


# -- 12. bad input is a 4xx, never a 500 ----------------------------------------------------------


@pytest.mark.parametrize("value", ["²", "١", "9" * 40, "-1", ""])
def test_new_change_with_a_bad_host_id_is_a_400(operator, client_for, value):
    response = client_for(operator).get(reverse("changes:new") + "?host=" + value)
    assert response.status_code == 400


def test_new_change_with_a_good_host_id_preselects_it(host, operator, client_for):
    response = client_for(operator).get(reverse("changes:new") + f"?host={host.pk}")
    assert response.status_code == 200


def test_change_form_with_a_huge_host_id_is_a_form_error(operator, client_for):
    data = change_data()
    form = {
        "title": data["title"],
        "reason": data["reason"],
        "hosts": ["9" * 30],
        "parallelism": 1,
        "canary_count": 0,
        "max_failures": 1,
        "set_vfs-0-by": "name",
        "set_vfs-0-value": "eno49",
        "set_vfs-0-count": 4,
    }
    before = ChangeRequest.objects.count()
    response = client_for(operator).post(reverse("changes:new"), form)
    assert response.status_code == 400
    assert ChangeRequest.objects.count() == before


# -- 13. the web edit never drops operations it cannot show --------------------------------------


def test_web_edit_of_a_change_with_more_operations_than_the_form_holds_is_refused(
    credential, operator, client_for
):
    names = [f"eno{49 + i}" for i in range(5)]
    host = make_host(
        "hv1", credential=credential, nics=[(n, f"0000:04:00.{i}", 0) for i, n in enumerate(names)]
    )
    ops = [{"op": "set_vfs", "select": {"by": "name", "value": n}, "count": 2} for n in names]
    change = services.create_change(change_data([host.pk], ops=ops), operator)
    c = client_for(operator)
    url = reverse("changes:edit", args=[change.pk])
    response = c.get(url, follow=True)
    assert "cannot be edited here" in response.content.decode() and "5 set_vfs operations" in response.content.decode()
    response = c.post(url, {"title": "x", "reason": "y", "hosts": [host.pk], "set_vfs-0-value": "eno49",
                            "set_vfs-0-count": 1})
    assert response.status_code == 302
    assert len(ChangeRequest.objects.get(pk=change.pk).operations) == 5
