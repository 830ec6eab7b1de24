"""Inventory, credentials, host keys and audit through the API; error bodies; cursor pagination."""

import csv
import io
import json

import pytest
from django.utils import timezone

import remote
from audit.models import AuditEvent
from hosts.models import Credential, Hypervisor
from tests.changes.conftest import make_credential, make_host
from tests.security.conftest import make_private_key

from .conftest import error_of

pytestmark = pytest.mark.django_db


def test_create_read_update_hosts(operator, api_for):
    make_credential("ops")
    api = api_for(operator)
    response = api.post("/api/v1/hypervisors/", {"name": "hv-01", "address": "10.0.0.1", "credential": "ops",
                                                 "labels": ["rack-12", "prod"]}, format="json")
    assert response.status_code == 201, response.content
    host = response.json()
    assert host["credential"] == "ops" and sorted(host["labels"]) == ["prod", "rack-12"]
    assert host["status"] == "unknown" and host["port"] == 22
    assert host["url"].endswith(f"/api/v1/hypervisors/{host['id']}/")
    event = AuditEvent.objects.get(action="host.created")
    assert event.actor_name == "otto" and event.host_id == host["id"]

    response = api.patch(f"/api/v1/hypervisors/{host['id']}/", {"port": 2222, "labels": ["rack-13"]},
                         format="json")
    assert response.status_code == 200, response.content
    assert response.json()["port"] == 2222 and response.json()["labels"] == ["rack-13"]
    assert AuditEvent.objects.filter(action="host.updated").count() == 1

    # Service validation comes back as field errors; nothing written.
    response = api.post("/api/v1/hypervisors/", {"name": "hv-01", "address": "bad address!"}, format="json")
    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert "name" in fields and "address" in fields
    response = api.post("/api/v1/hypervisors/", {"name": "hv-02", "address": "h", "credential": "nope"},
                        format="json")
    assert response.status_code == 400 and "credential" in error_of(response)["fields"]
    response = api.post("/api/v1/hypervisors/", {"name": "hv-02", "address": "h", "port": 70000}, format="json")
    assert response.status_code == 400 and "port" in error_of(response)["fields"]
    assert Hypervisor.objects.count() == 1
    assert api.put(f"/api/v1/hypervisors/{host['id']}/", {}, format="json").status_code == 405


def test_delete_a_host_unless_a_change_names_it(operator, viewer, api_for):
    from changes import services as change_services
    from tests.changes.conftest import change_data

    spare, named = make_host("hv-spare"), make_host("hv-named")
    change = change_services.create_change(change_data([named.pk]), operator)
    assert api_for(viewer).delete(f"/api/v1/hypervisors/{spare.pk}/").status_code == 403
    api = api_for(operator)
    assert api.delete(f"/api/v1/hypervisors/{spare.pk}/").status_code == 204
    assert not Hypervisor.objects.filter(pk=spare.pk).exists()
    assert AuditEvent.objects.get(action="host.deleted").host_id == spare.pk
    response = api.delete(f"/api/v1/hypervisors/{named.pk}/")
    assert response.status_code == 409 and f"#{change.pk}" in error_of(response)["message"]
    assert Hypervisor.objects.filter(pk=named.pk).exists()


def test_filters_match_the_hosts_page_and_pages_by_cursor(viewer, api_for):
    credential = make_credential()
    for index in range(7):
        make_host(f"hv-{index:02d}", credential=credential, labels=["even"] if index % 2 == 0 else ["odd"],
                  nics=[("eno49", "0000:04:00.0", index % 3)])
    Hypervisor.objects.filter(name="hv-03").update(status="unreachable")
    api = api_for(viewer)
    names = [h["name"] for h in api.get("/api/v1/hypervisors/?label=even").json()["results"]]
    assert names == ["hv-00", "hv-02", "hv-04", "hv-06"]
    assert [h["name"] for h in api.get("/api/v1/hypervisors/?status=unreachable").json()["results"]] == ["hv-03"]
    assert len(api.get("/api/v1/hypervisors/?q=hv-0&driver=igb&sriov=yes").json()["results"]) == 7
    first = api.get("/api/v1/hypervisors/?label=odd&page_size=2").json()
    assert [h["name"] for h in first["results"]] == ["hv-01", "hv-03"] and first["previous"] is None
    second = api.get(first["next"]).json()
    assert [h["name"] for h in second["results"]] == ["hv-05"] and second["next"] is None
    assert second["results"][0]["vfs_capacity"] == 7
    # Bad filter values are a 400 with the field, never a 500.
    response = api.get("/api/v1/hypervisors/?status=bogus&label=nope")
    assert response.status_code == 400
    assert {"status", "label"} <= set(error_of(response)["fields"])
    assert api.get("/api/v1/hypervisors/?cursor=garbage").status_code == 404

    nics = api.get("/api/v1/nics/?host_name=hv-02").json()["results"]
    assert [(n["name"], n["sriov_numvfs"]) for n in nics] == [("eno49", 2)]
    detail = api.get(f"/api/v1/nics/{nics[0]['id']}/").json()
    assert [vf["index"] for vf in detail["vfs"]] == [0, 1]
    vfs = api.get(f"/api/v1/vfs/?host={nics[0]['host']}").json()["results"]
    assert len(vfs) == 2 and vfs[0]["nic_name"] == "eno49"
    assert api.get("/api/v1/nics/?host=abc").status_code == 400


def test_import_is_all_or_nothing(operator, api_for):
    make_credential("ops")
    api = api_for(operator)
    text = "name,address,port,credential,labels\nhv-a,10.0.0.1,22,ops,rack-1\nhv-b,10.0.0.2,22,ops,rack-1\n"
    response = api.post("/api/v1/hypervisors/import/", {"text": text, "format": "csv", "dry_run": True},
                        format="json")
    assert response.status_code == 200, response.content
    assert response.json()["created"] == ["hv-a", "hv-b"] and Hypervisor.objects.count() == 0
    response = api.post("/api/v1/hypervisors/import/", {"text": text}, format="json")
    assert response.status_code == 201 and Hypervisor.objects.count() == 2
    bad = "name,address,port\nhv-c,10.0.0.3,22\nhv-d,10.0.0.4,notaport\n"
    response = api.post("/api/v1/hypervisors/import/", {"text": bad, "default_credential": "ops"}, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["rows"][0]["line"] == 3 and error["rows"][0]["field"] == "port"
    assert Hypervisor.objects.count() == 2
    rows = [{"name": "hv-e", "address": "10.0.0.5", "credential": "ops"}, {"name": "hv-f", "port": "x"}]
    response = api.post("/api/v1/hypervisors/import/", {"rows": rows}, format="json")
    assert response.status_code == 400 and "rows.1.port" in error_of(response)["fields"]
    response = api.post("/api/v1/hypervisors/import/", {"rows": rows[:1]}, format="json")
    assert response.status_code == 201 and response.json()["created"] == ["hv-e"]
    response = api.post("/api/v1/hypervisors/import/", {"rows": [], "text": ""}, format="json")
    assert response.status_code == 400


def test_credentials_never_return_the_private_key(admin_user, api_for):
    api = api_for(admin_user)
    key = make_private_key()
    response = api.post("/api/v1/credentials/", {"name": "fleet", "private_key": key}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert "private_key" not in body and key not in response.content.decode()
    assert body["public_key"].startswith("ssh-ed25519") and body["fingerprint"].startswith("SHA256:")
    listing = api.get("/api/v1/credentials/")
    assert key not in listing.content.decode() and listing.json()[0]["name"] == "fleet"
    new_key = make_private_key()
    response = api.post(f"/api/v1/credentials/{body['id']}/rotate/", {"private_key": new_key}, format="json")
    assert response.status_code == 200 and response.json()["fingerprint"] != body["fingerprint"]
    assert new_key not in response.content.decode()
    assert Credential.objects.get().get_private_key() == new_key
    for event in AuditEvent.objects.filter(action__startswith="credential."):
        assert key not in json.dumps(event.data) and new_key not in json.dumps(event.data)
    response = api.post("/api/v1/credentials/", {"name": "bad", "private_key": "hello"}, format="json")
    assert response.status_code == 400 and "not an SSH private key" in error_of(response)["message"]
    response = api.post("/api/v1/credentials/", {"name": "fleet", "private_key": key}, format="json")
    assert response.status_code == 400 and "name" in error_of(response)["fields"]
    Hypervisor.objects.create(name="user", address="h", credential=Credential.objects.get())
    response = api.delete(f"/api/v1/credentials/{body['id']}/")
    assert response.status_code == 409 and "used by 1 host" in error_of(response)["message"]
    response = api.patch(f"/api/v1/credentials/{body['id']}/", {"username": "ops"}, format="json")
    assert response.status_code == 200 and response.json()["username"] == "ops"


def test_accept_a_pending_host_key(admin_user, api_for):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKS7I2Y8VbgTRmTPcM0z+gM3LHJwDqqNRzHfQw+7X3yL"
    fingerprint = remote.fingerprint(key)
    host = Hypervisor.objects.create(name="hv-k", address="h", status="host_key_pending", pending_host_key=key,
                                     pending_host_key_fingerprint=fingerprint,
                                     pending_host_key_seen_at=timezone.now())
    api = api_for(admin_user)
    url = f"/api/v1/hypervisors/{host.pk}/host-key/"
    assert api.get(url).json()["pending_host_key_fingerprint"] == fingerprint
    response = api.post(url + "accept/", {"fingerprint": fingerprint}, format="json")
    assert response.status_code == 400 and "reason" in error_of(response)["fields"]
    response = api.post(url + "accept/", {"reason": "checked", "fingerprint": "SHA256:other"}, format="json")
    assert response.status_code == 409 and "changed" in error_of(response)["message"]
    response = api.post(url + "accept/", {"reason": "checked on the console", "fingerprint": fingerprint},
                        format="json")
    assert response.status_code == 200, response.content
    assert response.json()["host_key_fingerprint"] == fingerprint and response.json()["trusted"]
    assert response.json()["host_key_accepted_by"] == "ada"
    assert AuditEvent.objects.filter(action="host.key_accepted", actor_name="ada").count() == 1
    response = api.post(url + "accept/", {"reason": "again"}, format="json")
    assert response.status_code == 409 and "no pending host key" in error_of(response)["message"]


def test_discovery_request_is_accepted(operator, api_for):
    host = make_host("hv-d", credential=make_credential())
    api = api_for(operator)
    response = api.post(f"/api/v1/hypervisors/{host.pk}/discover/", format="json")
    assert response.status_code == 202
    assert Hypervisor.objects.get(pk=host.pk).discovery_requested_at is not None
    assert api.post("/api/v1/hypervisors/discover/", format="json").status_code == 202
    assert api.post("/api/v1/hypervisors/999999/discover/", format="json").status_code == 404


def test_audit_filter_page_and_export(auditor, operator, api_for):
    from audit.services import record

    host = make_host("hv-audit")
    for index in range(5):
        record("host.updated", actor=operator, obj=host, host=host, data={"n": index})
    record("change.created", actor_name="system", data={"title": "=cmd|' /C calc'!A0"})
    api = api_for(auditor)
    page = api.get("/api/v1/audit-events/?action=host.&page_size=2").json()
    ids = [e["id"] for e in page["results"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 2  # newest first
    rest = api.get(page["next"]).json()["results"]
    assert all(e["id"] < ids[-1] for e in rest)
    assert {e["action"] for e in page["results"] + rest} == {"host.updated"}
    assert len(api.get("/api/v1/audit-events/?host=hv-audit&actor=otto").json()["results"]) == 5
    assert api.get("/api/v1/audit-events/?since=notadate").status_code == 400

    response = api.get("/api/v1/audit-events/export/?format=csv&action=host.updated")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 5 and rows[0]["action"] == "host.updated"
    response = api.get("/api/v1/audit-events/export/?format=jsonl&actor=system")
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert any(doc["action"] == "change.created" for doc in lines)
    exported = AuditEvent.objects.filter(action="audit.exported").order_by("id")
    assert [e.data["format"] for e in exported] == ["csv", "jsonl"] and exported[0].actor_name == "audrey"
    assert exported[0].data["via"] == "api"
    response = api.get("/api/v1/audit-events/export/?format=xml")
    assert response.status_code == 400 and "format" in error_of(response)["fields"]
    one = api.get(f"/api/v1/audit-events/{ids[0]}/").json()
    assert one["hash"] and one["prev_hash"] and one["data"] == {"n": 4}


def test_error_bodies_are_consistent(viewer, operator, api_for):
    api = api_for(viewer)
    ops = api_for(operator)
    for response, status, code in (
        (api.get("/api/v1/hypervisors/424242/"), 404, "not_found"),
        (api.post("/api/v1/hypervisors/", {"name": "x"}, format="json"), 403, "permission_denied"),
        (api.delete("/api/v1/hypervisors/"), 405, "method_not_allowed"),
        (ops.post("/api/v1/hypervisors/", "{not json", content_type="application/json"), 400, "parse_error"),
        (ops.post("/api/v1/hypervisors/", "name=x", content_type="application/x-www-form-urlencoded"), 415,
         "unsupported_media_type"),
    ):
        assert response.status_code == status, (response.status_code, response.content)
        assert error_of(response)["code"] == code


def test_service_and_database_exceptions_map_to_4xx():
    from django.core.exceptions import PermissionDenied, ValidationError
    from django.db import IntegrityError

    from api.exceptions import exception_handler

    cases = [
        (ValidationError({"name": ["taken"], "__all__": ["bad row"]}), 400, "invalid", "bad row"),
        (PermissionDenied("you requested this change"), 403, "permission_denied", "you requested this change"),
        (IntegrityError("duplicate key value violates unique constraint"), 409, "conflict", "conflicts"),
    ]
    for exc, status, code, message in cases:
        response = exception_handler(exc, {})
        assert response.status_code == status
        error = response.data["error"]
        assert error["code"] == code and message in error["message"]
        assert "duplicate key" not in error["message"]  # no database internals
    assert exception_handler(ValidationError({"name": ["taken"]}), {}).data["error"]["fields"] == {"name": ["taken"]}
    assert exception_handler(RuntimeError("bug"), {}) is None  # a real bug stays a 500, logged
