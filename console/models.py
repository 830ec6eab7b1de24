from django.db import models

from .roles import PERMISSIONS


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
