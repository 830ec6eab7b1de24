"""Celery tasks of the change executor (thin wrappers; the logic is in changes/orchestration.py).

    advance_rollout(rollout_id)          idempotent; enqueued by scheduling, cancel and every host run's end
    run_host(host_run_id, token)         one host of a rollout; token = the ownership token of the dispatch
    await_boot(host_run_id, token)       one look at a rebooting host; re-schedules itself (never sleeps)
    resume_stale_host_runs()             beat: resume host runs whose worker died, advance stalled rollouts
    expire_approvals()                   beat: submitted changes older than APPROVAL_MAX_AGE → expired

All are acks_late + reject_on_worker_lost: a message is acknowledged only after the task ran, and a
worker that dies mid-task gives its message back to the broker. Duplicates are harmless (ownership
tokens, idempotent steps).
"""

from celery import shared_task

from . import approvals, orchestration, reboots

TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(name="changes.tasks.advance_rollout", **TASK_OPTIONS)
def advance_rollout(rollout_id: int) -> str:
    return orchestration.advance(rollout_id)


@shared_task(name="changes.tasks.run_host", **TASK_OPTIONS)
def run_host(host_run_id: int, token: str) -> str:
    return orchestration.run_host(host_run_id, token)


@shared_task(name="changes.tasks.await_boot", **TASK_OPTIONS)
def await_boot(host_run_id: int, token: str) -> str:
    return reboots.await_boot_task(host_run_id, token)


@shared_task(name="changes.tasks.resume_stale_host_runs", **TASK_OPTIONS)
def resume_stale_host_runs() -> dict:
    resumed = orchestration.resume_stale()
    kicked = orchestration.kick_rollouts()
    return {"resumed": resumed, "rollouts": kicked}


@shared_task(name="changes.tasks.expire_approvals", **TASK_OPTIONS)
def expire_approvals() -> list[int]:
    return approvals.expire_stale_approvals()
