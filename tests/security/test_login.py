"""Login throttling (console/security.py), session and password settings."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from audit.models import AuditEvent
from console.models import LoginAttempt
from tests.conftest import PASSWORD


def _login(client, username, password, ip="10.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


@pytest.fixture
def limits(settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_IP_FAILURE_LIMIT = 5
    settings.LOGIN_FAILURE_WINDOW = 600
    return settings


def test_a_good_login_works_and_is_audited(client, viewer, limits):
    response = _login(client, "vera", PASSWORD)
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="auth.login", actor=viewer).exists()


def test_a_wrong_password_is_a_4xx_with_a_message(client, viewer, limits):
    response = _login(client, "vera", "wrong")
    assert response.status_code == 400
    assert "Please enter a correct username and password" in response.content.decode()
    assert AuditEvent.objects.filter(action="auth.login_failed").count() == 1


def test_lockout_after_repeated_failures(client, viewer, limits):
    assert _login(client, "vera", "wrong-1").status_code == 400
    assert _login(client, "vera", "wrong-2").status_code == 400
    third = _login(client, "vera", "wrong-3")
    assert third.status_code == 429
    assert "Too many failed logins for this account" in third.content.decode()
    assert int(third["Retry-After"]) > 0

    # While locked out even the right password is refused, without being checked.
    locked = _login(client, "vera", PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session

    event = AuditEvent.objects.get(action="auth.locked_out")
    assert event.data["username"] == "vera" and event.data["scope"] == "username"
    assert event.data["failures"] == 3 and event.object_id == str(viewer.pk)
    assert "wrong-" not in str(event.data) and PASSWORD not in str(event.data)
    # Only the start of a lockout is an event; refused attempts do not pile up failures.
    assert AuditEvent.objects.filter(action="auth.locked_out").count() == 1
    assert LoginAttempt.objects.filter(username="vera").count() == 3

    # Another account from another address is not affected.
    other = get_user_model().objects.create_user("olga", password=PASSWORD)
    assert _login(client, other.username, PASSWORD, ip="10.9.9.9").status_code == 302


def test_the_lockout_ends_when_failures_leave_the_window(client, viewer, limits):
    for n in range(3):
        _login(client, "vera", f"wrong-{n}")
    assert _login(client, "vera", PASSWORD).status_code == 429
    # Age the failures beyond the window (as time passing would).
    from datetime import timedelta

    from django.utils import timezone

    LoginAttempt.objects.update(created_at=timezone.now() - timedelta(seconds=601))
    assert _login(client, "vera", PASSWORD).status_code == 302


def test_a_success_clears_earlier_failures(client, viewer, limits):
    _login(client, "vera", "wrong-1")
    _login(client, "vera", "wrong-2")
    assert _login(client, "vera", PASSWORD).status_code == 302
    client.logout()
    assert not LoginAttempt.objects.filter(username="vera").exists()
    assert _login(client, "vera", "wrong-3").status_code == 400


def test_unknown_user_names_lock_out_too(client, db, limits):
    for n in range(2):
        assert _login(client, "nobody", f"x{n}").status_code == 400
    response = _login(client, "nobody", "x3")
    assert response.status_code == 429  # the same answer as for a real account
    event = AuditEvent.objects.get(action="auth.locked_out")
    assert event.data["username"] == "nobody" and event.object_id == ""


def test_password_spraying_from_one_address_is_stopped(client, viewer, limits):
    for n in range(4):
        assert _login(client, f"user{n}", "guess", ip="192.0.2.7").status_code == 400
    response = _login(client, "user9", "guess", ip="192.0.2.7")
    assert response.status_code == 429
    assert "Too many failed logins for your address" in response.content.decode()
    # The address is blocked even for a real account with the right password...
    assert _login(client, "vera", PASSWORD, ip="192.0.2.7").status_code == 429
    # ...but the account itself is not locked from elsewhere.
    assert _login(client, "vera", PASSWORD, ip="198.51.100.1").status_code == 302
    assert AuditEvent.objects.get(action="auth.locked_out").data["scope"] == "ip"


def test_the_count_is_shared_across_processes(client, viewer, limits):
    """Failures live in the database: failures recorded by another web process count here."""
    from django.utils import timezone

    LoginAttempt.objects.bulk_create(
        [LoginAttempt(username="vera", client_ip="10.1.1.1", created_at=timezone.now()) for _ in range(3)]
    )
    assert _login(client, "vera", PASSWORD, ip="10.2.2.2").status_code == 429


def test_unlock_login_command(client, viewer, limits):
    for n in range(3):
        _login(client, "vera", f"wrong-{n}")
    assert _login(client, "vera", PASSWORD).status_code == 429
    call_command("unlock_login", "vera")
    assert AuditEvent.objects.filter(action="auth.unlocked", data__username="vera").exists()
    assert _login(client, "vera", PASSWORD).status_code == 302


def test_session_and_password_settings(settings):
    assert settings.SESSION_COOKIE_AGE <= 12 * 3600
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE
    assert settings.SESSION_COOKIE_HTTPONLY
    names = {v["NAME"].rsplit(".", 1)[-1] for v in settings.AUTH_PASSWORD_VALIDATORS}
    assert {"MinimumLengthValidator", "CommonPasswordValidator", "NumericPasswordValidator",
            "UserAttributeSimilarityValidator"} <= names


def test_weak_passwords_are_refused(db):
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    for weak in ("password123", "12345678901234", "short"):
        with pytest.raises(ValidationError):
            validate_password(weak)
    validate_password(PASSWORD)


def test_behind_the_proxy_the_address_is_the_one_the_proxy_added(client, viewer, limits):
    limits.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # The client forges the first entry each time; the proxy appends the real address.
    for n in range(5):
        response = client.post(reverse("login"), {"username": f"u{n}", "password": "x"}, secure=True,
                               HTTP_X_FORWARDED_FOR=f"10.66.0.{n}, 203.0.113.9", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 429
    assert set(LoginAttempt.objects.values_list("client_ip", flat=True)) == {"203.0.113.9"}
    # Garbage in the header does not break anything; REMOTE_ADDR is used instead.
    response = client.post(reverse("login"), {"username": "vera", "password": "x"}, secure=True,
                           HTTP_X_FORWARDED_FOR="not-an-ip", REMOTE_ADDR="127.0.0.2")
    assert response.status_code == 400
    assert LoginAttempt.objects.filter(client_ip="127.0.0.2").exists()
