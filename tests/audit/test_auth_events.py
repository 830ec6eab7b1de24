import pytest
from django.urls import reverse

from tests.audit.helpers import actions, the_event
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_login_is_recorded_once_with_actor_ip_and_request_id(client, operator):
    response = client.post(
        reverse("login"),
        {"username": "otto", "password": PASSWORD},
        REMOTE_ADDR="192.0.2.10",
        HTTP_X_REQUEST_ID="login-req-0001",
    )
    assert response.status_code == 302
    event = the_event("auth.login")
    assert (event.actor_id, event.actor_name) == (operator.pk, "otto")
    assert (event.client_ip, event.request_id) == ("192.0.2.10", "login-req-0001")
    assert response["X-Request-ID"] == "login-req-0001"
    assert actions() == ["auth.login"]


def test_failed_login_is_recorded_once_without_the_password(client, operator):
    response = client.post(
        reverse("login"), {"username": "otto", "password": "wrong-password-123"}, REMOTE_ADDR="198.51.100.7"
    )
    assert response.status_code == 400  # console.security.ThrottledLoginView
    event = the_event("auth.login_failed")
    assert (event.actor_id, event.actor_name) == (None, "anonymous")
    assert event.data == {"username": "otto"}
    assert event.client_ip == "198.51.100.7" and len(event.request_id) == 32
    assert event.request_id == response["X-Request-ID"]
    assert "wrong-password" not in str(event.data)
    assert actions() == ["auth.login_failed"]


def test_logout_is_recorded_once(client, operator):
    client.force_login(operator)  # force_login sends user_logged_in too
    response = client.post(reverse("logout"), REMOTE_ADDR="203.0.113.5")
    assert response.status_code == 302
    event = the_event("auth.logout")
    assert (event.actor_id, event.actor_name, event.client_ip) == (operator.pk, "otto", "203.0.113.5")
    assert event.request_id == response["X-Request-ID"]
    assert actions() == ["auth.login", "auth.logout"]


def test_logout_without_a_session_records_nothing(client):
    client.post(reverse("logout"))
    assert actions() == []
