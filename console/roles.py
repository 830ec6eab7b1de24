"""Roles are Django groups; each view and task entry point names the one permission it needs.

The groups and their permissions are created by console/migrations/0002_roles.py from the
table below, so the table is the single statement of who may do what (docs/security.md).
"""

import logging
from functools import wraps

from django.apps import apps
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError

from .role_table import PERMISSIONS, ROLE_PERMISSIONS

ROLES = tuple(ROLE_PERMISSIONS)

DENIED_ACTION = "access.denied"
access_log = logging.getLogger("console.access")


def has_permission(user, codename: str) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.has_perm(f"console.{codename}"))


def roles_with(codename: str) -> list[str]:
    return [role for role, codenames in ROLE_PERMISSIONS.items() if codename in codenames]


def missing_permission_message(codename: str, what: str = "this") -> str:
    """Why a role check refused, in words a person can act on (shown on the 403 page, audited)."""
    return (f"{what} needs the {codename!r} permission ({PERMISSIONS[codename].lower()}), "
            f"which the {' and '.join(roles_with(codename))} roles have")


def check_permission(user, codename: str) -> None:
    """For services and task entry points: raise PermissionDenied unless the user holds it."""
    if codename not in PERMISSIONS:
        raise ValueError(f"unknown permission {codename!r}")
    if not has_permission(user, codename):
        raise PermissionDenied(missing_permission_message(codename))


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
                raise PermissionDenied(missing_permission_message(codename, "this page"))
            return view(request, *args, **kwargs)

        wrapped.required_permission = codename
        return wrapped

    return decorator


def user_roles(user) -> list[str]:
    if not user.is_authenticated:
        return []
    return sorted(group.name for group in user.groups.all() if group.name in ROLE_PERMISSIONS)


# --------------------------------------------------------------------------------------------
# Refused attempts: audited (who tried what on which object, and why it was refused)
# --------------------------------------------------------------------------------------------

# (URL namespace, url-name prefix, model): which object the <pk> of a web URL names. First match wins.
URL_OBJECTS = (
    ("hosts", "nic", "hosts.Nic"),
    ("hosts", "credential", "hosts.Credential"),
    ("hosts", "", "hosts.Hypervisor"),
    ("changes", "step", "changes.Step"),
    ("changes", "", "changes.ChangeRequest"),
    ("audit", "", "audit.AuditEvent"),
    ("api", "token", "api.ApiToken"),
)


def url_object_model(resolver_match):
    """The model whose primary key the URL's `pk` is, or None (unknown URL, no pk)."""
    if resolver_match is None or "pk" not in resolver_match.kwargs:
        return None
    namespace, url_name = resolver_match.namespace, resolver_match.url_name or ""
    for space, prefix, label in URL_OBJECTS:
        if namespace == space and url_name.startswith(prefix):
            try:
                return apps.get_model(label)
            except LookupError:  # an app not installed in this deployment
                return None
    return None


def _denied_object(model, pk):
    if model is None or pk in (None, ""):
        return None
    try:
        return model._default_manager.filter(pk=pk).first()
    except (ValueError, TypeError, DatabaseError):
        return None


def _timelines(obj) -> dict:
    """host= / change= for record(), so the attempt shows on the host's or change's timeline."""
    label = obj._meta.label_lower if obj is not None else ""
    if label == "hosts.hypervisor":
        return {"host": obj}
    if label == "changes.changerequest":
        return {"change": obj}
    host = getattr(obj, "host", None)
    return {"host": host} if label and host is not None and host._meta.label_lower == "hosts.hypervisor" else {}


def record_denied(request, reason: str, *, model=None, pk=None, via: str = "web") -> None:
    """Audit a refused request (`access.denied`) and log it as one line.

    Only signed-in users are recorded: they are accountable, and an anonymous client cannot make
    the console write audit events by asking for forbidden URLs (it gets the login page or a 401).
    `model`/`pk`: the object the request was about; by default read from the URL (URL_OBJECTS).
    """
    user = getattr(request, "user", None)
    match = getattr(request, "resolver_match", None)
    view = match.view_name if match is not None else ""
    who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    access_log.warning("Forbidden: %s %s by %s: %s", request.method, request.path, who, reason or "no reason given")
    if user is None or not user.is_authenticated:
        return
    if model is None:
        model = url_object_model(match)
        pk = match.kwargs.get("pk") if match is not None else None
    obj = _denied_object(model, pk)
    data = {"method": request.method, "path": request.path[:300], "view": view, "via": via,
            "reason": (reason or "")[:500]}
    if obj is None and pk not in (None, ""):
        data["object_id"] = str(pk)[:64]
    from audit.services import record

    try:
        record(DENIED_ACTION, actor=user, obj=obj, data=data, request=request, **_timelines(obj))
    except DatabaseError:
        access_log.exception("could not audit the refused request %s %s", request.method, request.path)
