import io

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from audit import guard
from audit.models import AppendOnlyError, AuditEvent, VerifyRun
from audit.services import bulk_record, record
from tests.audit.helpers import assert_chain_ok


def _ten_events():
    bulk_record({"action": "host.discovered", "host_id": 1, "data": {"n": i}} for i in range(1, 11))


def _verify():
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()


@pytest.mark.django_db
def test_model_and_queryset_refuse_update_and_delete():
    event = record("auth.login")
    event.action = "auth.logout"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update([event], ["action"])
    assert AuditEvent.objects.get().action == "auth.login"


@pytest.mark.django_db
@pytest.mark.parametrize("table", ["audit_auditevent", "audit_verifyrun"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET {column} = {column}",
        "DELETE FROM {table}",
    ],
)
def test_database_refuses_update_and_delete_by_raw_sql(table, statement):
    record("auth.login")
    call_command("verify_audit", stdout=io.StringIO())
    column = "action" if table == "audit_auditevent" else "message"
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement.format(table=table, column=column))
    assert AuditEvent.objects.count() == 1 and VerifyRun.objects.count() == 1


@pytest.mark.django_db
def test_postgresql_refuses_truncate(vendor):
    if vendor != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's")
    record("auth.login")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 1


def _as_superuser_session(sql, params=()):
    """What someone with the table owner's (or a superuser's) rights can do: lift the trigger, write."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
            cursor.execute(sql, params)
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
        else:
            guard.uninstall(connection)
            cursor.execute(sql, params)
            guard.install(connection)
    assert guard.installed(connection)


@pytest.mark.django_db
def test_verify_audit_passes_an_intact_chain_and_records_the_run():
    _ten_events()
    code, output = _verify()
    assert code == 0, output
    assert "10 events verified up to event 10" in output
    run = VerifyRun.objects.get()
    assert (run.ok, run.checked, run.last_id) == (True, 10, 10)


@pytest.mark.django_db
def test_tampering_with_one_row_is_found_at_that_row():
    _ten_events()
    data_sql = "'{\"n\": 999}'" if connection.vendor == "sqlite" else "'{\"n\": 999}'::jsonb"
    _as_superuser_session(f"UPDATE audit_auditevent SET data = {data_sql} WHERE id = 6")
    code, output = _verify()
    assert code == 1
    assert "first broken link at event 6 (host.discovered" in output
    assert "altered" in output
    run = VerifyRun.objects.get()
    assert (run.ok, run.broken_id, run.checked) == (False, 6, 5)


@pytest.mark.django_db
def test_rehashing_a_tampered_row_breaks_the_next_link():
    _ten_events()
    row = AuditEvent.objects.get(pk=4).chain_row()
    row["actor_name"] = "mallory"
    from audit.chain import compute_hash

    _as_superuser_session(
        "UPDATE audit_auditevent SET actor_name = 'mallory', hash = %s WHERE id = 4", [compute_hash(row)]
    )
    code, output = _verify()
    assert code == 1 and "first broken link at event 5" in output and "prev_hash" in output


@pytest.mark.django_db
def test_deleting_a_row_is_found_as_a_gap():
    _ten_events()
    _as_superuser_session("DELETE FROM audit_auditevent WHERE id = 3")
    code, output = _verify()
    assert code == 1 and "first broken link at event 4" in output and "missing" in output


@pytest.mark.django_db
def test_removing_the_newest_events_is_found_against_the_last_verify_run():
    _ten_events()
    assert _verify()[0] == 0
    _as_superuser_session("DELETE FROM audit_auditevent WHERE id >= 9")
    code, output = _verify()
    assert code == 1 and "event 10" in output and "missing or changed" in output


def test_flush_override_recognises_only_test_databases():
    from audit.management.commands.flush import is_test_database

    class Conn:
        def __init__(self, name, test_name=None):
            self.settings_dict = {"NAME": name, "TEST": {"NAME": test_name}}

    assert is_test_database(Conn("test_console"))
    assert is_test_database(Conn("/var/x/test_db.sqlite3", "/var/x/test_db.sqlite3"))
    assert not is_test_database(Conn("console"))
    assert not is_test_database(Conn("/var/x/db.sqlite3", "/var/x/test_db.sqlite3"))


# The two tests below run in order: the first commits events (transactional_db), after which the
# test runner flushes the database through the audit-aware `flush`; the second finds it empty with
# the triggers back in place.
@pytest.mark.django_db(transaction=True)
def test_transactional_test_commits_events():
    record("auth.login")
    _ten_events()
    assert AuditEvent.objects.count() == 11
    assert_chain_ok()


@pytest.mark.django_db(transaction=True)
def test_flush_between_tests_emptied_history_and_kept_the_triggers():
    assert AuditEvent.objects.count() == 0
    assert guard.installed(connection)
    record("auth.login")
    with pytest.raises(DatabaseError, match="append-only"), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent")
    assert AuditEvent.objects.count() == 1
