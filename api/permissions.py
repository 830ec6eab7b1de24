"""The API's one permission rule: each action of each view names a console permission codename,
checked with `console.roles.has_permission` — the same table (console/roles.py) the web views and
the services use. Four-eyes and the other business rules stay in the services the views call.

Views declare either

    action_permissions = {"list": "view_fleet", "create": "operate", ...}   # viewsets
    method_permissions = {"GET": "view_fleet", "POST": "operate"}           # APIViews

A request for an action (or method) that is not declared is refused by configuration: a view
cannot be added without a decision (tests/api/test_permissions.py walks every API URL).
An HTTP method the route does not serve is checked against the route's permission first, so a
user without it gets 403 rather than learning which methods exist.
"""

from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions, permissions

from console.roles import PERMISSIONS, has_permission

SAFE_FIRST = ("get", "head", "options")


def _check_codename(view_name: str, codename: str) -> str:
    if codename not in PERMISSIONS:
        raise ImproperlyConfigured(f"{view_name}: unknown console permission {codename!r}")
    return codename


def route_permission(view_class, actions: dict | None = None) -> str | None:
    """The permission a route is known by (what the URL matrix tests read): the one of its GET
    action when it has one, else of its first action."""
    if actions is not None:
        mapping = getattr(view_class, "action_permissions", {})
        ordered = sorted(actions.items(), key=lambda item: (item[0] not in SAFE_FIRST, item[0] != "get"))
        for _method, action in ordered:
            if action in mapping:
                return mapping[action]
        return None
    mapping = getattr(view_class, "method_permissions", {})
    for method in ("GET", *sorted(mapping)):
        if method in mapping:
            return mapping[method]
    return None


def required_codename(request, view) -> str:
    name = type(view).__name__
    actions = getattr(view, "action_map", None)
    if actions is not None:  # a viewset route
        mapping = getattr(view, "action_permissions", None)
        if mapping is None:
            raise ImproperlyConfigured(f"{name} declares no action_permissions")
        action = getattr(view, "action", None)
        if action == "metadata":  # OPTIONS: described with the route's own permission
            action = None
        if action is None:
            codename = route_permission(type(view), actions)
        else:
            codename = mapping.get(action)
        if codename is None:
            raise ImproperlyConfigured(f"{name}: no permission declared for action {action!r}")
        return _check_codename(name, codename)
    mapping = getattr(view, "method_permissions", None)
    if mapping is None:
        raise ImproperlyConfigured(f"{name} declares no method_permissions")
    method = request.method.upper()
    codename = mapping.get(method) or mapping.get("GET" if method in ("HEAD", "OPTIONS") else "")
    if codename is None:
        codename = route_permission(type(view))
    if codename is None:
        raise ImproperlyConfigured(f"{name}: no permission declared for {method}")
    return _check_codename(name, codename)


class ConsolePermission(permissions.BasePermission):
    def has_permission(self, request, view):
        codename = required_codename(request, view)
        user = request.user
        if not (user and user.is_authenticated):
            raise exceptions.NotAuthenticated()
        if not has_permission(user, codename):
            raise exceptions.PermissionDenied(f"This needs the {codename!r} permission.")
        return True


class DeclaredPermissionMixin:
    """Exposes `required_permission` on the view function of each route, like
    console.roles.require_permission does, for the URL/role matrix tests."""

    @classmethod
    def as_view(cls, actions=None, **initkwargs):
        if actions is None:  # APIView
            view = super().as_view(**initkwargs)
            view.required_permission = route_permission(cls)
        else:
            view = super().as_view(actions, **initkwargs)
            view.required_permission = route_permission(cls, actions)
        return view
