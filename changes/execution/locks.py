"""Row locks of the change engine, always taken in one order:

    change → rollout → host run → step → audit append (audit.services.record, last)

A transaction may skip levels but never goes back up: whoever holds a host run never waits for
its rollout or change. Parents are locked FOR NO KEY UPDATE (we never change a primary key): the
foreign-key checks of child rows (FOR KEY SHARE) do not conflict with it, so inserting a step or an
audit event never waits for whoever holds the host run, rollout or change. With
`immediate_constraints()` those checks also happen at the INSERT, before record() takes the audit
chain's lock, instead of at COMMIT after it.
"""

from django.db import connection

from ..models import ChangeRequest, HostRun, Rollout, Step


def immediate_constraints() -> None:
    """PostgreSQL: check foreign keys at each statement of this transaction, not at COMMIT.

    Django creates FKs DEFERRABLE INITIALLY DEFERRED; checked at COMMIT, their FOR KEY SHARE locks
    would be taken after audit.record() took the chain's advisory lock — the inversion that the
    lock order above forbids. Call it first in every transaction that writes and records.
    """
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def lock_change(change_id: int) -> ChangeRequest:
    immediate_constraints()
    return ChangeRequest.objects.select_for_update(no_key=True, of=("self",)).get(pk=change_id)


def lock_rollout(rollout_id: int) -> Rollout:
    immediate_constraints()
    return Rollout.objects.select_for_update(no_key=True, of=("self",)).get(pk=rollout_id)


def lock_host_runs(rollout: Rollout) -> list[HostRun]:
    """The rollout's host runs in order (the joined hosts are read, never locked)."""
    immediate_constraints()
    runs = rollout.host_runs.select_for_update(no_key=True, of=("self",)).select_related("host")
    return list(runs.order_by("order"))


def lock_host_run(host_run_id: int, *related: str) -> HostRun | None:
    immediate_constraints()
    runs = HostRun.objects.select_for_update(no_key=True, of=("self",))
    if related:
        runs = runs.select_related(*related)
    return runs.filter(pk=host_run_id).first()


def lock_step(step_id: int) -> Step:
    immediate_constraints()
    return Step.objects.select_for_update(no_key=True, of=("self",)).get(pk=step_id)
