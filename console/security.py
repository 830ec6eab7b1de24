"""Login throttling: lock an account, or a client address, out after repeated failed logins.

Failures are rows of `console.LoginAttempt` in the database, so every web process (gunicorn
workers on several machines) sees the same count. A login is refused, without even checking the
password, while either

* the user name has `LOGIN_FAILURE_LIMIT` failures in the last `LOGIN_FAILURE_WINDOW` seconds, or
* the client address has `LOGIN_IP_FAILURE_LIMIT` failures in that window (password spraying
  across many user names from one place).

The lockout ends by itself when the failures age out of the window; a successful login clears
the user name's failures; `manage.py unlock_login <username>` clears them at once. The moment a
lockout starts is audited as `auth.locked_out` (docs/security.md).
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .middleware import client_ip
from .models import LoginAttempt

USERNAME_MAX = 150


def _limit() -> int:
    return int(getattr(settings, "LOGIN_FAILURE_LIMIT", 5))


def _ip_limit() -> int:
    return int(getattr(settings, "LOGIN_IP_FAILURE_LIMIT", 50))


def _window() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "LOGIN_FAILURE_WINDOW", 900)))


def _clean_username(username: str) -> str:
    return (username or "").strip()[:USERNAME_MAX]


@dataclass(frozen=True)
class Lockout:
    scope: str  # "username" or "ip"
    failures: int
    retry_after: int  # seconds until the oldest counted failure leaves the window

    @property
    def minutes(self) -> int:
        return max(1, -(-self.retry_after // 60))


def _lockout_for(queryset, limit: int, scope: str, now) -> Lockout | None:
    if limit <= 0:
        return None
    recent = list(queryset.filter(created_at__gt=now - _window()).order_by("-created_at")
                  .values_list("created_at", flat=True)[:limit])
    if len(recent) < limit:
        return None
    # Locked until the limit-th most recent failure leaves the window.
    release = recent[-1] + _window()
    retry_after = max(1, int((release - now).total_seconds()))
    return Lockout(scope=scope, failures=len(recent), retry_after=retry_after)


def lockout_status(username: str, ip: str | None, *, now=None) -> Lockout | None:
    """The lockout that applies to this user name or address now, if any."""
    now = now or timezone.now()
    username = _clean_username(username)
    locked = _lockout_for(LoginAttempt.objects.filter(username=username), _limit(), "username", now)
    if locked is None and ip:
        locked = _lockout_for(LoginAttempt.objects.filter(client_ip=ip), _ip_limit(), "ip", now)
    return locked


def register_failure(username: str, ip: str | None) -> Lockout | None:
    """Count one failed login; when it starts a lockout, audit `auth.locked_out` and return it."""
    from audit.services import record

    username = _clean_username(username)
    now = timezone.now()
    with transaction.atomic():
        LoginAttempt.objects.create(username=username, client_ip=ip or None, created_at=now)
        # Keep the table small: nothing older than the window matters any more.
        LoginAttempt.objects.filter(created_at__lt=now - 2 * _window()).delete()
        locked = lockout_status(username, ip, now=now)
        if locked is not None:
            user = get_user_model().objects.filter(username=username).first()
            record(
                "auth.locked_out",
                actor_name="anonymous",
                obj=user,
                data={
                    "username": username,
                    "scope": locked.scope,
                    "failures": locked.failures,
                    "window_seconds": int(_window().total_seconds()),
                    "locked_for_seconds": locked.retry_after,
                },
            )
    return locked


def clear_failures(username: str) -> int:
    """Forget a user name's failed logins (after a successful login, or by an administrator)."""
    deleted, _ = LoginAttempt.objects.filter(username=_clean_username(username)).delete()
    return deleted


def lockout_message(locked: Lockout) -> str:
    what = "this account" if locked.scope == "username" else "your address"
    return (
        f"Too many failed logins for {what}. Logging in is blocked for about {locked.minutes} "
        f"minute{'s' if locked.minutes != 1 else ''}; an administrator can lift it sooner "
        "(manage.py unlock_login)."
    )


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing locked-out user names and addresses before the password
    is checked (so a lockout says nothing about whether the password was right)."""

    locked_out: Lockout | None = None

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password:
            return self.cleaned_data
        ip = client_ip(self.request) if self.request is not None else None
        locked = lockout_status(username, ip)
        if locked is not None:
            self.locked_out = locked
            raise ValidationError(lockout_message(locked), code="locked_out")
        try:
            cleaned = super().clean()
        except ValidationError as exc:
            if getattr(exc, "code", None) in ("invalid_login", "inactive"):
                self.locked_out = register_failure(username, ip)
                if self.locked_out is not None:
                    raise ValidationError(
                        [exc.messages[0], lockout_message(self.locked_out)], code="locked_out"
                    ) from None
            raise
        clear_failures(username)
        return cleaned


class ThrottledLoginView(LoginView):
    """The `login` URL: 400 for a wrong user name or password, 429 while locked out."""

    form_class = ThrottledAuthenticationForm
    redirect_authenticated_user = False

    def form_invalid(self, form):
        response = super().form_invalid(form)
        locked = getattr(form, "locked_out", None)
        if locked is not None:
            response.status_code = 429
            response["Retry-After"] = str(locked.retry_after)
        else:
            response.status_code = 400
        return response
