"""Database triggers that make the audit tables append-only (PostgreSQL and SQLite).

Installed by migration 0002; `install()`/`uninstall()` are also used by the `flush` command
override (audit/management/commands/flush.py) so that the test runner can empty a *test* database.
See docs/audit.md, "Append-only".
"""

TABLES = ("audit_auditevent", "audit_verifyrun")

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit history is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""


def _pg_install(table):
    return [
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()",
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()",
    ]


def _sqlite_install(table):
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'audit history is append-only: UPDATE on {table} refused'); END",
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'audit history is append-only: DELETE on {table} refused'); END",
    ]


def install_sql(vendor):
    if vendor == "postgresql":
        return [_PG_FUNCTION] + [s for t in TABLES for s in _pg_install(t)]
    if vendor == "sqlite":
        return [s for t in TABLES for s in _sqlite_install(t)]
    raise NotImplementedError(f"no append-only triggers for {vendor}")


def uninstall_sql(vendor):
    if vendor == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {t}_{n} ON {t}" for t in TABLES for n in ("append_only", "no_truncate")
        ]
    if vendor == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {t}_{n}" for t in TABLES for n in ("no_update", "no_delete")]
    raise NotImplementedError(f"no append-only triggers for {vendor}")


def install(connection):
    with connection.cursor() as cursor:
        for statement in install_sql(connection.vendor):
            cursor.execute(statement)


def uninstall(connection):
    with connection.cursor() as cursor:
        for statement in uninstall_sql(connection.vendor):
            cursor.execute(statement)


def installed(connection) -> bool:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'audit_auditevent'::regclass "
                "AND tgname IN ('audit_auditevent_append_only', 'audit_auditevent_no_truncate') "
                "AND tgenabled <> 'D'"
            )
        else:
            cursor.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                "AND name IN ('audit_auditevent_no_update', 'audit_auditevent_no_delete')"
            )
        return cursor.fetchone()[0] == 2
