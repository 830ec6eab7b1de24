"""Who is told what: the audit events that count, the audiences, opting out, and that an action
rolled back tells nobody. Deliveries here run in the test process (webhooks over real HTTP to
the loopback receiver; e-mail through Django's test outbox)."""

import json

import pytest
from django.core import mail
from django.db import transaction

from audit.services import record
from changes.models import ChangeRequest, Rollout
from notifications import services
from notifications.events import topic_of
from notifications.formats import SIGNATURE_HEADER, verify
from notifications.models import Delivery, Subscription, Topic
from tests.changes.conftest import make_host
from tests.notifications.helpers import submitted_change, webhook
from tests.support.callbacks import service_callbacks


@pytest.fixture
def email_on(settings):
    settings.NOTIFY_EMAIL_ENABLED = True
    settings.CONSOLE_BASE_URL = "https://console.example.test"


def deliver_all(event_id):
    ids = services.fan_out(event_id)
    for delivery_id in ids:
        services.attempt(delivery_id)
    return Delivery.objects.filter(pk__in=ids)


def recipients_of(event):
    return sorted(d.recipient for d in Delivery.objects.filter(event_id=event.pk, channel="email"))


def last(action):
    from audit.models import AuditEvent

    return AuditEvent.objects.filter(action=action).order_by("-id").first()


def test_only_committed_actions_notify(people, email_on, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        try:
            with transaction.atomic():
                submitted_change(people["otto"])
                raise RuntimeError("the request failed after the submit")
        except RuntimeError:
            pass
    assert service_callbacks(callbacks) == [] and not ChangeRequest.objects.exists()
    with django_capture_on_commit_callbacks() as callbacks:
        submitted_change(people["otto"])
    assert len(service_callbacks(callbacks)) == 1  # change.submitted; change.created tells nobody


def test_approvers_hear_of_waiting_changes_unless_they_opted_out(people, email_on):
    submitted_change(people["otto"])
    deliver_all(last("change.submitted").pk)
    assert recipients_of(last("change.submitted")) == ["ada@example.test", "anna@example.test"]
    assert sorted(m.to[0] for m in mail.outbox) == ["ada@example.test", "anna@example.test"]
    # Idempotent: a second fan-out of the same event sends nothing new.
    assert services.fan_out(last("change.submitted").pk) == []
    assert len(mail.outbox) == 2


def test_the_requester_hears_only_of_the_deciding_vote(people, email_on, settings):
    from changes import approvals

    settings.CHANGE_APPROVALS_REQUIRED = 2
    change = submitted_change(people["otto"])
    approvals.approve(change.pk, people["anna"], approval_hash=approvals.current_approval_hash(change.pk))
    assert topic_of(last("change.approved")) is None  # 1 of 2 votes: not news yet
    approvals.approve(change.pk, people["arne"], approval_hash=approvals.current_approval_hash(change.pk))
    assert topic_of(last("change.approved")) == Topic.CHANGE_DECIDED
    deliver_all(last("change.approved").pk)
    assert recipients_of(last("change.approved")) == ["otto@example.test"]


def test_rollout_outcomes_reach_the_requester_and_the_subscribers(people, email_on):
    change = submitted_change(people["otto"])
    Subscription.objects.create(user=people["vera"], all_rollouts=True)
    rollout = Rollout.objects.create(change=change, plan_hash=change.plan_hash, state="failed", halted=True)
    with transaction.atomic():
        record("rollout.state_changed", obj=rollout, change=change, actor_name="worker",
               data={"from": "running", "to": "failed", "message": "halted after 1 failure"})
        # The same outcome is recorded for the change too; only the rollout's own event counts.
        record("rollout.state_changed", obj=change, change=change, actor_name="worker",
               data={"from": "running", "to": "failed", "rollout": rollout.pk})
    events = list(type(last("rollout.state_changed")).objects.filter(action="rollout.state_changed").order_by("id"))
    assert [topic_of(e) for e in events] == [Topic.ROLLOUT_FINISHED, None]
    deliver_all(events[0].pk)
    assert recipients_of(events[0]) == ["otto@example.test", "vera@example.test"]
    assert "halted (failed)" in mail.outbox[0].subject
    running = record("rollout.state_changed", obj=rollout, change=change, data={"from": "pending", "to": "running"})
    assert topic_of(running) is None


def test_host_alerts_reach_the_admins(people, email_on):
    host = make_host("hv-alert")
    record("host.key_mismatch", obj=host, host=host, actor_name="worker",
           data={"expected_fingerprint": "SHA256:old", "presented_fingerprint": "SHA256:new"})
    deliver_all(last("host.key_mismatch").pk)
    assert recipients_of(last("host.key_mismatch")) == ["ada@example.test"]
    assert "SHA256:new" in mail.outbox[0].body and "SHA256:old" in mail.outbox[0].body
    record("host.drift_detected", obj=host, host=host, data={"reasons": ["eno49: 4 VFs, the console set 2"]})
    deliver_all(last("host.drift_detected").pk)
    assert "eno49: 4 VFs, the console set 2" in mail.outbox[-1].body


def test_without_email_or_webhooks_nothing_is_queued(people, settings, django_capture_on_commit_callbacks):
    settings.NOTIFY_EMAIL_ENABLED = False
    with django_capture_on_commit_callbacks() as callbacks:
        submitted_change(people["otto"])
    assert service_callbacks(callbacks) == []


@pytest.mark.parametrize("payload_format", ["slack", "teams"])
def test_slack_and_teams_bodies(people, receiver, payload_format):
    _hook, secret = webhook(people["ada"], receiver.url(), topics=[Topic.APPROVAL_NEEDED],
                            payload_format=payload_format)
    change = submitted_change(people["otto"])
    (delivery,) = deliver_all(last("change.submitted").pk)
    assert Delivery.objects.get(pk=delivery.pk).state == "sent"
    (call,) = receiver.received()
    assert verify(secret, call["body"], call["headers"][SIGNATURE_HEADER])
    document = json.loads(call["body"])
    if payload_format == "slack":
        assert set(document) == {"text"} and f"Change #{change.pk} waits for approval" in document["text"]
        assert f"/changes/{change.pk}/|Open in the SR-IOV Console>" in document["text"]
    else:
        assert document["@type"] == "MessageCard" and document["title"].startswith(f"Change #{change.pk}")
        assert document["potentialAction"][0]["targets"][0]["uri"].endswith(f"/changes/{change.pk}/")


def test_a_receiver_that_refuses_is_not_retried(people, receiver, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    receiver.statuses = [404]
    webhook(people["ada"], receiver.url(), topics=[Topic.APPROVAL_NEEDED])
    submitted_change(people["otto"])
    (delivery,) = deliver_all(last("change.submitted").pk)
    delivery.refresh_from_db()
    assert delivery.state == "failed" and delivery.attempts == 1 and delivery.last_error.startswith("HTTP 404")
    assert "webhook ops-hook" in caplog.text and "path-secret-Xy12" not in caplog.text  # the URL path is secret
