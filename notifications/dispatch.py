"""Enqueue notification work after commit. Services call these; none imports a task module."""

import logging

from console.celery import app

logger = logging.getLogger("notifications")

FAN_OUT = "notifications.tasks.fan_out"
DELIVER = "notifications.tasks.deliver"


def _send(name: str, args: list, countdown: float | None = None) -> bool:
    try:
        app.send_task(name, args=args, countdown=countdown)
    except Exception:  # the broker is down: the action stands; the delivery log shows nothing sent
        logger.exception("could not enqueue %s%s", name, args)
        return False
    return True


def event_recorded(event_id: int) -> bool:
    """An audit event worth telling about was committed: fan it out in a worker."""
    return _send(FAN_OUT, [event_id])


def deliver(delivery_id: int) -> bool:
    return _send(DELIVER, [delivery_id])


def retry_later(delivery_id: int, countdown: float) -> bool:
    return _send(DELIVER, [delivery_id], countdown=countdown)
