"""Four-eyes across identity sources: the person is the directory's entry, so logging in through
LDAP or through OIDC is the same console user, who still cannot approve their own change."""

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from accounts.config import check_linked_sources, ldap_settings, oidc_settings
from accounts.models import ExternalIdentity
from changes import approvals, services
from changes.models import ChangeRequest
from console.roles import user_roles
from tests.accounts.conftest import apply, ldap_env, oidc_env, oidc_people
from tests.changes.conftest import change_data, make_credential, make_host


@pytest.fixture
def both_on(settings, slapd, oidc_on, directory):
    """LDAP and OIDC at once; the provider's `ldap_id` claim carries the entry's entryUUID
    (as Keycloak's LDAP federation does)."""
    ids = {name: slapd.entry_uuid(directory[name]) for name in ("otto", "anna")}
    people = oidc_people(ids)
    people["otto"]["groups"] = ["sriov-approvers"]  # at the IdP otto is also an approver
    oidc_on.reset(people)
    apply(settings, ldap_settings(ldap_env(slapd)))
    apply(settings, oidc_settings(oidc_env(oidc_on, OIDC_DIRECTORY_ID_CLAIM="ldap_id")))
    return slapd, oidc_on


def _submitted_change(user):
    host = make_host("hv-four-eyes", credential=make_credential(), nics=[("eno49", "0000:04:00.0", 0)])
    change = services.create_change(change_data([host.pk]), user)
    return services.submit_change(change.pk, user)


def test_the_same_person_cannot_approve_their_change_by_logging_in_the_other_way(client, both_on, directory):
    slapd, idp = both_on
    response = client.post(reverse("login"), {"username": "otto", "password": directory["otto"].password})
    assert response.status_code == 302
    otto = get_user_model().objects.get(username="otto")
    change = _submitted_change(otto)
    client.post(reverse("logout"))

    _, response = idp.login(client, "otto")
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(otto.pk)
    assert sorted(ExternalIdentity.objects.filter(user=otto).values_list("source", flat=True)) == ["ldap", "oidc"]
    assert user_roles(otto) == ["approver"]  # roles follow the source of this login
    response = client.post(reverse("changes:approve", args=[change.pk]), {
        "comment": "lgtm", "plan_hash": change.plan_hash, "approval_hash": approvals.approval_hash(change)})
    assert response.status_code == 403
    assert ChangeRequest.objects.get(pk=change.pk).state == ChangeRequest.State.SUBMITTED

    # Another person (anna, through OIDC) may.
    client.post(reverse("logout"))
    idp.login(client, "anna")
    response = client.post(reverse("changes:approve", args=[change.pk]), {
        "comment": "ok", "plan_hash": change.plan_hash, "approval_hash": approvals.approval_hash(change)})
    assert response.status_code == 302
    assert ChangeRequest.objects.get(pk=change.pk).state in (ChangeRequest.State.APPROVED,
                                                             ChangeRequest.State.SCHEDULED)


def test_both_sources_without_a_directory_id_claim_refuse_to_start():
    ldap_values = {"LDAP_ENABLED": True}
    oidc_values = {"OIDC_ENABLED": True, "OIDC_DIRECTORY_ID_CLAIM": ""}
    with pytest.raises(ImproperlyConfigured, match="OIDC_DIRECTORY_ID_CLAIM"):
        check_linked_sources(ldap_values, oidc_values, {})
    check_linked_sources(ldap_values, oidc_values, {"SSO_UNLINKED_SOURCES": "1"})  # stated on purpose
    check_linked_sources(ldap_values, dict(oidc_values, OIDC_DIRECTORY_ID_CLAIM="ldap_id"), {})
