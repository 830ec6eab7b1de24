"""Who is told what, through which channel, and the log of every delivery attempt.

Events come from the audit trail (notifications/signals.py); each notice becomes one Delivery per
recipient (an e-mail address or a webhook), and each try of a Delivery one DeliveryAttempt.
A webhook's URL and secret are stored encrypted (console/crypto.py, the credentials' keys):
a Slack or Teams URL is itself a bearer secret.
"""

from django.conf import settings
from django.db import models
from django.urls import reverse

from console import crypto


class Topic(models.TextChoices):
    APPROVAL_NEEDED = "approval_needed", "A change waits for approval"
    CHANGE_DECIDED = "change_decided", "A change was approved, rejected or expired"
    ROLLOUT_FINISHED = "rollout_finished", "A rollout halted, failed, partially failed or succeeded"
    HOST_ALERT = "host_alert", "Host-key mismatch or drift detected"


class Subscription(models.Model):
    """A user's e-mail choices (no row: the defaults below). Audiences are fixed by role:
    approvers hear of waiting changes, requesters of their own changes, admins of host alerts."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_subscription"
    )
    approval_needed = models.BooleanField(default=True)
    change_decided = models.BooleanField(default=True)
    my_rollouts = models.BooleanField(default=True)
    all_rollouts = models.BooleanField(default=False)
    host_alerts = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"subscriptions of {self.user}"


class Webhook(models.Model):
    class Format(models.TextChoices):
        JSON = "json", "JSON (the console's own body)"
        SLACK = "slack", "Slack incoming webhook"
        TEAMS = "teams", "Microsoft Teams incoming webhook (MessageCard)"

    name = models.CharField(max_length=100, unique=True)
    url_encrypted = models.TextField(editable=False)
    # scheme://host[:port]/… — what pages and the audit trail may show of the URL.
    url_display = models.CharField(max_length=300, editable=False)
    secret_encrypted = models.TextField(editable=False)
    payload_format = models.CharField(max_length=10, choices=Format.choices, default=Format.JSON)
    topics = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("notifications:webhook", args=[self.pk])

    def get_url(self) -> str:
        return crypto.decrypt(self.url_encrypted)

    def get_secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted)


class Delivery(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        RETRYING = "retrying", "Retrying"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    OPEN = (State.PENDING, State.RETRYING)

    # The audit event that caused it (None for a test delivery an admin asked for).
    event_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    action = models.CharField(max_length=100)
    topic = models.CharField(max_length=30)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    # "email:<address>" or "webhook:<id>": one delivery per event and target, whatever retries.
    target = models.CharField(max_length=300)
    webhook = models.ForeignKey(Webhook, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    recipient = models.CharField(max_length=254, blank=True)
    subject = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    # The exact JSON document a webhook receives, the same bytes at every attempt.
    payload = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["event_id", "target"], condition=models.Q(event_id__isnull=False),
                name="delivery_once_per_event_target",
            )
        ]

    def __str__(self):
        return f"{self.channel} {self.target} ({self.state})"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    ok = models.BooleanField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    # What went wrong, for people; never the URL's path or a secret.
    error = models.TextField(blank=True)
    will_retry = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_unique_number")
        ]

    def __str__(self):
        return f"attempt {self.number} of delivery {self.delivery_id}"
