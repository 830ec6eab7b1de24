"""The audit trail is the event source: every action is an AuditEvent, saved inside the action's
transaction. A relevant one is handed to notifications/dispatch.py *after* commit, so an action
that rolls back tells nobody, and a broken broker never fails the action (robust=True). With no
e-mail server and no enabled webhook configured, nothing is registered at all."""

from functools import partial

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from audit.models import AuditEvent

from . import dispatch
from .events import topic_of


@receiver(post_save, sender=AuditEvent, dispatch_uid="notifications.audit_event")
def on_audit_event(sender, instance, created, **kwargs):
    if not created or topic_of(instance) is None:
        return
    from .services import anything_configured

    if anything_configured():  # nobody to tell (no e-mail, no webhook): nothing to enqueue
        transaction.on_commit(partial(dispatch.event_recorded, instance.pk), robust=True)
