"""Real identity servers for the single sign-on tests: OpenLDAP slapd and an OIDC provider, each
started on a loopback port for one test and stopped after it (tests/procs.py: they die with the
run). The console is configured through the same environment parsing as production
(accounts.config.ldap_settings / oidc_settings)."""

import shutil

import pytest

from accounts.config import authentication_backends, ldap_settings, oidc_settings
from tests.accounts import ldap_server
from tests.accounts.ldap_server import GROUPS, Person
from tests.conftest import ensure_role_groups, require_or_skip

LDAP_GROUPS = ["sriov-operators", "sriov-approvers", "sriov-admins", "wiki-editors"]
LDAP_ROLE_MAP = (
    f"operator=cn=sriov-operators,{GROUPS};approver=cn=sriov-approvers,{GROUPS};"
    f"admin=CN=SRIOV-Admins,{GROUPS}"  # DNs compare case-insensitively
)
OIDC_ROLE_MAP = "operator=sriov-operators;approver=sriov-approvers;admin=sriov-admins"


def people():
    return {
        "otto": Person("otto", "otto-directory-pw-1", "otto@example.test", ["sriov-operators"]),
        "anna": Person("anna", "anna-directory-pw-2", "anna@example.test", ["sriov-approvers"]),
        "ada": Person("ada", "ada-directory-pw-3", "ada@example.test", ["sriov-admins", "sriov-operators"]),
        "nora": Person("nora", "nora-directory-pw-4", "nora@example.test", ["wiki-editors"]),
    }


@pytest.fixture
def directory():
    return people()


@pytest.fixture
def slapd(tmp_path, directory):
    require_or_skip(ldap_server.available() and shutil.which("ldapsearch") is not None,
                    "needs Debian's slapd and ldap-utils (apt-get install slapd ldap-utils; .ci/run does)")
    server = ldap_server.Slapd(tmp_path / "slapd", list(directory.values()), LDAP_GROUPS).start()
    yield server
    server.stop()


def ldap_env(server) -> dict:
    return {
        "LDAP_SERVER_URI": server.uri,
        "LDAP_BIND_DN": ldap_server.BIND_DN,
        "LDAP_BIND_PASSWORD": ldap_server.BIND_PASSWORD,
        "LDAP_USER_SEARCH_BASE": ldap_server.PEOPLE,
        "LDAP_USER_SEARCH_FILTER": "(uid=%(user)s)",
        "LDAP_GROUP_SEARCH_BASE": ldap_server.GROUPS,
        "LDAP_GROUP_TYPE": "groupOfNames",
        "LDAP_ROLE_MAP": LDAP_ROLE_MAP,
        "LDAP_ID_ATTRIBUTE": "entryUUID",
    }


def apply(settings, values: dict):
    for key, value in values.items():
        setattr(settings, key, value)
    settings.AUTHENTICATION_BACKENDS = authentication_backends(
        getattr(settings, "LDAP_ENABLED", False), getattr(settings, "OIDC_ENABLED", False)
    )


@pytest.fixture
def ldap_on(settings, slapd, db):
    ensure_role_groups()
    apply(settings, ldap_settings(ldap_env(slapd)))
    return slapd


def oidc_people(directory_ids: dict | None = None) -> dict:
    ids = directory_ids or {}
    found = {
        "otto": {"password": "otto-idp-pw-1", "email": "otto@example.test", "groups": ["sriov-operators"]},
        "anna": {"password": "anna-idp-pw-2", "email": "anna@example.test", "groups": ["sriov-approvers"]},
        "nora": {"password": "nora-idp-pw-4", "email": "nora@example.test", "groups": ["wiki-editors"]},
    }
    for name, value in ids.items():
        found[name]["ldap_id"] = value
    return found


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory):
    """One provider per test module (its start migrates a database); each test resets the people."""
    from tests.accounts.oidc_server import OidcProvider

    provider = OidcProvider(tmp_path_factory.mktemp("idp"), oidc_people()).start()
    yield provider
    provider.stop()


def oidc_env(provider, **extra) -> dict:
    return dict(provider.env(), OIDC_ROLE_MAP=OIDC_ROLE_MAP, **extra)


@pytest.fixture
def oidc_on(settings, oidc_provider, db):
    ensure_role_groups()
    oidc_provider.reset(oidc_people())
    apply(settings, oidc_settings(oidc_env(oidc_provider)))
    return oidc_provider
