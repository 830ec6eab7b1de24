"""Webhook pages (admins) and the profile page: the secret is shown once and never again, URL and
secret are encrypted at rest, nothing secret reaches pages, logs or the audit trail; bad input is a
400 with nothing written; page query counts do not grow with the log."""

import logging

from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from notifications.models import Delivery, DeliveryAttempt, Subscription, Topic, Webhook
from tests.notifications.helpers import webhook

URL = "https://hooks.slack.test/services/T000/B000/very-secret-path-token"
SECRET = "a-webhook-secret-of-sufficient-length"


def form(**extra):
    data = {"name": "slack-ops", "url": URL, "payload_format": "slack", "topics": [Topic.APPROVAL_NEEDED,
            Topic.HOST_ALERT], "enabled": "on", "secret": SECRET}
    data.update(extra)
    return data


def everything_said(client, webhook_obj, caplog) -> str:
    pages = [client.get(reverse(name, args=args)).content.decode() for name, args in (
        ("notifications:webhooks", []), ("notifications:webhook", [webhook_obj.pk]),
        ("notifications:webhook_edit", [webhook_obj.pk]), ("notifications:deliveries", []))]
    audit = [f"{e.object_repr} {e.data}" for e in AuditEvent.objects.all()]
    return "\n".join(pages + audit + [caplog.text])


def test_creating_a_webhook_shows_the_secret_once(client, admin_user, caplog):
    caplog.set_level(logging.DEBUG)
    client.force_login(admin_user)
    response = client.post(reverse("notifications:webhook_create"), form(secret=""))
    assert response.status_code == 201
    hook = Webhook.objects.get()
    generated = hook.get_secret()
    assert generated in response.content.decode() and len(generated) >= 32
    assert hook.get_url() == URL and hook.url_display == "https://hooks.slack.test/…"
    with connection.cursor() as cursor:  # encrypted at rest
        cursor.execute("SELECT url_encrypted, secret_encrypted FROM notifications_webhook")
        raw = " ".join(cursor.fetchone())
    assert URL not in raw and generated not in raw and "very-secret-path-token" not in raw
    said = everything_said(client, hook, caplog)
    assert generated not in said and "very-secret-path-token" not in said
    created = AuditEvent.objects.get(action="webhook.created")
    assert created.data["after"]["url"] == "https://hooks.slack.test/…"


def test_a_chosen_secret_is_kept_and_a_new_one_replaces_it(client, admin_user, caplog):
    client.force_login(admin_user)
    client.post(reverse("notifications:webhook_create"), form())
    hook = Webhook.objects.get()
    assert hook.get_secret() == SECRET
    response = client.post(reverse("notifications:webhook_rotate", args=[hook.pk]))
    hook.refresh_from_db()
    assert hook.get_secret() != SECRET and hook.get_secret() in response.content.decode()
    assert AuditEvent.objects.filter(action="webhook.secret_rotated").count() == 1
    said = everything_said(client, hook, caplog)
    assert SECRET not in said and hook.get_secret() not in said


def test_bad_input_is_a_400_and_writes_nothing(client, admin_user):
    client.force_login(admin_user)
    for bad in (form(url="ftp://example.test/x"), form(url="not a url"), form(topics=[]),
                form(secret="short"), form(topics=["nonsense"]), form(name="")):
        response = client.post(reverse("notifications:webhook_create"), bad)
        assert response.status_code == 400, bad
    assert not Webhook.objects.exists() and not AuditEvent.objects.filter(action__startswith="webhook.").exists()
    webhook(admin_user, URL, topics=[Topic.HOST_ALERT], name="taken")
    assert client.post(reverse("notifications:webhook_create"), form(name="taken")).status_code == 400


def test_editing_keeps_the_url_unless_a_new_one_is_given(client, admin_user):
    client.force_login(admin_user)
    hook, _ = webhook(admin_user, URL, topics=[Topic.HOST_ALERT])
    response = client.post(reverse("notifications:webhook_edit", args=[hook.pk]),
                           {"name": "renamed", "url": "", "payload_format": "teams", "topics": [Topic.HOST_ALERT]})
    assert response.status_code == 302
    hook.refresh_from_db()
    assert hook.name == "renamed" and hook.get_url() == URL and not hook.enabled and hook.payload_format == "teams"
    client.post(reverse("notifications:webhook_edit", args=[hook.pk]),
                {"name": "renamed", "url": "https://other.test/hook", "payload_format": "json",
                 "topics": [Topic.HOST_ALERT], "enabled": "on"})
    hook.refresh_from_db()
    assert hook.get_url() == "https://other.test/hook"
    changed = AuditEvent.objects.filter(action="webhook.updated").order_by("id").last().data["changed"]
    assert changed["url"] == {"before": "https://hooks.slack.test/…", "after": "https://other.test/…",
                              "replaced": True}


def test_test_button_and_delete(client, admin_user, receiver):
    client.force_login(admin_user)
    hook, _ = webhook(admin_user, receiver.url(), topics=[Topic.HOST_ALERT])
    assert client.post(reverse("notifications:webhook_test", args=[hook.pk])).status_code == 302
    delivery = Delivery.objects.get(webhook=hook)
    from notifications.services import attempt

    assert attempt(delivery.pk) == "sent" and receiver.received()
    assert client.get(reverse("notifications:webhook_delete", args=[hook.pk])).status_code == 200
    assert client.post(reverse("notifications:webhook_delete", args=[hook.pk])).status_code == 302
    assert not Webhook.objects.exists() and AuditEvent.objects.filter(action="webhook.deleted").exists()


def test_log_pages_have_constant_queries(client, admin_user, django_assert_max_num_queries):
    from django.utils import timezone

    client.force_login(admin_user)
    hook, _ = webhook(admin_user, URL, topics=[Topic.HOST_ALERT])
    for n in range(30):
        delivery = Delivery.objects.create(action="host.key_mismatch", topic="host_alert", channel="webhook",
                                           target=f"webhook:{hook.pk}:{n}", webhook=hook, subject=f"alert {n}")
        DeliveryAttempt.objects.create(delivery=delivery, number=1, started_at=timezone.now(), ok=False,
                                       status_code=500, error="HTTP 500")
    for name, args in (("notifications:webhook", [hook.pk]), ("notifications:deliveries", [])):
        with django_assert_max_num_queries(8):
            assert client.get(reverse(name, args=args)).status_code == 200


def test_profile_page_saves_subscriptions(client, operator):
    client.force_login(operator)
    page = client.get(reverse("accounts:profile")).content.decode()
    assert "A local account" in page and "E-mail me when" in page
    response = client.post(reverse("accounts:profile"), {"change_decided": "on", "all_rollouts": "on"})
    assert response.status_code == 302
    subscription = Subscription.objects.get(user=operator)
    assert (subscription.change_decided, subscription.all_rollouts, subscription.my_rollouts) == (True, True, False)
    assert AuditEvent.objects.get(action="notification.subscriptions_changed").data["after"]["all_rollouts"]
