"""Token lifecycle: shown once, stored hashed, audited, revoked → 401, expired → 401."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import ApiToken, token_digest
from api.tokens import create_token
from audit.models import AuditEvent

from .conftest import error_of

pytestmark = pytest.mark.django_db


def _bearer(text):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


def test_token_is_shown_once_and_stored_hashed(operator, client):
    client.force_login(operator)
    response = client.post("/api/v1/tokens/", {"name": "ci-pipeline"}, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    text = body["token"]
    assert text.startswith("srio_") and len(text) > 40
    assert body["prefix"] == text[5:13] and body["status"] == "active"

    row = ApiToken.objects.get(pk=body["id"])
    stored = [str(value) for value in ApiToken.objects.filter(pk=row.pk).values().get().values()]
    assert text not in stored and not any(text in value for value in stored)
    assert row.digest == token_digest(text) and row.digest != text

    # Listed and read back without the token.
    listed = client.get("/api/v1/tokens/").json()["results"]
    assert [t["id"] for t in listed] == [row.pk]
    assert "token" not in listed[0]
    assert "token" not in client.get(f"/api/v1/tokens/{row.pk}/").json()

    # The token works, and says who it is.
    me = _bearer(text).get("/api/v1/me/")
    assert me.status_code == 200
    assert me.json() == {"username": "otto", "roles": ["operator"], "permissions": ["view_fleet", "operate"],
                         "authenticated_by": "token"}
    assert ApiToken.objects.get(pk=row.pk).last_used_at is not None

    # Audited, without the token text anywhere.
    event = AuditEvent.objects.get(action="api_token.created")
    assert event.actor_name == "otto" and event.data["prefix"] == row.prefix
    assert text not in str(event.data) and text not in event.object_repr


def test_revoked_token_gets_401_and_revocation_is_audited(operator):
    token, text = create_token(operator, "bot")
    api = _bearer(text)
    assert api.get("/api/v1/hypervisors/").status_code == 200
    assert api.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    response = api.get("/api/v1/hypervisors/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    error = error_of(response)
    assert error["code"] == "authentication_failed"
    assert "revoked" in error["message"]
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.filter(action="api_token.revoked", object_id=str(token.pk)).count() == 1


def test_expired_unknown_malformed_and_inactive(operator):
    token, text = create_token(operator, "short", expires_at=timezone.now() + timedelta(hours=1))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _bearer(text).get("/api/v1/me/").status_code == 401
    assert _bearer("srio_" + "x" * 43).get("/api/v1/me/").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer a b")
    assert client.get("/api/v1/me/").status_code == 401
    _token, text = create_token(operator, "other")
    operator.is_active = False
    operator.save()
    assert _bearer(text).get("/api/v1/me/").status_code == 401


def test_anonymous_gets_401_with_error_body(anon_api):
    response = anon_api.get("/api/v1/hypervisors/")
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"


def test_tokens_are_private_and_cannot_mint_tokens(operator, approver):
    mine, _ = create_token(operator, "mine")
    _theirs, text = create_token(approver, "theirs")
    api = _bearer(text)
    assert api.get(f"/api/v1/tokens/{mine.pk}/").status_code == 404
    assert api.delete(f"/api/v1/tokens/{mine.pk}/").status_code == 404
    assert [t["name"] for t in api.get("/api/v1/tokens/").json()["results"]] == ["theirs"]
    response = api.post("/api/v1/tokens/", {"name": "child"}, format="json")
    assert response.status_code == 403
    assert "session" in error_of(response)["message"]


def test_token_name_is_required(operator, client):
    client.force_login(operator)
    response = client.post("/api/v1/tokens/", {"name": "  "}, content_type="application/json")
    assert response.status_code == 400
    assert "name" in error_of(response)["fields"]


def test_session_writes_need_csrf(operator):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post("/api/v1/tokens/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in error_of(response)["message"]


def test_token_page_creates_shows_once_and_revokes(operator, client):
    client.force_login(operator)
    page = client.get("/api/tokens/")
    assert page.status_code == 200
    response = client.post("/api/tokens/", {"name": "laptop", "expires": "30"})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=operator, name="laptop")
    text = response.context["new_token"]["text"]
    assert token.digest == token_digest(text)
    assert text in response.content.decode()
    assert response["Cache-Control"] == "no-store"
    assert token.expires_at > timezone.now() + timedelta(days=29)
    assert text not in client.get("/api/tokens/").content.decode()
    response = client.post(f"/api/tokens/{token.pk}/revoke/")
    assert response.status_code == 303
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert client.post("/api/tokens/", {"name": ""}).status_code == 400
