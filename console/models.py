from django.db import models

from .roles import PERMISSIONS


class ConsolePermission(models.Model):
    """Holds the role permissions (no table): `console.view_fleet`, `console.operate`, ..."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = list(PERMISSIONS.items())
