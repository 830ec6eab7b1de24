"""Host-key trust: pinning, pending keys, mismatches and their acceptance by an administrator.

States of a hypervisor's SSH host key (fields on `Hypervisor`):

* nothing pinned, nothing seen: never contacted.
* pending (`pending_host_key*` set, status `host_key_pending`): the first key seen; nothing runs on
  the host until an administrator accepts it (`accept_host_key`), unless trust-on-first-use is on
  (`settings.HOST_KEY_TOFU`), in which case the first key is pinned at once and audited.
* pinned (`host_key*` set): every connection must present exactly this key.
* mismatch (pinned key kept, the new key in `pending_host_key*`, status `host_key_mismatch`): the
  host presented another key. Every operation is blocked (`assert_host_trusted`) until an
  administrator accepts the new key, with a reason, having compared both fingerprints.

Discovery (hosts/discovery.py) records what the SSH client saw: `host.key_first_seen` and a pending
key, the TOFU pin, or `host.key_mismatch`. This module is the other half: `accept_host_key` (audited
`host.key_accepted` with both fingerprints and the reason) and `assert_host_trusted`, which
everything that acts on a host calls first.
"""

from django.db import transaction
from django.utils import timezone

from audit.services import record
from console.roles import check_permission

from .models import Hypervisor

REASON_MAX = 500


class HostKeyNotTrusted(Exception):
    """Raised before anything is run on a host whose key is not pinned or does not match."""

    def __init__(self, host: Hypervisor, message: str):
        super().__init__(message)
        self.host = host
        self.message = message


class HostKeyError(ValueError):
    """Bad input to accept_host_key (no pending key, missing reason, stale fingerprint)."""


def assert_host_trusted(host: Hypervisor) -> None:
    """Refuse to operate on a host unless its key is pinned and was not seen to change.

    The change executor (and anything else that acts on a host) calls this before each host run
    and step; remote/ enforces the same pin on the wire.
    """
    if host.status == Hypervisor.Status.HOST_KEY_MISMATCH:
        raise HostKeyNotTrusted(
            host,
            f"{host.name}: host key mismatch — pinned {host.host_key_fingerprint or '?'}, "
            f"presented {host.pending_host_key_fingerprint or '?'}. Nothing will run on this host "
            "until an administrator accepts the new key (Hosts → host → Host key).",
        )
    if not host.host_key:
        pending = host.pending_host_key_fingerprint
        raise HostKeyNotTrusted(
            host,
            f"{host.name}: host key not yet trusted"
            + (f" (pending {pending}); an administrator must accept it first." if pending
               else "; run discovery and have an administrator accept its key first."),
        )


def is_trusted(host: Hypervisor) -> bool:
    try:
        assert_host_trusted(host)
    except HostKeyNotTrusted:
        return False
    return True


def accept_host_key(host: Hypervisor, user, reason: str, *, fingerprint: str | None = None) -> Hypervisor:
    """Pin the host's pending key (first key, or the new key after a mismatch).

    `fingerprint`: the fingerprint the administrator was shown; when given, it must still be the
    pending one, so a key that changed again while the page was open is not accepted blindly.
    """
    check_permission(user, "administer")
    reason = (reason or "").strip()
    if not reason:
        raise HostKeyError("Give a reason for accepting this host key.")
    if len(reason) > REASON_MAX:
        raise HostKeyError(f"Keep the reason under {REASON_MAX} characters.")
    with transaction.atomic():
        locked = Hypervisor.objects.select_for_update().get(pk=host.pk)
        if not locked.pending_host_key:
            raise HostKeyError(f"{locked.name} has no pending host key to accept.")
        if fingerprint is not None and fingerprint != locked.pending_host_key_fingerprint:
            raise HostKeyError(
                "The pending key changed while you were looking at it; compare the fingerprints again."
            )
        was_mismatch = locked.status == Hypervisor.Status.HOST_KEY_MISMATCH
        old_fingerprint = locked.host_key_fingerprint
        now = timezone.now()
        locked.host_key = locked.pending_host_key
        locked.host_key_fingerprint = locked.pending_host_key_fingerprint
        locked.host_key_first_seen = locked.pending_host_key_seen_at or now
        locked.host_key_accepted_at = now
        locked.host_key_accepted_by = user
        locked.pending_host_key = ""
        locked.pending_host_key_fingerprint = ""
        locked.pending_host_key_seen_at = None
        if locked.status in (Hypervisor.Status.HOST_KEY_PENDING, Hypervisor.Status.HOST_KEY_MISMATCH):
            locked.status = Hypervisor.Status.UNKNOWN
            locked.status_reason = "Host key accepted; the next discovery will contact the host."
        locked.save()
        record(
            "host.key_accepted", actor=user, obj=locked, host=locked,
            data={
                "old_fingerprint": old_fingerprint,
                "new_fingerprint": locked.host_key_fingerprint,
                "was": "mismatch" if was_mismatch else "pending",
                "reason": reason,
            },
        )
    host.refresh_from_db()
    return host
