"""LDAP / Active Directory login (django-auth-ldap), mapped to console users by the entry's UUID.

django-auth-ldap binds, searches the user and their groups (settings AUTH_LDAP_*, built from the
LDAP_* environment in console/settings.py). What this subclass changes:

* the console user is found by the entry's stable id (entryUUID / objectGUID, LDAP_ID_ATTRIBUTE)
  through accounts.ExternalIdentity, never by the typed name: a renamed directory user keeps
  their console user, a re-created entry with an old name is someone else, and a local account
  of the same name is never taken over;
* after every successful bind the roles are re-evaluated from the groups (LDAP_ROLE_MAP) and
  the differences audited; no mapped group → the login is refused.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django_auth_ldap.backend import LDAPBackend

from . import services

logger = logging.getLogger("accounts.ldap")
SOURCE = "ldap"


def _entry_id(ldap_user) -> str:
    attrs = ldap_user.attrs or {}
    return services.normalise_directory_id(attrs.get(settings.LDAP_ID_ATTRIBUTE))


class ConsoleLDAPBackend(LDAPBackend):
    def get_or_build_user(self, username, ldap_user):
        entry_id = _entry_id(ldap_user)
        if not entry_id:
            # Without a stable id the person cannot be told apart from a namesake: refuse.
            raise ldap_user.AuthenticationFailed(
                f"the directory entry {ldap_user.dn} has no {settings.LDAP_ID_ATTRIBUTE}"
            )
        user = services.resolve_user(SOURCE, settings.LDAP_DIRECTORY_NAME, entry_id, entry_id)
        if user is not None:
            return user, False
        return get_user_model()(username=services.new_username(username, SOURCE)), True

    def authenticate_ldap_user(self, ldap_user, password):
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is None:
            return None
        entry_id = _entry_id(ldap_user)
        allowed = services.complete_login(
            user,
            source=SOURCE,
            issuer=settings.LDAP_DIRECTORY_NAME,
            subject=entry_id,
            directory_id=entry_id,
            external_name=getattr(user, "ldap_username", "") or user.get_username(),
            groups=sorted(ldap_user.group_dns),
            role_map=settings.LDAP_ROLE_MAP,
            casefold=True,  # DNs compare case-insensitively
        )
        return user if allowed else None
