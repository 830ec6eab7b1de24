"""The change engine's Celery tasks, by name, published after commit (console/dispatch.py)."""

from django.conf import settings

from console.dispatch import Ticket, after_commit

ADVANCE_ROLLOUT = "changes.tasks.advance_rollout"
RUN_HOST = "changes.tasks.run_host"
AWAIT_BOOT = "changes.tasks.await_boot"


def advance_rollout(rollout_id: int, countdown: float | None = None) -> Ticket:
    return after_commit(ADVANCE_ROLLOUT, (rollout_id,), countdown=countdown)


def run_host(host_run_id: int, token: str, countdown: float | None = None) -> Ticket:
    return after_commit(RUN_HOST, (host_run_id, token), countdown=countdown)


def await_boot(host_run_id: int, token: str) -> Ticket:
    return after_commit(AWAIT_BOOT, (host_run_id, token), countdown=float(settings.BOOT_POLL_SECONDS))
