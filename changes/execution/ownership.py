"""Who drives a host run: ownership tokens, leases and heartbeats.

Each dispatch of a host run carries a token (uuid) stored in HostRun.owner. A task whose token is
not the owner exits, unless the owner's heartbeat is stale (its worker died): then it takes over.
The one execution driving the host run holds its `lease` (taken at claim, cleared when it stops);
a duplicate delivery of the owner's message finds the lease taken and exits while the holder beats.
The heartbeat is refreshed by a thread during every agent call.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from .. import dispatch
from ..models import HostRun
from .locks import lock_host_run
from .transitions import HR, set_host_run_state

logger = logging.getLogger("changes.execution")

MAX_RESUMES = 3  # worker losses a host run survives; the next one fails it


class LostOwnership(Exception):
    """Another task owns this host run now (this one was presumed dead and replaced)."""


def stale(run: HostRun, now) -> bool:
    limit = timedelta(seconds=settings.HOSTRUN_STALE_SECONDS)
    return run.heartbeat_at is None or now - run.heartbeat_at > limit


def mine(locked: HostRun, run: HostRun, token: str) -> bool:
    """The locked row is still owned by this task and, for an execution that claimed it (run.lease
    set), still leased to that execution. Callers that never claim (await_boot) check the owner."""
    return locked.owner == token and (not run.lease or locked.lease == run.lease)


def gave_up(run: HostRun) -> str:
    return f"gave up after {run.resumed_count} worker losses; nothing more is sent to the host"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat(threading.Thread):
    """Refreshes HostRun.heartbeat_at while an agent call runs; notices a lost ownership."""

    def __init__(self, host_run_id: int, token: str, lease: str | None = None):
        super().__init__(daemon=True, name=f"heartbeat-{host_run_id}")
        self.host_run_id, self.token, self.lease = host_run_id, token, lease
        self.stopped = threading.Event()
        self.lost = False

    def start(self) -> Heartbeat:
        super().start()
        return self

    def beat(self) -> bool:
        """One refresh; False when the host run is no longer ours."""
        rows = HostRun.objects.filter(pk=self.host_run_id, owner=self.token)
        if self.lease is not None:
            rows = rows.filter(lease=self.lease)
        return bool(rows.update(heartbeat_at=timezone.now()))

    def run(self):
        interval = float(settings.HOSTRUN_HEARTBEAT_SECONDS)
        try:
            while not self.stopped.wait(interval):
                try:
                    if not self.beat():
                        self.lost = True
                        return
                except Exception:
                    # A failed beat (database restart, dropped connection) must neither kill the
                    # step nor stop the heartbeat: drop the connection and beat again next time.
                    logger.exception("heartbeat of host run %s failed; retrying", self.host_run_id)
                    try:
                        connection.close()
                    except Exception:
                        logger.exception("closing the heartbeat's connection failed")
        finally:
            connection.close()

    def stop(self):
        self.stopped.set()
        self.join(timeout=30)


def claim(host_run_id: int, token: str) -> HostRun | None:
    """Take the host run for this execution, or None when it is not ours to drive now."""
    with transaction.atomic():
        run = lock_host_run(host_run_id, "rollout", "rollout__change", "host", "plan_item")
        if run is None or run.is_finished:
            return None
        now = timezone.now()
        resumed = _take_over(run, token, now)
        if resumed is None:
            return None
        change_id = run.rollout.change_id
        if resumed and run.resumed_count > MAX_RESUMES:
            run.resumed_count = MAX_RESUMES
            set_host_run_state(run, HR.FAILED, gave_up(run), change_id=change_id)
            dispatch.advance_rollout(run.rollout_id)
            return None
        if _stopped_before_start(run, now, change_id):
            dispatch.advance_rollout(run.rollout_id)
            return None
        run.heartbeat_at = now
        run.worker = worker_name()
        if run.state in (HR.PENDING, HR.WAITING):
            return _start(run, token, now, change_id)
        run.lease = uuid.uuid4().hex
        run.save(update_fields=["heartbeat_at", "owner", "resumed_count", "worker", "lease"])
        if resumed:
            logger.warning("host run %s taken over after a stale heartbeat", run.pk)
        return run


def _take_over(run: HostRun, token: str, now) -> bool | None:
    """True: this task takes over a dead owner; False: it is the owner; None: it must exit."""
    if run.owner != token:
        if not stale(run, now):
            logger.info("host run %s is owned by another task; this one exits", run.pk)
            return None
        run.owner = token
        run.resumed_count += 1
        return True
    if run.lease and run.state in HostRun.HOLDING:
        # Our own message, but an execution holds the lease: a duplicate delivery. It exits while
        # that execution beats; a dead one is taken over (here, or by recovery).
        if not stale(run, now):
            logger.info("host run %s is being driven by another execution; this delivery exits", run.pk)
            return None
        run.resumed_count += 1
        return True
    return False


def _stopped_before_start(run: HostRun, now, change_id: int) -> bool:
    if run.state not in (HR.PENDING, HR.WAITING):
        return False
    if run.rollout.cancel_requested_at:
        set_host_run_state(run, HR.CANCELLED, "cancelled before it started", change_id=change_id)
        return True
    not_after = run.rollout.change.not_after
    if not_after and now > not_after:
        set_host_run_state(run, HR.SKIPPED, f"skipped: the maintenance window closed at "
                           f"{not_after:%Y-%m-%d %H:%M} UTC", change_id=change_id)
        return True
    return False


def _start(run: HostRun, token: str, now, change_id: int) -> HostRun | None:
    """PENDING/WAITING → RUNNING, unless another change holds the host (one holder per host)."""
    old = run.state
    try:
        with transaction.atomic():
            run.started_at = run.started_at or now
            set_host_run_state(run, HR.RUNNING, "", change_id=change_id, extra={"worker": run.worker})
    except IntegrityError:
        run.state = old
        holder = (HostRun.objects.filter(host_id=run.host_id, state__in=HostRun.HOLDING)
                  .select_related("rollout").first())
        message = f"waiting: host is held by {f'change #{holder.rollout.change_id}' if holder else 'another change'}"
        if old != HR.WAITING or run.message != message:
            set_host_run_state(run, HR.WAITING, message, change_id=change_id)
        else:
            run.save(update_fields=["heartbeat_at", "owner", "resumed_count", "worker"])
        dispatch.run_host(run.pk, token, countdown=settings.HOSTRUN_WAIT_RETRY_SECONDS)
        return None
    run.lease = uuid.uuid4().hex
    run.save(update_fields=["lease"])
    return run


def finish(run: HostRun, token: str, state: str, message: str, extra: dict | None = None) -> None:
    """End (or hand on) the host run this execution drives, then let the rollout advance."""
    with transaction.atomic():
        locked = lock_host_run(run.pk, "host")
        if locked is None or not mine(locked, run, token) or locked.is_finished:
            raise LostOwnership()
        set_host_run_state(locked, state, message, change_id=run.rollout.change_id, extra=extra)
        dispatch.advance_rollout(run.rollout_id)


def release(run: HostRun, token: str) -> None:
    """This execution stops driving the host run (a no-op when a state change cleared the lease)."""
    HostRun.objects.filter(pk=run.pk, owner=token, lease=run.lease).exclude(lease="").update(lease="")
