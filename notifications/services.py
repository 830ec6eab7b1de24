"""Notifications: who hears of an event, the deliveries, their attempts and retries, webhooks.

    fan_out(event_id) -> list[int]         # worker: one Delivery per recipient, each enqueued
    attempt(delivery_id) -> str | None     # worker: one try; schedules the next with back-off
    create_webhook / update_webhook / rotate_secret / delete_webhook / send_test  # admin pages
    subscriptions_of(user) / save_subscriptions(user, data)                      # profile page

A delivery runs in its own task, after the action's transaction committed: nothing here can
block or fail a change. Every try is a DeliveryAttempt row (the log on the webhook's page).
"""

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.mail import EmailMessage
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import record
from console import crypto
from console.roles import check_permission

from . import dispatch, formats, notices
from .events import topic_of
from .models import Delivery, DeliveryAttempt, Subscription, Topic, Webhook

logger = logging.getLogger("notifications")
State = Delivery.State
RETRYABLE_STATUS = {408, 425, 429}
SECRET_MIN = 16
URL_MAX = 2000


def anything_configured() -> bool:
    return bool(settings.NOTIFY_EMAIL_ENABLED) or Webhook.objects.filter(enabled=True).exists()


# ---------------------------------------------------------------------------------------------
# Subscriptions and audiences
# ---------------------------------------------------------------------------------------------

SUBSCRIPTION_FIELDS = ("approval_needed", "change_decided", "my_rollouts", "all_rollouts", "host_alerts")


def subscriptions_of(user) -> Subscription:
    return Subscription.objects.filter(user=user).first() or Subscription(user=user)


def save_subscriptions(user, data: dict, *, request=None) -> Subscription:
    with transaction.atomic():
        current = Subscription.objects.select_for_update().filter(user=user).first() or Subscription(user=user)
        before = {f: getattr(current, f) for f in SUBSCRIPTION_FIELDS}
        for name in SUBSCRIPTION_FIELDS:
            setattr(current, name, bool(data.get(name)))
        current.save()
        after = {f: getattr(current, f) for f in SUBSCRIPTION_FIELDS}
        if before != after:
            record("notification.subscriptions_changed", actor=user, obj=user, request=request,
                   data={"before": before, "after": after})
    return current


def _holders(codename: str):
    """Active users holding a console permission (through a role group, directly, or superuser)."""
    perm = Permission.objects.filter(content_type__app_label="console", codename=codename).first()
    users = get_user_model().objects.filter(is_active=True)
    holds = Q(is_superuser=True)
    if perm is not None:
        holds |= Q(groups__permissions=perm) | Q(user_permissions=perm)
    return users.filter(holds).distinct()


def _opted_in(queryset, field: str):
    return queryset.exclude(**{f"notification_subscription__{field}": False}).exclude(email="")


def recipients(notice) -> list:
    """The users told by e-mail, by topic (each can opt out on the profile page)."""
    User = get_user_model()
    if notice.topic == Topic.APPROVAL_NEEDED:
        people = _opted_in(_holders("approve"), "approval_needed").exclude(pk=notice.change.requested_by_id)
    elif notice.topic == Topic.CHANGE_DECIDED:
        people = _opted_in(User.objects.filter(pk=notice.change.requested_by_id, is_active=True), "change_decided")
    elif notice.topic == Topic.ROLLOUT_FINISHED:
        requester = _opted_in(User.objects.filter(pk=notice.change.requested_by_id, is_active=True), "my_rollouts")
        watchers = _holders("view_fleet").filter(notification_subscription__all_rollouts=True).exclude(email="")
        people = User.objects.filter(Q(pk__in=requester.values("pk")) | Q(pk__in=watchers.values("pk")))
    else:
        people = _opted_in(_holders("administer"), "host_alerts")
    return list(people.order_by("pk"))


# ---------------------------------------------------------------------------------------------
# Fan-out
# ---------------------------------------------------------------------------------------------


def fan_out(event_id: int) -> list[int]:
    """Create the deliveries of one audit event (idempotent: once per event and target) and
    enqueue those not tried yet."""
    event = AuditEvent.objects.filter(pk=event_id).first()
    topic = topic_of(event) if event is not None else None
    if topic is None:
        return []
    try:
        notice = notices.build(event, topic)
    except ObjectDoesNotExist:  # the change or rollout is gone: nothing left to tell about
        logger.info("audit event %s: its object no longer exists; nobody is notified", event_id)
        return []
    with transaction.atomic():
        if settings.NOTIFY_EMAIL_ENABLED:
            for user in recipients(notice):
                Delivery.objects.get_or_create(
                    event_id=event.pk, target=f"email:{user.email.lower()}",
                    defaults={"action": event.action, "topic": topic, "channel": Delivery.Channel.EMAIL,
                              "user": user, "recipient": user.email, "subject": _subject(notice),
                              "body": _email_body(notice, user)},
                )
        for webhook in Webhook.objects.filter(enabled=True).order_by("pk"):
            if topic in (webhook.topics or []):
                _webhook_delivery(webhook, notice, event_id=event.pk)
    todo = list(Delivery.objects.filter(event_id=event.pk, state=State.PENDING, attempts=0)
                .order_by("pk").values_list("pk", flat=True))
    for delivery_id in todo:
        dispatch.deliver(delivery_id)
    return todo


def _webhook_delivery(webhook: Webhook, notice, *, event_id) -> Delivery:
    target = f"webhook:{webhook.pk}"
    if event_id is not None:
        existing = Delivery.objects.filter(event_id=event_id, target=target).first()
        if existing is not None:
            return existing
    delivery = Delivery.objects.create(
        event_id=event_id, action=notice.action, topic=notice.topic, channel=Delivery.Channel.WEBHOOK,
        target=target, webhook=webhook, subject=notice.title[:300],
    )
    delivery.payload = formats.body_for(webhook.payload_format, notice, delivery.pk)
    delivery.save(update_fields=["payload"])
    return delivery


def _subject(notice) -> str:
    return f"{settings.EMAIL_SUBJECT_PREFIX}{notice.title}"[:300]


def _email_body(notice, user) -> str:
    return (
        f"{notice.text}\n\n{notice.url}\n\n"
        f"-- \nSent to {user.get_username()} by the SR-IOV Console. Choose what you receive on your profile "
        f"page: {settings.CONSOLE_BASE_URL.rstrip('/')}/account/\n"
    )


# ---------------------------------------------------------------------------------------------
# One attempt
# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    ok: bool
    retry: bool
    status_code: int | None = None
    error: str = ""


def backoff(attempt_number: int) -> float:
    """Seconds before the next try after `attempt_number` failed: base, 2×base, 4×base… capped."""
    base = float(settings.NOTIFY_RETRY_BASE_SECONDS)
    return min(base * (2 ** max(attempt_number - 1, 0)), float(settings.NOTIFY_RETRY_MAX_SECONDS))


def _claim(delivery_id: int):
    """Take the next attempt number; a duplicate task for the same attempt gets None."""
    delivery = Delivery.objects.filter(pk=delivery_id).select_related("webhook").first()
    if delivery is None or delivery.state not in Delivery.OPEN:
        return None, 0
    number = delivery.attempts + 1
    claimed = Delivery.objects.filter(pk=delivery_id, attempts=delivery.attempts, state__in=Delivery.OPEN).update(
        attempts=number, next_attempt_at=None
    )
    return (delivery, number) if claimed else (None, 0)


def attempt(delivery_id: int) -> str | None:
    """Try a delivery once; record the attempt; schedule a retry or give up. Returns the state."""
    delivery, number = _claim(delivery_id)
    if delivery is None:
        return None
    started = timezone.now()
    clock = time.monotonic()
    if delivery.channel == Delivery.Channel.EMAIL:
        result = _send_email(delivery)
    else:
        result = _post_webhook(delivery)
    elapsed = int((time.monotonic() - clock) * 1000)
    last = number >= int(settings.NOTIFY_MAX_ATTEMPTS)
    will_retry = not result.ok and result.retry and not last
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery, number=number, started_at=started, duration_ms=elapsed, ok=result.ok,
            status_code=result.status_code, error=result.error[:1000], will_retry=will_retry,
        )
        if result.ok:
            fields = {"state": State.SENT, "last_error": "", "finished_at": timezone.now()}
        elif will_retry:
            delay = backoff(number)
            fields = {"state": State.RETRYING, "last_error": result.error[:1000],
                      "next_attempt_at": timezone.now() + timedelta(seconds=delay)}
        else:
            fields = {"state": State.FAILED, "last_error": result.error[:1000], "finished_at": timezone.now()}
        Delivery.objects.filter(pk=delivery.pk).update(**fields)
    if not result.ok:
        logger.warning("%s delivery %s (%s) attempt %s failed: %s%s", delivery.channel, delivery.pk,
                       _who(delivery), number, result.error, " — will retry" if will_retry else "")
    if will_retry:
        dispatch.retry_later(delivery.pk, backoff(number))
    return fields["state"]


def _who(delivery: Delivery) -> str:
    if delivery.webhook_id:
        return f"webhook {delivery.webhook.name}"
    return delivery.recipient


def _send_email(delivery: Delivery) -> Result:
    message = EmailMessage(delivery.subject, delivery.body, settings.DEFAULT_FROM_EMAIL, [delivery.recipient])
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # smtplib errors, refused connections, timeouts: all retried
        return Result(ok=False, retry=True, error=f"{type(exc).__name__}: {exc}"[:500])
    return Result(ok=True, retry=False)


def describe_request_error(exc: Exception) -> str:
    """A sentence about a failed HTTP call without the URL (its path may be the secret)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connecting timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within {settings.NOTIFY_WEBHOOK_TIMEOUT:g} s"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (certificate not trusted, or not TLS)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "could not connect (refused, unreachable or name not resolved)"
    return f"the request failed ({type(exc).__name__})"


def _post_webhook(delivery: Delivery) -> Result:
    webhook = delivery.webhook
    if webhook is None:
        return Result(ok=False, retry=False, error="the webhook was deleted")
    if not webhook.enabled and delivery.event_id is not None:
        return Result(ok=False, retry=False, error="the webhook was disabled before this delivery was sent")
    body = delivery.payload.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "sriov-console-webhook/1",
        formats.EVENT_HEADER: delivery.topic,
        formats.DELIVERY_HEADER: str(delivery.pk),
        formats.SIGNATURE_HEADER: formats.sign(webhook.get_secret(), body),
    }
    try:
        response = requests.post(webhook.get_url(), data=body, headers=headers,
                                 timeout=settings.NOTIFY_WEBHOOK_TIMEOUT, allow_redirects=False)
    except requests.exceptions.RequestException as exc:
        return Result(ok=False, retry=True, error=describe_request_error(exc))
    code = response.status_code
    if 200 <= code < 300:
        return Result(ok=True, retry=False, status_code=code)
    snippet = " ".join(response.text[:200].split())
    retry = code >= 500 or code in RETRYABLE_STATUS
    error = f"HTTP {code}" + (f": {snippet}" if snippet else "")
    if 300 <= code < 400:
        error = f"HTTP {code}: redirects are not followed; give the final URL"
    return Result(ok=False, retry=retry, status_code=code, error=error)


# ---------------------------------------------------------------------------------------------
# Webhooks (admin)
# ---------------------------------------------------------------------------------------------


def display_url(url: str) -> str:
    """scheme://host[:port]/… : enough to recognise the receiver, never the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


def _clean(data: dict, *, webhook: Webhook | None) -> dict:
    errors: dict[str, list[str]] = {}
    name = (data.get("name") or "").strip()
    if not name or len(name) > 100:
        errors["name"] = ["Give the webhook a name of at most 100 characters."]
    elif Webhook.objects.filter(name=name).exclude(pk=webhook.pk if webhook else None).exists():
        errors["name"] = ["Another webhook has this name."]
    url = (data.get("url") or "").strip()
    if url or webhook is None:
        if len(url) > URL_MAX:
            errors["url"] = [f"At most {URL_MAX} characters."]
        else:
            try:
                URLValidator(schemes=["http", "https"])(url)
            except ValidationError:
                errors["url"] = ["Give an http:// or https:// URL."]
    fmt = data.get("payload_format") or Webhook.Format.JSON
    if fmt not in Webhook.Format.values:
        errors["payload_format"] = ["Choose one of the formats."]
    topics = [t for t in (data.get("topics") or []) if t]
    if not topics or any(t not in Topic.values for t in topics):
        errors["topics"] = ["Choose at least one event."]
    secret = (data.get("secret") or "").strip()
    if secret and len(secret) < SECRET_MIN:
        errors["secret"] = [f"A secret of at least {SECRET_MIN} characters, or leave it empty to get one."]
    if errors:
        raise ValidationError(errors)
    return {"name": name, "url": url, "payload_format": fmt, "topics": sorted(set(topics)),
            "enabled": bool(data.get("enabled", True)), "secret": secret}


def _summary(webhook: Webhook) -> dict:
    """What pages and the audit trail may know about a webhook: never its secret or URL path."""
    return {"name": webhook.name, "url": webhook.url_display, "payload_format": webhook.payload_format,
            "topics": webhook.topics, "enabled": webhook.enabled}


def create_webhook(data: dict, user, *, request=None) -> tuple[Webhook, str]:
    """Returns (webhook, secret): the secret is shown once, on the page that answers the form."""
    check_permission(user, "administer")
    clean = _clean(data, webhook=None)
    secret = clean["secret"] or secrets.token_urlsafe(32)
    with transaction.atomic():
        webhook = Webhook(name=clean["name"], payload_format=clean["payload_format"], topics=clean["topics"],
                          enabled=clean["enabled"], created_by=user)
        webhook.url_encrypted = crypto.encrypt(clean["url"])
        webhook.url_display = display_url(clean["url"])
        webhook.secret_encrypted = crypto.encrypt(secret)
        webhook.save()
        record("webhook.created", actor=user, obj=webhook, request=request, data={"after": _summary(webhook)})
    return webhook, secret


def update_webhook(webhook_id: int, data: dict, user, *, request=None) -> Webhook:
    """Edit name, format, events, enabled; an empty URL keeps the stored one."""
    check_permission(user, "administer")
    with transaction.atomic():
        webhook = Webhook.objects.select_for_update().get(pk=webhook_id)
        clean = _clean(data, webhook=webhook)
        before = _summary(webhook)
        webhook.name, webhook.payload_format = clean["name"], clean["payload_format"]
        webhook.topics, webhook.enabled = clean["topics"], clean["enabled"]
        url_changed = bool(clean["url"]) and clean["url"] != webhook.get_url()
        if url_changed:
            webhook.url_encrypted = crypto.encrypt(clean["url"])
            webhook.url_display = display_url(clean["url"])
        webhook.save()
        after = _summary(webhook)
        changed = {k: {"before": before[k], "after": after[k]} for k in before if before[k] != after[k]}
        if url_changed:
            changed.setdefault("url", {"before": before["url"], "after": after["url"]})["replaced"] = True
        if changed:
            record("webhook.updated", actor=user, obj=webhook, request=request, data={"changed": changed})
    return webhook


def rotate_secret(webhook_id: int, user, *, request=None) -> tuple[Webhook, str]:
    check_permission(user, "administer")
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        webhook = Webhook.objects.select_for_update().get(pk=webhook_id)
        webhook.secret_encrypted = crypto.encrypt(secret)
        webhook.save(update_fields=["secret_encrypted", "updated_at"])
        record("webhook.secret_rotated", actor=user, obj=webhook, request=request, data={"name": webhook.name})
    return webhook, secret


def delete_webhook(webhook_id: int, user, *, request=None) -> None:
    check_permission(user, "administer")
    with transaction.atomic():
        webhook = Webhook.objects.select_for_update().get(pk=webhook_id)
        record("webhook.deleted", actor=user, obj=webhook, request=request, data={"before": _summary(webhook)})
        webhook.delete()


def send_test(webhook_id: int, user, *, request=None) -> Delivery:
    """A test delivery to one webhook, logged like any other (even while it is disabled)."""
    check_permission(user, "administer")
    with transaction.atomic():
        webhook = Webhook.objects.get(pk=webhook_id)
        delivery = _webhook_delivery(webhook, notices.test_notice(webhook, timezone.now().isoformat()), event_id=None)
        record("webhook.tested", actor=user, obj=webhook, request=request, data={"delivery": delivery.pk})
        transaction.on_commit(lambda: dispatch.deliver(delivery.pk), robust=True)
    return delivery


def delivery_log(webhook: Webhook, limit: int = 100) -> list[DeliveryAttempt]:
    """The newest attempts of a webhook's deliveries (one query)."""
    return list(
        DeliveryAttempt.objects.filter(delivery__webhook=webhook)
        .select_related("delivery").order_by("-id")[:limit]
    )


def recent_deliveries(limit: int = 200) -> list[Delivery]:
    return list(Delivery.objects.select_related("webhook", "user").order_by("-id")[:limit])


def reencrypt_all(*, actor_name: str = "manage.py") -> int:
    """Re-encrypt every webhook URL and secret under the newest CREDENTIAL_KEYS key."""
    count = 0
    with transaction.atomic():
        for webhook in Webhook.objects.select_for_update().order_by("pk"):
            webhook.url_encrypted = crypto.rotate(webhook.url_encrypted)
            webhook.secret_encrypted = crypto.rotate(webhook.secret_encrypted)
            webhook.save(update_fields=["url_encrypted", "secret_encrypted", "updated_at"])
            record("webhook.reencrypted", actor_name=actor_name, obj=webhook, data={"name": webhook.name})
            count += 1
    return count
