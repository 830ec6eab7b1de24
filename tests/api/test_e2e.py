"""The issue's scripted flow, through the API only, against simfleet over real SSH with a real
Celery worker: tokens → credential → import hosts → discover → accept host keys → discover →
request a change → the requester cannot approve, a second user does → the rollout runs → steps
with transcripts → the audit trail, filtered and exported.
"""

import json
import time

import pytest
from rest_framework.test import APIClient

import remote
from simfleet import SimFleet
from tests.conftest import make_user

pytestmark = pytest.mark.slow

ENO49 = "0000:04:00.0"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = SimFleet(tmp_path_factory.mktemp("simfleet-api"),
                   hosts=[{"profile": "dl360g9", "name": n} for n in ("api-a", "api-b")],
                   base_port=0, vf_delay=0.02).start()
    yield sim
    sim.stop()


def token_client(user) -> APIClient:
    """Log in (a browser session), create a token through the API, then use only the token."""
    browser = APIClient()
    browser.force_login(user)
    response = browser.post("/api/v1/tokens/", {"name": f"{user.username}-automation"}, format="json")
    assert response.status_code == 201, response.content
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    assert api.get("/api/v1/me/").json()["authenticated_by"] == "token"
    return api


def poll(fetch, predicate, *, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if predicate(last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {json.dumps(last, default=str)[:2000]}")


def ok(response, status=200):
    assert response.status_code == status, (response.status_code, response.content[:2000])
    return response.json() if response.content else None


def discover_and_wait(api, host_ids, predicate, what):
    for host_id in host_ids:
        before = ok(api.get(f"/api/v1/hypervisors/{host_id}/"))["last_discovery_at"]
        ok(api.post(f"/api/v1/hypervisors/{host_id}/discover/"), 202)
        poll(lambda host_id=host_id: ok(api.get(f"/api/v1/hypervisors/{host_id}/")),
             lambda h, before=before: h["last_discovery_at"] != before and predicate(h), what=what)


def test_scripted_flow_through_the_api(celery_worker, fleet):  # celery_worker → transactional_db
    otto = make_user("otto", "operator")
    anna = make_user("anna", "approver")
    ada = make_user("ada", "admin")
    audrey = make_user("audrey", "auditor")
    operator, approver, admin, auditor = (token_client(u) for u in (otto, anna, ada, audrey))
    sims = [fleet["api-a"], fleet["api-b"]]

    # An admin stores the fleet's SSH key; the API never gives it back.
    key = fleet.client_private_key_path.read_text()
    credential = ok(admin.post("/api/v1/credentials/", {"name": "simfleet", "private_key": key}, format="json"),
                    201)
    assert "PRIVATE KEY" not in json.dumps(credential)

    # The operator imports the hosts (all or nothing) ...
    rows = [{"name": s.name, "address": s.address, "port": s.port, "username": s.username,
             "credential": "simfleet", "labels": ["rack-api"]} for s in sims]
    report = ok(operator.post("/api/v1/hypervisors/import/", {"rows": rows}, format="json"), 201)
    assert report["created"] == ["api-a", "api-b"]
    hosts = ok(operator.get("/api/v1/hypervisors/?label=rack-api"))["results"]
    host_ids = [h["id"] for h in hosts]
    assert [h["status"] for h in hosts] == ["unknown", "unknown"]

    # ... discovery meets unknown host keys: pending until an admin accepts them.
    discover_and_wait(operator, host_ids, lambda h: h["status"] == "host_key_pending", "pending host keys")
    assert operator.post(f"/api/v1/hypervisors/{host_ids[0]}/host-key/accept/", {"reason": "x"},
                         format="json").status_code == 403
    for host_id, sim in zip(host_ids, sims, strict=True):
        pending = ok(admin.get(f"/api/v1/hypervisors/{host_id}/host-key/"))
        expected = remote.fingerprint(sim.host_public_key)
        assert pending["pending_host_key_fingerprint"] == expected  # compared out of band
        accepted = ok(admin.post(f"/api/v1/hypervisors/{host_id}/host-key/accept/",
                                 {"reason": "fingerprint checked against the simfleet inventory",
                                  "fingerprint": expected}, format="json"))
        assert accepted["trusted"] and accepted["host_key_accepted_by"] == "ada"

    discover_and_wait(operator, host_ids, lambda h: h["status"] == "reachable", "reachable hosts")
    nics = ok(operator.get(f"/api/v1/nics/?host={host_ids[0]}&sriov=yes"))["results"]
    eno49 = next(n for n in nics if n["pci_address"] == ENO49)
    assert eno49["driver"] == "igb" and eno49["sriov_totalvfs"] == 7

    # The operator requests a change and submits it.
    body = {"title": "4 VFs on eno49 in rack-api", "reason": "guests need SR-IOV ports",
            "targets": {"filter": "label=rack-api"},
            "operations": [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4,
                            "persist": True}],
            "policy": {"parallelism": 1, "canary_count": 1, "max_failures": 1}}
    change = ok(operator.post("/api/v1/changes/", body, format="json"), 201)
    assert not change["plan_blocked"], change["plan"]
    assert sorted(item["host_name"] for item in change["plan"]) == ["api-a", "api-b"]
    change = ok(operator.post(f"/api/v1/changes/{change['id']}/submit/"))
    assert change["state"] == "submitted"
    plan = ok(approver.get(f"/api/v1/changes/{change['id']}/plan/"))

    # Four eyes: the requester cannot approve; a second person does.
    refused = operator.post(f"/api/v1/changes/{change['id']}/approve/",
                            {"plan_hash": plan["plan_hash"], "approval_hash": change["approval_hash"]},
                            format="json")
    assert refused.status_code == 403
    change = ok(approver.post(f"/api/v1/changes/{change['id']}/approve/",
                              {"plan_hash": plan["plan_hash"], "approval_hash": change["approval_hash"],
                               "comment": "plan reviewed"}, format="json"))
    assert change["state"] in ("scheduled", "running", "succeeded")

    # Wait for the rollout, reading only the API.
    change = poll(lambda: ok(operator.get(f"/api/v1/changes/{change['id']}/")),
                  lambda c: c["state"] in ("succeeded", "failed", "partially_failed", "cancelled"),
                  timeout=180, what="the rollout to finish")
    assert change["state"] == "succeeded", change
    rollouts = ok(operator.get(f"/api/v1/rollouts/?change={change['id']}"))["results"]
    assert [r["state"] for r in rollouts] == ["succeeded"] and rollouts[0]["counts"] == {"succeeded": 2}
    runs = ok(operator.get(f"/api/v1/host-runs/?change={change['id']}"))["results"]
    assert sorted(r["state"] for r in runs) == ["succeeded", "succeeded"]
    assert [r["is_canary"] for r in sorted(runs, key=lambda r: r["order"])] == [True, False]
    run = ok(operator.get(f"/api/v1/host-runs/{runs[0]['id']}/"))
    steps = run["steps"]
    assert steps and all(step["finished_at"] for step in steps)
    action = next(step for step in steps if step["operation"] == "set_vfs")
    assert action["ok"] and action["exit_status"] == 0 and action["stdout"] and action["agent_sha256"]
    listed = ok(operator.get(f"/api/v1/steps/?change={change['id']}&page_size=2"))
    assert len(listed["results"]) == 2 and listed["next"]
    for sim in sims:
        assert sim.true_state()["numvfs"][ENO49] == 4

    # The auditor reads the trail of the change, and exports it.
    events = ok(auditor.get(f"/api/v1/audit-events/?change={change['id']}&page_size=500"))["results"]
    actions = [e["action"] for e in events]
    for expected in ("change.created", "change.submitted", "change.approved", "change.scheduled",
                     "step.finished"):
        assert expected in actions, actions
    approved = next(e for e in events if e["action"] == "change.approved")
    assert approved["actor_name"] == "anna"
    keys = ok(auditor.get("/api/v1/audit-events/?action=host.key_accepted"))["results"]
    assert {e["host_name"] for e in keys} == {"api-a", "api-b"} and {e["actor_name"] for e in keys} == {"ada"}
    tokens = ok(auditor.get("/api/v1/audit-events/?action=api_token.created"))["results"]
    assert {e["actor_name"] for e in tokens} == {"otto", "anna", "ada", "audrey"}
    export = auditor.get(f"/api/v1/audit-events/export/?format=jsonl&change={change['id']}")
    assert export.status_code == 200
    lines = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]
    assert {line["action"] for line in lines} >= {"change.created", "change.approved", "step.finished"}
    assert key not in json.dumps(lines)
