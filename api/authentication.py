"""`Authorization: Bearer <token>` for automation (the session, with CSRF, is the browser's).

Token guessing is throttled by client address, like the login (console/security.py): each
refused token is a failure row (console.LoginAttempt, user name TOKEN_FAILURE_NAME) so every web
process sees the same count. From API_TOKEN_IP_FAILURE_LIMIT failures in LOGIN_FAILURE_WINDOW
seconds on, that address gets 429 with Retry-After for every token that does not authenticate;
the moment the lockout starts is audited as `auth.locked_out` (scope "api_token"). A valid token
always authenticates, even from a throttled address: tokens are 256-bit random, so the throttle
is about noise and detection, and a broken job behind a shared NAT must not lock out the rest.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from console.middleware import client_ip
from console.models import LoginAttempt

from .tokens import authenticate_token

# Not a possible user name (spaces and <> are refused by Django's user name validator).
TOKEN_FAILURE_NAME = "<api token>"


def _window() -> timedelta:
    return timedelta(seconds=int(settings.LOGIN_FAILURE_WINDOW))


def _recent_failures(ip: str, now) -> list:
    """Times of the newest failures of this address in the window (at most the limit)."""
    limit = int(settings.API_TOKEN_IP_FAILURE_LIMIT)
    return list(
        LoginAttempt.objects.filter(username=TOKEN_FAILURE_NAME, client_ip=ip, created_at__gt=now - _window())
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )


def throttled_for(ip: str | None, now=None) -> int | None:
    """Seconds until this address may try tokens again, or None when it is not throttled."""
    limit = int(settings.API_TOKEN_IP_FAILURE_LIMIT)
    if not ip or limit <= 0:
        return None
    now = now or timezone.now()
    recent = _recent_failures(ip, now)
    if len(recent) < limit:
        return None
    return max(1, int((recent[-1] + _window() - now).total_seconds()))


def register_token_failure(ip: str | None) -> None:
    """Count one refused token; audit `auth.locked_out` when it starts the lockout."""
    from audit.services import record

    if not ip:
        return
    now = timezone.now()
    with transaction.atomic():
        LoginAttempt.objects.create(username=TOKEN_FAILURE_NAME, client_ip=ip, created_at=now)
        retry_after = throttled_for(ip, now)
        if retry_after is not None:
            record(
                "auth.locked_out",
                actor_name="anonymous",
                data={
                    "scope": "api_token",
                    "client_ip": ip,
                    "failures": int(settings.API_TOKEN_IP_FAILURE_LIMIT),
                    "window_seconds": int(_window().total_seconds()),
                    "locked_for_seconds": retry_after,
                },
            )


class TokenGuessingThrottled(exceptions.Throttled):
    default_detail = "Too many refused API tokens from your address."


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        parts = header.split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None  # another scheme (e.g. Basic): not ours
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Send 'Authorization: Bearer <token>' with exactly one token."
            )
        try:
            text = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token contains invalid characters.") from None
        token = authenticate_token(text)
        if token is None:
            self._refuse(request)
        return token.user, token

    def _refuse(self, request):
        ip = client_ip(request)
        retry_after = throttled_for(ip)
        if retry_after is None:
            register_token_failure(ip)
            raise exceptions.AuthenticationFailed("The token is unknown, revoked or expired.")
        raise TokenGuessingThrottled(
            wait=retry_after,
            detail=f"Too many refused API tokens from your address; try again in {retry_after} s.",
        )

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A personal API token (docs/api.md)."}
