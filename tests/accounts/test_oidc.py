"""OpenID Connect login against a real provider process (django-oauth-toolkit): authorization
code with PKCE (the provider requires it), RS256 ID token, groups claim → roles at every login."""

import logging
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts.models import ExternalIdentity
from audit.models import AuditEvent
from console.roles import user_roles
from tests.accounts.oidc_server import CLIENT_SECRET


def test_the_login_page_offers_what_is_configured(client, oidc_on, settings):
    page = client.get(reverse("login")).content.decode()
    assert "Log in with Test IdP" in page and 'name="password"' in page  # local accounts stay
    settings.OIDC_ENABLED = False
    assert "Log in with" not in client.get(reverse("login")).content.decode()


def test_code_flow_with_pkce_logs_in_with_the_mapped_role(client, oidc_on):
    authorize, response = oidc_on.login(client, "otto")
    query = parse_qs(urlsplit(authorize).query)
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43 and query["state"] and query["nonce"]
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")
    user = get_user_model().objects.get(username="otto")
    assert client.session["_auth_user_id"] == str(user.pk)
    assert user_roles(user) == ["operator"] and user.email == "otto@example.test"
    assert not user.has_usable_password()
    identity = ExternalIdentity.objects.get(user=user)
    assert identity.source == "oidc" and identity.issuer == oidc_on.issuer
    granted = AuditEvent.objects.get(action="auth.role_granted")
    assert granted.data == {"role": "operator", "source": "oidc", "via": ["sriov-operators"], "username": "otto"}
    assert client.get(reverse("hosts:list")).status_code == 200


def test_roles_follow_the_groups_claim_at_every_login(client, oidc_on):
    oidc_on.login(client, "otto")
    client.post(reverse("logout"))
    oidc_on.set_groups("otto", ["sriov-approvers"])
    _, response = oidc_on.login(client, "otto")
    assert response.status_code == 302
    user = get_user_model().objects.get(username="otto")
    assert user_roles(user) == ["approver"]
    assert list(AuditEvent.objects.filter(action="auth.role_revoked").values_list("data__role", flat=True)) == [
        "operator"]
    client.post(reverse("logout"))
    oidc_on.set_groups("otto", [])
    _, response = oidc_on.login(client, "otto")
    assert response.status_code == 302 and response["Location"] == "/login/?sso=failed"
    assert "_auth_user_id" not in client.session
    assert user_roles(user) == []
    assert "Single sign-on did not complete" in client.get(response["Location"]).content.decode()


def test_a_state_that_was_not_issued_is_refused(client, oidc_on):
    client.get(reverse("accounts:oidc_login"))
    response = client.get(reverse("accounts:oidc_callback"), {"code": "forged", "state": "not-ours"})
    assert response.status_code == 400
    assert "_auth_user_id" not in client.session


def test_a_password_form_posted_with_a_code_does_not_reach_the_provider(client, oidc_on):
    response = client.post(reverse("login") + "?code=x&state=y", {"username": "otto", "password": "otto-idp-pw-1"})
    assert response.status_code == 400
    assert not get_user_model().objects.filter(username="otto").exists()


def test_no_client_secret_or_token_in_pages_logs_or_audit(client, oidc_on, caplog):
    caplog.set_level(logging.DEBUG)
    oidc_on.login(client, "anna")
    page = client.get(reverse("accounts:profile")).content.decode()
    texts = [str(e.data) for e in AuditEvent.objects.all()] + [caplog.text, page, str(dict(client.session))]
    for secret in (CLIENT_SECRET, "anna-idp-pw-2"):
        assert not any(secret in text for text in texts)
    assert "oidc_access_token" not in client.session and "oidc_id_token" not in client.session
