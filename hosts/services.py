"""Inventory services: create, update and import hosts; ask for a discovery.

Signatures (views and commands call these; they check permissions, validate, audit):

    create_host(data, user) -> Hypervisor
    update_host(host, data, user) -> Hypervisor
    import_hosts(rows, user, default_credential=None, *, update_existing=False, source="") -> ImportReport
    request_discovery(host, user) -> Ticket | None   (None: a discovery is already pending)
    request_discovery_many(host_ids, user) -> Ticket | None
    request_fleet_discovery(user) -> Ticket

A host added by a person (create_host, import_hosts with a user) is discovered right after commit.

`data` is a dict with any of: name, address, port, username, credential, labels, description.
  credential: a Credential, its name, its pk, or None.
  labels: an iterable of Label instances or names, or one string separated by ',', ';' or spaces.
  username: defaults to the credential's username, else "root"; port defaults to 22.
Invalid data raises django.core.exceptions.ValidationError with a per-field message dict (ready for
`form.add_error(None, exc)` or `exc.message_dict`); nothing is written then.

`user` is the acting user: it needs the `operate` permission (PermissionDenied otherwise).
`user=None` means the system itself (management commands run by whoever has a shell on the
server); views always pass request.user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import record
from console.dispatch import Ticket
from console.roles import check_permission

from . import dispatch
from .models import Credential, Hypervisor, Label

HOST_FIELDS = ("name", "address", "port", "username", "credential", "labels", "description")
VALIDATED_FIELDS = ("name", "address", "port", "username", "description")
LABEL_SPLIT = re.compile(r"[,;\s]+")


def _check(user) -> None:
    if user is not None:
        check_permission(user, "operate")


def _audit_actor(user) -> dict:
    return {"actor": user} if user is not None else {"actor_name": "system"}


# ---------------------------------------------------------------------------------------------
# Normalising input
# ---------------------------------------------------------------------------------------------


def label_names(value) -> list[str]:
    """Label names from a string ('a;b c,d'), Label instances, or names. Order kept, no duplicates."""
    if value is None:
        return []
    if isinstance(value, str):
        items = LABEL_SPLIT.split(value)
    else:
        items = [item.name if isinstance(item, Label) else str(item) for item in value]
    seen, names = set(), []
    for item in items:
        item = item.strip()
        if item and item not in seen:
            seen.add(item)
            names.append(item)
    return names


def resolve_credential(value, default=None) -> Credential | None:
    """A Credential from an instance, a name or a pk; `default` when value is empty."""
    if value is None or value == "":
        return default
    if isinstance(value, Credential):
        return value
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        found = Credential.objects.filter(pk=int(value)).first()
        if found is not None:
            return found
    found = Credential.objects.filter(name=str(value)).first()
    if found is None:
        raise ValidationError({"credential": f"There is no credential named {value!r}."})
    return found


def _validate_labels(names: list[str]) -> None:
    errors = []
    for name in names:
        try:
            Label(name=name).clean_fields()
        except ValidationError as exc:
            errors.extend(f"{name!r}: {msg}" for msg in exc.message_dict.get("name", []))
    if errors:
        raise ValidationError({"labels": errors})


def _set_labels(host: Hypervisor, names: list[str]) -> None:
    existing = {label.name: label for label in Label.objects.filter(name__in=names)}
    labels = [existing.get(name) or Label.objects.create(name=name) for name in names]
    host.labels.set(labels)


def _prepare(
    host: Hypervisor, data: dict, *, default_credential=None, exclude_unique=False
) -> list[str] | None:
    """Apply `data` to an unsaved/changed instance and validate it; returns label names or None.

    Raises ValidationError (message_dict per field) for anything invalid.
    """
    unknown = set(data) - set(HOST_FIELDS)
    if unknown:
        raise ValidationError({"__all__": f"Unknown fields: {', '.join(sorted(unknown))}."})
    errors: dict[str, list[str]] = {}
    if "credential" in data or (host.pk is None and default_credential is not None):
        try:
            host.credential = resolve_credential(data.get("credential"), default_credential)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    for name in ("name", "address", "description"):
        if name in data:
            setattr(host, name, "" if data[name] is None else str(data[name]).strip())
    if data.get("port") not in (None, ""):
        try:
            host.port = int(data["port"])
        except (TypeError, ValueError):
            errors.setdefault("port", []).append(f"{data['port']!r} is not a port number.")
    if data.get("username") not in (None, ""):
        host.username = str(data["username"]).strip()
    elif host.pk is None and host.credential is not None:
        host.username = host.credential.username
    labels = None
    if "labels" in data:
        labels = label_names(data["labels"])
        try:
            _validate_labels(labels)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    try:
        # Validate only what a registration sets; observed facts belong to discovery.
        exclude = [f.name for f in Hypervisor._meta.get_fields() if f.name not in VALIDATED_FIELDS]
        exclude += list(errors)
        host.full_clean(exclude=exclude, validate_unique=not exclude_unique)
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    return labels


def _snapshot(host: Hypervisor) -> dict:
    return {
        "name": host.name,
        "address": host.address,
        "port": host.port,
        "username": host.username,
        "credential": host.credential.name if host.credential_id else None,
        "labels": sorted(label.name for label in host.labels.all()) if host.pk else [],
        "description": host.description,
    }


# ---------------------------------------------------------------------------------------------
# Create / update
# ---------------------------------------------------------------------------------------------


def create_host(data: dict, user, *, request=None) -> Hypervisor:
    """Register one hypervisor and discover it after commit (status "unknown" until then).
    Audits `host.created`."""
    _check(user)
    host = Hypervisor()
    with transaction.atomic():
        labels = _prepare(host, data)
        host.save()
        if labels:
            _set_labels(host, labels)
        record(
            "host.created",
            obj=host,
            host=host,
            data={"fields": _snapshot(host)},
            request=request,
            **_audit_actor(user),
        )
        if user is not None:
            request_discovery(host, user)
    return host


def update_host(host: Hypervisor, data: dict, user, *, request=None) -> Hypervisor:
    """Change a host's registration. Audits `host.updated` with {field: {"before", "after"}}.

    Changing address or port keeps the pinned host key: if the new endpoint presents another key
    the next discovery reports a mismatch, which is what should happen.
    """
    _check(user)
    with transaction.atomic():
        host = Hypervisor.objects.select_for_update(of=("self",)).select_related("credential").get(pk=host.pk)
        before = _snapshot(host)
        labels = _prepare(host, data)
        host.save()
        if labels is not None:
            _set_labels(host, labels)
        after = _snapshot(host)
        changes = {k: {"before": before[k], "after": after[k]} for k in before if before[k] != after[k]}
        if changes:
            record(
                "host.updated",
                obj=host,
                host=host,
                data={"changes": changes},
                request=request,
                **_audit_actor(user),
            )
    return host


class HostInUse(Exception):
    """The host is part of a change's record and cannot be removed from the inventory (409)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def delete_host(host: Hypervisor, user, *, request=None) -> None:
    """Remove a host from the inventory (its NICs and VFs go with it; its audit history stays).

    Refused while any change names the host: plans and host runs are the record of what was done
    to it, so that record is never cut loose. Audits `host.deleted` with the registration and the
    last observed facts.
    """
    _check(user)
    with transaction.atomic():
        host = Hypervisor.objects.select_for_update(of=("self",)).select_related("credential").get(pk=host.pk)
        changes = sorted(set(host.plan_items.values_list("change_id", flat=True)))
        if changes:
            listed = ", ".join(f"#{pk}" for pk in changes[:10]) + (" …" if len(changes) > 10 else "")
            raise HostInUse(
                f"{host.name} is part of change {listed}; hosts that changes name stay in the inventory "
                "as the record of what was done to them."
            )
        snapshot = _snapshot(host)
        snapshot.update(hostname=host.hostname, kernel=host.kernel, status=host.status,
                        host_key_fingerprint=host.host_key_fingerprint,
                        nics=host.nics.count())
        record("host.deleted", obj=host, host=host, data={"before": snapshot}, request=request, **_audit_actor(user))
        host.delete()


# ---------------------------------------------------------------------------------------------
# Import (all or nothing)
# ---------------------------------------------------------------------------------------------


@dataclass
class RowError:
    line: int | None  # line in the source file (or row number)
    host: str  # the host name of the row, if any
    field: str  # "name", "address", ... or "" for the whole row
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "row"
        who = f" ({self.host})" if self.host else ""
        what = f"{self.field}: " if self.field and self.field != "__all__" else ""
        return f"{where}{who}: {what}{self.message}"


@dataclass
class ImportReport:
    created: list[Hypervisor] = field(default_factory=list)
    updated: list[Hypervisor] = field(default_factory=list)
    unchanged: list[Hypervisor] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.errors:
            return f"Nothing imported: {len(self.errors)} error(s)."
        return f"{len(self.created)} created, {len(self.updated)} updated, {len(self.unchanged)} unchanged."


class _Rollback(Exception):
    pass


def import_hosts(
    rows, user, default_credential=None, *, update_existing=False, source="", request=None, dry_run=False
) -> ImportReport:
    """Create (or with update_existing, update) many hosts; any invalid row → nothing written.

    rows: dicts with the host fields of create_host plus optional "line" (source line for
    messages) — what hosts.importers.parse_* return. default_credential: a Credential (or name)
    for rows without one. Returns an ImportReport; `report.errors` names line, host and field.
    Audits `host.imported` per created host and `host.updated` per changed one.
    dry_run: validate everything exactly as a real import would, then roll back (the preview);
    the report then lists what would be created/updated (those instances are not saved).
    """
    _check(user)
    report = ImportReport(dry_run=dry_run)
    try:
        default_credential = resolve_credential(default_credential)
    except ValidationError as exc:
        report.errors.append(RowError(None, "", "credential", exc.message_dict["credential"][0]))
        return report
    rows = list(rows)
    seen_names: dict[str, int | None] = {}
    for number, row in enumerate(rows, start=1):
        line = row.get("line") or number
        name = str(row.get("name") or "").strip()
        if name in seen_names:
            report.errors.append(RowError(line, name, "name", f"duplicate of line {seen_names[name]}."))
        seen_names.setdefault(name, line)

    existing = {
        h.name: h for h in Hypervisor.objects.filter(name__in=list(seen_names)).select_related("credential")
    }
    try:
        with transaction.atomic():
            for number, row in enumerate(rows, start=1):
                line = row.get("line") or number
                data = {k: v for k, v in row.items() if k != "line"}
                name = str(data.get("name") or "").strip()
                host = existing.get(name)
                try:
                    if host is not None and not update_existing:
                        raise ValidationError({"name": "a host with this name already exists."})
                    if host is not None:
                        before = _snapshot(host)
                        labels = _prepare(host, data, exclude_unique=True)
                    else:
                        host = Hypervisor()
                        labels = _prepare(host, data, default_credential=default_credential)
                    if host.credential is None and default_credential is None:
                        raise ValidationError({"credential": "no credential given (and no default chosen)."})
                except ValidationError as exc:
                    for fname, messages in exc.message_dict.items():
                        for message in messages:
                            report.errors.append(RowError(line, name, fname, message))
                    continue
                if report.errors:
                    continue  # keep validating to report every error, but write nothing
                is_new = host.pk is None
                host.save()
                if labels is not None:
                    _set_labels(host, labels)
                if is_new:
                    report.created.append(host)
                    record(
                        "host.imported",
                        obj=host,
                        host=host,
                        request=request,
                        data={"fields": _snapshot(host), "line": line, "source": source},
                        **_audit_actor(user),
                    )
                else:
                    after = _snapshot(host)
                    changes = {
                        k: {"before": before[k], "after": after[k]} for k in before if before[k] != after[k]
                    }
                    if changes:
                        report.updated.append(host)
                        record(
                            "host.updated",
                            obj=host,
                            host=host,
                            request=request,
                            data={"changes": changes, "line": line, "source": source},
                            **_audit_actor(user),
                        )
                    else:
                        report.unchanged.append(host)
            if report.errors or dry_run:
                raise _Rollback
            if user is not None and report.created:
                request_discovery_many([h.pk for h in report.created], user)
    except _Rollback:
        if report.errors:
            report.created, report.updated, report.unchanged = [], [], []
    report.errors.sort(key=lambda e: e.line or 0)
    return report


# ---------------------------------------------------------------------------------------------
# Discovery requests
# ---------------------------------------------------------------------------------------------


def request_discovery(host: Hypervisor, user) -> Ticket | None:
    """The refresh button: mark the host and enqueue its discovery after commit.

    One pending discovery per host: while one is queued or running (marked less than
    DISCOVERY_PENDING_SECONDS ago) nothing more is queued and None is returned. Otherwise the
    Ticket says, after commit, whether the broker took the message (else it waits in the outbox).
    """
    if user is None:
        raise PermissionDenied("a discovery request needs a user")
    check_permission(user, "operate")
    now = timezone.now()
    if not claim_discovery([host.pk], now):
        return None
    host.discovery_requested_at = now
    return dispatch.discover_host(host.pk, user.pk)


def claim_discovery(host_ids, now) -> list[int]:
    """Mark the hosts that have no pending discovery as pending now; returns their ids."""
    cutoff = now - timedelta(seconds=settings.DISCOVERY_PENDING_SECONDS)
    free = Q(discovery_requested_at__isnull=True) | Q(discovery_requested_at__lt=cutoff)
    with transaction.atomic():
        ids = list(
            Hypervisor.objects.filter(free, pk__in=list(host_ids))
            .select_for_update(no_key=True, skip_locked=True)
            .values_list("pk", flat=True)
        )
        Hypervisor.objects.filter(pk__in=ids).update(discovery_requested_at=now)
    return ids


def request_discovery_many(host_ids, user) -> Ticket | None:
    """Discover many hosts (e.g. just imported) after commit, in chunks of DISCOVERY_CHUNK_SIZE as
    the periodic discovery does; hosts with a discovery already pending are left out."""
    if user is None:
        raise PermissionDenied("a discovery request needs a user")
    check_permission(user, "operate")
    ids = sorted(claim_discovery(set(host_ids), timezone.now()))
    size = settings.DISCOVERY_CHUNK_SIZE
    tickets = [dispatch.discover_chunk(ids[i : i + size], user.pk) for i in range(0, len(ids), size)]
    return tickets[-1] if tickets else None


def request_fleet_discovery(user) -> Ticket:
    """Discover every host now (the same task beat runs), after the current transaction commits."""
    _check(user)
    return dispatch.discover_fleet()
