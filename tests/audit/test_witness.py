"""The audit tail cannot be rewritten or cut unseen: each tamper case of a database owner (raw SQL
with the append-only triggers lifted, the hash chain recomputed where that hides the edit, the
saved verification runs deleted where that hides it) is named by `manage.py verify_audit`,
through the hash chain or through the witnesses kept outside the database.

Each case starts from 15 committed events: 12 verified by a saved run, 3 newer not yet verified.
"""

import io
import json
import socket
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from audit import guard, witness
from audit.chain import GENESIS, HASHED_FIELDS, compute_hash
from audit.models import AuditEvent, VerifyRun
from audit.services import record, record_many

pytestmark = pytest.mark.django_db(transaction=True)

COLUMNS = (*HASHED_FIELDS, "hash")


def verify(*args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()


def as_owner(*statements):
    """What the table owner or a superuser can do: lift the append-only triggers, write, put them back."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
            cursor.execute("ALTER TABLE audit_verifyrun DISABLE TRIGGER USER")
        else:
            guard.uninstall(connection)
        for sql, params in statements:
            cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
            cursor.execute("ALTER TABLE audit_verifyrun ENABLE TRIGGER USER")
        else:
            guard.install(connection)
    assert guard.installed(connection)


def chain_rows():
    return list(AuditEvent.objects.order_by("id").values(*COLUMNS))


def rechain(rows, start=0):
    for index in range(start, len(rows)):
        rows[index]["prev_hash"] = rows[index - 1]["hash"] if index else GENESIS
        rows[index]["hash"] = compute_hash(rows[index])
    return rows


def insert_sql(row):
    placeholders = ", ".join("%s::jsonb" if c == "data" and connection.vendor == "postgresql" else "%s"
                             for c in COLUMNS)
    values = [json.dumps(row[c]) if c == "data" else row[c] for c in COLUMNS]
    return f"INSERT INTO audit_auditevent ({', '.join(COLUMNS)}) VALUES ({placeholders})", values


def replace_from(first_id, rows, *, drop_runs=False):
    """Delete the events from `first_id` on and write `rows` (already re-chained) in their place."""
    statements = [("DELETE FROM audit_auditevent WHERE id >= %s", [first_id])]
    statements += [insert_sql(r) for r in rows if r["id"] >= first_id]
    if drop_runs:
        statements.append(("DELETE FROM audit_verifyrun", []))
    as_owner(*statements)


@pytest.fixture
def history():
    for n in range(12):
        record("host.discovered", actor_name="worker", data={"n": n})
    code, output = verify()
    assert code == 0 and "witness OK" in output, output
    for n in range(12, 15):
        record("change.approved", actor_name="anna", data={"n": n})
    code, output = verify("--no-save")
    assert code == 0, output
    return chain_rows()


# --- the tamper cases --------------------------------------------------------------------------


def edit_middle_content(rows):
    as_owner(("UPDATE audit_auditevent SET actor_name = 'mallory' WHERE id = 6", []))


def edit_middle_and_rehash_it(rows):
    rows[3]["actor_name"] = "mallory"
    as_owner(("UPDATE audit_auditevent SET actor_name = 'mallory', hash = %s WHERE id = 4",
              [compute_hash(rows[3])]))


def edit_newest_and_rehash_it(rows):
    rows[-1]["data"] = {"n": 14, "approved": "by nobody"}
    replace_from(15, rechain(rows, 14))


def edit_middle_and_rechain_the_rest_dropping_runs(rows):
    rows[6]["actor_name"] = "mallory"
    replace_from(7, rechain(rows, 6), drop_runs=True)


def delete_middle(rows):
    as_owner(("DELETE FROM audit_auditevent WHERE id = 3", []))


def delete_middle_renumber_and_rechain_dropping_runs(rows):
    del rows[4]
    for index in range(4, len(rows)):
        rows[index]["id"] = index + 1
    replace_from(5, rechain(rows, 4), drop_runs=True)


def delete_the_unverified_newest(rows):
    as_owner(("DELETE FROM audit_auditevent WHERE id >= 14", []))


def delete_the_newest_with_the_verify_runs(rows):
    as_owner(("DELETE FROM audit_auditevent WHERE id >= 10", []), ("DELETE FROM audit_verifyrun", []))


def append_a_backdated_forged_event(rows):
    forged = dict(rows[-1], id=16, action="change.approved", actor_name="anna", data={"n": 15},
                  created_at=timezone.now() - timedelta(hours=1), prev_hash=rows[-1]["hash"])
    forged["hash"] = compute_hash(forged)
    as_owner(insert_sql(forged))


CASES = [
    # (tampering, what verify_audit must say)
    (edit_middle_content, ["first broken link at event 6", "altered"]),
    (edit_middle_and_rehash_it, ["first broken link at event 5", "event 4 was rewritten"]),
    (edit_newest_and_rehash_it, ["event 15 was rewritten"]),
    (edit_middle_and_rechain_the_rest_dropping_runs, ["event 7 was rewritten", "event 15 was rewritten"]),
    (delete_middle, ["first broken link at event 4", "missing", "missing from the database (deleted): 3"]),
    (delete_middle_renumber_and_rechain_dropping_runs,
     ["event 5 was rewritten", "missing from the database (deleted): 15"]),
    (delete_the_unverified_newest, ["missing from the database (deleted): 14, 15"]),
    (delete_the_newest_with_the_verify_runs, ["missing from the database (deleted): 10, 11, 12, 13, 14, 15"]),
    (append_a_backdated_forged_event, ["events 16..16 are in the database but no witness line covers them"]),
]


@pytest.mark.parametrize(("tamper", "says"), CASES, ids=[c[0].__name__ for c in CASES])
def test_each_tamper_case_is_named_by_verify_audit(history, tamper, says):
    tamper(history)
    code, output = verify()
    assert code == 1, output
    for words in says:
        assert words in output, output
    run = VerifyRun.objects.order_by("-id").first()
    assert run is not None and not run.ok


def test_the_intact_history_verifies_with_its_witness(history):
    code, output = verify()
    assert code == 0, output
    assert "audit chain OK: 15 events verified" in output
    assert "newest witnessed event 15" in output


def test_a_forged_witness_line_is_named(history):
    """Someone who can write the witness file but has not the key cannot vouch for a rewrite."""
    path = witness.default_path()
    with open(path, "a") as handle:
        handle.write(json.dumps({"id": 16, "hash": "f" * 64, "created_at": "2026-01-01T00:00:00.000000Z",
                                 "mac": "0" * 64}) + "\n")
    code, output = verify()
    assert code == 1 and "do not carry a valid signature" in output, output


def test_events_recorded_in_a_rolled_back_savepoint_leave_no_witness(history):
    with transaction.atomic():
        record("host.updated")
        try:
            with transaction.atomic():
                record("host.deleted")
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
    code, output = verify()
    assert code == 0, output
    assert "newest witnessed event 16" in output


def test_events_recorded_in_bulk_are_witnessed(history):
    """Discovery appends its events with record_many(); the witness must follow that tail too, or
    a cut of a discovery's events would go unseen."""
    record_many([{"action": "host.state_changed", "data": {"n": n}} for n in range(3)])
    code, output = verify()
    assert code == 0, output
    assert "newest witnessed event 18" in output


class Collector:
    """A syslog collector on a loopback UDP port (the remote collector's stand-in)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.lines, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"udp://127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self):
        while not self.stop.is_set():
            try:
                self.lines.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_a_remote_syslog_witness_catches_a_cut_even_when_the_local_witness_is_gone(tmp_path):
    collector = Collector()
    try:
        with override_settings(AUDIT_WITNESS_SYSLOG=collector.url):
            for n in range(6):
                record("host.discovered", data={"n": n})
        deadline = timezone.now() + timedelta(seconds=10)
        while len(collector.lines) < 6 and timezone.now() < deadline:
            threading.Event().wait(0.05)
    finally:
        collector.close()
    assert len(collector.lines) == 6 and all(witness.MARKER in line for line in collector.lines)
    collected = tmp_path / "collector.log"
    collected.write_text("".join(f"Dec  2 06:00:00 console {line}\n" for line in collector.lines))
    # The owner cuts the tail and removes the local witness file too.
    as_owner(("DELETE FROM audit_auditevent WHERE id >= 5", []))
    witness.erase()
    code, output = verify("--witness", str(collected))
    assert code == 1 and "missing from the database (deleted): 5, 6" in output, output


def test_history_from_before_the_witness_is_vouched_for_once_with_a_checkpoint():
    from audit.services import bulk_record

    old = timezone.now() - timedelta(days=30)
    with override_settings(AUDIT_WITNESS_FILE_ENABLED=False):  # recorded before witnesses existed
        bulk_record({"action": "host.discovered", "created_at": old, "data": {"n": n}} for n in range(5))
    code, output = verify()
    assert code == 1 and "events 1..5 are in the database but no witness line covers them" in output, output
    code, output = verify("--checkpoint")
    assert code == 0 and "witnessed the head, event 5" in output, output
    record("auth.login")
    code, output = verify()
    assert code == 0 and "newest witnessed event 6" in output, output
