"""Chaos suite: faults injected into real processes during real rollouts, and a count of what went wrong.

    make chaos [CHAOS_TRIALS=50] [CHAOS_OTHER_TRIALS=10] [CHAOS_FAULTS=sigkill,redis_restart,...]
    # = DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/chaos/run.py \
    #       --trials 50 --other-trials 10 --write benchmarks/results/chaos.md

Needs PostgreSQL (DATABASE_URL: any database of a server where the user may CREATE DATABASE; the
suite works in a scratch database of its own, dropped at the end) and redis-server (the suite starts
its own on a free loopback port, so it can kill, restart and freeze it). Everything else is started
here too: a Celery worker and beat (real processes, on that Redis and that database), and simfleet
hosts over real SSH. Changes are made only through the public services (changes.services,
changes.approvals), as the web UI and the API make them.

Faults (one per trial, at a random moment):

  sigkill        SIGKILL of the whole worker (main process and pool) during a 20-host rollout
                 (parallelism 5, canary 1), then a new worker; beat resumes the orphaned host runs
  redis_restart  Redis killed and started again (empty: no persistence) mid-rollout; same worker
  redis_freeze   Redis SIGSTOPped for 3-20 s mid-rollout, then SIGCONT
  pg_kill        every PostgreSQL backend of the worker and beat terminated (pg_terminate_backend)
                 while a step runs
  host_gone      a host whose reboot never returns (simfleet fault) in a set_vfs + reboot rollout;
                 it must fail at its deadline, alone, and halt the rollout

Each trial compares the simulated hosts' true state (simfleet), the recorded steps and the audit
trail, and counts:

  wrongly_failed       host runs failed although their host was not the one made to fail
  write_without_record the host's VFs were written but no finished, audited set_vfs step says so
  record_without_write a finished set_vfs step says it wrote VFs the host does not have
  driven_twice         hosts whose sriov_numvfs was written more often than the change needs
  steps_open           steps without finished_at once the rollout is over
  rollouts_stuck       rollouts not finished within --deadline seconds
  worker_exits         workers that exited by themselves (not the SIGKILL of the fault)
  console_disagrees    reachable hosts whose VF count in the console differs from the host's

The goal is 0 of each; results are appended to --write (benchmarks/results/chaos.md).
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import shutil
import socket
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ENO49 = "0000:04:00.0"
TARGET = 4
METRICS = (
    "wrongly_failed",
    "write_without_record",
    "record_without_write",
    "driven_twice",
    "steps_open",
    "rollouts_stuck",
    "worker_exits",
    "console_disagrees",
)
FAULTS = ("sigkill", "redis_restart", "redis_freeze", "pg_kill", "host_gone")
ENGINE_ENV = {
    # Short engine timings so a trial takes seconds, the same in every process of the suite.
    "HOSTRUN_HEARTBEAT_SECONDS": "0.5",
    "HOSTRUN_STALE_SECONDS": "4",
    "HOSTRUN_WAIT_RETRY_SECONDS": "0.5",
    "HOSTRUN_RESUME_INTERVAL_SECONDS": "1",
    "REBOOT_DEADLINE_SECONDS": "12",
    "BOOT_POLL_SECONDS": "0.5",
    "BOOT_PROBE_TIMEOUT": "2",
    "DISCOVERY_INTERVAL_MINUTES": "59",
    "HOST_KEY_TOFU": "0",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_environment(args) -> tuple[str, int]:
    """Environment for this process and every process it starts; must run before django.setup()."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("chaos: DATABASE_URL must point at PostgreSQL (pg_terminate_backend, row locks)")
    db_name = f"sriov_chaos_{os.getpid()}"
    redis_port = free_port()
    var = Path(os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "chaos")))
    var.mkdir(parents=True, exist_ok=True)
    os.environ.update(ENGINE_ENV)
    os.environ["DATABASE_NAME_OVERRIDE"] = db_name
    os.environ["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    return db_name, redis_port


def admin_connection():
    import psycopg

    url = urllib.parse.urlparse(os.environ["DATABASE_URL"])
    return psycopg.connect(host=url.hostname, port=url.port or 5432, user=url.username or None,
                           password=url.password or None, dbname="postgres", autocommit=True)


class Suite:
    """The long-lived pieces: database, Redis, worker, beat, users."""

    def __init__(self, args, db_name, redis_port):
        from tests.redis_server import RedisServer

        self.args = args
        self.db_name = db_name
        self.var = Path(os.environ["CONSOLE_VAR_DIR"])
        self.logs = self.var / "logs"
        for old in (self.logs, self.var / "fleets"):  # a previous run's logs would be counted again
            shutil.rmtree(old, ignore_errors=True)
        self.logs.mkdir()
        self.redis = RedisServer(self.logs / "redis.log", port=redis_port)
        self.worker = None
        self.beat = None
        self.workers_started = 0

    def start(self):
        from django.core.management import call_command

        from tests.conftest import BeatProcess, make_user

        with admin_connection() as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        call_command("migrate", verbosity=0)
        self.operator = make_user("chaos-operator", "operator")
        self.approver = make_user("chaos-approver", "approver")
        self.redis.start()
        self.start_worker()
        self.beat = BeatProcess(self.logs / "beat.log").start()
        return self

    def start_worker(self):
        from tests.conftest import WorkerProcess

        self.workers_started += 1
        log = self.logs / f"worker-{self.workers_started:03d}.log"
        self.worker = WorkerProcess(self.db_name, log).start()

    def ensure_worker(self) -> int:
        """Restart a worker that exited by itself; returns 1 if it had."""
        if self.worker.proc.poll() is None:
            return 0
        self.start_worker()
        return 1

    def stop(self):
        from django.db import connections

        for proc in (self.beat, self.worker):
            if proc is not None:
                proc.stop()
        self.redis.stop()
        connections.close_all()
        if not self.args.keep:
            with admin_connection() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def log_counts(self) -> dict:
        text = "".join(p.read_text(errors="replace") for p in self.logs.glob("worker-*.log"))
        return {
            "deadlock detected": text.count("deadlock detected"),
            "Unrecoverable error": text.count("Unrecoverable error"),
            "failed unexpectedly": text.count("failed unexpectedly"),
        }


class Trial:
    def __init__(self, suite: Suite, fault: str, index: int, rnd: random.Random):
        self.suite, self.fault, self.index, self.rnd = suite, fault, index, rnd
        self.counts = Counter({m: 0 for m in METRICS})
        self.notes: list[str] = []
        self.expected_failures: set[str] = set()

    # --- set-up ---------------------------------------------------------------------------------

    def _fleet(self, n):
        from simfleet import SimFleet

        self.prefix = f"{self.fault.replace('_', '')[:6]}{self.index:03d}h"
        names = [f"{self.prefix}{i:02d}" for i in range(n)]
        self.fleet = SimFleet(
            self.suite.var / "fleets" / f"{self.fault}-{self.index:03d}",
            hosts=[{"profile": "dl360g9", "name": name} for name in names],
            base_port=0, vf_delay=0.05, reboot_delay=0.3, down_time=0.5,
        ).start()
        return [self.fleet.host(name) for name in names]

    def _change(self, hosts, ops, **policy):
        from changes import approvals, services

        data = {
            "title": f"chaos {self.fault} #{self.index}",
            "reason": "chaos suite",
            "targets": {"host_ids": [h.pk for h in hosts]},
            "operations": ops,
            **policy,
        }
        change = services.create_change(data, self.suite.operator)
        if change.plan_blocked:
            raise RuntimeError(f"plan blocked: {list(change.plan_items.values_list('errors', flat=True))}")
        services.submit_change(change.pk, self.suite.operator)
        approvals.approve(change.pk, self.suite.approver, comment="chaos",
                          approval_hash=approvals.current_approval_hash(change.pk))
        return change

    def run(self) -> Counter:
        from tests.conftest import register_sim_hosts

        set_vfs = {"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": TARGET}
        if self.fault == "host_gone":
            self.sims = self._fleet(4)
            gone = self.rnd.choice(self.sims)
            self.expected_failures = {gone.name}
            hosts = register_sim_hosts(self.fleet, self.sims, credential_name=f"chaos-{self.prefix}")
            gone.inject("reboot_never_returns")
            ops = [set_vfs, {"op": "reboot", "when": "always"}]
            self.change = self._change(hosts, ops, parallelism=2, canary_count=0, max_failures=1)
        else:
            self.sims = self._fleet(self.suite.args.hosts)
            hosts = register_sim_hosts(self.fleet, self.sims, credential_name=f"chaos-{self.prefix}")
            self.change = self._change(hosts, [set_vfs], parallelism=5, canary_count=1,
                                       max_failures=len(hosts))
        try:
            self._inject()
            finished = self._wait_finished()
            if not finished:
                self.counts["rollouts_stuck"] += 1
                self.notes.append(f"rollout not finished after {self.suite.args.deadline:.0f}s")
            self._settle()
            self.counts["worker_exits"] += self.suite.ensure_worker()
            self._compare()
        finally:
            for sim in self.sims:
                sim.clear_faults()
            self.fleet.stop()
        return self.counts

    # --- faults ---------------------------------------------------------------------------------

    def _rollout(self):
        from changes.models import Rollout

        return Rollout.objects.filter(change=self.change).order_by("-attempt").first()

    def _wait_progress(self):
        """A random moment of the rollout: after k finished host runs (random k), plus a little."""
        from changes.models import HostRun

        k = self.rnd.randint(0, max(0, len(self.sims) - 2))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = HostRun.objects.filter(rollout__change=self.change, state__in=HostRun.FINISHED).count()
            if done >= k:
                break
            time.sleep(0.05)
        time.sleep(self.rnd.uniform(0, 0.6))
        if (rollout := self._rollout()) is not None and rollout.is_finished:
            self.notes.append("the fault landed after the rollout had finished")

    def _wait_step_running(self):
        from changes.models import Step

        deadline = time.monotonic() + 120
        skip = self.rnd.randint(0, 10)
        seen = 0
        while time.monotonic() < deadline:
            if Step.objects.filter(host_run__rollout__change=self.change, finished_at__isnull=True).exists():
                seen += 1
                if seen > skip:
                    return
            time.sleep(0.02)
        self.notes.append("no running step seen before the fault")

    def _inject(self):
        suite = self.suite
        if self.fault == "sigkill":
            self._wait_progress()
            suite.worker.kill()
            time.sleep(self.rnd.uniform(0.2, 1.5))
            suite.start_worker()
        elif self.fault == "redis_restart":
            self._wait_progress()
            suite.redis.restart(down_seconds=self.rnd.uniform(1, 4))
        elif self.fault == "redis_freeze":
            self._wait_progress()
            suite.redis.freeze()
            time.sleep(self.rnd.uniform(3, 20))
            suite.redis.thaw()
        elif self.fault == "pg_kill":
            self._wait_step_running()
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                self.notes.append(f"terminated {cursor.fetchone()[0]} backend(s)")
        # host_gone: the fault was injected before the approval

    def _wait_finished(self) -> bool:
        deadline = time.monotonic() + self.suite.args.deadline
        while time.monotonic() < deadline:
            rollout = self._rollout()
            if rollout is not None and rollout.is_finished:
                return True
            time.sleep(0.2)
        return False

    def _settle(self):
        """Let duplicate deliveries and late verify steps land before comparing."""
        from changes.models import Step

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not Step.objects.filter(host_run__rollout__change=self.change, finished_at__isnull=True).exists():
                break
            time.sleep(0.2)
        time.sleep(1)

    # --- comparing truth, steps and audit -------------------------------------------------------

    def _compare(self):
        from audit.models import AuditEvent
        from changes.models import Step
        from hosts.models import Nic

        rollout = self._rollout()
        if rollout is None:
            self.counts["rollouts_stuck"] += 1
            self.notes.append("no rollout was created")
            return
        steps = list(Step.objects.filter(host_run__rollout__change=self.change).select_related("host_run__host"))
        events = AuditEvent.objects.filter(action="step.finished", change_id=self.change.pk)
        audited = set(events.values_list("data__step", flat=True))
        by_host: dict[str, list] = {}
        for step in steps:
            by_host.setdefault(step.host_run.host.name, []).append(step)
        runs = {r.host.name: r for r in rollout.host_runs.select_related("host")}
        for sim in self.sims:
            self._compare_host(sim, runs.get(sim.name), by_host.get(sim.name, []), audited)
        nics = dict(Nic.objects.filter(host__name__startswith=self.prefix, pci_address=ENO49)
                    .values_list("host__name", "sriov_numvfs"))
        disagree = [s.name for s in self.sims if s.true_state()["reachable"]
                    and nics.get(s.name) != s.true_state()["numvfs"][ENO49]]
        if disagree:
            self.counts["console_disagrees"] += len(disagree)
            self.notes.append(f"console's VF count differs from the host for {', '.join(disagree)}")

    def _compare_host(self, sim, run, steps, audited):
        name = sim.name
        writes = [int(m.group(1)) for e in list(sim.events)
                  if (m := re.match(rf"sriov_numvfs {re.escape(ENO49)} <- (\d+)", e))]
        truth = sim.true_state()["numvfs"][ENO49]
        open_steps = [s for s in steps if s.finished_at is None]
        if open_steps:
            self.counts["steps_open"] += len(open_steps)
            self.notes.append(f"{name}: open steps {', '.join(f'{s.kind}/{s.operation}#{s.pk}' for s in open_steps)}")
        if run is not None and run.state == "failed" and name not in self.expected_failures:
            self.counts["wrongly_failed"] += 1
            self.notes.append(f"{name}: failed: {run.message.splitlines()[0][:160] if run.message else ''}")
        if len([w for w in writes if w == TARGET]) > 1 or len(writes) > 1:
            self.counts["driven_twice"] += 1
            self.notes.append(f"{name}: sriov_numvfs written {writes}")
        recorded = [
            s for s in steps
            if s.kind == "action" and s.operation == "set_vfs" and s.finished_at and s.ok and s.pk in audited
        ]
        claims_write = [s for s in recorded if (s.result or {}).get("actions")]
        if writes and not recorded:
            self.counts["write_without_record"] += 1
            self.notes.append(f"{name}: host has {truth} VFs (writes {writes}) but no finished, audited set_vfs step")
        if claims_write and (not writes or truth != TARGET) and name not in self.expected_failures:
            self.counts["record_without_write"] += 1
            self.notes.append(
                f"{name}: step #{claims_write[0].pk} says it wrote, the host has {truth} (writes {writes})"
            )


def fault_plan(args) -> list[tuple[str, int]]:
    wanted = [f for f in args.faults.split(",") if f] if args.faults else list(FAULTS)
    unknown = set(wanted) - set(FAULTS)
    if unknown:
        sys.exit(f"chaos: unknown fault(s) {', '.join(sorted(unknown))}; choose from {', '.join(FAULTS)}")
    plan = []
    for fault in wanted:
        plan += [(fault, i) for i in range(args.trials if fault == "sigkill" else args.other_trials)]
    return plan


def revision() -> str:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown revision"
    return f"{branch} {head}"


def report(args, results, notes, log_counts, started, suite_info) -> list[str]:
    lines = [
        f"### {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC — {suite_info}",
        "",
        f"`{' '.join(sys.argv[1:])}` (seed {args.seed}), {time.monotonic() - started:.0f} s. "
        f"Worker log: {', '.join(f'{k!r} ×{v}' for k, v in log_counts.items())}.",
        "",
        "| fault | trials | " + " | ".join(METRICS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |",
    ]
    for fault, (trials, totals) in results.items():
        lines.append(f"| {fault} | {trials} | " + " | ".join(str(totals[m]) for m in METRICS) + " |")
    if notes:
        lines += ["", "Findings (trial: what was seen):", ""]
        lines += [f"- {fault} #{index}: {note}" for fault, index, note in notes[: args.max_notes]]
        if len(notes) > args.max_notes:
            lines.append(f"- … {len(notes) - args.max_notes} more")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50, help="SIGKILL trials")
    parser.add_argument("--other-trials", type=int, default=10, help="trials of each other fault")
    parser.add_argument("--faults", default="", help=f"comma-separated subset of {','.join(FAULTS)}")
    parser.add_argument("--hosts", type=int, default=20, help="hosts of each rollout (host_gone uses 4)")
    parser.add_argument("--deadline", type=float, default=240, help="seconds a rollout may take after its fault")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--write", help="append the results as markdown to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--max-notes", type=int, default=60)
    args = parser.parse_args()
    db_name, redis_port = prepare_environment(args)

    import django

    django.setup()
    import logging

    for noisy in ("remote", "simfleet", "asyncssh"):  # this process's SSH chatter (discovery of each fleet)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from tests.procs import stop_reaper

    plan = fault_plan(args)
    rnd = random.Random(args.seed)
    started = time.monotonic()
    suite = Suite(args, db_name, redis_port)
    results: dict[str, tuple[int, Counter]] = {}
    notes: list[tuple[str, int, str]] = []
    try:
        suite.start()
        for fault, index in plan:
            trial = Trial(suite, fault, index, rnd)
            try:
                counts = trial.run()
            except Exception as exc:  # noqa: BLE001 - a trial that cannot even be set up is a finding
                counts = Counter({m: 0 for m in METRICS})
                counts["rollouts_stuck"] += 1
                trial.notes.append(f"trial error: {type(exc).__name__}: {exc}")
                suite.ensure_worker()
            trials, totals = results.get(fault, (0, Counter()))
            results[fault] = (trials + 1, totals + counts)
            notes += [(fault, index, note) for note in trial.notes]
            bad = {m: v for m, v in counts.items() if v}
            print(f"chaos: {fault} #{index}: {bad or 'clean'}", *trial.notes, sep="\n    ", flush=True)
        log_counts = suite.log_counts()
    finally:
        suite.stop()
        stop_reaper()
    lines = report(args, results, notes, log_counts, started, f"{args.hosts}-host rollouts, {revision()}")
    print("\n".join(lines))
    if args.write:
        with open(args.write, "a") as out:
            out.write("\n".join(lines) + "\n\n")
    return 1 if any(totals[m] for _, totals in results.values() for m in METRICS) else 0


if __name__ == "__main__":
    sys.exit(main())
