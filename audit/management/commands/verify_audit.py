"""Walk the audit hash chain from the first event; exit 1 naming the first broken link."""

import time

from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from audit.models import AuditEvent, VerifyRun
from audit.services import save_verify_run, verify_chain


class Command(BaseCommand):
    help = "Verify the audit hash chain (streams in chunks); exit status 1 at the first broken link."

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=5000)
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)
        parser.add_argument(
            "--no-save", action="store_true", help="Do not record the outcome as a VerifyRun."
        )

    def handle(self, *args, chunk_size, database, no_save, **options):
        started_at, clock = timezone.now(), time.monotonic()
        result = verify_chain(chunk_size=chunk_size, using=database)
        problem = broken_id = None
        if result.broken:
            problem, broken_id = result.broken.describe(), result.broken.id
        # A previous successful run must still find the event it ended at, with the same hash:
        # otherwise the newest events were removed or re-chained since.
        previous = (
            VerifyRun.objects.using(database).filter(ok=True, last_id__isnull=False).order_by("-id").first()
        )
        if problem is None and previous is not None:
            still = (
                AuditEvent.objects.using(database)
                .filter(id=previous.last_id)
                .values_list("hash", flat=True)
                .first()
            )
            if still != previous.last_hash:
                broken_id = previous.last_id
                problem = (
                    f"event {previous.last_id}, verified by run {previous.pk} at "
                    f"{previous.finished_at:%Y-%m-%d %H:%M:%S}, is missing or changed: expected "
                    f"{previous.last_hash}, stored {still or 'nothing'}"
                )
        if not no_save:
            with transaction.atomic(using=database):
                save_verify_run(
                    result, started_at=started_at, problem=problem, broken_id=broken_id, using=database
                )
        elapsed = time.monotonic() - clock
        if problem:
            self.stderr.write(f"audit chain BROKEN after {result.checked} good events: {problem}")
            raise SystemExit(1)
        self.stdout.write(
            f"audit chain OK: {result.checked} events verified up to event {result.last_id or 0} "
            f"(head {result.last_hash[:16]}…) in {elapsed:.1f}s"
        )
