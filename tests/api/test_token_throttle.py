"""Bearer-token guessing is throttled by client address, like the login: after
API_TOKEN_IP_FAILURE_LIMIT refused tokens the address gets 429 (audited once as auth.locked_out);
a valid token still works from that address, and other addresses are not affected."""

from datetime import timedelta

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from api.tokens import create_token
from audit.models import AuditEvent
from console.models import LoginAttempt

pytestmark = pytest.mark.django_db

GUESSES = 30


def bearer(text, ip="198.51.100.7"):
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


def guess(n, ip="198.51.100.7"):
    return bearer(f"srio_guess{n:04d}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", ip).get("/api/v1/hypervisors/")


def test_thirty_bad_tokens_from_one_address_are_throttled_and_the_lockout_audited(operator):
    limit = settings.API_TOKEN_IP_FAILURE_LIMIT
    assert 0 < limit < GUESSES
    answers = [guess(n) for n in range(GUESSES)]
    codes = [r.status_code for r in answers]
    assert codes == [401] * limit + [429] * (GUESSES - limit)
    throttled = answers[-1]
    assert int(throttled["Retry-After"]) > 0
    assert throttled.json()["error"]["code"] == "throttled"
    assert "Too many refused API tokens" in throttled.json()["error"]["message"]
    locked = AuditEvent.objects.filter(action="auth.locked_out")
    assert locked.count() == 1  # the moment the lockout started, not every refused request
    event = locked.get()
    assert event.data["scope"] == "api_token" and event.data["client_ip"] == "198.51.100.7"
    assert event.client_ip == "198.51.100.7" and event.actor_name == "anonymous"

    # A valid token still works from the throttled address; another address is not throttled.
    _token, text = create_token(operator, "ci")
    assert bearer(text).get("/api/v1/hypervisors/").status_code == 200
    assert guess(999, ip="203.0.113.9").status_code == 401


def test_the_throttle_ends_when_the_failures_leave_the_window(operator):
    limit = settings.API_TOKEN_IP_FAILURE_LIMIT
    for n in range(limit):
        guess(n)
    assert guess(limit).status_code == 429
    # Time passes: the failures age out of the window.
    window = timedelta(seconds=settings.LOGIN_FAILURE_WINDOW + 1)
    for attempt in LoginAttempt.objects.all():
        attempt.created_at -= window
        attempt.save(update_fields=["created_at"])
    assert guess(limit + 1).status_code == 401
