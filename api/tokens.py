"""Token services: create (the only time the token exists in clear), revoke, authenticate.

Both the REST endpoints and the browser page (/api/tokens/) call these; both audit
`api_token.created` / `api_token.revoked` with the prefix, never the token.
"""

import secrets

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import record
from console.roles import check_permission

from .models import PREFIX_LENGTH, TOKEN_MARKER, ApiToken, token_digest

NAME_MAX = 100


def _summary(token: ApiToken) -> dict:
    return {
        "name": token.name,
        "prefix": token.prefix,
        "user": token.user.get_username(),
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }


def create_token(user, name: str, *, expires_at=None, request=None) -> tuple[ApiToken, str]:
    """Make a token for `user` (any console role). Returns (row, token text); show the text once."""
    check_permission(user, "view_fleet")
    name = (name or "").strip()
    errors = {}
    if not name:
        errors["name"] = ["Give the token a name (what uses it, e.g. 'ci-pipeline')."]
    elif len(name) > NAME_MAX:
        errors["name"] = [f"At most {NAME_MAX} characters."]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["The expiry must be in the future."]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        active = ApiToken.objects.select_for_update().filter(user=user).active().count()
        if active >= settings.API_TOKEN_MAX_PER_USER:
            raise ValidationError(
                {
                    "name": [
                        f"You already have {active} active tokens "
                        f"(at most {settings.API_TOKEN_MAX_PER_USER}); "
                        "revoke one you no longer use."
                    ]
                }
            )
        secret = secrets.token_urlsafe(32)
        text = TOKEN_MARKER + secret
        token = ApiToken.objects.create(
            user=user,
            name=name,
            prefix=secret[:PREFIX_LENGTH],
            digest=token_digest(text),
            expires_at=expires_at,
        )
        record("api_token.created", actor=user, obj=token, request=request, data=_summary(token))
    return token, text


def revoke_token(token: ApiToken, user, *, request=None) -> ApiToken:
    """Revoke one of the user's own tokens (idempotent: revoking twice records once)."""
    if token.user_id != user.pk:
        raise PermissionDenied("you can only revoke your own tokens")
    with transaction.atomic():
        locked = ApiToken.objects.select_for_update(of=("self",)).select_related("user").get(pk=token.pk)
        if locked.revoked_at is None:
            locked.revoked_at = timezone.now()
            locked.save(update_fields=["revoked_at"])
            record("api_token.revoked", actor=user, obj=locked, request=request, data=_summary(locked))
    return locked


def authenticate_token(text: str) -> ApiToken | None:
    """The active token with this text, or None (unknown, revoked, expired, or user inactive)."""
    if not text or not text.startswith(TOKEN_MARKER) or len(text) > 200:
        return None
    token = ApiToken.objects.select_related("user").filter(digest=token_digest(text)).first()
    if token is None or not token.is_active or not token.user.is_active:
        return None
    now = timezone.now()
    resolution = settings.API_TOKEN_LAST_USED_RESOLUTION
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= resolution:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
