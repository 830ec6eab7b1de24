"""Notifications from real events: a rollout run by the worker against simulated hosts over SSH
(succeeded; halted and failed), and a host whose SSH key changed, found by discovery."""

import pytest

from changes import approvals, services
from changes.models import Rollout
from hosts.discovery import discover_hosts
from hosts.models import Hypervisor
from notifications.models import Subscription, Topic
from simfleet import SimFleet
from tests.changes.conftest import change_data
from tests.conftest import ensure_role_groups, register_sim_hosts
from tests.notifications.helpers import webhook
from tests.notifications.servers import wait_for

NAMES = ["n-ok", "n-bad", "n-key"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = SimFleet(tmp_path_factory.mktemp("simfleet-notify"), hosts=[{"profile": "dl360g9", "name": n} for n in NAMES],
                   base_port=0, vf_delay=0.02).start()
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _clean(fleet, transactional_db):
    ensure_role_groups()
    yield
    for host in fleet.hosts:
        host.clear_faults()


def rolled_out(host, people):
    change = services.create_change(change_data([host.pk], max_failures=1), people["otto"])
    services.submit_change(change.pk, people["otto"])
    approvals.approve(change.pk, people["anna"], comment="go", approval_hash=approvals.current_approval_hash(change.pk))
    return change, wait_for(lambda: Rollout.objects.filter(change=change, state__in=Rollout.FINISHED).first(),
                            timeout=120, what="the rollout to finish")


def test_a_rollout_outcome_reaches_the_requester_subscribers_and_webhook(notify_worker, fleet, smtp, receiver,
                                                                          people):
    Subscription.objects.create(user=people["vera"], all_rollouts=True)
    webhook(people["ada"], receiver.url(), topics=[Topic.ROLLOUT_FINISHED])
    (host,) = register_sim_hosts(fleet, [fleet["n-ok"]], credential_name="notify-ok")
    change, rollout = rolled_out(host, people)
    assert rollout.state == "succeeded"
    subject = f"[SR-IOV Console] Rollout of change #{change.pk} succeeded: {change.title}"
    for address in ("otto@example.test", "vera@example.test"):
        wait_for(lambda a=address: [m for m in smtp.to(a) if m["subject"] == subject], what=f"mail to {address}")
    (document,) = wait_for(receiver.documents, what="the webhook")
    assert document["topic"] == "rollout_finished" and document["rollout"]["state"] == "succeeded"
    assert len(receiver.received()) == 1  # the change-level copy of the outcome is not sent again


def test_a_halted_rollout_says_so(notify_worker, fleet, smtp, people):
    (host,) = register_sim_hosts(fleet, [fleet["n-bad"]], credential_name="notify-bad")
    fleet["n-bad"].inject("readonly_etc")  # the persistence file cannot be written: set_vfs fails
    change, rollout = rolled_out(host, people)
    assert rollout.state == "failed" and rollout.halted
    mail = wait_for(lambda: [m for m in smtp.to("otto@example.test") if "Rollout" in m["subject"]],
                    what="the requester's mail")[0]
    assert mail["subject"].endswith(f"Rollout of change #{change.pk} halted (failed): {change.title}")


def test_a_changed_host_key_alerts_the_admins(notify_worker, fleet, smtp, people):
    (host,) = register_sim_hosts(fleet, [fleet["n-key"]], credential_name="notify-key")
    fleet["n-key"].inject("host_key_rotated")
    discover_hosts(Hypervisor.objects.filter(pk=host.pk))
    assert Hypervisor.objects.get(pk=host.pk).status == "host_key_mismatch"
    mail = wait_for(lambda: smtp.to("ada@example.test"), what="the admin's alert")[0]
    assert mail["subject"] == "[SR-IOV Console] Host n-key: SSH host key mismatch"
    assert host.host_key_fingerprint in mail["body"]
    assert not [m for m in smtp.messages if "otto@example.test" in m["to"] or "anna@example.test" in m["to"]]
