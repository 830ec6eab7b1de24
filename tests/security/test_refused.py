"""Refused requests: a 403 or 404 page in the site layout with the reason, one log line instead of
a traceback, and every refused attempt of a signed-in user audited as `access.denied` (actor,
action, object, reason), from a role check, a service's rule (approving one's own change) or the API.
"""

import logging

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from changes import services
from changes.models import ChangeRequest
from tests.api.conftest import bearer_client, error_of
from tests.audit.helpers import the_event
from tests.changes.conftest import change_data, make_credential, make_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def host(db):
    return make_host("hv-refused", credential=make_credential(), nics=[("eno49", "0000:04:00.0", 0)])


@pytest.fixture
def own_submitted_change(host, admin_user, django_capture_on_commit_callbacks):
    """A change the admin (who holds `approve` too) requested and submitted."""
    change = services.create_change(change_data([host.pk]), admin_user)
    services.submit_change(change.pk, admin_user)
    change.refresh_from_db()
    return change


def denied(**filters):
    return list(AuditEvent.objects.filter(action="access.denied", **filters).order_by("id"))


def request_logs(caplog):
    return [r for r in caplog.records if r.name in ("django.request", "console.access")]


def test_role_check_refusal_is_a_page_with_navigation_and_the_reason(client_for, viewer, host, caplog):
    client = client_for(viewer)
    with caplog.at_level(logging.INFO):
        response = client.get(reverse("hosts:edit", args=[host.pk]))
    assert response.status_code == 403
    body = response.content.decode()
    assert '<header class="topbar">' in body and f'href="{reverse("hosts:list")}">Hosts</a>' in body
    assert "Not allowed" in body
    assert "this page needs the &#x27;operate&#x27; permission" in body
    assert "operator and admin roles" in body and "viewer" in body  # who may, and what you are

    # One line, with the reason, and no traceback.
    logs = request_logs(caplog)
    assert len(logs) == 1, [r.getMessage() for r in logs]
    assert logs[0].exc_info is None
    assert logs[0].getMessage() == (
        f"Forbidden: GET /hosts/{host.pk}/edit/ by vera: this page needs the 'operate' permission "
        "(can manage hosts, run discovery and request changes), which the operator and admin roles have"
    )


def test_a_post_by_a_role_without_the_permission_is_audited_with_the_object(client_for, viewer, host):
    response = client_for(viewer).post(reverse("hosts:refresh", args=[host.pk]))
    assert response.status_code == 403
    event = the_event("access.denied", actor_name="vera")
    assert event.object_type == "hosts.hypervisor" and event.object_id == str(host.pk)
    assert event.object_repr == host.name and event.host_id == host.pk  # on the host's timeline
    assert event.data["method"] == "POST" and event.data["view"] == "hosts:refresh"
    assert event.data["path"] == f"/hosts/{host.pk}/refresh/" and event.data["via"] == "web"
    assert "needs the 'operate' permission" in event.data["reason"]
    assert event.client_ip == "127.0.0.1" and event.request_id


def test_approving_ones_own_change_on_the_page_is_refused_audited_and_explained(
    client_for, admin_user, own_submitted_change, caplog
):
    change = own_submitted_change
    client = client_for(admin_user)
    with caplog.at_level(logging.INFO):
        response = client.post(reverse("changes:approve", args=[change.pk]), {
            "plan_hash": change.plan_hash, "approval_hash": "x" * 64, "comment": "mine, lgtm",
        })
    assert response.status_code == 403
    assert "Refused: you requested this change; someone else must approve or reject it." in response.content.decode()
    assert ChangeRequest.objects.get(pk=change.pk).state == "submitted"
    event = the_event("access.denied", change_id=change.pk)
    assert event.actor_name == "ada" and event.object_type == "changes.changerequest"
    assert event.data["view"] == "changes:approve" and "you requested this change" in event.data["reason"]
    assert all(r.exc_info is None for r in request_logs(caplog))
    assert len(request_logs(caplog)) == 1


def test_self_approval_through_the_api_is_audited_too(admin_user, own_submitted_change, caplog):
    change = own_submitted_change
    api = bearer_client(admin_user)
    with caplog.at_level(logging.INFO):
        response = api.post(f"/api/v1/changes/{change.pk}/approve/",
                            {"plan_hash": change.plan_hash, "approval_hash": "x" * 64}, format="json")
    assert response.status_code == 403
    assert "you requested this change" in error_of(response)["message"]
    event = the_event("access.denied", change_id=change.pk)
    assert event.actor_name == "ada" and event.object_id == str(change.pk)
    assert event.data["via"] == "api" and event.data["method"] == "POST"
    assert "you requested this change" in event.data["reason"]
    logs = request_logs(caplog)
    assert len(logs) == 1 and logs[0].exc_info is None, [r.getMessage() for r in logs]


def test_the_api_role_gate_is_audited(host):
    from tests.conftest import make_user

    api = bearer_client(make_user("vic", "viewer"))
    response = api.post(f"/api/v1/hypervisors/{host.pk}/discover/", format="json")
    assert response.status_code == 403
    event = the_event("access.denied", actor_name="vic")
    assert event.host_id == host.pk and event.object_type == "hosts.hypervisor"
    assert event.data["via"] == "api" and event.data["view"] == "api:hypervisor-discover"
    assert event.data["reason"] == "This needs the 'operate' permission."


def test_anonymous_requests_are_not_audited(client, host):
    response = client.post(reverse("hosts:refresh", args=[host.pk]))
    assert response.status_code == 302
    assert denied() == []


def test_a_missing_object_is_a_404_page_that_names_it(client_for, viewer, caplog):
    client = client_for(viewer)
    response = client.get(reverse("hosts:detail", args=[987654]))
    assert response.status_code == 404
    body = response.content.decode()
    assert '<header class="topbar">' in body and "Not found" in body
    assert "There is no hypervisor #987654: it may have been deleted, or the link is wrong." in body

    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "There is no page at <span class=\"mono\">/no/such/page/</span>" in response.content.decode()
    assert denied() == []


def test_the_favicon_is_served(client):
    from django.contrib.staticfiles import finders

    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/console/favicon.svg"
    assert "<svg" in open(finders.find("console/favicon.svg")).read()
