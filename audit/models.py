"""Append-only audit events. Never updated, never deleted.

Three layers refuse changes: the model (save() of an existing row, delete()), the QuerySet
(update(), delete()), and database triggers (audit/guard.py, migration 0002). The hash chain
(audit/chain.py) finds whatever got past all three. Events are written only by
audit.services.record().
"""

from django.conf import settings
from django.db import models
from django.urls import reverse


class AppendOnlyError(Exception):
    """An attempt to update or delete audit history."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("audit history is append-only: update() refused")

    def delete(self):
        raise AppendOnlyError("audit history is append-only: delete() refused")

    def bulk_update(self, *args, **kwargs):
        raise AppendOnlyError("audit history is append-only: bulk_update() refused")

    def update_or_create(self, *args, **kwargs):
        raise AppendOnlyError("audit history is append-only: update_or_create() refused")

    def _raw_delete(self, *args, **kwargs):
        raise AppendOnlyError("audit history is append-only: delete() refused")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(
                f"audit history is append-only: {self._meta.label} {self.pk} cannot be changed"
            )
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"audit history is append-only: {self._meta.label} {self.pk} cannot be deleted")


class AuditEvent(AppendOnlyModel):
    # The chain position: 1, 2, 3... without gaps, assigned by record() under the chain lock, so
    # id order is chain order (and commit order). Not an autoincrement on purpose.
    id = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    # Snapshot of who acted: a user name, or "system" / "worker" for automation.
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    # Plain ids, not foreign keys: deleting a host must not touch its history.
    host_id = models.BigIntegerField(null=True, blank=True)
    host_name = models.CharField(max_length=63, blank=True)
    change_id = models.BigIntegerField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    # Text, not inet: the hash covers the exact characters stored ("" when unknown).
    client_ip = models.CharField(max_length=45, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]
        # Two events linking to the same predecessor would be a fork: refused by the database.
        constraints = [models.UniqueConstraint(fields=["prev_hash"], name="audit_chain_no_fork")]
        # Each filter of the audit page has an index that ends in id, so "filter, newest first,
        # keyset page" is one index range scan. See docs/audit.md.
        indexes = [
            models.Index(fields=["created_at"], name="audit_created_idx"),
            models.Index(fields=["actor_name", "id"], name="audit_actor_idx"),
            models.Index(fields=["action", "id"], name="audit_action_idx"),
            models.Index(fields=["host_id", "id"], name="audit_host_idx"),
            models.Index(fields=["host_name", "id"], name="audit_hostname_idx"),
            models.Index(fields=["change_id", "id"], name="audit_change_idx"),
            models.Index(fields=["object_type", "object_id", "id"], name="audit_object_idx"),
        ]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_repr}"

    def get_absolute_url(self):
        return reverse("audit:detail", args=[self.pk])

    def chain_row(self) -> dict:
        from .chain import HASHED_FIELDS

        row = {name: getattr(self, name) for name in HASHED_FIELDS}
        row["hash"] = self.hash
        return row


class VerifyRun(AppendOnlyModel):
    """The outcome of one `manage.py verify_audit` run (append-only, like the events).

    The audit page shows the latest run, so a full walk of a million events is not repeated on every
    page view; the next run also checks that the event it ended at still has the same hash.
    """

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    checked = models.BigIntegerField()
    last_id = models.BigIntegerField(null=True, blank=True)
    last_hash = models.CharField(max_length=64, blank=True)
    ok = models.BooleanField()
    broken_id = models.BigIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        verdict = "ok" if self.ok else "BROKEN"
        return f"verify {self.finished_at:%Y-%m-%d %H:%M:%S} {verdict} ({self.checked} events)"
