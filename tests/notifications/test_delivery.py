"""End to end with a real worker: an action commits → the audit event fans out → e-mails reach a
real SMTP server and signed webhooks a real receiver; failures are retried with back-off, logged
attempt by attempt, and never touch the change."""

import json

from django.urls import reverse

from changes import approvals
from changes.models import ChangeRequest
from notifications.formats import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from notifications.models import Delivery, DeliveryAttempt, Topic
from tests.notifications.helpers import submitted_change, webhook
from tests.notifications.servers import WebhookReceiver, wait_for


def test_a_submitted_change_mails_the_approvers_and_calls_the_webhook(notify_worker, smtp, receiver, people,
                                                                         client):
    hook, secret = webhook(people["ada"], receiver.url(), topics=[Topic.APPROVAL_NEEDED])
    change = submitted_change(people["otto"])

    wait_for(lambda: len(smtp.messages) >= 2 and receiver.received(), what="mail and webhook")
    wait_for(lambda: not Delivery.objects.exclude(state=Delivery.State.SENT).exists(), what="all sent")
    # Approvers who did not opt out, never the requester.
    assert sorted(a for m in smtp.messages for a in m["to"]) == ["ada@example.test", "anna@example.test"]
    mail = smtp.to("anna@example.test")[0]
    assert mail["subject"] == f"[SR-IOV Console] Change #{change.pk} waits for approval: {change.title}"
    assert f"https://console.example.test/changes/{change.pk}/" in mail["body"]

    (call,) = receiver.received()
    assert verify(secret, call["body"], call["headers"][SIGNATURE_HEADER])
    assert call["headers"]["Content-Type"] == "application/json"
    document = json.loads(call["body"])
    assert document["topic"] == "approval_needed" and document["action"] == "change.submitted"
    assert document["change"] == {"id": change.pk, "title": change.title, "state": "submitted",
                                  "requested_by": "otto"}

    # The log on the webhook's page shows the attempt; the page shows neither secret nor path.
    client.force_login(people["ada"])
    page = client.get(reverse("notifications:webhook", args=[hook.pk])).content.decode()
    assert "waits for approval" in page and "delivered" in page
    assert secret not in page and "path-secret-Xy12" not in page


def test_the_requester_hears_of_the_decision(notify_worker, smtp, people):
    change = submitted_change(people["otto"])
    wait_for(lambda: smtp.to("anna@example.test"), what="approval request")
    approvals.approve(change.pk, people["anna"], comment="looks right",
                      approval_hash=approvals.current_approval_hash(change.pk))
    mail = wait_for(lambda: smtp.to("otto@example.test"), what="decision mail")[0]
    assert mail["subject"].endswith(f"Change #{change.pk} approved: {change.title}")
    assert "anna approved" in mail["body"]


def test_a_failing_webhook_is_retried_with_back_off_then_given_up(notify_worker, people):
    receiver = WebhookReceiver(statuses=[503]).start()
    try:
        webhook(people["ada"], receiver.url(), topics=[Topic.APPROVAL_NEEDED])
        change = submitted_change(people["otto"])
        delivery = wait_for(lambda: Delivery.objects.filter(channel="webhook", state="failed").first(),
                            what="the webhook delivery to give up")
    finally:
        receiver.stop()
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [a.number for a in attempts] == [1, 2, 3]  # NOTIFY_MAX_ATTEMPTS=3
    assert [a.status_code for a in attempts] == [503, 503, 503]
    assert [a.will_retry for a in attempts] == [True, True, False]
    # Back-off: the second wait is longer than the first (0.2 s, then 0.4 s).
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4
    assert len(receiver.received()) == 3
    # The change never noticed.
    assert ChangeRequest.objects.get(pk=change.pk).state == ChangeRequest.State.SUBMITTED


def test_a_webhook_that_recovers_gets_the_same_signed_body(notify_worker, people):
    receiver = WebhookReceiver(statuses=[500, 200]).start()
    try:
        _hook, secret = webhook(people["ada"], receiver.url(), topics=[Topic.APPROVAL_NEEDED])
        submitted_change(people["otto"])
        wait_for(lambda: Delivery.objects.filter(channel="webhook", state="sent").exists(), what="sent")
    finally:
        receiver.stop()
    first, second = receiver.received()
    assert first["body"] == second["body"] and verify(secret, second["body"], second["headers"][SIGNATURE_HEADER])
    assert first["headers"][DELIVERY_HEADER] == second["headers"][DELIVERY_HEADER]
