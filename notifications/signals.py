"""The audit trail is the event source: every action is an AuditEvent, saved inside the action's
transaction. A relevant one is handed to notifications/dispatch.py *after* commit, so an action
that rolls back tells nobody, and a broken broker never fails the action (robust=True). With no
e-mail server and no enabled webhook configured, nothing is registered at all."""

from functools import partial

from django.db import transaction
from django.dispatch import receiver

from audit.models import AuditEvent
from audit.services import events_recorded

from . import dispatch
from .events import topic_of


@receiver(events_recorded, sender=AuditEvent, dispatch_uid="notifications.audit_events")
def on_audit_events(sender, events, using, **kwargs):
    relevant = [event for event in events if topic_of(event) is not None]
    if not relevant:
        return
    from .services import anything_configured

    if anything_configured():  # nobody to tell (no e-mail, no webhook): nothing to enqueue
        for event in relevant:
            transaction.on_commit(partial(dispatch.event_recorded, event.pk), using=using, robust=True)
