"""Witnesses of the chain's head outside the database (docs/audit.md, "Witnesses").

The hash chain finds an edit anywhere *before* a hash somebody still trusts; it cannot find a
rewrite of the newest events, or their removal, when the one rewriting owns the database. So after
every commit that appended events, the newest (id, hash) of that commit is written where the
database owner cannot reach:

* an append-only file (AUDIT_WITNESS_FILE; by default one per database under var/audit-witness/),
  one JSON line per commit, appended with O_APPEND so several processes share it;
* optionally syslog to a remote collector (AUDIT_WITNESS_SYSLOG = udp://host:514, tcp://host:514
  or a socket path such as /dev/log), the same line.

Each line is a signed checkpoint: an HMAC-SHA256 over (id, hash, created_at) with the first key of
AUDIT_WITNESS_KEYS, kept outside the database like the credential keys (environment; generated once
into var/ for the demo). Without the key nobody can write a line that verifies.

A witnessed (id, hash) pins every event before it too (each hash covers its predecessor's), so
`manage.py verify_audit` compares the database with every line it can read and names each event
that is missing or rewritten, and the events newer than the last witness. Writing a witness never
fails the action: the event is committed already; a failure is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import logging.handlers
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connections, transaction

from .chain import format_time

logger = logging.getLogger("audit.witness")
MARKER = "sriov-audit-witness"  # in front of the JSON on syslog, so a collector's file can be grepped

_lock = threading.Lock()
_fds: dict[tuple[int, str], int] = {}
_syslog: dict[str, logging.Logger] = {}


# ---------------------------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------------------------


def _keys() -> list[bytes]:
    return [k.encode() for k in settings.AUDIT_WITNESS_KEYS]


def _message(event_id: int, event_hash: str, created_at: str) -> bytes:
    return f"{event_id}|{event_hash}|{created_at}".encode()


def sign(event_id: int, event_hash: str, created_at: str) -> str:
    return hmac.new(_keys()[0], _message(event_id, event_hash, created_at), hashlib.sha256).hexdigest()


def signature_ok(record: dict) -> bool:
    try:
        message = _message(int(record["id"]), str(record["hash"]), str(record["created_at"]))
        mac = str(record["mac"])
    except (KeyError, TypeError, ValueError):
        return False
    return any(hmac.compare_digest(hmac.new(k, message, hashlib.sha256).hexdigest(), mac) for k in _keys())


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def default_path(using: str = "default") -> Path:
    """One witness file per database, so a test database or a second install never mixes in."""
    if settings.AUDIT_WITNESS_FILE:
        return Path(settings.AUDIT_WITNESS_FILE)
    name = str(connections[using].settings_dict.get("NAME") or using)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[-100:]
    folder = Path(settings.VAR_DIR) / "audit-witness"
    if settings.TEST_RUN_ID:
        folder = folder / settings.TEST_RUN_ID
    return folder / f"{slug}.jsonl"


def line_for(event_id: int, event_hash: str, created_at) -> str:
    stamp = created_at if isinstance(created_at, str) else format_time(created_at)
    record = {"id": event_id, "hash": event_hash, "created_at": stamp, "mac": sign(event_id, event_hash, stamp)}
    return json.dumps(record, separators=(",", ":"))


def _append_to_file(path: Path, line: str) -> None:
    key = (os.getpid(), str(path))  # a forked worker opens its own descriptor
    with _lock:
        fd = _fds.get(key)
        if fd is not None and os.fstat(fd).st_nlink == 0:  # the file was removed (erased): start anew
            os.close(_fds.pop(key))
            fd = None
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            _fds[key] = fd
    # One write() of one short line with O_APPEND: lines of concurrent processes never interleave.
    os.write(fd, (line + "\n").encode())
    if settings.AUDIT_WITNESS_FSYNC:
        os.fsync(fd)


def _syslog_logger(target: str) -> logging.Logger:
    with _lock:
        found = _syslog.get(target)
        if found is not None:
            return found
        if target.startswith(("udp://", "tcp://")):
            host, _, port = target[6:].rpartition(":")
            kind = socket.SOCK_DGRAM if target.startswith("udp://") else socket.SOCK_STREAM
            handler = logging.handlers.SysLogHandler(address=(host, int(port or 514)), socktype=kind)
        else:
            handler = logging.handlers.SysLogHandler(address=target)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.append_nul = False
        found = logging.getLogger(f"audit.witness.syslog.{len(_syslog)}")
        found.propagate = False
        found.setLevel(logging.INFO)
        found.addHandler(handler)
        _syslog[target] = found
        return found


def note(event_id: int, event_hash: str, created_at, using: str = "default") -> None:
    """Write the witness of a committed head. Never raises: the events are committed already."""
    try:
        line = line_for(event_id, event_hash, created_at)
    except Exception:  # noqa: BLE001 - e.g. no key configured: logged, the action stands
        logger.exception("audit witness: cannot sign event %s", event_id)
        return
    if settings.AUDIT_WITNESS_FILE_ENABLED:
        try:
            _append_to_file(default_path(using), line)
        except OSError:
            logger.exception("audit witness: cannot append event %s to the witness file", event_id)
    if settings.AUDIT_WITNESS_SYSLOG:
        try:
            _syslog_logger(settings.AUDIT_WITNESS_SYSLOG).info("%s %s", MARKER, line)
        except (OSError, ValueError):
            logger.exception("audit witness: cannot send event %s to syslog", event_id)


class WitnessNote:
    """The on-commit callback that writes one witness line (a class, so tests that count the
    callbacks a service registers can tell these apart: `is_witness_callback`)."""

    def __init__(self, event_id: int, event_hash: str, created_at, using: str):
        self.args = (event_id, event_hash, created_at, using)

    def __call__(self):
        note(*self.args)


def is_witness_callback(callback) -> bool:
    return isinstance(callback, WitnessNote)


def witness_after_commit(event_id: int, event_hash: str, created_at, using: str = "default") -> None:
    """Called by record()/bulk_record() inside the appending transaction: the line is written when
    (and only if) it commits. A savepoint that rolls back drops its callbacks with it, so a line is
    never written for an event that does not exist."""
    transaction.on_commit(WitnessNote(event_id, event_hash, created_at, using), using=using)


# ---------------------------------------------------------------------------------------------
# Reading and checking (manage.py verify_audit)
# ---------------------------------------------------------------------------------------------


@dataclass
class WitnessReport:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    newest_id: int = 0
    newest_at: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_lines(path: Path):
    """(line number, record dict or None) for each witness line; syslog prefixes are skipped."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if not text:
                continue
            if MARKER in text:
                text = text.split(MARKER, 1)[1].strip()
            elif not text.startswith("{"):
                continue  # another program's syslog line in a collector's file
            try:
                record = json.loads(text)
            except ValueError:
                yield number, None
                continue
            yield number, record if isinstance(record, dict) else None


MAX_LISTED = 20


def check(paths, *, using="default", batch=5000) -> WitnessReport:
    """Compare the database with every witness line of `paths`; name what is missing or rewritten."""
    from .models import AuditEvent

    report = WitnessReport(files=[str(p) for p in paths])
    missing, rewritten, forged = [], [], []

    def compare(chunk):
        stored = dict(
            AuditEvent.objects.using(using).filter(id__in=[r["id"] for r in chunk]).values_list("id", "hash")
        )
        for record in chunk:
            have = stored.get(record["id"])
            if have is None:
                missing.append(record)
            elif have != record["hash"]:
                rewritten.append((record, have))

    for path in paths:
        chunk = []
        for number, record in read_lines(path):
            report.lines += 1
            if record is None or not signature_ok(record):
                forged.append(f"{path}:{number}")
                continue
            if record["id"] > report.newest_id:
                report.newest_id, report.newest_at = record["id"], record["created_at"]
            chunk.append(record)
            if len(chunk) >= batch:
                compare(chunk)
                chunk = []
        if chunk:
            compare(chunk)
    _describe(report, missing, rewritten, forged)
    return report


def _ids(records) -> str:
    ids = sorted({r["id"] for r in records})
    shown = ", ".join(str(i) for i in ids[:MAX_LISTED])
    return shown + (f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else "")


def _describe(report, missing, rewritten, forged) -> None:
    if missing:
        report.problems.append(
            f"{len({r['id'] for r in missing})} witnessed event(s) are missing from the database "
            f"(deleted): {_ids(missing)}; the newest witnessed is event {max(r['id'] for r in missing)}"
        )
    for record, have in sorted(rewritten, key=lambda pair: pair[0]["id"])[:MAX_LISTED]:
        report.problems.append(
            f"event {record['id']} was rewritten: witnessed hash {record['hash']} at {record['created_at']}, "
            f"stored {have}"
        )
    if len(rewritten) > MAX_LISTED:
        report.problems.append(f"… and {len(rewritten) - MAX_LISTED} more rewritten witnessed events")
    if forged:
        report.problems.append(
            f"{len(forged)} witness line(s) do not carry a valid signature (forged, corrupted, or signed "
            f"with a key no longer in AUDIT_WITNESS_KEYS): {', '.join(forged[:MAX_LISTED])}"
        )


def unwitnessed_tail(report: WitnessReport, *, using="default", grace_seconds: float) -> str | None:
    """Events newer than the newest witness and older than the grace period: never witnessed,
    so either recorded while the witness was unavailable or put into the database by hand."""
    from datetime import timedelta

    from django.utils import timezone

    from .models import AuditEvent

    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    newer = AuditEvent.objects.using(using).filter(id__gt=report.newest_id)
    old = newer.filter(created_at__lt=cutoff).order_by("id").values_list("id", flat=True)
    first = old.first()
    if first is None:
        return None
    last = newer.order_by("-id").values_list("id", flat=True).first()
    return (
        f"events {first}..{last} are in the database but no witness line covers them (newest witnessed: "
        f"{report.newest_id or 'none'}): inserted directly into the database, or recorded while the "
        f"witness could not be written (see the console's log)"
    )


def erase(using: str = "default") -> None:
    """Forget the witness of a database whose audit history was erased on purpose (flush)."""
    path = default_path(using)
    with _lock:
        for key in [k for k in _fds if k[1] == str(path)]:
            os.close(_fds.pop(key))
    if path.exists():
        path.unlink()
