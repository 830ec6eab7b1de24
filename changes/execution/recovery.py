"""Recovery (beat): host runs whose worker stopped beating get a new owner and run again (they
re-read the host first); rollouts that nothing moves are advanced."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record

from .. import dispatch
from ..models import ChangeRequest, HostRun, Rollout
from .locks import lock_host_run
from .ownership import MAX_RESUMES, gave_up, stale
from .rollout import advance
from .transitions import HR, WORKER, set_host_run_state

logger = logging.getLogger("changes.execution")

QUEUED_STALE_FACTOR = 5  # a dispatched run still waiting in the queue has no heartbeat yet


def resume_stale(now=None) -> list[int]:
    """Host runs whose owner stopped beating (worker died): give them a new owner and re-enqueue."""
    now = now or timezone.now()
    limit = float(settings.HOSTRUN_STALE_SECONDS)
    queued_cutoff = now - timedelta(seconds=limit * QUEUED_STALE_FACTOR)
    candidates = HostRun.objects.filter(
        state__in=HostRun.OPEN, dispatched_at__isnull=False, heartbeat_at__lt=now - timedelta(seconds=limit)
    ).values_list("pk", flat=True)
    resumed = []
    for run_id in list(candidates):
        try:
            if resume_one(run_id, now, queued_cutoff):
                resumed.append(run_id)
        except Exception:  # one bad host run must not stop the others (beat runs this again)
            logger.exception("resuming host run %s failed", run_id)
    return resumed


def resume_one(run_id: int, now, queued_cutoff) -> bool:
    with transaction.atomic():
        run = lock_host_run(run_id, "rollout", "host")
        if run is None or run.is_finished or not stale(run, now):
            return False
        if run.state == HR.PENDING and run.heartbeat_at and run.heartbeat_at >= queued_cutoff:
            return False
        if run.resumed_count >= MAX_RESUMES:
            set_host_run_state(run, HR.FAILED, gave_up(run), change_id=run.rollout.change_id)
            dispatch.advance_rollout(run.rollout_id)
            return False
        token, old_owner = uuid.uuid4().hex, run.owner
        run.owner = token
        run.lease = ""  # the dead execution's lease ends; the new owner's task takes a new one
        run.heartbeat_at = now
        run.resumed_count += 1
        message = "resumed after worker loss" if run.state == HR.RUNNING else "re-enqueued: its task was lost"
        if run.state == HR.RUNNING:
            run.message = message
        run.save()
        record(
            "hostrun.state_changed", obj=run, host=run.host, change=ChangeRequest(pk=run.rollout.change_id),
            actor_name=WORKER,
            data={"from": run.state, "to": run.state, "resumed": True, "message": message, "old_owner": old_owner,
                  "rollout": run.rollout_id},
        )
        task = dispatch.await_boot if run.state == HR.REBOOTING else dispatch.run_host
        task(run.pk, token)
        return True


def kick_rollouts() -> list[int]:
    """Advance every unfinished rollout (a lost advance message must not stall one forever)."""
    ids = list(Rollout.objects.exclude(state__in=Rollout.FINISHED).values_list("pk", flat=True))
    for rollout_id in ids:
        try:
            advance(rollout_id)
        except Exception:  # one broken rollout must not stall the others
            logger.exception("advancing rollout %s failed", rollout_id)
    return ids
