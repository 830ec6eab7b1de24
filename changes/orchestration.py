"""Executing an approved change: the database is the truth, Celery tasks only move it.

    advance(rollout_id)              idempotent; locks change → rollout → host runs (always this order)
    run_host(host_run_id, token)     one host: claim, drift check, steps, verify; then advance
    resume_stale(now=None)           beat: re-enqueue host runs whose worker stopped beating
    kick_rollouts(now=None)          beat: advance rollouts that nothing is moving

Ownership. Each dispatch of a host run carries a token (uuid) stored in HostRun.owner. A task whose
token is not the owner exits, unless the owner's heartbeat is stale (its worker died), in which case
it takes over. The heartbeat is refreshed by a thread during every agent call. This is what keeps a
redelivered message (acks_late) from running a host twice at the same time.

Idempotency of steps. A Step row is created (committed) before its agent call and filled after it.
On resume, finished ok steps are skipped; a step that started but never finished (the worker died
mid-call) is closed as "interrupted" and its action is re-run as a new Step with a note: set_vfs
is idempotent in the agent (an equal count is not written again), so re-running is safe.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

import remote
from audit.services import record
from hosts.models import Hypervisor, Nic

from .models import ChangeRequest, HostRun, Rollout, Step
from .operations import REGISTRY
from .reboots import effective_parallelism, enter_waiting, reboot_progress
from .services import transition

logger = logging.getLogger("changes.orchestration")

HR = HostRun.State
CS = ChangeRequest.State
RS = Rollout.State
WORKER = "worker"
NAMESPACE_OPS = {op.namespace: op for op in REGISTRY.values()}
SetVfsObserve = REGISTRY["set_vfs"]
QUEUED_STALE_FACTOR = 5
MAX_RESUMES = 3  # worker losses a host run survives; the next one fails it
MAX_WINDOW_COUNTDOWN = 300.0  # seconds; beat's kick_rollouts advances every 30 s anyway


class LostOwnership(Exception):
    """Another task owns this host run now (we were presumed dead and replaced)."""


def _setting(name, default):
    return getattr(settings, name, default)


def _enqueue_advance(rollout_id: int, countdown: float | None = None) -> None:
    from .tasks import advance_rollout

    if countdown:
        transaction.on_commit(lambda: advance_rollout.apply_async((rollout_id,), countdown=countdown))
    else:
        transaction.on_commit(lambda: advance_rollout.delay(rollout_id))


def _enqueue_run(host_run_id: int, token: str, countdown: float | None = None) -> None:
    from .tasks import run_host as run_host_task

    transaction.on_commit(
        lambda: run_host_task.apply_async((host_run_id, token), countdown=countdown or None)
    )


def _set_state(run: HostRun, state: str, message: str, *, change_id: int, extra: dict | None = None) -> None:
    old = run.state
    run.state = state
    run.message = message
    # Whoever drove the host run (if anyone) stops here: the next run_host may claim it.
    run.lease = ""
    if state in HostRun.FINISHED:
        run.finished_at = timezone.now()
    run.save()
    record(
        "hostrun.state_changed",
        obj=run,
        host=run.host,
        change=ChangeRequest(pk=change_id),
        actor_name=WORKER,
        data={"from": old, "to": state, "message": message, "rollout": run.rollout_id, **(extra or {})},
    )


def _rollout_state(rollout: Rollout, state: str, message: str) -> None:
    old = rollout.state
    rollout.state = state
    rollout.message = message
    now = timezone.now()
    if state == RS.RUNNING and rollout.started_at is None:
        rollout.started_at = now
    if state in Rollout.FINISHED:
        rollout.finished_at = now
    rollout.save()
    record(
        "rollout.state_changed",
        obj=rollout,
        change=rollout.change,
        actor_name=WORKER,
        data={"from": old, "to": state, "message": message, "attempt": rollout.attempt},
    )


# ---------------------------------------------------------------------------------------------
# advance
# ---------------------------------------------------------------------------------------------


def advance(rollout_id: int) -> str:
    """Move a rollout forward as far as it can go now. Safe to call any number of times."""
    with transaction.atomic():
        change_id = Rollout.objects.filter(pk=rollout_id).values_list("change_id", flat=True).first()
        if change_id is None:
            return "gone"
        change = ChangeRequest.objects.select_for_update(of=("self",)).get(pk=change_id)
        rollout = Rollout.objects.select_for_update(of=("self",)).get(pk=rollout_id)
        rollout.change = change
        if rollout.is_finished:
            return rollout.state
        now = timezone.now()
        # of=("self",): lock the host runs only, never the joined host rows (discovery locks those).
        runs = list(
            rollout.host_runs.select_for_update(of=("self",)).select_related("host").order_by("order")
        )

        def stop_open(state, message):
            for run in runs:
                if run.state in (HR.PENDING, HR.WAITING):
                    _set_state(run, state, message, change_id=change.pk)

        running = [r for r in runs if r.state in HostRun.HOLDING]

        if rollout.cancel_requested_at or change.state == CS.CANCELLED:
            stop_open(HR.CANCELLED, "cancelled before it started")
            if not running:
                return _finish(rollout, change, runs)
            return "cancelling"

        if rollout.state == RS.PENDING and change.not_before and now < change.not_before:
            wait = (change.not_before - now).total_seconds()
            message = f"waiting for the window: not before {change.not_before:%Y-%m-%d %H:%M} UTC"
            if rollout.message != message:  # the first time only; beat's kick_rollouts covers a lost wake-up
                rollout.message = message
                rollout.save(update_fields=["message"])
                # Capped: a days-long countdown would sit in the broker (acks_late) for days.
                _enqueue_advance(rollout.pk, countdown=min(max(wait, 1.0), MAX_WINDOW_COUNTDOWN))
            return "window"

        if change.not_after and now > change.not_after:
            stop_open(HR.SKIPPED, f"skipped: the window closed at {change.not_after:%Y-%m-%d %H:%M} UTC")
            if not running:
                return _finish(rollout, change, runs)
            return "window closed"

        failures = [r for r in runs if r.state in HostRun.FAILURES]
        failed_canary = next((r for r in failures if r.is_canary), None)
        threshold = change.failure_threshold
        if failed_canary is not None or len(failures) >= threshold:
            if failed_canary is not None:
                why = f"halted: canary {failed_canary.host.name} {failed_canary.state}"
            else:
                why = f"halted after {len(failures)} failure{'s' if len(failures) != 1 else ''}"
            if not rollout.halted:
                rollout.halted = True
                rollout.message = why
                rollout.save(update_fields=["halted", "message"])
            stop_open(HR.SKIPPED, why)
            if not running:
                return _finish(rollout, change, runs)
            return "halting"

        if rollout.state == RS.PENDING:
            _rollout_state(rollout, RS.RUNNING, "")
            if change.state == CS.SCHEDULED:
                transition(
                    change,
                    CS.RUNNING,
                    action="rollout.state_changed",
                    message=f"rollout {rollout.attempt} running",
                    data={"rollout": rollout.pk},
                )

        in_flight = [
            r
            for r in runs
            if r.state in (HR.RUNNING, HR.REBOOTING, HR.WAITING)
            or (r.state == HR.PENDING and r.dispatched_at is not None)
        ]
        undispatched = [r for r in runs if r.state == HR.PENDING and r.dispatched_at is None]
        open_canaries = [r for r in runs if r.is_canary and not r.is_finished]
        if open_canaries:
            if not in_flight:
                _dispatch(open_canaries[0], now)
            return "canary"
        slots = effective_parallelism(change) - len(in_flight)
        for run in undispatched[: max(slots, 0)]:
            _dispatch(run, now)
        if all(r.is_finished for r in runs):
            return _finish(rollout, change, runs)
        return "running"


def _dispatch(run: HostRun, now) -> None:
    token = uuid.uuid4().hex
    run.dispatched_at = now
    run.heartbeat_at = now
    run.owner = token
    run.message = "queued for a worker"
    run.save(update_fields=["dispatched_at", "heartbeat_at", "owner", "message"])
    _enqueue_run(run.pk, token)


def _finish(rollout: Rollout, change: ChangeRequest, runs: list[HostRun]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    succeeded = counts.get(HR.SUCCEEDED, 0)
    if rollout.cancel_requested_at or change.state == CS.CANCELLED:
        state = RS.CANCELLED
    elif succeeded == len(runs):
        state = RS.SUCCEEDED
    elif succeeded == 0:
        state = RS.FAILED
    else:
        state = RS.PARTIALLY_FAILED
    message = summary + (f"; {rollout.message}" if rollout.halted and rollout.message else "")
    _rollout_state(rollout, state, message)
    change_state = {
        RS.SUCCEEDED: CS.SUCCEEDED,
        RS.FAILED: CS.FAILED,
        RS.PARTIALLY_FAILED: CS.PARTIALLY_FAILED,
    }.get(state)
    if change_state and change.state in (CS.SCHEDULED, CS.RUNNING):
        transition(
            change,
            change_state,
            action="rollout.state_changed",
            message=f"rollout {rollout.attempt}: {message}",
            data={"rollout": rollout.pk},
        )
    return state


# ---------------------------------------------------------------------------------------------
# run_host
# ---------------------------------------------------------------------------------------------


def _stale(run: HostRun, now) -> bool:
    limit = timedelta(seconds=_setting("HOSTRUN_STALE_SECONDS", 60))
    return run.heartbeat_at is None or now - run.heartbeat_at > limit


def _gave_up(run: HostRun) -> str:
    return f"gave up after {run.resumed_count} worker losses; nothing more is sent to the host"


def _claim(host_run_id: int, token: str) -> HostRun | None:
    with transaction.atomic():
        # Only the host run row is locked (of=("self",)); the rollout and change are read without a
        # lock: cancel and the window are checked again before each step.
        run = (
            HostRun.objects.select_for_update(of=("self",))
            .select_related("rollout", "rollout__change", "host", "plan_item")
            .filter(pk=host_run_id)
            .first()
        )
        if run is None or run.is_finished:
            return None
        change_id = run.rollout.change_id
        now = timezone.now()
        resumed = False
        if run.owner != token:
            if not _stale(run, now):
                logger.info("host run %s is owned by another task; this one exits", run.pk)
                return None
            resumed = True
            run.owner = token
            run.resumed_count += 1
        elif run.lease and run.state in HostRun.HOLDING:
            # Our own message, but an execution holds the lease: a duplicate delivery. It exits
            # while that execution beats; a dead one is taken over (here, or by resume_stale).
            if not _stale(run, now):
                logger.info("host run %s is being driven by another execution; this delivery exits", run.pk)
                return None
            resumed = True
            run.resumed_count += 1
        if resumed and run.resumed_count > MAX_RESUMES:
            run.resumed_count = MAX_RESUMES
            _set_state(run, HR.FAILED, _gave_up(run), change_id=change_id)
            _enqueue_advance(run.rollout_id)
            return None
        if run.rollout.cancel_requested_at and run.state in (HR.PENDING, HR.WAITING):
            _set_state(run, HR.CANCELLED, "cancelled before it started", change_id=change_id)
            _enqueue_advance(run.rollout_id)
            return None
        not_after = run.rollout.change.not_after
        if not_after and now > not_after and run.state in (HR.PENDING, HR.WAITING):
            _set_state(
                run,
                HR.SKIPPED,
                f"skipped: the maintenance window closed at {not_after:%Y-%m-%d %H:%M} UTC",
                change_id=change_id,
            )
            _enqueue_advance(run.rollout_id)
            return None
        run.heartbeat_at = now
        run.worker = f"{socket.gethostname()}:{_pid()}"
        if run.state in (HR.PENDING, HR.WAITING):
            old = run.state
            try:
                with transaction.atomic():
                    run.state = HR.RUNNING
                    run.started_at = run.started_at or now
                    run.message = ""
                    run.save()
            except IntegrityError:
                run.state = old
                holder = (
                    HostRun.objects.filter(host_id=run.host_id, state__in=HostRun.HOLDING)
                    .select_related("rollout")
                    .first()
                )
                held_by = f"change #{holder.rollout.change_id}" if holder else "another change"
                message = f"waiting: host is held by {held_by}"
                if old != HR.WAITING or run.message != message:
                    _set_state(run, HR.WAITING, message, change_id=change_id)
                else:
                    run.save(update_fields=["heartbeat_at", "owner", "resumed_count", "worker"])
                _enqueue_run(run.pk, token, countdown=_setting("HOSTRUN_WAIT_RETRY_SECONDS", 5))
                return None
            run.lease = uuid.uuid4().hex
            run.save(update_fields=["lease"])
            record(
                "hostrun.state_changed",
                obj=run,
                host=run.host,
                change=ChangeRequest(pk=change_id),
                actor_name=WORKER,
                data={"from": old, "to": HR.RUNNING, "rollout": run.rollout_id, "worker": run.worker},
            )
        else:
            run.lease = uuid.uuid4().hex
            run.save(update_fields=["heartbeat_at", "owner", "resumed_count", "worker", "lease"])
            if resumed:
                logger.warning("host run %s taken over after a stale heartbeat", run.pk)
        return run


def _pid() -> int:
    import os

    return os.getpid()


class _Heartbeat(threading.Thread):
    """Refreshes HostRun.heartbeat_at while an agent call runs; notices a lost ownership."""

    def __init__(self, host_run_id: int, token: str, lease: str | None = None):
        super().__init__(daemon=True, name=f"heartbeat-{host_run_id}")
        self.host_run_id = host_run_id
        self.token = token
        self.lease = lease
        self.stopped = threading.Event()
        self.lost = False

    def beat(self) -> bool:
        """One refresh; False when the host run is no longer ours."""
        mine = HostRun.objects.filter(pk=self.host_run_id, owner=self.token)
        if self.lease is not None:
            mine = mine.filter(lease=self.lease)
        return bool(mine.update(heartbeat_at=timezone.now()))

    def run(self):
        interval = float(_setting("HOSTRUN_HEARTBEAT_SECONDS", 10))
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


def _cancel_requested(run: HostRun) -> bool:
    return Rollout.objects.filter(pk=run.rollout_id, cancel_requested_at__isnull=False).exists()


def _target(host: Hypervisor):
    from hosts.discovery import build_target

    # Never trust a new host key in the middle of a change, whatever the TOFU setting.
    return dataclasses.replace(build_target(host), accept_new_host_key=False)


def _call(
    run: HostRun,
    token: str,
    target,
    op: str,
    args: dict,
    *,
    kind: str,
    description: str,
    action_index: int | None = None,
    note: str = "",
) -> tuple[Step, remote.AgentResult]:
    change_id = run.rollout.change_id
    with transaction.atomic():
        locked = HostRun.objects.select_for_update(of=("self",)).get(pk=run.pk)
        if not _mine(locked, run, token) or locked.is_finished:
            raise LostOwnership()
        seq = (locked.steps.order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
        request_id = f"c{change_id}-hr{run.pk}-s{seq}"
        step = Step.objects.create(
            host_run=locked,
            seq=seq,
            kind=kind,
            action_index=action_index,
            operation=op,
            description=description[:300],
            request={"op": op, "args": args, "request_id": request_id},
            started_at=timezone.now(),
            note=note,
        )
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["heartbeat_at"])
    beat = _Heartbeat(run.pk, token, run.lease)
    beat.start()
    try:
        result = remote.run_agent_sync(target, op, args, request_id=request_id)
    finally:
        beat.stop()
    with transaction.atomic():
        locked = HostRun.objects.select_for_update(of=("self",)).get(pk=run.pk)
        step = Step.objects.select_for_update(of=("self",)).get(pk=step.pk)
        if step.finished_at is None:
            _fill_step(step, result)
            _audit_step(step, run, change_id)
        else:
            # The replacing worker closed this step as interrupted while we were in the agent
            # call: what the host answered is kept (and audited) as a step of its own.
            _record_late_result(locked, step, result, run, change_id)
        lost = beat.lost or not _mine(locked, run, token)
    if lost:  # raised after the commit: the result recorded above is kept
        raise LostOwnership()
    return step, result


def _mine(locked: HostRun, run: HostRun, token: str) -> bool:
    """The locked row is still owned by this task and, for an execution that claimed it (run.lease
    set), still leased to that execution. Callers that never claim (await_boot) check the owner."""
    return locked.owner == token and (not run.lease or locked.lease == run.lease)


def _record_late_result(locked: HostRun, step: Step, result, run: HostRun, change_id: int) -> Step:
    seq = (locked.steps.order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
    late = Step.objects.create(
        host_run=locked,
        seq=seq,
        kind=step.kind,
        action_index=step.action_index,
        operation=step.operation,
        description=step.description,
        request=step.request,
        started_at=step.started_at,
        note=f"late result of step {step.seq} from the replaced worker",
    )
    _fill_step(late, result)
    _audit_step(late, run, change_id)
    return late


def _fill_step(step: Step, res) -> None:
    step.request = res.request or step.request
    step.command = res.command or ""
    step.stdout = res.stdout or ""
    step.stderr = res.stderr or ""
    step.exit_status = res.exit_status
    step.duration = res.duration
    step.agent_sha256 = res.agent_sha256 or ""
    step.result = res.result if res.result is not None else (res.response or None)
    step.ok = bool(res.ok)
    step.kind_of_result = res.kind
    step.error_code = res.error_code or ("" if res.ok else res.kind)
    step.message = res.message or ""
    step.finished_at = timezone.now()
    step.save()


def _audit_step(step: Step, run: HostRun, change_id: int) -> None:
    data = {
        "step": step.pk,
        "host_run": run.pk,
        "seq": step.seq,
        "kind": step.kind,
        "operation": step.operation,
        "request": step.request,
        "ok": step.ok,
        "result_kind": step.kind_of_result,
        "error_code": step.error_code,
        "message": step.message,
        "exit_status": step.exit_status,
        "duration": round(step.duration or 0.0, 3),
        "agent_sha256": step.agent_sha256,
        "note": step.note,
    }
    if step.kind == Step.Kind.ACTION:
        data.update(stdout=step.stdout, stderr=step.stderr)
    else:  # inventories are long; the full text is in the step, its digest here
        import hashlib

        data.update(
            stdout_sha256=hashlib.sha256(step.stdout.encode()).hexdigest(),
            stdout_bytes=len(step.stdout),
            stderr=step.stderr[:2000],
        )
    record(
        "step.finished",
        obj=step,
        host=run.host,
        change=ChangeRequest(pk=change_id),
        actor_name=WORKER,
        data=data,
    )


def _finish_run(run: HostRun, token: str, state: str, message: str, extra: dict | None = None) -> None:
    with transaction.atomic():
        locked = HostRun.objects.select_for_update(of=("self",)).select_related("host").get(pk=run.pk)
        if not _mine(locked, run, token) or locked.is_finished:
            raise LostOwnership()
        _set_state(locked, state, message, change_id=run.rollout.change_id, extra=extra)
        _enqueue_advance(run.rollout_id)


def _record_inventory(host: Hypervisor, result, target) -> None:
    """Keep the console's inventory current with what the executor just read (never fatal)."""
    from hosts.discovery import apply_result

    try:
        apply_result(host.pk, result, target_key=target.known_host_key or "")
    except Exception:
        logger.exception("recording the inventory of %s failed", host.name)


def _reread_and_compare(run, token, target, host, kind, description, expected, pf_names, word):
    """One recorded inventory step, compared with `expected` (the plan's before, or its after).

    Returns (step, seen, differences); seen is None when the host could not be read, and then
    differences holds the transport's message.
    """
    step, res = _call(run, token, target, "inventory", {}, kind=kind, description=description)
    _record_inventory(host, res, target)
    if not res.ok:
        return step, None, [res.message]
    seen = _observe(expected, res.result or {})
    return step, seen, _differences(expected, seen, pf_names, word)


def _observe(item_part: dict, inventory: dict) -> dict:
    seen = {}
    for namespace, values in item_part.items():
        seen[namespace] = NAMESPACE_OPS[namespace].observe(inventory, values.keys())
    return seen


def _differences(expected: dict, seen: dict, pf_names: dict, word: str) -> list[str]:
    out = []
    for namespace, values in expected.items():
        op = NAMESPACE_OPS.get(namespace)
        for key, want in values.items():
            got = seen.get(namespace, {}).get(key)
            if got != want and hasattr(op, "difference"):
                out.append(op.difference(key, want, got, word, pf_names))
            elif got != want:
                name = pf_names.get(key, key)
                got_text = "no such PF" if got is None else f"{got} VFs"
                out.append(f"{name} ({key}): {word} {want} VFs, the host has {got_text}")
    return out


def run_host(host_run_id: int, token: str) -> str:
    run = _claim(host_run_id, token)
    if run is None:
        return "not claimed"
    try:
        state = _execute(run, token)
    except LostOwnership:
        logger.warning("host run %s: ownership lost to another task; stopping here", host_run_id)
        return "lost ownership"
    except Exception as exc:
        logger.exception("host run %s failed unexpectedly", host_run_id)
        try:
            _finish_run(run, token, HR.FAILED, f"internal error in the executor: {type(exc).__name__}: {exc}")
        except LostOwnership:
            return "lost ownership"
        return HR.FAILED
    finally:
        # This execution stops driving the host run (a no-op when a state change cleared it).
        HostRun.objects.filter(pk=run.pk, owner=token, lease=run.lease).exclude(lease="").update(lease="")
    return state


def _execute(run: HostRun, token: str) -> str:
    from hosts.hostkeys import HostKeyNotTrusted, assert_host_trusted

    host = Hypervisor.objects.select_related("credential").get(pk=run.host_id)
    run.host = host
    item = run.plan_item
    steps = list(run.steps.order_by("seq"))
    pf_names = {a["pci_address"]: a["pf"] for a in item.actions if a.get("pci_address")}
    for action in item.actions:
        pf_names.update(action.get("pf_names") or {})

    if _cancel_requested(run) and not any(s.kind == Step.Kind.ACTION for s in steps):
        _finish_run(run, token, HR.CANCELLED, "cancelled before any write")
        return HR.CANCELLED
    try:
        assert_host_trusted(host)
    except HostKeyNotTrusted as exc:
        _finish_run(run, token, HR.FAILED, exc.message)
        return HR.FAILED
    if host.credential is None:
        _finish_run(run, token, HR.FAILED, "no SSH credential is assigned to this host")
        return HR.FAILED
    target = _target(host)

    # 1. Drift check before the first write (done once; never again after a write).
    if not any(s.kind == Step.Kind.DRIFT_CHECK and s.ok for s in steps):
        _close_interrupted(
            run, [s for s in steps if s.kind == Step.Kind.DRIFT_CHECK and s.finished_at is None]
        )
        step, seen, diffs = _reread_and_compare(
            run, token, target, host, Step.Kind.DRIFT_CHECK, "re-read the host before the first write",
            item.before, pf_names, "the plan saw",
        )
        if seen is None:
            _finish_run(run, token, HR.FAILED, f"drift check failed, nothing written: {diffs[0]}", {"step": step.pk})
            return HR.FAILED
        if diffs:
            _finish_run(
                run,
                token,
                HR.DRIFTED,
                "drifted: the host no longer matches the plan, nothing written ("
                + "; ".join(diffs)
                + "). A new change (new plan and approval) is needed.",
                {"step": step.pk, "expected": item.before, "observed": seen},
            )
            return HR.DRIFTED

    # 2. The actions, in plan order; finished ones are skipped, interrupted ones re-run.
    writes = 0
    total = sum(1 for a in item.actions if a.get("step"))
    for index, action in enumerate(item.actions):
        spec = action.get("step")
        if not spec:
            continue
        label = action.get("pf") or action.get("label") or spec["op"]
        mine = [s for s in run.steps.filter(kind=Step.Kind.ACTION, action_index=index).order_by("seq")]
        if spec["op"] == "reboot":
            # One reboot per host run: once sent (or possibly sent by a lost worker) it is never
            # sent again; the host run waits for a new boot id instead (changes/reboots.py).
            progress = reboot_progress(list(run.steps.order_by("seq")))
            if progress["reboot_step"] is not None:
                if progress["confirmed"] is None:
                    _close_interrupted(run, [s for s in mine if s.finished_at is None])
                    return enter_waiting(run, token, progress)
                writes += 1
                continue
        if any(s.ok for s in mine):
            writes += 1
            continue
        if any(s.finished_at is not None and not s.ok and s.error_code != "interrupted" for s in mine):
            _finish_run(run, token, HR.FAILED, f"{label}: an earlier attempt of this step failed")
            return HR.FAILED
        if _cancel_requested(run):
            _finish_run(
                run,
                token,
                HR.CANCELLED,
                f"cancelled after {writes} of {total} steps; what was done is not rolled back",
            )
            return HR.CANCELLED
        not_after = run.rollout.change.not_after
        if not_after and timezone.now() > not_after:
            closed = f"the maintenance window closed at {not_after:%Y-%m-%d %H:%M} UTC"
            if writes == 0 and not mine:
                _finish_run(run, token, HR.SKIPPED, f"skipped: {closed} before the first write; nothing written")
                return HR.SKIPPED
            _finish_run(
                run,
                token,
                HR.FAILED,
                f"window closed after {writes} of {total} steps ({closed}); what was done is not rolled back",
            )
            return HR.FAILED
        interrupted = [s for s in mine if s.finished_at is None]
        note = ""
        args = spec["args"]
        if interrupted and spec["op"] == "set_vfs":
            _close_interrupted(run, interrupted)
            decided = _after_lost_set_vfs(run, token, host, target, item, index, action, interrupted[-1])
            if decided == "done":
                writes += 1
                continue
            if decided != "rerun":
                return decided
            note = (
                f"re-run of step {interrupted[-1].seq}, interrupted by the loss of its worker "
                "(the host was re-read: the count was not applied yet)"
            )
        elif interrupted:
            _close_interrupted(run, interrupted)
            note = (
                f"re-run of step {interrupted[-1].seq}, interrupted by the loss of its worker "
                "(set_vfs is idempotent: an equal count is not written again)"
            )
            if spec["op"] == "kernel_args":
                # The file may have been edited before the tool ran: regenerate whatever the file says.
                args = {**args, "regenerate": True}
                note = (
                    f"re-run of step {interrupted[-1].seq}, interrupted by the loss of its worker "
                    "(kernel_args is idempotent; the boot configuration is regenerated in any case)"
                )
        step, res = _call(
            run,
            token,
            target,
            spec["op"],
            args,
            kind=Step.Kind.ACTION,
            action_index=index,
            description=action["text"],
            note=note,
        )
        if not res.ok:
            _reread_after_failure(run, token, host, target)
            code = res.error_code or res.kind
            why = res.message if (res.message or "").startswith(f"{code}:") else f"{code}: {res.message}"
            _finish_run(run, token, HR.FAILED, f"{label}: {why}", {"step": step.pk})
            return HR.FAILED
        writes += 1
        if spec["op"] == "kernel_args":
            _record_kernel_args_intent(host, spec["args"])
        if spec["op"] == "reboot":
            return enter_waiting(run, token, reboot_progress(list(run.steps.order_by("seq"))))

    if total == 0:
        _finish_run(run, token, HR.SUCCEEDED, "nothing to change; the host matches the plan")
        return HR.SUCCEEDED

    # 3. The console's intent, then re-read and verify.
    _record_intent(host, item.after)
    step, seen, diffs = _reread_and_compare(
        run, token, target, host, Step.Kind.VERIFY, "re-read the host after the change",
        item.after, pf_names, "expected",
    )
    if seen is None:
        message = f"verification failed: could not re-read the host: {diffs[0]}"
        _finish_run(run, token, HR.FAILED, message, {"step": step.pk})
        return HR.FAILED
    if diffs:
        _finish_run(
            run,
            token,
            HR.FAILED,
            "verification failed: " + "; ".join(diffs),
            {"step": step.pk, "expected": item.after, "observed": seen},
        )
        return HR.FAILED
    done = f"{total} step{'s' if total != 1 else ''} applied and verified"
    booted = reboot_progress(list(run.steps.order_by("seq")))
    if booted["confirmed"] is not None:
        new_boot = (booted["confirmed"].result or {}).get("boot_id") or "?"
        done += f" after one reboot (boot id {(booted['old_boot_id'] or '?')[:8]} → {new_boot[:8]})"
    _finish_run(run, token, HR.SUCCEEDED, done, {"step": step.pk})
    return HR.SUCCEEDED


def _after_lost_set_vfs(run, token, host, target, item, index: int, action: dict, lost: Step) -> str:
    """A set_vfs step whose worker died mid-call: re-read the host before anything is written.

    observed == the plan's after (and persisted when asked) → "done" (a Step says the lost worker
    applied it); observed == the plan's before, or 0 (a half-done reset) → "rerun"; anything else
    → the host run is drifted and nothing is written (returns HR.DRIFTED)."""
    args = action["step"]["args"]
    pci = args["pci_address"]
    label = action.get("pf") or pci
    inventory, res = _call(
        run,
        token,
        target,
        "inventory",
        {},
        kind=Step.Kind.VERIFY,
        description=f"re-read the host before resuming step {lost.seq} (its worker was lost)",
    )
    _record_inventory(host, res, target)
    if not res.ok:
        _finish_run(
            run,
            token,
            HR.FAILED,
            f"{label}: could not re-read the host after the loss of the worker of step {lost.seq}: "
            f"{res.message}; nothing written",
            {"step": inventory.pk},
        )
        return HR.FAILED
    nics = {n.get("pci_address"): n for n in (res.result or {}).get("nics", []) if not n.get("is_vf")}
    observed = SetVfsObserve.observe(res.result or {}, [pci])[pci]
    want = args["count"]
    before = (item.before.get("numvfs") or {}).get(pci)
    persisted = (nics.get(pci) or {}).get("persisted_count")
    if observed == want and (not args.get("persist") or persisted == want):
        _record_applied(run, token, index, action, lost, inventory, observed)
        return "done"
    if observed in (want, before, 0):
        return "rerun"
    _finish_run(
        run,
        token,
        HR.DRIFTED,
        f"drifted: {label} ({pci}) has {observed} VFs after the loss of the worker of step {lost.seq}, "
        f"neither the plan's {before} nor {want}; nothing written. A new change is needed.",
        {"step": inventory.pk, "observed": observed, "before": before, "after": want},
    )
    return HR.DRIFTED


def _record_applied(run, token, index: int, action: dict, lost: Step, inventory: Step, observed) -> None:
    """The Step that records an action the lost worker completed (no agent call)."""
    change_id = run.rollout.change_id
    now = timezone.now()
    with transaction.atomic():
        locked = HostRun.objects.select_for_update(of=("self",)).get(pk=run.pk)
        if not _mine(locked, run, token) or locked.is_finished:
            raise LostOwnership()
        seq = (locked.steps.order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
        step = Step.objects.create(
            host_run=locked,
            seq=seq,
            kind=Step.Kind.ACTION,
            action_index=index,
            operation=action["step"]["op"],
            description=action["text"][:300],
            request=lost.request,
            result={"observed": observed, "inventory_step": inventory.seq},
            ok=True,
            kind_of_result="ok",
            message=f"applied by the lost worker: the host already has {observed} VFs",
            note=f"step {lost.seq} was applied by the lost worker (re-read in step {inventory.seq}); "
            "nothing sent again",
            started_at=now,
            finished_at=now,
        )
        _audit_step(step, run, change_id)


def _close_interrupted(run: HostRun, steps: list[Step]) -> None:
    for step in steps:
        with transaction.atomic():
            locked = Step.objects.select_for_update(of=("self",)).get(pk=step.pk)
            if locked.finished_at is not None:
                continue
            locked.ok = False
            locked.error_code = "interrupted"
            locked.message = (
                "interrupted: the worker was lost during this call; its outcome is unknown "
                "(the host is re-read before anything is sent again)"
            )
            locked.finished_at = timezone.now()
            locked.save()
            _audit_step(locked, run, run.rollout.change_id)


def _reread_after_failure(run, token, host, target) -> None:
    try:
        _step, res = _call(
            run,
            token,
            target,
            "inventory",
            {},
            kind=Step.Kind.VERIFY,
            description="re-read the host after the failed step",
        )
        _record_inventory(host, res, target)
    except LostOwnership:
        raise
    except Exception:
        logger.exception("re-reading %s after a failure failed", host.name)


def _record_kernel_args_intent(host: Hypervisor, args: dict) -> None:
    """The console's intent for the host's kernel arguments (discovery's drift compares
    /proc/cmdline with it): earlier ones minus the removed, plus the added."""
    from .kernel_args import removed_by

    with transaction.atomic():
        locked = Hypervisor.objects.select_for_update(of=("self",)).get(pk=host.pk)
        remove = list(args.get("remove") or [])
        wanted = [a for a in (locked.managed_kernel_args or []) if not removed_by(str(a), remove)]
        wanted += [a for a in args.get("add") or [] if a not in wanted]
        if wanted != locked.managed_kernel_args:
            locked.managed_kernel_args = wanted
            locked.save(update_fields=["managed_kernel_args", "updated_at"])


def _record_intent(host: Hypervisor, after: dict) -> None:
    counts = after.get("numvfs", {})
    with transaction.atomic():
        for nic in Nic.objects.select_for_update(of=("self",)).filter(host=host, pci_address__in=list(counts)):
            nic.managed_numvfs = counts[nic.pci_address]
            nic.save(update_fields=["managed_numvfs"])


# ---------------------------------------------------------------------------------------------
# Recovery (beat)
# ---------------------------------------------------------------------------------------------


def resume_stale(now=None) -> list[int]:
    """Host runs whose owner stopped beating (worker died): give them a new owner and re-enqueue."""
    now = now or timezone.now()
    stale = _setting("HOSTRUN_STALE_SECONDS", 60)
    cutoff = now - timedelta(seconds=stale)
    # A dispatched run still waiting in the queue has no heartbeat yet: give the queue longer.
    queued_cutoff = now - timedelta(seconds=stale * QUEUED_STALE_FACTOR)
    resumed = []
    candidates = HostRun.objects.filter(
        state__in=HostRun.OPEN, dispatched_at__isnull=False, heartbeat_at__lt=cutoff
    ).values_list("pk", flat=True)
    for run_id in list(candidates):
        try:
            if _resume_one(run_id, now, queued_cutoff):
                resumed.append(run_id)
        except Exception:  # one bad host run must not stop the others (beat runs this again)
            logger.exception("resuming host run %s failed", run_id)
    return resumed


def _resume_one(run_id: int, now, queued_cutoff) -> bool:
    with transaction.atomic():
        run = (
            HostRun.objects.select_for_update(of=("self",))
            .select_related("rollout", "host")
            .get(pk=run_id)
        )
        if run.is_finished or not _stale(run, now):
            return False
        if run.state == HR.PENDING and run.heartbeat_at and run.heartbeat_at >= queued_cutoff:
            return False
        if run.resumed_count >= MAX_RESUMES:
            _set_state(run, HR.FAILED, _gave_up(run), change_id=run.rollout.change_id)
            _enqueue_advance(run.rollout_id)
            return False
        token = uuid.uuid4().hex
        old_owner = run.owner
        run.owner = token
        run.lease = ""  # the dead execution's lease ends; the new owner's task takes a new one
        run.heartbeat_at = now
        run.resumed_count += 1
        if run.state == HR.RUNNING:
            run.message = "resumed after worker loss"
        run.save()
        record(
            "hostrun.state_changed",
            obj=run,
            host=run.host,
            change=ChangeRequest(pk=run.rollout.change_id),
            actor_name=WORKER,
            data={
                "from": run.state,
                "to": run.state,
                "resumed": True,
                "message": "resumed after worker loss"
                if run.state == HR.RUNNING
                else "re-enqueued: its task was lost",
                "old_owner": old_owner,
                "rollout": run.rollout_id,
            },
        )
        _enqueue_run(run.pk, token)
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
