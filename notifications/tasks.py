"""Celery entry points of notifications (thin: the work is in services)."""

from celery import shared_task

from . import services


@shared_task(name="notifications.tasks.fan_out", acks_late=True, ignore_result=True)
def fan_out(event_id: int) -> int:
    return len(services.fan_out(event_id))


@shared_task(name="notifications.tasks.deliver", acks_late=True, ignore_result=True)
def deliver(delivery_id: int) -> str | None:
    return services.attempt(delivery_id)
