"""Authentication events: log in, log out, failed log in (connected in AuditConfig.ready)."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from .services import record


@receiver(user_logged_in, dispatch_uid="audit.auth.login")
def on_login(sender, request, user, **kwargs):
    record("auth.login", actor=user, obj=user, request=request)


@receiver(user_logged_out, dispatch_uid="audit.auth.logout")
def on_logout(sender, request, user, **kwargs):
    if user is None:  # logging out without a session: nothing happened
        return
    record("auth.logout", actor=user, obj=user, request=request)


@receiver(user_login_failed, dispatch_uid="audit.auth.login_failed")
def on_login_failed(sender, credentials, request=None, **kwargs):
    # `credentials` is already cleansed by Django; keep only the name that was tried.
    username = str(credentials.get("username", ""))[:150]
    record("auth.login_failed", actor_name="anonymous", request=request, data={"username": username})
