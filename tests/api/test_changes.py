"""Changes through the API: the four-eyes rule and the state machine are the services' — the API
cannot get around them (a requester cannot approve their own change, not even an admin)."""

import pytest

from audit.models import AuditEvent
from changes.models import ChangeRequest
from tests.changes.conftest import make_credential, make_host

from .conftest import error_of

pytestmark = pytest.mark.django_db

SET_VFS = [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4, "persist": True}]


@pytest.fixture
def host(db):
    return make_host("hv-a", credential=make_credential(), nics=[("eno49", "0000:04:00.0", 0)])


def change_body(host_ids, **extra):
    body = {"title": "VFs for rack 12", "reason": "guests need SR-IOV", "targets": {"host_ids": host_ids},
            "operations": SET_VFS, "policy": {"parallelism": 2, "canary_count": 1, "max_failures": 1}}
    body.update(extra)
    return body


def create_and_submit(api, host):
    response = api.post("/api/v1/changes/", change_body([host.pk]), format="json")
    assert response.status_code == 201, response.content
    change = response.json()
    assert change["state"] == "draft" and not change["plan_blocked"]
    assert change["policy"]["parallelism"] == 2 and change["policy"]["canary_count"] == 1
    assert [item["host_name"] for item in change["plan"]] == ["hv-a"]
    response = api.post(f"/api/v1/changes/{change['id']}/submit/", format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "submitted"
    return response.json()


def test_requester_cannot_approve_through_the_api_but_a_second_person_can(host, admin_user, approver, api_for):
    admin = api_for(admin_user)  # has operate AND approve: only the four-eyes rule stops them
    change = create_and_submit(admin, host)
    plan = admin.get(f"/api/v1/changes/{change['id']}/plan/").json()
    assert plan["plan_hash"] == change["plan_hash"] and plan["items"][0]["host"] == host.pk

    response = admin.post(f"/api/v1/changes/{change['id']}/approve/",
                          {"plan_hash": plan["plan_hash"], "approval_hash": change["approval_hash"],
                           "comment": "lgtm"}, format="json")
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "permission_denied"
    assert "you requested this change" in error["message"]
    assert ChangeRequest.objects.get(pk=change["id"]).state == "submitted"
    assert not AuditEvent.objects.filter(action="change.approved").exists()

    second = api_for(approver)
    response = second.post(f"/api/v1/changes/{change['id']}/approve/",
                           {"plan_hash": plan["plan_hash"], "approval_hash": change["approval_hash"],
                            "comment": "checked the plan"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "scheduled"
    assert body["approvals_in"] == 1 and body["host_count"] == 1
    assert [(a["user"], a["decision"]) for a in body["approvals"]] == [("anna", "approve")]
    assert len(body["rollouts"]) == 1
    event = AuditEvent.objects.get(action="change.approved")
    assert event.actor_name == "anna" and event.change_id == change["id"]


def test_operator_without_approve_is_refused_by_the_role_gate(host, operator, api_for):
    api = api_for(operator)
    change = create_and_submit(api, host)
    response = api.post(f"/api/v1/changes/{change['id']}/approve/",
                        {"plan_hash": change["plan_hash"], "approval_hash": change["approval_hash"]}, format="json")
    assert response.status_code == 403
    assert error_of(response)["message"] == "This needs the 'approve' permission."


def test_votes_bind_to_the_plan_hash_and_rejections_need_a_comment(host, operator, approver, api_for):
    change = create_and_submit(api_for(operator), host)
    api = api_for(approver)
    url = f"/api/v1/changes/{change['id']}"
    seen = change["approval_hash"]
    response = api.post(f"{url}/approve/", {"plan_hash": "0" * 64, "approval_hash": seen}, format="json")
    assert response.status_code == 409
    assert "plan changed" in error_of(response)["message"]
    response = api.post(f"{url}/approve/", {"plan_hash": change["plan_hash"]}, format="json")
    assert response.status_code == 400 and "approval_hash" in error_of(response)["fields"]
    response = api.post(f"{url}/reject/", {"approval_hash": seen}, format="json")
    assert response.status_code == 400 and "comment" in error_of(response)["fields"]
    response = api.post(f"{url}/reject/", {"approval_hash": seen, "comment": "wrong rack"},
                        format="json")
    assert response.status_code == 200 and response.json()["state"] == "rejected"
    response = api.post(f"{url}/approve/", {"approval_hash": seen}, format="json")
    assert response.status_code == 409  # a rejected change takes no more votes


def test_cancel_retry_and_edit(host, operator, approver, api_for):
    api = api_for(operator)
    change = create_and_submit(api, host)
    url = f"/api/v1/changes/{change['id']}"
    response = api.patch(f"{url}/", {"title": "VFs for rack 12 (4 each)"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "draft" and response.json()["title"] == "VFs for rack 12 (4 each)"
    assert response.json()["policy"]["parallelism"] == 2  # kept when not given
    response = api.post(f"{url}/retry/", format="json")
    assert response.status_code == 409 and "nothing to retry" in error_of(response)["message"]
    response = api.post(f"{url}/cancel/", {"reason": "not this week"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    response = api.post(f"{url}/cancel/", {}, format="json")
    assert response.status_code == 409
    # Only the requester edits or submits.
    other = api_for(approver)
    assert other.patch(f"{url}/", {"title": "x"}, format="json").status_code == 403


def test_bad_change_input_gives_field_errors(host, operator, api_for):
    api = api_for(operator)
    response = api.post("/api/v1/changes/", change_body([host.pk], title="", operations=[{"op": "nope"}]),
                        format="json")
    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert "title" in fields
    response = api.post("/api/v1/changes/", change_body([host.pk], operations=[{"op": "nope"}]), format="json")
    assert response.status_code == 400 and "operations" in error_of(response)["fields"]
    assert ChangeRequest.objects.count() == 0
    # Unknown hosts are the plan's blocking error (as in the wizard): a draft that cannot be submitted.
    response = api.post("/api/v1/changes/", change_body([987654]), format="json")
    assert response.status_code == 201 and response.json()["plan_blocked"]
    assert "unknown host ids" in response.json()["state_message"]
    submit = api.post(f"/api/v1/changes/{response.json()['id']}/submit/", format="json")
    assert submit.status_code == 409 and "blocking errors" in error_of(submit)["message"]
    ChangeRequest.objects.all().delete()
    response = api.post("/api/v1/changes/", change_body([host.pk], policy={"parallelism": 0}), format="json")
    assert response.status_code == 400 and "policy.parallelism" in error_of(response)["fields"]
    response = api.post("/api/v1/changes/", change_body([host.pk], targets="all"), format="json")
    assert response.status_code == 400 and "targets.non_field_errors" in error_of(response)["fields"]
    assert ChangeRequest.objects.count() == 0


def test_preview_and_filters(host, operator, api_for):
    api = api_for(operator)
    response = api.post("/api/v1/changes/preview/", change_body([host.pk]), format="json")
    assert response.status_code == 200, response.content
    assert response.json()["items"][0]["host_name"] == "hv-a" and not response.json()["blocked"]
    assert ChangeRequest.objects.count() == 0
    create_and_submit(api, host)
    assert len(api.get("/api/v1/changes/?state=submitted").json()["results"]) == 1
    assert len(api.get("/api/v1/changes/?state=draft").json()["results"]) == 0
    assert len(api.get(f"/api/v1/changes/?host={host.pk}&requested_by=otto").json()["results"]) == 1
    assert api.get("/api/v1/changes/?state=bogus").status_code == 400
    body = change_body([host.pk])
    del body["policy"]
    response = api.post("/api/v1/changes/", body, format="json")
    assert response.status_code == 201
    assert response.json()["policy"] == {"parallelism": 1, "canary_count": 0, "max_failures": 1,
                                         "not_before": None, "not_after": None, "allow_guest_impact": False}


@pytest.mark.django_db
def test_votes_bind_to_the_submission_a_stale_approval_hash_is_409(host, operator, approver, api_for,
                                                                  django_capture_on_commit_callbacks):
    requester = api_for(operator)
    change = create_and_submit(requester, host)
    url = f"/api/v1/changes/{change['id']}"
    stale = change["approval_hash"]
    # A policy-only edit (the plan hash stays), submitted again: what the approver loaded is stale.
    response = requester.patch(f"{url}/", {"policy": {"parallelism": 40, "canary_count": 0, "max_failures": 30}},
                               format="json")
    assert response.status_code == 200, response.content
    edited = requester.post(f"{url}/submit/", format="json").json()
    assert edited["plan_hash"] == change["plan_hash"] and edited["submission"] == change["submission"] + 1
    assert edited["approval_hash"] != stale
    api = api_for(approver)
    response = api.post(f"{url}/approve/", {"plan_hash": change["plan_hash"], "approval_hash": stale},
                        format="json")
    assert response.status_code == 409
    assert "edited after you loaded it; review it again" in error_of(response)["message"]
    assert ChangeRequest.objects.get(pk=change["id"]).state == "submitted"
    with django_capture_on_commit_callbacks():
        response = api.post(f"{url}/approve/", {"approval_hash": edited["approval_hash"]}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "scheduled"
    assert response.json()["approvals"][0]["submission"] == edited["submission"]
