"""Settings-time helpers for single sign-on (imported by console/settings.py; no models here)."""

from django.core.exceptions import ImproperlyConfigured


def parse_role_map(text: str, *, variable: str) -> dict[str, list[str]]:
    """`admin=cn=sriov-admins,ou=groups,dc=example,dc=com;operator=sriov-operators` →
    {"admin": ["cn=sriov-admins,..."], "operator": ["sriov-operators"]}.

    Entries are separated by `;` (DNs contain commas); the text before the first `=` is the
    role. A role may be named several times (several groups grant it). Role names are checked
    against console/roles.py when the app starts (check_role_names): a typo stops the start-up
    rather than quietly granting nothing.
    """
    mapping: dict[str, list[str]] = {}
    for entry in (text or "").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        role, sep, group = entry.partition("=")
        role, group = role.strip().lower(), group.strip()
        if not sep or not group:
            raise ImproperlyConfigured(f"{variable}: {entry!r} is not role=group")
        mapping.setdefault(role, []).append(group)
    return mapping


def check_role_names(mapping: dict, *, variable: str) -> None:
    from console.roles import ROLES

    unknown = sorted(set(mapping) - set(ROLES))
    if unknown:
        raise ImproperlyConfigured(f"{variable}: unknown role(s) {', '.join(unknown)} (roles: {', '.join(ROLES)})")


LDAP_GROUP_TYPES = {
    "groupofnames": ("GroupOfNamesType", "(objectClass=groupOfNames)"),
    "groupofuniquenames": ("GroupOfUniqueNamesType", "(objectClass=groupOfUniqueNames)"),
    "posix": ("PosixGroupType", "(objectClass=posixGroup)"),
    "active_directory": ("ActiveDirectoryGroupType", "(objectClass=group)"),
    "nested_active_directory": ("NestedActiveDirectoryGroupType", "(objectClass=group)"),
}


def ldap_group_type(name: str):
    """(django-auth-ldap group type instance, default group filter) for LDAP_GROUP_TYPE."""
    from django_auth_ldap import config

    key = (name or "groupOfNames").strip().lower()
    if key not in LDAP_GROUP_TYPES:
        raise ImproperlyConfigured(
            f"LDAP_GROUP_TYPE: unknown {name!r} (one of {', '.join(sorted(LDAP_GROUP_TYPES))})"
        )
    class_name, default_filter = LDAP_GROUP_TYPES[key]
    return getattr(config, class_name)(), default_filter


def _get(env, name: str, default: str = "") -> str:
    """The variable's value, stripped; empty counts as unset (docker-compose passes `${X:-}` as "")."""
    return str(env.get(name, "") or "").strip() or default


def _bool(env, name: str, default: bool = False) -> bool:
    return _get(env, name, str(default)).lower() in {"1", "true", "yes", "on"}


def ldap_settings(env) -> dict:
    """The AUTH_LDAP_* settings of django-auth-ldap and ours (LDAP_*), from an environment
    mapping. Empty LDAP_SERVER_URI → LDAP is off."""
    uri = _get(env, "LDAP_SERVER_URI", "")
    values = {
        "LDAP_ENABLED": bool(uri),
        "LDAP_DIRECTORY_NAME": _get(env, "LDAP_DIRECTORY_NAME", "ldap"),
        "LDAP_ID_ATTRIBUTE": _get(env, "LDAP_ID_ATTRIBUTE", "entryUUID"),
        "LDAP_ROLE_MAP": parse_role_map(_get(env, "LDAP_ROLE_MAP", ""), variable="LDAP_ROLE_MAP"),
    }
    if not uri:
        return values
    import ldap
    from django_auth_ldap.config import LDAPSearch

    user_base = _get(env, "LDAP_USER_SEARCH_BASE", "")
    group_base = _get(env, "LDAP_GROUP_SEARCH_BASE", "")
    if not user_base:
        raise ImproperlyConfigured("LDAP_SERVER_URI is set: set LDAP_USER_SEARCH_BASE too")
    if not values["LDAP_ROLE_MAP"]:
        raise ImproperlyConfigured("LDAP_SERVER_URI is set: set LDAP_ROLE_MAP (nobody would get a role)")
    group_type, default_group_filter = ldap_group_type(_get(env, "LDAP_GROUP_TYPE", "groupOfNames"))
    timeout = float(_get(env, "LDAP_TIMEOUT", "10"))
    options = {ldap.OPT_REFERRALS: 0, ldap.OPT_NETWORK_TIMEOUT: timeout, ldap.OPT_TIMEOUT: timeout}
    global_options = {}
    if _get(env, "LDAP_CA_CERT_FILE"):
        global_options = {ldap.OPT_X_TLS_CACERTFILE: _get(env, "LDAP_CA_CERT_FILE"),
                          ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND}
    values.update(
        AUTH_LDAP_SERVER_URI=uri,
        AUTH_LDAP_BIND_DN=_get(env, "LDAP_BIND_DN", ""),
        AUTH_LDAP_BIND_PASSWORD=_get(env, "LDAP_BIND_PASSWORD", ""),
        AUTH_LDAP_START_TLS=_bool(env, "LDAP_START_TLS"),
        AUTH_LDAP_CONNECTION_OPTIONS=options,
        AUTH_LDAP_GLOBAL_OPTIONS=global_options,
        AUTH_LDAP_USER_SEARCH=LDAPSearch(
            user_base, ldap.SCOPE_SUBTREE, _get(env, "LDAP_USER_SEARCH_FILTER", "(uid=%(user)s)"),
            attrlist=["*", values["LDAP_ID_ATTRIBUTE"]],
        ),
        # The stable id is operational on OpenLDAP (entryUUID): ask for it by name.
        AUTH_LDAP_USER_ATTRLIST=["*", values["LDAP_ID_ATTRIBUTE"]],
        AUTH_LDAP_USER_ATTR_MAP={
            "first_name": _get(env, "LDAP_ATTR_FIRST_NAME", "givenName"),
            "last_name": _get(env, "LDAP_ATTR_LAST_NAME", "sn"),
            "email": _get(env, "LDAP_ATTR_EMAIL", "mail"),
        },
        AUTH_LDAP_ALWAYS_UPDATE_USER=True,
        AUTH_LDAP_GROUP_SEARCH=LDAPSearch(
            group_base or user_base, ldap.SCOPE_SUBTREE,
            _get(env, "LDAP_GROUP_SEARCH_FILTER", "") or default_group_filter,
        ),
        AUTH_LDAP_GROUP_TYPE=group_type,
        AUTH_LDAP_FIND_GROUP_PERMS=False,
        AUTH_LDAP_MIRROR_GROUPS=False,
        AUTH_LDAP_CACHE_TIMEOUT=0,  # memberships are read fresh at every login
    )
    return values


def oidc_settings(env) -> dict:
    """mozilla-django-oidc's OIDC_* settings and ours, from an environment mapping.
    OIDC is on when OIDC_CLIENT_ID and OIDC_AUTHORIZATION_ENDPOINT are set."""
    client_id = _get(env, "OIDC_CLIENT_ID", "")
    authorize = _get(env, "OIDC_AUTHORIZATION_ENDPOINT", "")
    values = {
        "OIDC_ENABLED": bool(client_id and authorize),
        "OIDC_DISPLAY_NAME": _get(env, "OIDC_DISPLAY_NAME", "single sign-on"),
        "OIDC_ROLE_MAP": parse_role_map(_get(env, "OIDC_ROLE_MAP", ""), variable="OIDC_ROLE_MAP"),
    }
    if not values["OIDC_ENABLED"]:
        return values
    missing = [n for n in ("OIDC_ISSUER", "OIDC_TOKEN_ENDPOINT", "OIDC_JWKS_ENDPOINT") if not _get(env, n)]
    if missing:
        raise ImproperlyConfigured(f"OIDC_CLIENT_ID is set: set {', '.join(missing)} too")
    if not values["OIDC_ROLE_MAP"]:
        raise ImproperlyConfigured("OIDC_CLIENT_ID is set: set OIDC_ROLE_MAP (nobody would get a role)")
    verify = _get(env, "OIDC_CA_BUNDLE", "") or not _bool(env, "OIDC_INSECURE_SKIP_VERIFY")
    values.update(
        OIDC_ISSUER=_get(env, "OIDC_ISSUER"),
        OIDC_RP_CLIENT_ID=client_id,
        OIDC_RP_CLIENT_SECRET=_get(env, "OIDC_CLIENT_SECRET", ""),
        OIDC_OP_AUTHORIZATION_ENDPOINT=authorize,
        OIDC_OP_TOKEN_ENDPOINT=_get(env, "OIDC_TOKEN_ENDPOINT"),
        OIDC_OP_USER_ENDPOINT=_get(env, "OIDC_USERINFO_ENDPOINT", ""),
        OIDC_OP_JWKS_ENDPOINT=_get(env, "OIDC_JWKS_ENDPOINT"),
        OIDC_RP_SIGN_ALGO=_get(env, "OIDC_SIGN_ALGO", "RS256"),
        OIDC_RP_SCOPES=_get(env, "OIDC_SCOPES", "openid email profile"),
        OIDC_USE_PKCE=True,
        OIDC_PKCE_CODE_CHALLENGE_METHOD="S256",
        OIDC_USE_NONCE=True,
        OIDC_TOKEN_USE_BASIC_AUTH=_bool(env, "OIDC_CLIENT_SECRET_BASIC"),
        OIDC_TIMEOUT=float(_get(env, "OIDC_TIMEOUT", "10")),
        OIDC_VERIFY_SSL=verify,
        OIDC_STORE_ACCESS_TOKEN=False,
        OIDC_STORE_ID_TOKEN=False,
        OIDC_CREATE_USER=True,
        OIDC_AUTHENTICATION_CALLBACK_URL="accounts:oidc_callback",
        LOGIN_REDIRECT_URL_FAILURE="/login/?sso=failed",
        OIDC_GROUPS_CLAIM=_get(env, "OIDC_GROUPS_CLAIM", "groups"),
        OIDC_USERNAME_CLAIM=_get(env, "OIDC_USERNAME_CLAIM", "preferred_username"),
        OIDC_DIRECTORY_ID_CLAIM=_get(env, "OIDC_DIRECTORY_ID_CLAIM", ""),
    )
    return values


def check_linked_sources(ldap_values: dict, oidc_values: dict, env) -> None:
    """With both LDAP and OIDC on, the same person must be recognisable across them (four-eyes:
    nobody approves their own change by logging in the other way), so OIDC must carry the
    directory id (OIDC_DIRECTORY_ID_CLAIM) — unless the operator states that the two sources are
    different populations (SSO_UNLINKED_SOURCES=1, written down in docs/security.md)."""
    if not (ldap_values.get("LDAP_ENABLED") and oidc_values.get("OIDC_ENABLED")):
        return
    if oidc_values.get("OIDC_DIRECTORY_ID_CLAIM") or _bool(env, "SSO_UNLINKED_SOURCES"):
        return
    raise ImproperlyConfigured(
        "LDAP and OIDC are both on: set OIDC_DIRECTORY_ID_CLAIM to the claim that carries the directory's "
        "entryUUID/objectGUID (so one person is one console user), or SSO_UNLINKED_SOURCES=1 if the two "
        "sources never hold the same people"
    )


def authentication_backends(ldap_enabled: bool, oidc_enabled: bool) -> list[str]:
    """Directory first, then OIDC (only acts on its own callback), local accounts last."""
    backends = []
    if ldap_enabled:
        backends.append("accounts.ldap_backend.ConsoleLDAPBackend")
    if oidc_enabled:
        backends.append("accounts.oidc_backend.ConsoleOIDCBackend")
    return backends + ["django.contrib.auth.backends.ModelBackend"]
