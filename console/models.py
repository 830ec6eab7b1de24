from django.db import models

from .role_table import PERMISSIONS


class ConsolePermission(models.Model):
    """Holds the role permissions (no table): `console.view_fleet`, `console.operate`, ..."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = list(PERMISSIONS.items())

    def __str__(self):
        return "console permissions"


class LoginAttempt(models.Model):
    """A failed login, kept in the database so every web process sees the same count
    (console/security.py: lockout by user name and by client address)."""

    username = models.CharField(max_length=150, db_index=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.username} from {self.client_ip or '?'}"


class OutboxMessage(models.Model):
    """A Celery message the broker did not take (console/dispatch.py); beat sends it again."""

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    due_at = models.DateTimeField(db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.task}{tuple(self.args)} (attempts {self.attempts})"
