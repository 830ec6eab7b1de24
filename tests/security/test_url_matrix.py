"""Every URL pattern, every role: anonymous → login, each role → allowed or 403 per console/roles.py.

The patterns are read from the live URLconf (`get_resolver()`), so a view added anywhere is tested
the day it lands. A view without a decision (`required_permission`, set by
`console.roles.require_permission`) fails `test_every_view_has_a_decision` with its URL name;
the only exceptions are listed in PUBLIC_VIEWS below, and the Django admin site (its own login,
is_staff and model permissions).
"""

import uuid
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter, PathConverter, SlugConverter, StringConverter, UUIDConverter

from console.roles import PERMISSIONS, ROLE_PERMISSIONS

# Views that anyone may reach, on purpose.
PUBLIC_VIEWS = {
    "login",
    "logout",
    "favicon",  # browsers ask for it before logging in
    # OpenID Connect: starting the flow and the provider's redirect back happen before any login
    # (state, nonce and PKCE verifier in the session protect them); 404 while OIDC is off.
    "accounts:oidc_login",
    "accounts:oidc_callback",
    # Prometheus scrapes without a session: a bearer token or an allowed address (its own rule,
    # tested in tests/metrics/ and below).
    "metrics",
}
ADMIN_NAMESPACE = "admin"
# REST API routes (api/urls.py): machine clients get 401 + WWW-Authenticate instead of a login page.
API_PREFIXES = ("api/v1/", "api/schema/")
# Views that add an object-level rule on top of the role permission, so a role holding the
# permission may still get 403 for the sample object (roles without it must still get 403).
OBJECT_LEVEL_RULES = {
    "changes:edit": "only the requester may edit a change (the sample change is someone else's)",
}

ROLE_FIXTURES = {
    "viewer": "viewer",
    "operator": "operator",
    "approver": "approver",
    "auditor": "auditor",
    "admin": "admin_user",
}


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or the route itself when unnamed
    route: str
    callback: object
    converters: tuple  # (kwarg name, converter instance)
    regex_groups: tuple  # named groups of regex patterns (admin)
    namespace: str

    @property
    def reversible(self) -> bool:
        return ":" in self.name or self.name.isidentifier()


def _walk(patterns, prefix="", namespace="", converters=(), regex_groups=()):
    for entry in patterns:
        pattern = entry.pattern
        conv = tuple(getattr(pattern, "converters", {}).items())
        groups = tuple(pattern.regex.groupindex) if not conv else ()
        route = prefix + str(pattern)
        if isinstance(entry, URLResolver):
            ns = namespace
            if entry.namespace:
                ns = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
            yield from _walk(entry.url_patterns, route, ns, converters + conv, regex_groups + groups)
        elif isinstance(entry, URLPattern):
            name = entry.name
            full = (f"{namespace}:{name}" if namespace else name) if name else route
            yield Route(full, route, entry.callback, converters + conv, regex_groups + groups, namespace)


def all_routes() -> list[Route]:
    routes, seen = [], set()
    for route in _walk(get_resolver().url_patterns):
        if route.name in seen:  # the same name twice (e.g. with and without a trailing part): first wins
            continue
        seen.add(route.name)
        routes.append(route)
    return routes


def required_permission(callback):
    """The decision a view carries: function views via require_permission, class views on the class."""
    permission = getattr(callback, "required_permission", None)
    if permission is None:
        permission = getattr(getattr(callback, "view_class", None), "required_permission", None)
    return permission


def is_admin(route: Route) -> bool:
    return route.namespace.split(":")[0] == ADMIN_NAMESPACE


def app_routes() -> list[Route]:
    return [r for r in all_routes() if not is_admin(r)]


# --------------------------------------------------------------------------------------------
# Sample arguments for a URL
# --------------------------------------------------------------------------------------------

def _object_for(name: str, objects: dict):
    """Which fixture object an <int:pk> of this URL most likely means."""
    app, _, view = name.partition(":")
    if app == "hosts":
        if view.startswith("nic"):
            return objects.get("nic")
        if view.startswith("vf"):
            return objects.get("vf")
        if view.startswith("credential"):
            return objects.get("credential")
        return objects.get("host")
    if app == "changes":
        return objects.get("change")
    if app == "audit":
        return objects.get("audit_event")
    if app == "notifications":
        return objects.get("webhook")
    return None


def sample_kwargs(route: Route, objects: dict) -> dict:
    kwargs = {}
    obj = _object_for(route.name, objects)
    for key, converter in route.converters:
        if isinstance(converter, IntConverter):
            kwargs[key] = obj.pk if obj is not None else 1
        elif isinstance(converter, UUIDConverter):
            kwargs[key] = uuid.uuid4()
        elif isinstance(converter, SlugConverter | StringConverter | PathConverter):
            kwargs[key] = str(obj.pk) if obj is not None and key in ("pk", "id") else "sample"
        else:  # a custom converter: its regex decides; try a number first
            kwargs[key] = obj.pk if obj is not None else 1
    for key in route.regex_groups:
        kwargs[key] = "auth" if key == "app_label" else "1"
    return kwargs


def url_of(route: Route, objects: dict) -> str:
    return reverse(route.name, kwargs=sample_kwargs(route, objects))


@pytest.fixture
def sample_objects(sample_objects, db):
    """The shared sample objects plus a webhook, for the notifications pages."""
    from notifications.models import Topic
    from notifications.services import create_webhook
    from tests.conftest import make_user

    admin = make_user("sample-webhook-admin", "admin")
    webhook, _secret = create_webhook(
        {"name": "sample-hook", "url": "https://hooks.example.test/services/T0/B0/sample-path-secret",
         "payload_format": "json", "topics": [Topic.APPROVAL_NEEDED], "enabled": True},
        admin,
    )
    return dict(sample_objects, webhook=webhook)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def test_the_walk_finds_the_known_views():
    names = {r.name for r in all_routes()}
    for expected in ("dashboard", "login", "logout", "hosts:credentials", "hosts:key", "hosts:key_accept",
                     "admin:index", "accounts:profile", "accounts:oidc_login", "accounts:oidc_callback",
                     "notifications:webhooks", "notifications:webhook", "notifications:deliveries", "metrics"):
        assert expected in names


def test_every_view_has_a_decision():
    missing = []
    for route in app_routes():
        permission = required_permission(route.callback)
        if route.name in PUBLIC_VIEWS:
            assert permission is None, f"{route.name} is listed as public but requires {permission!r}"
            continue
        if permission is None:
            missing.append(f"{route.name} ({route.route})")
        else:
            assert permission in PERMISSIONS, f"{route.name}: unknown permission {permission!r}"
    assert not missing, (
        "views without a role decision (decorate with console.roles.require_permission, or list in "
        f"PUBLIC_VIEWS with a reason): {', '.join(missing)}"
    )


PROTECTED = [r for r in app_routes() if r.name not in PUBLIC_VIEWS]


def _login_url():
    return reverse("login")


def _is_login_redirect(response, login_url) -> bool:
    return response.status_code in (301, 302, 303) and response["Location"].startswith(login_url)


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: r.name)
def test_anonymous_is_sent_to_login(route, client, sample_objects):
    url = url_of(route, sample_objects)
    response = client.get(url)
    if route.route.startswith(API_PREFIXES):  # the REST API answers 401, not a redirect (docs/api.md)
        assert response.status_code == 401, (
            f"{route.name}: anonymous got {response.status_code}, expected 401"
        )
        return
    if response.status_code == 405:  # POST-only view: the method check comes first; ask with POST
        response = client.post(url)
    assert _is_login_redirect(response, _login_url()), (
        f"{route.name}: anonymous got {response.status_code}, expected a redirect to the login page"
    )


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: r.name)
def test_roles_get_what_the_role_table_says(route, request, sample_objects):
    permission = required_permission(route.callback)
    if permission is None:
        pytest.fail(f"{route.name} has no required_permission (see test_every_view_has_a_decision)")
    url = url_of(route, sample_objects)
    problems = []
    for role, fixture in ROLE_FIXTURES.items():
        user = request.getfixturevalue(fixture)
        client = Client()
        client.force_login(user)
        allowed = permission in ROLE_PERMISSIONS[role]
        response = client.get(url)
        if response.status_code == 405 and not allowed:
            # POST-only: a role without the permission must be refused before anything happens.
            response = client.post(url)
        if allowed and response.status_code == 403 and route.name not in OBJECT_LEVEL_RULES:
            problems.append(f"{role} needs {permission!r} access to {route.name} but got 403")
        if not allowed and response.status_code != 403:
            problems.append(f"{role} lacks {permission!r} yet got {response.status_code} from {route.name}")
        assert response.status_code < 500, f"{role}: {route.name} answered {response.status_code}"
    assert not problems, "; ".join(problems)


def test_public_views_answer_anonymous(client, settings, db):
    assert client.get(reverse("login")).status_code == 200
    # OIDC is off in this configuration: its two endpoints do not exist.
    settings.OIDC_ENABLED = False
    assert client.get(reverse("accounts:oidc_login")).status_code == 404
    assert client.get(reverse("accounts:oidc_callback")).status_code == 404
    # /metrics: refused without a token from an address that is not allowed, whatever the session.
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_TOKEN = "matrix-metrics-token-0123456789"
    assert client.get(reverse("metrics")).status_code == 403
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").status_code == 200
    # Logging out is POST-only (Django 5); anonymous logout just lands on the login page.
    response = client.post(reverse("logout"))
    assert response.status_code in (200, 302)


@pytest.mark.parametrize("name", ["admin:index", "admin:auth_user_changelist", "admin:password_change"])
def test_admin_uses_its_own_login(name, client, viewer):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    # A console user without is_staff does not get into the admin site either.
    client.force_login(viewer)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_every_role_is_tested():
    assert set(ROLE_FIXTURES) == set(ROLE_PERMISSIONS)
