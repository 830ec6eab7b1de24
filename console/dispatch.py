"""Publishing Celery tasks: after commit, by task name, within a bound, never lost.

Services never import task modules: each app has a small `dispatch.py` that names its tasks and
calls `after_commit()` here. Publishing happens once the caller's transaction commits (a task
never sees data that was rolled back) and is bounded (broker connect/socket timeouts plus a short
retry), so a broker that is down or frozen costs a request a few seconds, not the outage. What
could not be published is kept as an `OutboxMessage` and sent again by beat's `flush_outbox`;
the caller learns it from the returned `Ticket` and can tell the user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu import pools

logger = logging.getLogger("console.dispatch")

BROKER_DOWN = (
    "The task queue (broker) is not reachable right now. The request is saved and is sent as soon "
    "as the broker is back; nothing else is needed."
)


@dataclass
class Ticket:
    """What became of one publish: `sent` is None until the transaction committed."""

    task: str
    sent: bool | None = None
    error: str = ""
    queued: list = field(default_factory=list)

    @property
    def delayed(self) -> bool:
        """Kept in the outbox because the broker could not be reached."""
        return self.sent is False


def after_commit(task: str, args: tuple | list = (), *, countdown: float | None = None) -> Ticket:
    """Publish `task` with `args` once the current transaction commits (at once outside one)."""
    ticket = Ticket(task)
    args = list(args)
    transaction.on_commit(lambda: send_now(task, args, countdown=countdown, ticket=ticket))
    return ticket


def send_now(task: str, args: tuple | list = (), *, countdown: float | None = None, ticket: Ticket | None = None
             ) -> Ticket:
    """Publish at once (for callers already past their commit); kept in the outbox on failure."""
    ticket = ticket or Ticket(task)
    args = list(args)
    error = publish(task, args, countdown=countdown)
    ticket.sent = error is None
    if error is not None:
        ticket.error = error
        keep(task, args, countdown, error)
    return ticket


def publish(task: str, args: list, *, countdown: float | None = None) -> str | None:
    """Send one message within the bound; None when sent, else why not (never raises)."""
    from console.celery import app

    retries = settings.DISPATCH_PUBLISH_RETRIES
    try:
        with publish_pool(app).acquire(block=True, timeout=5) as conn:
            conn.ensure_connection(max_retries=retries, interval_start=0, interval_step=0.5, interval_max=1)
            app.send_task(
                task,
                args=args,
                countdown=countdown or None,
                connection=conn,
                retry=True,
                retry_policy={"max_retries": retries, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
            )
    except Exception as exc:  # any broker failure: the message goes to the outbox instead
        logger.warning("publishing %s failed: %s: %s", task, type(exc).__name__, exc)
        return f"{type(exc).__name__}: {exc}"[:500]
    return None


def publish_pool(app):
    """Connections for publishing only, with tighter bounds than the worker's consumer (which
    retries for ever, pings idle connections and retries a timed-out command): a caller waits at
    most about DISPATCH_SOCKET_TIMEOUT per try on a frozen broker. kombu keeps one pool per set of
    connection parameters, so this is created once per process."""
    options = {
        **(app.conf.broker_transport_options or {}),
        "socket_timeout": settings.DISPATCH_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.DISPATCH_SOCKET_TIMEOUT,
        "retry_on_timeout": False,
        "health_check_interval": 0,
    }
    return pools.connections[app.connection_for_write(transport_options=options)]


def keep(task: str, args: list, countdown: float | None, error: str) -> None:
    from .models import OutboxMessage

    due = timezone.now() + timedelta(seconds=countdown or 0)
    OutboxMessage.objects.create(task=task, args=args, due_at=due, last_error=error, attempts=1)


def flush_outbox(limit: int = 500) -> dict:
    """Send what could not be sent (beat, every few seconds). One failure stops the round: the
    broker is still away; the rest waits for the next one."""
    from .models import OutboxMessage

    sent = 0
    now = timezone.now()
    for message in OutboxMessage.objects.filter(due_at__lte=now).order_by("id")[:limit]:
        error = publish(message.task, message.args)
        if error is not None:
            OutboxMessage.objects.filter(pk=message.pk).update(
                attempts=message.attempts + 1, last_error=error
            )
            return {"sent": sent, "waiting": OutboxMessage.objects.count(), "error": error}
        OutboxMessage.objects.filter(pk=message.pk).delete()
        sent += 1
    return {"sent": sent, "waiting": OutboxMessage.objects.count()}
