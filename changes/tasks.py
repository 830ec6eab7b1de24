"""Celery tasks of the change engine: thin shims over changes/execution/ and approvals.

All are acks_late + reject_on_worker_lost: a message is acknowledged only after the task ran, and
a worker that dies mid-task gives its message back to the broker. Duplicates are harmless
(ownership tokens, idempotent steps). Enqueue them through changes/dispatch.py.
"""

from celery import shared_task

from . import approvals
from .execution import boot_wait, host_run, recovery, rollout

TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(name="changes.tasks.advance_rollout", **TASK_OPTIONS)
def advance_rollout(rollout_id: int) -> str:
    return rollout.advance(rollout_id)


@shared_task(name="changes.tasks.run_host", **TASK_OPTIONS)
def run_host(host_run_id: int, token: str) -> str:
    return host_run.run_host(host_run_id, token)


@shared_task(name="changes.tasks.await_boot", **TASK_OPTIONS)
def await_boot(host_run_id: int, token: str) -> str:
    return boot_wait.await_boot_task(host_run_id, token)


@shared_task(name="changes.tasks.resume_stale_host_runs", **TASK_OPTIONS)
def resume_stale_host_runs() -> dict:
    return {"resumed": recovery.resume_stale(), "rollouts": recovery.kick_rollouts()}


@shared_task(name="changes.tasks.expire_approvals", **TASK_OPTIONS)
def expire_approvals() -> list[int]:
    return approvals.expire_stale_approvals()
