"""Roles are Django groups; each view and task entry point names the one permission it needs.

The groups and their permissions are created by console/migrations/0002_roles.py from the
table below, so the table is the single statement of who may do what (docs/security.md).
"""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

PERMISSIONS = {
    "view_fleet": "Can view the dashboard, hosts and changes",
    "operate": "Can manage hosts, run discovery and request changes",
    "approve": "Can approve or reject changes requested by others",
    "audit": "Can review and export the audit history",
    "administer": "Can manage credentials, host-key trust and users",
}

ROLE_PERMISSIONS = {
    "viewer": ["view_fleet"],
    "operator": ["view_fleet", "operate"],
    "approver": ["view_fleet", "approve"],
    "auditor": ["view_fleet", "audit"],
    "admin": ["view_fleet", "operate", "approve", "audit", "administer"],
}

ROLES = tuple(ROLE_PERMISSIONS)


def has_permission(user, codename: str) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.has_perm(f"console.{codename}"))


def check_permission(user, codename: str) -> None:
    """For services and task entry points: raise PermissionDenied unless the user holds it."""
    if codename not in PERMISSIONS:
        raise ValueError(f"unknown permission {codename!r}")
    if not has_permission(user, codename):
        raise PermissionDenied(f"this needs the {codename!r} permission")


def require_permission(codename: str):
    """View decorator: anonymous → login page; authenticated without the permission → 403.

    The decorated view carries `required_permission`, which the URL/role matrix test reads so
    that no view can be added without a decision.
    """
    if codename not in PERMISSIONS:
        raise ValueError(f"unknown permission {codename!r}")

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_permission(request.user, codename):
                raise PermissionDenied(f"this page needs the {codename!r} permission")
            return view(request, *args, **kwargs)

        wrapped.required_permission = codename
        return wrapped

    return decorator


def user_roles(user) -> list[str]:
    if not user.is_authenticated:
        return []
    return sorted(group.name for group in user.groups.all() if group.name in ROLE_PERMISSIONS)
