"""Recording audit events. Every part of the console records through `record()`.

The chain lock: appending reads the last event and writes the next one, so two writers must never
do that at the same time (they would both link to the same predecessor and fork the chain).
PostgreSQL: `pg_advisory_xact_lock(CHAIN_LOCK)` taken inside the caller's transaction, released at
its commit or rollback. SQLite: every transaction is BEGIN IMMEDIATE (console/settings.py), which
already holds the database's single write lock for the whole transaction. The unique constraints on
`prev_hash` and `hash` turn any remaining fork into an error instead of a silent branch.
"""

import ipaddress
import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, router, transaction
from django.dispatch import Signal
from django.utils import timezone

from console.middleware import client_ip as request_client_ip
from console.middleware import current_client_ip, current_request_id

from . import witness
from .chain import GENESIS, compute_hash
from .models import AuditEvent

# Sent inside the recording transaction with `events` (the AuditEvents just appended, in chain order)
# by record() and record_many(), whether the rows were saved one by one or in bulk: listeners
# (notifications) must not depend on post_save, which a bulk insert never sends.
events_recorded = Signal()

SECRET_KEYS = {"private_key", "password", "secret", "token", "private_key_encrypted", "passphrase"}
REDACTED = "[redacted]"
# An arbitrary constant (ASCII "AUDITCHN"): the advisory lock that serialises chain appends.
CHAIN_LOCK = 0x4155444954434E48 & 0x7FFFFFFFFFFFFFFF


def redact(data):
    """Drop secret values anywhere in a structure (keys named like secrets)."""
    if isinstance(data, dict):
        return {k: (REDACTED if str(k).lower() in SECRET_KEYS else redact(v)) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact(v) for v in data]
    return data


def _strip_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    return value


def normalise_data(data) -> dict:
    """Redacted, JSON-native (dates, decimals, UUIDs become strings) and storable in jsonb."""
    native = json.loads(json.dumps(redact(data or {}), cls=DjangoJSONEncoder))
    if not isinstance(native, dict):
        native = {"value": native}
    return _strip_nul(native)


def _normalise_ip(value) -> str:
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(str(value).strip()))[:45]
    except ValueError:
        return ""


def lock_chain(using="default"):
    """Serialise appends (call inside a transaction). A no-op on SQLite: BEGIN IMMEDIATE did it."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])


def chain_tail(using="default"):
    """(id, hash) of the last event, or (0, GENESIS). Call with the chain lock held."""
    last = AuditEvent.objects.using(using).order_by("-id").values_list("id", "hash").first()
    return last if last else (0, GENESIS)


def _snapshot(action, *, actor, actor_name, obj, host, change, data, request):
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if request is not None:
        ip = request_client_ip(request)
        request_id = getattr(request, "request_id", "") or current_request_id.get() or ""
    else:
        ip = current_client_ip.get()
        request_id = current_request_id.get() or ""
    return {
        "actor_id": actor.pk if actor is not None else None,
        "actor_name": (actor_name or (actor.get_username() if actor is not None else "system"))[:150],
        "action": action[:100],
        "object_type": obj._meta.label_lower if obj is not None else "",
        "object_id": str(obj.pk)[:64] if obj is not None else "",
        "object_repr": _strip_nul(str(obj))[:300] if obj is not None else "",
        "host_id": host.pk if host is not None else None,
        "host_name": host.name[:63] if host is not None else "",
        "change_id": change.pk if change is not None else None,
        "data": normalise_data(data),
        "client_ip": _normalise_ip(ip),
        "request_id": str(request_id)[:64],
    }


def _append(fields_list, using):
    """Append events (dicts from _snapshot) to the chain; the caller holds the chain lock."""
    last_id, last_hash = chain_tail(using)
    events = []
    for fields in fields_list:
        row = dict(
            fields, id=last_id + 1, created_at=fields.get("created_at") or timezone.now(), prev_hash=last_hash
        )
        row["hash"] = compute_hash(row)
        events.append(AuditEvent(**row))
        last_id, last_hash = row["id"], row["hash"]
    return events


def record(action, *, actor=None, actor_name=None, obj=None, host=None, change=None, data=None, request=None):
    """Record one event inside the caller's transaction (an action rolled back leaves none).

    actor: a User, or None for the system; actor_name overrides the shown name ("worker").
    obj: the model instance acted on; host/change: set for the per-host / per-change timelines.
    data: before/after/details; keys named like secrets are redacted.
    Called outside a transaction, the event gets its own. The chain lock is held until the caller's
    transaction ends, so record late in long transactions (docs/audit.md).
    """
    fields = _snapshot(
        action,
        actor=actor,
        actor_name=actor_name,
        obj=obj,
        host=host,
        change=change,
        data=data,
        request=request,
    )
    using = router.db_for_write(AuditEvent)
    with transaction.atomic(using=using):
        lock_chain(using)
        (event,) = _append([fields], using)
        event.save(using=using)
        witness.witness_after_commit(event.id, event.hash, event.created_at, using)
        events_recorded.send(sender=AuditEvent, events=[event], using=using)
    return event


def record_many(events, *, using=None):
    """Record several events, each given as a dict of record()'s keyword arguments (`action`
    included), in chain order, with one lock and one insert. Inside the caller's transaction."""
    snapshots = [_snapshot(**{"actor": None, "actor_name": None, "obj": None, "host": None, "change": None,
                              "data": None, "request": None, **event}) for event in events]
    if not snapshots:
        return []
    using = using or router.db_for_write(AuditEvent)
    with transaction.atomic(using=using, savepoint=False):
        lock_chain(using)
        created = AuditEvent.objects.using(using).bulk_create(_append(snapshots, using))
        newest = created[-1]
        witness.witness_after_commit(newest.id, newest.hash, newest.created_at, using)
        events_recorded.send(sender=AuditEvent, events=created, using=using)
    return created


def bulk_record(rows, *, using="default", batch_size=2000):
    """Append many events in one transaction (benchmarks, tests, imports).

    rows: dicts with any of actor_name, action, object_type, object_id, object_repr, host_id,
    host_name, change_id, data, client_ip, request_id, created_at.
    """
    defaults = {
        "actor_id": None,
        "actor_name": "system",
        "object_type": "",
        "object_id": "",
        "object_repr": "",
        "host_id": None,
        "host_name": "",
        "change_id": None,
        "data": {},
        "client_ip": "",
        "request_id": "",
    }
    with transaction.atomic(using=using):
        lock_chain(using)
        batch, newest = [], None
        for row in rows:
            fields = dict(defaults, **row)
            fields["data"] = normalise_data(fields["data"])
            batch.append(fields)
            if len(batch) >= batch_size:
                newest = AuditEvent.objects.using(using).bulk_create(_append(batch, using))[-1]
                batch = []
        if batch:
            newest = AuditEvent.objects.using(using).bulk_create(_append(batch, using))[-1]
        if newest is not None:  # the newest pins the whole batch
            witness.witness_after_commit(newest.id, newest.hash, newest.created_at, using)


def iter_chain_rows(*, after_id=0, chunk_size=5000, using="default"):
    """All events after `after_id` in chain order, as dicts, read in keyset chunks (bounded memory)."""
    from .chain import HASHED_FIELDS

    while True:
        chunk = list(
            AuditEvent.objects.using(using)
            .filter(id__gt=after_id)
            .order_by("id")
            .values(*HASHED_FIELDS, "hash")[:chunk_size]
        )
        if not chunk:
            return
        yield from chunk
        after_id = chunk[-1]["id"]


def verify_chain(*, chunk_size=5000, using="default"):
    """Walk the whole chain from the first event. Returns a chain.ChainResult."""
    from .chain import walk

    return walk(iter_chain_rows(chunk_size=chunk_size, using=using))


def save_verify_run(result, *, started_at, problem=None, broken_id=None, using="default"):
    """Record a verify run; `problem`/`broken_id` override the walk's verdict (anchor check)."""
    from .models import VerifyRun

    if result.broken and problem is None:
        problem, broken_id = result.broken.describe(), result.broken.id
    return VerifyRun.objects.using(using).create(
        started_at=started_at,
        finished_at=timezone.now(),
        checked=result.checked,
        last_id=result.last_id,
        last_hash=result.last_hash if result.last_id else "",
        ok=problem is None,
        broken_id=broken_id,
        message=problem or f"{result.checked} events verified",
    )


TAIL_CHECK = 100


def chain_state(using="default"):
    """What the audit page shows, cheaply (two queries whatever the size of the history):
    the latest verify_audit run, and a fresh check of the newest TAIL_CHECK links."""
    from .chain import GENESIS, HASHED_FIELDS, walk
    from .models import VerifyRun

    last_run = VerifyRun.objects.using(using).order_by("-id").first()
    rows = list(
        AuditEvent.objects.using(using).order_by("-id").values(*HASHED_FIELDS, "hash")[: TAIL_CHECK + 1]
    )
    rows.reverse()
    if rows and rows[0]["id"] == 1:
        tail = walk(rows)
    elif rows:
        anchor = rows.pop(0)
        tail = walk(rows, prev_id=anchor["id"], prev_hash=anchor["hash"])
    else:
        tail = walk([], prev_hash=GENESIS)
    newest = rows[-1]["id"] if rows else 0
    return {
        "last_run": last_run,
        "tail": tail,
        "newest_id": newest,
        "unverified": (newest - (last_run.last_id or 0)) if last_run and last_run.ok else None,
    }


def timeline(*, host=None, change=None, limit=50):
    """The newest `limit` events of one host or one change, for templates/audit/_timeline.html
    (one indexed query; pass `more_url` = audit list filtered by ?host=<id> or ?change=<id>)."""
    queryset = AuditEvent.objects.only(
        "id", "created_at", "actor_name", "action", "object_repr", "host_id", "change_id"
    ).order_by("-id")
    if host is not None:
        queryset = queryset.filter(host_id=host.pk)
    if change is not None:
        queryset = queryset.filter(change_id=change.pk)
    return list(queryset[:limit])
