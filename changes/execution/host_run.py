"""Driving one host run: claim, drift check before the first write, the plan's actions in
order, the console's intent, re-read and verify.

Steps are idempotent and the database is the truth: on resume, finished ok steps are skipped; a
step that started but never finished (its worker died mid-call) is closed as interrupted and its
operation decides (`Operation.resume`) whether the step runs again, is done already or the host
has drifted. A database error after an agent call never becomes "failed": the host run is left
for a new execution, which re-reads the host first.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from hosts.intents import intents_of, record_intent
from hosts.models import Hypervisor

from .. import dispatch, operations
from ..models import HostRun, Step
from .boot_wait import boot_actions, enter_waiting, reboot_progress
from .compare import names_for, reread, reread_and_compare
from .ownership import LostOwnership, claim, finish, release
from .steps import call_agent, record_without_call, ssh_target
from .transitions import HR, close_open_steps

logger = logging.getLogger("changes.execution")


def run_host(host_run_id: int, token: str) -> str:
    run = claim(host_run_id, token)
    if run is None:
        return "not claimed"
    try:
        return HostRunExecution(run, token).execute()
    except LostOwnership:
        logger.warning("host run %s: ownership lost to another task; stopping here", host_run_id)
        return "lost ownership"
    except DatabaseError:
        logger.exception("host run %s: database error; a new execution resumes it and re-reads the host", host_run_id)
        _resume_later(run, token)
        return "resumed later"
    except Exception as exc:
        logger.exception("host run %s failed unexpectedly", host_run_id)
        try:
            finish(run, token, HR.FAILED, f"internal error in the executor: {type(exc).__name__}: {exc}")
        except LostOwnership:
            return "lost ownership"
        return HR.FAILED
    finally:
        try:
            release(run, token)
        except DatabaseError:
            logger.warning("host run %s: the lease could not be released; it expires with the heartbeat", run.pk)


def _resume_later(run: HostRun, token: str) -> None:
    connection.close()  # a broken connection is reopened by the next query
    try:
        release(run, token)
    except DatabaseError:
        return  # recovery resumes it once its heartbeat is stale
    dispatch.run_host(run.pk, token, countdown=settings.HOSTRUN_WAIT_RETRY_SECONDS)


class HostRunExecution:
    """One execution of a claimed host run (the state is in the database; this only carries it)."""

    def __init__(self, run: HostRun, token: str):
        self.run, self.token = run, token
        self.host = Hypervisor.objects.select_related("credential").prefetch_related("nics").get(pk=run.host_id)
        run.host = self.host
        self.item = run.plan_item
        self.names = names_for(self.host, self.item)
        self.boot_indexes = boot_actions(self.item)
        self.target = None
        self.last_reread: Step | None = None

    def finish(self, state: str, message: str, extra: dict | None = None) -> str:
        finish(self.run, self.token, state, message, extra)
        return state

    def execute(self) -> str:
        from hosts.hostkeys import HostKeyNotTrusted, assert_host_trusted

        steps = list(self.run.steps.order_by("seq"))
        if self.cancel_requested() and not any(s.kind == Step.Kind.ACTION for s in steps):
            return self.finish(HR.CANCELLED, "cancelled before any write")
        try:
            assert_host_trusted(self.host)
        except HostKeyNotTrusted as exc:
            return self.finish(HR.FAILED, exc.message)
        if self.host.credential is None:
            return self.finish(HR.FAILED, "no SSH credential is assigned to this host")
        self.target = ssh_target(self.host)
        interrupted = self.close_interrupted()
        if not any(s.kind == Step.Kind.DRIFT_CHECK and s.ok for s in steps):
            outcome = self.drift_check()
            if outcome:
                return outcome
        outcome, writes = self.apply_actions(interrupted)
        if outcome:
            return outcome
        if writes == 0:
            return self.finish(HR.SUCCEEDED, "nothing to change; the host matches the plan")
        self.record_all_intents()
        return self.verify(writes)

    # -- steps ----------------------------------------------------------------------------
    def close_interrupted(self) -> dict[int, Step]:
        """Close every step a lost execution left open; returns the interrupted action steps by
        action index (their operation decides what happens next)."""
        with transaction.atomic():
            closed = close_open_steps(self.run, self.run.rollout.change_id)
        return {s.action_index: s for s in closed if s.kind == Step.Kind.ACTION and s.action_index is not None}

    def cancel_requested(self) -> bool:
        from ..models import Rollout

        return Rollout.objects.filter(pk=self.run.rollout_id, cancel_requested_at__isnull=False).exists()

    def drift_check(self) -> str | None:
        step, seen, diffs = reread_and_compare(
            self.run, self.token, self.target, self.host, kind=Step.Kind.DRIFT_CHECK,
            description="re-read the host before the first write", expected=self.item.before, names=self.names,
            word="the plan saw",
        )
        if seen is None:
            return self.finish(HR.FAILED, f"drift check failed, nothing written: {diffs[0]}", {"step": step.pk})
        if diffs:
            return self.finish(
                HR.DRIFTED,
                "drifted: the host no longer matches the plan, nothing written (" + "; ".join(diffs)
                + "). A new change (new plan and approval) is needed.",
                {"step": step.pk, "expected": self.item.before, "observed": seen},
            )
        return None

    def apply_actions(self, interrupted: dict[int, Step]) -> tuple[str | None, int]:
        """The actions in plan order; finished ones are skipped. Returns (final state or None, writes)."""
        writes = 0
        total = sum(1 for a in self.item.actions if a.get("step"))
        for index, action in enumerate(self.item.actions):
            if not action.get("step"):
                continue
            mine = list(self.run.steps.filter(kind=Step.Kind.ACTION, action_index=index).order_by("seq"))
            if index in self.boot_indexes:
                progress = reboot_progress(list(self.run.steps.order_by("seq")), self.boot_indexes)
                if progress["reboot_step"] is not None:
                    if progress["confirmed"] is None:
                        return enter_waiting(self.run, self.token, progress), writes
                    writes += 1
                    continue
            if any(s.ok for s in mine):
                writes += 1
                continue
            outcome = self.before_action(action, mine, writes, total)
            if outcome:
                return outcome, writes
            outcome = self.run_action(index, action, interrupted.get(index))
            if outcome == "done":
                writes += 1
                continue
            if outcome:
                return outcome, writes
            writes += 1
            if index in self.boot_indexes:
                return enter_waiting(self.run, self.token, reboot_progress(
                    list(self.run.steps.order_by("seq")), self.boot_indexes)), writes
        return None, writes

    def before_action(self, action: dict, mine: list[Step], writes: int, total: int) -> str | None:
        """Why the next action must not run: an earlier attempt failed, cancel, the window."""
        label = action.get("label") or action["step"]["op"]
        if any(s.finished_at is not None and not s.ok and s.error_code != "interrupted" for s in mine):
            return self.finish(HR.FAILED, f"{label}: an earlier attempt of this step failed")
        if self.cancel_requested():
            return self.finish(HR.CANCELLED, f"cancelled after {writes} of {total} steps; what was done is not "
                               "rolled back")
        not_after = self.run.rollout.change.not_after
        if not_after and timezone.now() > not_after:
            closed = f"the maintenance window closed at {not_after:%Y-%m-%d %H:%M} UTC"
            if writes == 0 and not mine:
                return self.finish(HR.SKIPPED, f"skipped: {closed} before the first write; nothing written")
            return self.finish(HR.FAILED, f"window closed after {writes} of {total} steps ({closed}); what was "
                               "done is not rolled back")
        return None

    def run_action(self, index: int, action: dict, lost: Step | None) -> str | None:
        """Send one action's step. Returns None when it succeeded, "done" when the lost worker had
        done it already, or the host run's final state."""
        operation = operations.get(operations.action_op(action))
        spec = action["step"]
        args, note = spec["args"], ""
        if lost is not None:
            decided = operation.resume(action, lost, self.reread_for(lost))
            if decided.outcome == "done":
                self.record_applied(index, action, lost, decided)
                self.record_intents(operation, action)
                return "done"
            if decided.outcome in ("drifted", "failed"):
                return self.finish(HR.DRIFTED if decided.outcome == "drifted" else HR.FAILED, decided.message,
                                   {"observed": decided.observed})
            args, note = decided.args or args, decided.note
        step, result = call_agent(self.run, self.token, self.target, spec["op"], args, kind=Step.Kind.ACTION,
                                  action_index=index, description=action["text"], note=note)
        if not result.ok:
            self.reread_after_failure()
            code = result.error_code or result.kind
            why = result.message if (result.message or "").startswith(f"{code}:") else f"{code}: {result.message}"
            label = action.get("label") or spec["op"]
            return self.finish(HR.FAILED, f"{label}: {partially_applied(result)}{why}", {"step": step.pk})
        self.record_intents(operation, action)
        return None

    def reread_for(self, lost: Step):
        def read():
            step, result = reread(self.run, self.token, self.target, self.host, kind=Step.Kind.VERIFY,
                                  description=f"re-read the host before resuming step {lost.seq} (its worker was lost)")
            self.last_reread = step
            return (result.result or {}) if result.ok else None

        return read

    def record_applied(self, index: int, action: dict, lost: Step, decided) -> None:
        inventory = self.last_reread
        record_without_call(
            self.run, self.token, kind=Step.Kind.ACTION, operation=action["step"]["op"], description=action["text"],
            request=lost.request, action_index=index, message=decided.message,
            result={"observed": decided.observed, "inventory_step": inventory.seq if inventory else None},
            note=f"step {lost.seq} was applied by the lost worker (re-read in step "
                 f"{inventory.seq if inventory else '?'}); nothing sent again",
        )

    def record_intents(self, operation, action: dict) -> None:
        current = {i.subject: i.value for i in intents_of([self.host.pk]).get(self.host.pk, [])
                   if i.operation == operation.name}
        for intent in operation.intents(action, current):
            record_intent(self.host.pk, operation.name, intent.subject, intent.value, intent.summary,
                          change_id=self.run.rollout.change_id)

    def record_all_intents(self) -> None:
        """Again for every applied action (idempotent): an execution lost between an action and its
        intent must not leave the intent unrecorded."""
        for action in self.item.actions:
            if action.get("step") and operations.known(operations.action_op(action)):
                self.record_intents(operations.get(operations.action_op(action)), action)

    def reread_after_failure(self) -> None:
        try:
            reread(self.run, self.token, self.target, self.host, kind=Step.Kind.VERIFY,
                   description="re-read the host after the failed step")
        except LostOwnership:
            raise
        except Exception:
            logger.exception("re-reading %s after a failure failed", self.host.name)

    def verify(self, writes: int) -> str:
        step, seen, diffs = reread_and_compare(
            self.run, self.token, self.target, self.host, kind=Step.Kind.VERIFY,
            description="re-read the host after the change", expected=self.item.after, names=self.names,
            word="expected",
        )
        if seen is None:
            return self.finish(HR.FAILED, f"verification failed: could not re-read the host: {diffs[0]}",
                               {"step": step.pk})
        if diffs:
            return self.finish(HR.FAILED, "verification failed: " + "; ".join(diffs),
                               {"step": step.pk, "expected": self.item.after, "observed": seen})
        done = f"{writes} step{'s' if writes != 1 else ''} applied and verified"
        booted = reboot_progress(list(self.run.steps.order_by("seq")), self.boot_indexes)
        if booted["confirmed"] is not None:
            new_boot = (booted["confirmed"].result or {}).get("boot_id") or "?"
            done += f" after one reboot (boot id {(booted['old_boot_id'] or '?')[:8]} → {new_boot[:8]})"
        return self.finish(HR.SUCCEEDED, done, {"step": step.pk})


def partially_applied(result) -> str:
    """Words for an agent error after which the host is neither as it was nor as asked (the kernel
    enabled fewer VFs than asked, or a count changed before a later write failed)."""
    details = ((result.response or {}).get("error") or {}).get("details") or {}
    if details.get("partially_applied") or details.get("missing"):
        return "partially applied — "
    return ""
