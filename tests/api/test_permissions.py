"""The API's role matrix: every route of /api/ is walked from the live URLconf; every action of every
view must declare a console permission, and each role gets exactly what console/roles.py says —
through the same `has_permission` the web pages use."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from console.roles import PERMISSIONS, ROLE_PERMISSIONS
from tests.conftest import make_user

ROLE_FIXTURES = {"viewer": "viewer", "operator": "operator", "approver": "approver", "auditor": "auditor",
                 "admin": "admin_user"}
METHODS = ("get", "post", "put", "patch", "delete")


def _walk(patterns, prefix=""):
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route, entry


def api_routes():
    routes = []
    for route, entry in _walk(get_resolver().url_patterns):
        if route.startswith("api/") or route.startswith("^api/"):
            routes.append((route, entry))
    return routes


def rest_routes():
    return [(r, e) for r, e in api_routes() if hasattr(e.callback, "cls")]


def operations():
    """(route, method, permission codename) for every method each REST route serves."""
    ops = []
    for route, entry in rest_routes():
        view = entry.callback
        cls = view.cls
        actions = getattr(view, "actions", None)
        if actions:
            for method, action in actions.items():
                ops.append((route, method, cls.action_permissions.get(action), f"{cls.__name__}.{action}"))
        else:
            for method in METHODS:
                if hasattr(cls, method):
                    ops.append((route, method, cls.method_permissions.get(method.upper()),
                                f"{cls.__name__}.{method}"))
    return ops


def test_the_walk_finds_the_api():
    routes = {r for r, _ in api_routes()}
    assert len(routes) > 20
    for expected in ("api/v1/", "api/schema/", "api/docs/", "api/tokens/"):
        assert expected in routes


def test_every_api_view_declares_its_permissions():
    missing = []
    for route, entry in api_routes():
        permission = getattr(entry.callback, "required_permission", None)
        if permission not in PERMISSIONS:
            missing.append(f"{route} (required_permission={permission!r})")
    for route, method, codename, where in operations():
        if codename not in PERMISSIONS:
            missing.append(f"{method.upper()} {route} → {where} ({codename!r})")
    assert not missing, "API views/actions without a declared console permission: " + "; ".join(missing)


def test_an_undeclared_action_is_refused_not_allowed(admin_user):
    """A view that forgets a decision fails closed (ImproperlyConfigured), never open."""
    from django.core.exceptions import ImproperlyConfigured
    from rest_framework.test import APIRequestFactory, force_authenticate

    from api.viewsets import ConsoleViewSet

    class Forgetful(ConsoleViewSet):
        action_permissions = {"list": "view_fleet"}

        def list(self, request):  # pragma: no cover - not called here
            raise AssertionError("reached")

        def create(self, request):  # pragma: no cover - must never run
            raise AssertionError("reached")

    request = APIRequestFactory().post("/x/")
    force_authenticate(request, user=admin_user)
    with pytest.raises(ImproperlyConfigured):
        Forgetful.as_view({"post": "create", "get": "list"})(request)


@pytest.fixture
def objects(db):
    """Real objects for the {id} of each route (404 would not tell allowed from refused)."""
    from api.tokens import create_token
    from changes.models import ChangeRequest
    from hosts.models import Credential, Hypervisor, Nic, VirtualFunction

    credential = Credential(name="matrix", username="root")
    credential.set_private_key("x", "ssh-ed25519 AAAA matrix", "SHA256:matrix")
    credential.save()
    host = Hypervisor.objects.create(name="hv-matrix", address="127.0.0.1", credential=credential)
    nic = Nic.objects.create(host=host, name="eno49", pci_address="0000:04:00.0", sriov_totalvfs=7)
    vf = VirtualFunction.objects.create(nic=nic, index=0, pci_address="0000:04:10.0")
    requester = make_user("matrix-requester", "operator")
    change = ChangeRequest.objects.create(title="m", reason="m", requested_by=requester)
    token, _ = create_token(requester, "m")
    from audit.services import record

    event = record("host.created", obj=host, host=host)
    return {"hypervisors": host.pk, "nics": nic.pk, "vfs": vf.pk, "credentials": credential.pk,
            "changes": change.pk, "audit-events": event.pk, "tokens": token.pk}


def _url(route, objects):
    path = "/" + route.replace("^", "").replace("$", "")
    if "(?P<pk>" in path:
        collection = path.split("/api/v1/")[1].split("/")[0]
        pk = objects.get(collection, 999999)
        start = path.index("(?P<pk>")
        end = path.index(")", start)
        path = path[:start] + str(pk) + path[end + 1:]
    return path


@pytest.mark.parametrize("role", list(ROLE_FIXTURES))
def test_roles_get_what_the_role_table_says(role, request, objects):
    user = request.getfixturevalue(ROLE_FIXTURES[role])
    client = APIClient()
    client.force_login(user)  # session: the route's rule, not the token-creation rule, is what is tested
    problems = []
    for route, method, codename, where in operations():
        url = _url(route, objects)
        response = getattr(client, method)(url, {}, format="json") if method != "get" else client.get(url)
        allowed = codename in ROLE_PERMISSIONS[role]
        # The role gate's refusal; a service's own 403 (e.g. "only the requester can submit") is not it.
        gate = response.status_code == 403 and response.data["error"]["message"] == (
            f"This needs the {codename!r} permission.")
        if response.status_code >= 500:
            problems.append(f"{method.upper()} {url} ({where}) answered {response.status_code}")
        elif allowed and (gate or response.status_code == 401):
            problems.append(f"{role} has {codename!r} but {method.upper()} {url} gave {response.status_code}: "
                            f"{response.content[:200]!r}")
        elif not allowed and not gate:
            problems.append(f"{role} lacks {codename!r} but {method.upper()} {url} gave {response.status_code}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("role", list(ROLE_FIXTURES))
def test_tokens_carry_the_same_roles(role, request, api_for):
    user = request.getfixturevalue(ROLE_FIXTURES[role])
    api = api_for(user)
    me = api.get("/api/v1/me/").json()
    assert me["roles"] == [role]
    assert set(me["permissions"]) == set(ROLE_PERMISSIONS[role])
    audit = api.get("/api/v1/audit-events/")
    assert audit.status_code == (200 if "audit" in ROLE_PERMISSIONS[role] else 403)
    create = api.post("/api/v1/hypervisors/", {"name": "x", "address": "127.0.0.2"}, format="json")
    assert create.status_code == (201 if "operate" in ROLE_PERMISSIONS[role] else 403)
    creds = api.get("/api/v1/credentials/")
    assert creds.status_code == (200 if "administer" in ROLE_PERMISSIONS[role] else 403)


def test_method_not_served_is_403_before_405_for_the_unentitled(viewer, approver, objects):
    client = APIClient()
    client.force_login(viewer)
    url = f"/api/v1/changes/{objects['changes']}/approve/"
    assert client.get(url).status_code == 403
    client.force_login(approver)
    response = client.get(url)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
