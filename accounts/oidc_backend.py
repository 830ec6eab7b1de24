"""OpenID Connect login (mozilla-django-oidc, authorization-code flow with PKCE).

What this subclass changes from the library's defaults:

* the console user is found by the identity (issuer, sub) — or by the directory id claim
  (OIDC_DIRECTORY_ID_CLAIM) shared with an LDAP login of the same person — never by e-mail
  address, which the library would otherwise match on;
* the ID token's issuer and audience are checked (the library verifies the signature and the
  nonce but not `aud`), and the userinfo `sub` must be the ID token's;
* the roles are re-evaluated from the groups claim (OIDC_GROUPS_CLAIM, OIDC_ROLE_MAP) at every
  login and the differences audited; no mapped group → the login is refused.
"""

import logging

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from . import services

logger = logging.getLogger("accounts.oidc")
SOURCE = "oidc"


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _check_id_token(payload: dict) -> None:
    issuer = settings.OIDC_ISSUER
    if issuer and payload.get("iss") != issuer:
        raise SuspiciousOperation(f"ID token issuer {payload.get('iss')!r} is not {issuer!r}")
    audience = _as_list(payload.get("aud"))
    if settings.OIDC_RP_CLIENT_ID not in audience:
        raise SuspiciousOperation("the ID token was not issued for this client (aud)")
    if not payload.get("sub"):
        raise SuspiciousOperation("the ID token has no subject")


class ConsoleOIDCBackend(OIDCAuthenticationBackend):
    def authenticate(self, request, **kwargs):
        # Only the callback view (which checked `state` and holds the nonce and PKCE verifier)
        # may exchange a code: a password form posted to a URL with ?code=&state= must not.
        if "nonce" not in kwargs or "code_verifier" not in kwargs:
            return None
        return super().authenticate(request, **kwargs)

    def get_userinfo(self, access_token, id_token, payload):
        """The ID token's claims, completed by the userinfo endpoint's (same subject only)."""
        _check_id_token(payload)
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            info = super().get_userinfo(access_token, id_token, payload) or {}
            if info.get("sub") not in (None, payload["sub"]):
                raise SuspiciousOperation("userinfo is about another subject than the ID token")
            claims.update(info)
        claims["iss"], claims["sub"] = payload.get("iss", ""), payload["sub"]
        return claims

    def verify_claims(self, claims):
        return bool(claims.get("sub"))

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        issuer = settings.OIDC_ISSUER or claims.get("iss", "")
        subject = str(claims["sub"])
        directory_id = ""
        if settings.OIDC_DIRECTORY_ID_CLAIM:
            directory_id = services.normalise_directory_id(claims.get(settings.OIDC_DIRECTORY_ID_CLAIM))
        name = str(claims.get(settings.OIDC_USERNAME_CLAIM) or claims.get("email", "").split("@")[0] or subject)
        with transaction.atomic():
            user = services.resolve_user(SOURCE, issuer, subject, directory_id)
            if user is None:
                user = self.UserModel(username=services.new_username(name, SOURCE))
                user.set_unusable_password()
            user.email = str(claims.get("email") or user.email or "")[:254]
            user.first_name = str(claims.get("given_name") or user.first_name or "")[:150]
            user.last_name = str(claims.get("family_name") or user.last_name or "")[:150]
            user.save()
        allowed = services.complete_login(
            user,
            source=SOURCE,
            issuer=issuer,
            subject=subject,
            directory_id=directory_id,
            external_name=name,
            groups=_as_list(claims.get(settings.OIDC_GROUPS_CLAIM)),
            role_map=settings.OIDC_ROLE_MAP,
            casefold=False,
        )
        return user if allowed else None
