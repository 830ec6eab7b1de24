"""Enqueue notification work (callers are already past their commit). Services call these; none
imports a task module. A broker that is down never fails the action: the message waits in the
console's outbox (console/dispatch.py) and is sent when the broker is back."""

from console.dispatch import send_now

FAN_OUT = "notifications.tasks.fan_out"
DELIVER = "notifications.tasks.deliver"


def _send(name: str, args: list, countdown: float | None = None) -> bool:
    return bool(send_now(name, args, countdown=countdown).sent)


def event_recorded(event_id: int) -> bool:
    """An audit event worth telling about was committed: fan it out in a worker."""
    return _send(FAN_OUT, [event_id])


def deliver(delivery_id: int) -> bool:
    return _send(DELIVER, [delivery_id])


def retry_later(delivery_id: int, countdown: float) -> bool:
    return _send(DELIVER, [delivery_id], countdown=countdown)
