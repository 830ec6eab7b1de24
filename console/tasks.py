"""Console-wide periodic tasks."""

from celery import shared_task

from . import dispatch


@shared_task(name="console.tasks.flush_outbox", acks_late=True, ignore_result=True)
def flush_outbox() -> dict:
    return dispatch.flush_outbox()
