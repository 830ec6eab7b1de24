"""Check the audit history: the hash chain from the first event, the event the previous good run
ended at, and the database against its witnesses outside the database (audit/witness.py).
Exit 1 naming every problem found: the first broken link, each witnessed event that is missing or
was rewritten, forged witness lines, events no witness covers."""

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from audit import witness
from audit.models import AuditEvent, VerifyRun
from audit.services import save_verify_run, verify_chain


class Command(BaseCommand):
    help = (
        "Verify the audit hash chain (streams in chunks) and compare it with its witnesses; "
        "exit status 1 naming what is broken, missing or rewritten."
    )

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=5000)
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)
        parser.add_argument(
            "--no-save", action="store_true", help="Do not record the outcome as a VerifyRun."
        )
        parser.add_argument(
            "--witness",
            action="append",
            default=[],
            metavar="FILE",
            help="A witness file to check against (repeatable): the console's own, or a syslog "
            "collector's file with the witness lines. Default: the configured witness file.",
        )
        parser.add_argument(
            "--no-witness", action="store_true", help="Check the chain only (no witness comparison)."
        )
        parser.add_argument(
            "--checkpoint",
            action="store_true",
            help="When the chain is intact and no witnessed event is missing or rewritten, witness the "
            "current head (you vouch for events no witness covers yet, e.g. those recorded before the "
            "witness was enabled).",
        )

    def handle(self, *args, chunk_size, database, no_save, witness, no_witness, checkpoint, **options):
        started_at, clock = timezone.now(), time.monotonic()
        result = verify_chain(chunk_size=chunk_size, using=database)
        problems = []
        broken_id = None
        if result.broken:
            problems.append(result.broken.describe())
            broken_id = result.broken.id
        elif anchor := self._anchor_problem(database):
            problems.append(anchor[0])
            broken_id = anchor[1]
        report = None
        if not no_witness:
            report = self._witness_problems(witness, database, checkpoint=checkpoint and not problems)
            problems.extend(report.problems)
        if not no_save:
            with transaction.atomic(using=database):
                save_verify_run(
                    result,
                    started_at=started_at,
                    problem="\n".join(problems) or None,
                    broken_id=broken_id,
                    using=database,
                )
        elapsed = time.monotonic() - clock
        if problems:
            self.stderr.write(f"audit chain BROKEN after {result.checked} good events:")
            for problem in problems:
                self.stderr.write(f"  - {problem}")
            raise SystemExit(1)
        self.stdout.write(
            f"audit chain OK: {result.checked} events verified up to event {result.last_id or 0} "
            f"(head {result.last_hash[:16]}…) in {elapsed:.1f}s"
        )
        if report is not None:
            self.stdout.write(
                f"witness OK: {report.lines} line(s) in {', '.join(report.files) or 'no file'}, "
                f"newest witnessed event {report.newest_id or 'none'}"
            )

    def _anchor_problem(self, database):
        """A previous successful run must still find the event it ended at, with the same hash."""
        previous = (
            VerifyRun.objects.using(database).filter(ok=True, last_id__isnull=False).order_by("-id").first()
        )
        if previous is None:
            return None
        still = AuditEvent.objects.using(database).filter(id=previous.last_id).values_list("hash", flat=True).first()
        if still == previous.last_hash:
            return None
        return (
            f"event {previous.last_id}, verified by run {previous.pk} at "
            f"{previous.finished_at:%Y-%m-%d %H:%M:%S}, is missing or changed: expected "
            f"{previous.last_hash}, stored {still or 'nothing'}",
            previous.last_id,
        )

    def _witness_problems(self, paths, database, *, checkpoint=False):
        files = [Path(p) for p in paths]
        if not files and settings.AUDIT_WITNESS_FILE_ENABLED:
            own = witness.default_path(database)
            files = [own] if own.exists() else []
        for path in files:
            if not path.exists():
                report = witness.WitnessReport(files=[str(p) for p in files])
                report.problems.append(f"witness file {path} does not exist")
                return report
        report = witness.check(files, using=database)
        if checkpoint and report.ok:
            head = AuditEvent.objects.using(database).order_by("-id").values_list("id", "hash", "created_at").first()
            if head is not None and head[0] > report.newest_id:
                witness.note(*head, using=database)
                self.stdout.write(f"checkpoint: witnessed the head, event {head[0]}, on your word")
                report.newest_id = head[0]
        tail = witness.unwitnessed_tail(
            report, using=database, grace_seconds=settings.AUDIT_WITNESS_GRACE_SECONDS
        )
        if tail:
            report.problems.append(tail)
        return report
