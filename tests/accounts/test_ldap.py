"""LDAP login against a real slapd: bind, user search, groups → roles at every login, audited;
identity is the entry's entryUUID, not its name; local break-glass accounts keep working."""

import logging

from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts.models import ExternalIdentity
from audit.models import AuditEvent
from console.roles import user_roles
from tests.accounts import ldap_server
from tests.conftest import make_user


def login(client, username, password):
    return client.post(reverse("login"), {"username": username, "password": password})


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_directory_login_creates_the_user_with_the_mapped_role(client, ldap_on, directory):
    otto = directory["otto"]
    response = login(client, "otto", otto.password)
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")
    user = get_user_model().objects.get(username="otto")
    assert user_roles(user) == ["operator"]
    assert user.email == "otto@example.test" and not user.has_usable_password()
    identity = ExternalIdentity.objects.get(user=user)
    assert identity.source == "ldap" and identity.subject == ldap_on.entry_uuid(otto)
    assert identity.groups == [f"cn=sriov-operators,{ldap_server.GROUPS}"]
    (granted,) = events("auth.role_granted")
    assert granted.data["role"] == "operator" and granted.data["source"] == "ldap"
    assert granted.data["via"] == [f"cn=sriov-operators,{ldap_server.GROUPS}"]
    assert events("auth.login")[-1].actor_id == user.pk
    # The page the operator lands on works with that role.
    assert client.get(reverse("hosts:list")).status_code == 200


def test_group_matching_is_case_insensitive_and_roles_add_up(client, ldap_on, directory):
    assert login(client, "ada", directory["ada"].password).status_code == 302
    assert user_roles(get_user_model().objects.get(username="ada")) == ["admin", "operator"]


def test_roles_are_re_evaluated_at_every_login_and_audited(client, ldap_on, directory):
    otto = directory["otto"]
    assert login(client, "otto", otto.password).status_code == 302
    client.post(reverse("logout"))
    ldap_on.add_member("sriov-approvers", otto)
    ldap_on.remove_member("sriov-operators", otto)
    assert login(client, "otto", otto.password).status_code == 302
    user = get_user_model().objects.get(username="otto")
    assert user_roles(user) == ["approver"]
    assert [e.data["role"] for e in events("auth.role_granted")] == ["operator", "approver"]
    assert [e.data["role"] for e in events("auth.role_revoked")] == ["operator"]
    # The operator pages are closed to otto now.
    assert client.get(reverse("hosts:add")).status_code == 403


def test_a_person_without_a_mapped_group_is_refused_and_loses_old_roles(client, ldap_on, directory):
    otto = directory["otto"]
    assert login(client, "otto", otto.password).status_code == 302
    client.post(reverse("logout"))
    ldap_on.remove_member("sriov-operators", otto)
    response = login(client, "otto", otto.password)
    assert response.status_code == 400
    assert "_auth_user_id" not in client.session
    assert user_roles(get_user_model().objects.get(username="otto")) == []
    assert events("auth.role_revoked")[-1].data["role"] == "operator"
    assert events("auth.login_refused")[-1].data["source"] == "ldap"
    # Someone only in unrelated groups never gets in either.
    assert login(client, "nora", directory["nora"].password).status_code == 400
    assert user_roles(get_user_model().objects.get(username="nora")) == []


def test_a_wrong_directory_password_is_a_failed_login(client, ldap_on):
    response = login(client, "otto", "not-the-password")
    assert response.status_code == 400
    assert events("auth.login_failed")[-1].data["username"] == "otto"
    assert not get_user_model().objects.filter(username="otto").exists()


def test_local_break_glass_accounts_still_log_in_and_are_never_taken_over(client, ldap_on, directory):
    from tests.conftest import PASSWORD

    local_admin = make_user("breakglass", "admin")
    assert login(client, "breakglass", PASSWORD).status_code == 302
    client.post(reverse("logout"))
    # A local account that happens to have a directory person's name stays that local account.
    local_anna = make_user("anna", "viewer")
    assert login(client, "anna", directory["anna"].password).status_code == 302
    sso_anna = get_user_model().objects.get(identities__source="ldap", identities__external_name="anna")
    assert sso_anna.pk != local_anna.pk and sso_anna.username == "anna@ldap"
    assert user_roles(sso_anna) == ["approver"] and user_roles(local_anna) == ["viewer"]
    assert user_roles(local_admin) == ["admin"]  # directory logins never touch local accounts' roles


def test_identity_is_the_entry_uuid_not_the_name(client, ldap_on, directory):
    otto = directory["otto"]
    assert login(client, "otto", otto.password).status_code == 302
    first = get_user_model().objects.get(username="otto")
    client.post(reverse("logout"))
    # The entry is deleted and someone else gets the name: a new entryUUID, a new console user.
    # (No referential integrity overlay: the group still names the DN, so the newcomer is an operator.)
    ldap_on.recreate(otto)
    assert login(client, "otto", otto.password).status_code == 302
    second = get_user_model().objects.get(identities__subject=ldap_on.entry_uuid(otto))
    assert second.pk != first.pk and second.username == "otto@ldap"
    assert client.session["_auth_user_id"] == str(second.pk)


def test_the_bind_password_and_user_passwords_appear_nowhere(client, ldap_on, directory, caplog):
    caplog.set_level(logging.DEBUG)
    login(client, "otto", directory["otto"].password)
    login(client, "anna", "a-wrong-password-attempt")
    page = client.get(reverse("accounts:profile")).content.decode()
    texts = [str(e.data) for e in AuditEvent.objects.all()] + [caplog.text, page]
    for secret in (ldap_server.BIND_PASSWORD, directory["otto"].password, "a-wrong-password-attempt"):
        assert not any(secret in text for text in texts), secret
