"""manage.py import_hosts FILE [--format csv|ini|yaml] [--credential NAME] [--as USER] [--update] [--dry-run]

All or nothing: any invalid row → nothing is written and every error is listed with its line.
"""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from hosts import importers
from hosts.services import import_hosts


class Command(BaseCommand):
    help = "Import hypervisors from a CSV file or an Ansible inventory (INI or YAML); all or nothing."

    def add_arguments(self, parser):
        parser.add_argument("file", help="the file to import ('-' reads standard input)")
        parser.add_argument(
            "--format",
            choices=[*importers.FORMATS, "auto"],
            default="auto",
            help="file format (default: from the file name / content)",
        )
        parser.add_argument("--credential", help="credential name for rows that do not name one")
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USER",
            help="act (and be audited) as this user, who needs the operate permission",
        )
        parser.add_argument("--update", action="store_true", help="update hosts that already exist")
        parser.add_argument("--dry-run", action="store_true", help="validate only; write nothing")

    def handle(self, *args, file, format, credential, as_user, update, dry_run, **options):
        text, filename = self._read(file)
        user = None
        if as_user:
            user = get_user_model().objects.filter(username=as_user).first()
            if user is None:
                raise CommandError(f"no user named {as_user!r}")
        try:
            fmt, rows = importers.load(text, format, filename)
        except importers.ParseError as exc:
            raise CommandError(f"{file}: {exc}") from None
        try:
            report = import_hosts(
                rows, user, credential, update_existing=update, source=filename or fmt, dry_run=dry_run
            )
        except PermissionDenied as exc:
            raise CommandError(f"{as_user}: {exc}") from None
        if report.errors:
            for error in report.errors:
                self.stderr.write(f"{file}: {error}")
            raise CommandError(f"nothing imported: {len(report.errors)} error(s) in {file}")
        verb = "would be" if dry_run else "were"
        self.stdout.write(
            f"{len(rows)} host(s) read from {file} ({fmt}): {len(report.created)} {verb} created, "
            f"{len(report.updated)} {verb} updated, {len(report.unchanged)} unchanged."
        )

    def _read(self, file: str) -> tuple[str, str]:
        """The file's text exactly as the upload page sees it: bytes decoded, line ends untouched
        (universal newlines would turn a bare CR inside a field into an extra host)."""
        if file == "-":
            import sys

            data, filename = sys.stdin.buffer.read(), ""
        else:
            path = Path(file)
            if not path.is_file():
                raise CommandError(f"{file}: no such file")
            data, filename = path.read_bytes(), path.name
        try:
            return data.decode("utf-8-sig"), filename
        except UnicodeDecodeError:
            raise CommandError(f"{file}: not UTF-8 text") from None
