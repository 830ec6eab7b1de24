"""Fixtures for the API tests: token-authenticated clients for the role users."""

import pytest
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def bearer_client(user, name="tests") -> APIClient:
    """An APIClient that sends `Authorization: Bearer <a new token of user>` (no session)."""
    from api.tokens import create_token

    _token, text = create_token(user, name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    client.token_text = text
    return client


@pytest.fixture
def api_for(db):
    """api_for(user) → an APIClient authenticated with a fresh token of that user."""
    return bearer_client


@pytest.fixture
def anon_api():
    return APIClient()


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message", "fields"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    return error
