"""Single sign-on settings from the environment: the role maps, what is required, what is refused."""

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from accounts.config import check_role_names, ldap_settings, oidc_settings, parse_role_map
from accounts.services import normalise_directory_id, roles_from_groups
from tests.conftest import ROOT


def test_role_maps_take_dns_with_commas_and_several_groups_per_role():
    text = "admin=cn=a,ou=g,dc=x; Operator = cn=b,ou=g,dc=x ;admin=cn=c,ou=g,dc=x;"
    assert parse_role_map(text, variable="LDAP_ROLE_MAP") == {
        "admin": ["cn=a,ou=g,dc=x", "cn=c,ou=g,dc=x"], "operator": ["cn=b,ou=g,dc=x"]}
    with pytest.raises(ImproperlyConfigured, match="is not role=group"):
        parse_role_map("admin", variable="LDAP_ROLE_MAP")
    with pytest.raises(ImproperlyConfigured, match="unknown role"):
        check_role_names(parse_role_map("superuser=cn=x", variable="X"), variable="X")


def test_groups_give_roles_with_the_groups_that_gave_them():
    role_map = {"admin": ["CN=Admins,DC=x"], "viewer": ["cn=staff,dc=x", "cn=all,dc=x"]}
    assert roles_from_groups(["cn=admins,dc=x", "cn=all,dc=x", "cn=other,dc=x"], role_map, casefold=True) == {
        "admin": ["cn=admins,dc=x"], "viewer": ["cn=all,dc=x"]}
    assert roles_from_groups(["admins"], {"admin": ["Admins"]}, casefold=False) == {}


def test_directory_ids_have_one_spelling():
    import base64
    import uuid

    guid = uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    assert normalise_directory_id([guid.bytes_le]) == str(guid)  # AD objectGUID over LDAP
    assert normalise_directory_id(base64.b64encode(guid.bytes_le).decode()) == str(guid)  # Entra immutable id
    assert normalise_directory_id(str(guid).upper()) == str(guid)  # entryUUID / a claim
    assert normalise_directory_id("") == "" and normalise_directory_id(None) == ""


def test_unset_and_empty_variables_turn_sso_off_and_half_a_configuration_is_refused():
    assert ldap_settings({})["LDAP_ENABLED"] is False
    assert ldap_settings({"LDAP_SERVER_URI": ""})["LDAP_ENABLED"] is False  # compose's ${X:-}
    assert oidc_settings({"OIDC_CLIENT_ID": "", "OIDC_AUTHORIZATION_ENDPOINT": ""})["OIDC_ENABLED"] is False
    with pytest.raises(ImproperlyConfigured, match="LDAP_USER_SEARCH_BASE"):
        ldap_settings({"LDAP_SERVER_URI": "ldap://127.0.0.1"})
    with pytest.raises(ImproperlyConfigured, match="LDAP_ROLE_MAP"):
        ldap_settings({"LDAP_SERVER_URI": "ldap://127.0.0.1", "LDAP_USER_SEARCH_BASE": "dc=x"})
    with pytest.raises(ImproperlyConfigured, match="OIDC_TOKEN_ENDPOINT"):
        oidc_settings({"OIDC_CLIENT_ID": "c", "OIDC_AUTHORIZATION_ENDPOINT": "https://idp/auth",
                       "OIDC_ISSUER": "https://idp", "OIDC_JWKS_ENDPOINT": "https://idp/jwks"})
    values = ldap_settings({"LDAP_SERVER_URI": "ldap://127.0.0.1", "LDAP_USER_SEARCH_BASE": "dc=x",
                            "LDAP_ROLE_MAP": "viewer=cn=v,dc=x", "LDAP_USER_SEARCH_FILTER": ""})
    assert values["AUTH_LDAP_USER_SEARCH"].filterstr == "(uid=%(user)s)"


def test_docker_compose_carries_the_settings():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    wanted = {"LDAP_SERVER_URI", "LDAP_BIND_DN", "LDAP_BIND_PASSWORD", "LDAP_USER_SEARCH_BASE", "LDAP_ROLE_MAP",
              "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "OIDC_ISSUER", "OIDC_ROLE_MAP", "OIDC_DIRECTORY_ID_CLAIM",
              "EMAIL_HOST", "EMAIL_HOST_PASSWORD", "CONSOLE_BASE_URL", "METRICS_TOKEN",
              "METRICS_ALLOWED_ADDRESSES", "METRICS_COLLECT_DIR"}
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert wanted <= set(env), f"{name} misses {wanted - set(env)}"
        assert ":?" not in env["LDAP_BIND_PASSWORD"]  # optional: SSO is off while empty
    # Web and workers share the metrics volume, each writing its own folder.
    for name in ("web", "worker"):
        assert any(v.startswith("metrics:") for v in services[name]["volumes"])
        assert "PROMETHEUS_MULTIPROC_DIR=/var/lib/sriov-console/metrics/" in " ".join(services[name]["command"])
