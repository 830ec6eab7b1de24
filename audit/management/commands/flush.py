"""`flush`, which refuses to erase audit history except in a test database.

Django's flush empties every table (TRUNCATE on PostgreSQL, DELETE FROM on SQLite); the audit
triggers refuse that, which is the point. The test runner (pytest-django's transactional_db)
flushes its *test* database after each test, so for a database whose name marks it as a test
database this command lifts the audit triggers inside the flush's own transaction and puts them back
before it commits: the triggers are never absent for any other session. Outside a test database,
`--erase-audit-history` is required, and it is itself a table-owner operation (ALTER/DROP TRIGGER).
The witness file of the erased history goes with it (audit/witness.py).
"""

from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections, transaction
from django.db.backends.base.creation import TEST_DATABASE_PREFIX

from audit import guard, witness


def is_test_database(connection) -> bool:
    settings_dict = connection.settings_dict
    name = str(settings_dict.get("NAME") or "")
    test_name = str((settings_dict.get("TEST") or {}).get("NAME") or "")
    return name.startswith(TEST_DATABASE_PREFIX) or (bool(test_name) and name == test_name)


class Command(FlushCommand):
    help = (
        FlushCommand.help + " Audit history is only erased in a test database or with --erase-audit-history."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--erase-audit-history",
            action="store_true",
            help="Also erase the append-only audit history (outside a test database).",
        )

    def handle(self, **options):
        connection = connections[options["database"]]
        if not (is_test_database(connection) or options["erase_audit_history"]):
            return super().handle(**options)
        with transaction.atomic(using=connection.alias):
            guard.uninstall(connection)
            super().handle(**options)
            guard.install(connection)
        # The history was erased on purpose: its witness would report every event as deleted.
        witness.erase(connection.alias)
