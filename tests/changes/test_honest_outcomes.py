"""Outcomes that are true: a change succeeds only when every host of its plan has succeeded in some
attempt; retry offers and runs every host that did not succeed (saying which); cancel during a
reboot wait stops waiting at once and names the hosts left mid-reboot; each operation is shown in
its own words; the progress bar shows each outcome in its colour and the header badge follows the
state live. Real Celery worker, simfleet over real SSH."""

import re

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from changes import approvals, retries, services
from changes.execution.rollout import advance
from changes.models import ChangeRequest, HostRun, Rollout
from hosts.models import Hypervisor

from .conftest import change_data, make_host, wait_for
from .kargs_helpers import finished, make_fleet, register, runs, set_vfs

pytestmark = pytest.mark.slow

HOSTS = [f"ho{i}" for i in range(1, 5)]
REBOOTING = ["hr1", "hr2"]
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = make_fleet(tmp_path_factory, [{"profile": "dl360g9", "name": n} for n in HOSTS + REBOOTING], "simfleet-ho")
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _clear_faults(fleet):
    yield
    for host in fleet.hosts:
        host.clear_faults()


def approve(change, operator, approver):
    services.submit_change(change.pk, operator)
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))


def test_a_skipped_host_is_retried_and_the_change_succeeds_only_when_all_did(
    celery_worker, fleet, operator, approver, client_for
):
    hosts = register(fleet, [fleet.host(n) for n in HOSTS])
    change = services.create_change(
        change_data([h.pk for h in hosts], ops=[set_vfs("eno49", 2)], parallelism=1, max_failures=1), operator
    )
    fleet.host("ho2").inject("unreachable")
    approve(change, operator, approver)
    rollout = finished(change)
    assert [r.state for r in runs(rollout)] == ["succeeded", "failed", "skipped", "skipped"]
    change.refresh_from_db()
    assert change.state == "partially_failed"
    assert retries.retry_offer(change) == "3 hosts: 1 failed, 2 skipped"
    page = client_for(operator).get(change.get_absolute_url()).content.decode()
    assert "Retry 3 hosts: 1 failed, 2 skipped" in page

    # The host is back, though the console last saw it unreachable: the retry runs it anyway, and its
    # host run re-reads it before writing (nobody has to refresh it by hand first).
    fleet.host("ho2").clear_faults()
    assert Hypervisor.objects.get(name="ho2").status == "unreachable"
    retry = retries.retry_change(change.pk, operator)
    assert sorted(r.host.name for r in runs(retry)) == ["ho2", "ho3", "ho4"]
    done = finished(change)
    assert done.pk == retry.pk and done.state == "succeeded", [r.message for r in runs(done)]
    change.refresh_from_db()
    assert change.state == "succeeded"
    assert retries.retry_offer(change) is None
    # Nothing left to retry: refused, and the attempt is in the audit.
    with pytest.raises(services.ChangeError, match="a succeeded change has nothing to retry"):
        retries.retry_change(change.pk, operator)
    assert AuditEvent.objects.filter(action="change.retry_refused", change_id=change.pk).exists()


def test_a_rollout_of_only_some_hosts_does_not_make_the_change_succeed(db, credential, operator, approver,
                                                                        django_capture_on_commit_callbacks):
    hosts = [make_host(f"hx{i}", credential=credential, nics=[("eno49", "0000:04:00.0", 0)]) for i in (1, 2)]
    change = services.create_change(change_data([h.pk for h in hosts]), operator)
    with django_capture_on_commit_callbacks():
        approve(change, operator, approver)
    first = Rollout.objects.get(change=change)
    HostRun.objects.filter(rollout=first, host=hosts[0]).update(state="failed")
    HostRun.objects.filter(rollout=first, host=hosts[1]).update(state="skipped")
    Rollout.objects.filter(pk=first.pk).update(state="failed")
    ChangeRequest.objects.filter(pk=change.pk).update(state="failed")
    # A second rollout of only the failed host, which succeeds.
    with django_capture_on_commit_callbacks():
        change = services.lock(change.pk)
        second = services.schedule(change, items=[change.plan_items.get(host=hosts[0])], parent=first)
    HostRun.objects.filter(rollout=second).update(state="succeeded")
    Rollout.objects.filter(pk=second.pk).update(state="running")
    with django_capture_on_commit_callbacks():
        assert advance(second.pk) == "succeeded"
    change.refresh_from_db()
    assert change.state == "partially_failed", "a host of the plan never ran"
    assert change.state_message.endswith("1 of 2 hosts of the plan not done")


def test_cancel_during_a_reboot_wait_stops_waiting_and_names_the_host(
    celery_worker, fleet, operator, approver, client_for
):
    hosts = register(fleet, [fleet.host(n) for n in REBOOTING])
    change = services.create_change(
        change_data([h.pk for h in hosts], ops=[{"op": "reboot", "when": "always"}]), operator
    )
    fleet.host("hr1").inject("reboot_never_returns")
    approve(change, operator, approver)
    wait_for(lambda: HostRun.objects.filter(rollout__change=change, state="rebooting").exists(), what="the reboot")
    response = client_for(operator).post(reverse("changes:cancel", args=[change.pk]), {"reason": "wrong window"})
    assert response.status_code == 302
    # At once, not at the boot deadline.
    run = HostRun.objects.get(rollout__change=change, host__name="hr1")
    assert run.state == "cancelled"
    assert run.message.startswith("cancelled while waiting for hr1 to come back from its reboot")
    change.refresh_from_db()
    assert change.state == "cancelled"
    assert "1 host left mid-reboot (hr1): check that they came back" in change.state_message
    rollout = finished(change, timeout=30)
    assert rollout.state == "cancelled"
    assert HostRun.objects.get(rollout__change=change, host__name="hr2").state == "cancelled"
    page = client_for(operator).get(change.get_absolute_url()).content.decode()
    assert "hr1 to come back from its reboot" in page and "left mid-reboot" in page


def test_each_operation_is_shown_in_its_own_words(db, credential, operator, client_for):
    host = make_host("hw1", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])
    ops = [{"op": "kernel_args", "preset": "iommu", "add": ["hugepages=16"]}, {"op": "reboot", "when": "always"},
           set_vfs("eno49", 4, persist=False)]
    change = services.create_change(change_data([host.pk], ops=ops), operator)
    page = client_for(operator).get(change.get_absolute_url()).content.decode()
    assert "enable IOMMU for SR-IOV (per CPU vendor); add kernel arguments hugepages=16" in page
    assert "reboot every host" in page
    assert "set 4 VFs on PF eno49, not persisted" in page
    assert "VFs on PFs by ," not in page and "set  VFs" not in page


def test_progress_shows_each_outcome_and_the_badge_follows_the_state(
    db, credential, operator, approver, viewer, client_for, django_capture_on_commit_callbacks
):
    hosts = [make_host(f"hp{i}", credential=credential, nics=[("eno49", "0000:04:00.0", 0)]) for i in range(4)]
    change = services.create_change(change_data([h.pk for h in hosts]), operator)
    with django_capture_on_commit_callbacks():
        approve(change, operator, approver)
        advance(Rollout.objects.get(change=change).pk)
    change.refresh_from_db()
    assert change.state == "running"
    states = ["succeeded", "failed", "skipped", "running"]
    for run, state in zip(HostRun.objects.filter(rollout__change=change).order_by("order"), states, strict=True):
        HostRun.objects.filter(pk=run.pk).update(state=state)
    c = client_for(viewer)
    html = c.get(reverse("changes:rollout", args=[change.pk]), **HTMX).content.decode()
    for key in ("succeeded", "failed", "skipped", "running"):
        assert re.search(rf'<rect class="seg-{key}" x="[\d.]+" y="0" width="25.0"', html), key
    assert "1 succeeded" in html and "1 failed or drifted" in html and "1 skipped or cancelled" in html
    # The header badge is swapped out of band with every poll: it says Running, not Scheduled.
    oob = re.search(r'<span id="change-state" hx-swap-oob="true">(.*?)</span>\s*</span>', html, re.S)
    assert oob and "Running" in oob.group(1)
    # The history follows the rollout too (it used to fill in only when the rollout ended).
    history = re.search(r'<div id="change-history" hx-swap-oob="true">(.*?)</div>', html, re.S)
    assert history and "rollout.state_changed" in history.group(1) and "change.scheduled" in history.group(1)
    full = c.get(change.get_absolute_url()).content.decode()
    assert full.count('id="change-state"') == 1 and full.count('id="change-history"') == 1
