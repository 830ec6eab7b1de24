"""Single sign-on: map a directory identity to one console user and re-evaluate its roles.

Both backends (accounts/ldap_backend.py, accounts/oidc_backend.py) call:

    resolve_user(source, issuer, subject, directory_id) -> user | None
    new_username(preferred, source) -> a free console user name
    complete_login(user, identity fields..., role_groups) -> bool   # False: no role, refused

Roles given by the directory replace the user's role groups at every login, and every difference
is audited (`auth.role_granted` / `auth.role_revoked`). Groups that are not roles are left alone.
Local accounts (no identity) are never touched here: they are the break-glass accounts.
"""

import base64
import binascii
import re
import uuid

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from audit.services import record
from console.roles import ROLES

from .models import ExternalIdentity

USERNAME_MAX = 150
_USERNAME_CHARS = re.compile(r"[^\w.@+-]")


def normalise_directory_id(value) -> str:
    """One spelling for a directory's stable id, whoever reports it.

    AD's objectGUID arrives as 16 raw bytes (LDAP) or base64 of them (Entra ID's
    onPremisesImmutableId); OpenLDAP's entryUUID and most claims as a UUID string. All become the
    canonical lower-case UUID; anything else is kept as given (stripped).
    """
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        if len(value) == 16:
            return str(uuid.UUID(bytes_le=value))
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    if not text:
        return ""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    if len(text) == 24 and text.endswith("=="):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 16:
            return str(uuid.UUID(bytes_le=raw))
    return text


def roles_from_groups(groups, role_map: dict[str, list[str]], *, casefold: bool) -> dict[str, list[str]]:
    """{role: [the groups that grant it]} for the groups a directory reports."""
    def key(text):
        return str(text).strip().lower() if casefold else str(text).strip()

    have = {key(g): str(g) for g in groups or ()}
    granted = {}
    for role, wanted in role_map.items():
        via = sorted(have[key(g)] for g in wanted if key(g) in have)
        if via:
            granted[role] = via
    return granted


def resolve_user(source: str, issuer: str, subject: str, directory_id: str = ""):
    """The console user this identity belongs to, or None for a person seen for the first time.

    First the identity itself; then any identity of the same directory entry (directory_id) —
    the same person logging in another way. Never by user name or e-mail address.
    """
    identity = (
        ExternalIdentity.objects.select_related("user")
        .filter(source=source, issuer=issuer, subject=subject)
        .first()
    )
    if identity is not None:
        return identity.user
    if directory_id:
        other = (
            ExternalIdentity.objects.select_related("user").filter(directory_id=directory_id).order_by("pk").first()
        )
        if other is not None:
            return other.user
    return None


def new_username(preferred: str, source: str) -> str:
    """A free console user name for a new SSO user: the directory's name when nobody has it,
    otherwise `name@source`, `name@source-2`... A local account of the same name is never taken
    over (it may be a break-glass admin; the person behind the directory name may be someone else)."""
    User = get_user_model()
    base = _USERNAME_CHARS.sub("_", (preferred or "").strip())[: USERNAME_MAX - 20] or source
    candidates = [base, f"{base}@{source}"] + [f"{base}@{source}-{n}" for n in range(2, 1000)]
    taken = set(
        User.objects.filter(username__in=candidates[:50]).values_list("username", flat=True)
    )
    for candidate in candidates:
        if candidate not in taken and not User.objects.filter(username__iexact=candidate).exists():
            return candidate
    return f"{base}@{source}-{uuid.uuid4().hex[:8]}"


def _link(user, *, source, issuer, subject, directory_id, external_name, groups, now) -> ExternalIdentity:
    identity, created = ExternalIdentity.objects.select_for_update().get_or_create(
        source=source, issuer=issuer, subject=subject,
        defaults={"user": user, "directory_id": directory_id, "external_name": external_name},
    )
    identity.directory_id = directory_id or identity.directory_id
    identity.external_name = external_name[:255]
    identity.groups = sorted(groups)
    identity.last_login_at = now
    identity.save()
    if created:
        record(
            "auth.identity_linked", actor_name=source, obj=user,
            data={"source": source, "issuer": issuer, "subject": subject, "directory_id": directory_id,
                  "external_name": external_name},
        )
    return identity


def apply_roles(user, granted: dict[str, list[str]], *, source: str) -> tuple[list[str], list[str]]:
    """Make the user's role groups exactly `granted`; audit each role given or taken away."""
    current = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    wanted = set(granted)
    added, removed = sorted(wanted - current), sorted(current - wanted)
    if removed:
        user.groups.remove(*Group.objects.filter(name__in=removed))
    if added:
        user.groups.add(*Group.objects.filter(name__in=added))
    for role in added:
        record("auth.role_granted", actor_name=source, obj=user,
               data={"role": role, "source": source, "via": granted[role], "username": user.get_username()})
    for role in removed:
        record("auth.role_revoked", actor_name=source, obj=user,
               data={"role": role, "source": source, "username": user.get_username()})
    return added, removed


def complete_login(user, *, source: str, issuer: str, subject: str, directory_id: str,
                   external_name: str, groups, role_map: dict[str, list[str]], casefold: bool) -> bool:
    """Link the identity and re-evaluate the roles. False when the directory grants no role:
    the login is refused (and any role the user had is revoked, audited)."""
    granted = roles_from_groups(groups, role_map, casefold=casefold)
    now = timezone.now()
    with transaction.atomic():
        _link(user, source=source, issuer=issuer, subject=subject, directory_id=directory_id,
              external_name=external_name, groups=[str(g) for g in groups or ()], now=now)
        apply_roles(user, granted, source=source)
        if not granted:
            record("auth.login_refused", actor_name=source, obj=user,
                   data={"source": source, "username": user.get_username(), "external_name": external_name,
                         "reason": "no directory group of this person grants a console role"})
    if hasattr(user, "_perm_cache"):
        del user._perm_cache
    if hasattr(user, "_group_perm_cache"):
        del user._group_perm_cache
    return bool(granted)


def identities_of(user) -> list[ExternalIdentity]:
    return list(ExternalIdentity.objects.filter(user=user).order_by("source", "issuer"))


def is_sso_user(user) -> bool:
    return ExternalIdentity.objects.filter(user=user).exists()
