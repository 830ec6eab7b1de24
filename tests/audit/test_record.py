import datetime
import decimal
import json
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from audit.chain import GENESIS, compute_hash
from audit.models import AuditEvent
from audit.services import bulk_record, record
from console.middleware import current_client_ip, current_request_id
from tests.audit.helpers import actions, assert_chain_ok, events, the_event

pytestmark = pytest.mark.django_db


def test_record_snapshots_actor_object_host_change_and_context(operator):
    host = SimpleNamespace(pk=7, name="hv-07")
    change = SimpleNamespace(pk=42)
    ip_token, id_token = current_client_ip.set("10.1.2.3"), current_request_id.set("req-12345678")
    try:
        event = record(
            "host.updated",
            actor=operator,
            obj=operator,
            host=host,
            change=change,
            data={"before": {"port": 22}, "after": {"port": 2222}},
        )
    finally:
        current_client_ip.reset(ip_token)
        current_request_id.reset(id_token)
    stored = the_event("host.updated")
    assert stored.pk == event.pk == 1
    assert (stored.actor_id, stored.actor_name) == (operator.pk, "otto")
    assert (stored.object_type, stored.object_id, stored.object_repr) == (
        "auth.user",
        str(operator.pk),
        "otto",
    )
    assert (stored.host_id, stored.host_name, stored.change_id) == (7, "hv-07", 42)
    assert stored.data == {"before": {"port": 22}, "after": {"port": 2222}}
    assert (stored.client_ip, stored.request_id) == ("10.1.2.3", "req-12345678")
    assert stored.prev_hash == GENESIS and stored.hash == compute_hash(stored.chain_row())


def test_system_actor_and_worker_name():
    record("host.discovered")
    record("step.finished", actor_name="worker")
    assert [(e.actor_id, e.actor_name) for e in events()] == [(None, "system"), (None, "worker")]


def test_secrets_are_redacted_at_any_depth():
    record(
        "credential.updated",
        data={
            "after": {
                "name": "k",
                "private_key": "-----BEGIN",
                "nested": [{"password": "hunter2", "Token": "t", "ok": 1}],
            },
            "secret": "s",
        },
    )
    data = the_event("credential.updated").data
    text = json.dumps(data)
    assert "BEGIN" not in text and "hunter2" not in text and '"t"' not in text and '"s"' not in text
    assert data["after"]["nested"][0] == {"password": "[redacted]", "Token": "[redacted]", "ok": 1}


def test_rolled_back_action_leaves_no_event_and_committed_one_has_its_event():
    with pytest.raises(RuntimeError), transaction.atomic():
        get_user_model().objects.create_user("ghost")
        record("host.created", data={"name": "ghost"})
        raise RuntimeError("the action failed")
    assert AuditEvent.objects.count() == 0
    assert not get_user_model().objects.filter(username="ghost").exists()
    with transaction.atomic():
        record("host.created", data={"name": "real"})
    assert actions() == ["host.created"]
    # the next event reuses the rolled-back position: the sequence has no gap
    assert the_event("host.created").pk == 1


def test_awkward_data_keeps_the_chain_verifiable():
    record(
        "host.discovered",
        data={
            "big": 1e20,
            "one": 1.0,
            "tiny": 1.5e-7,
            "pi": 3.141592653589793,
            "neg": -0.0,
            "int": 2**62,
            "unicode": "ĳ 设备 🙂",
            "nul": "a\x00b",
            "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            "dec": decimal.Decimal("1.10"),
            "list": [1, [2, {"z": None, "a": True}]],
            5: "int key",
        },
    )
    record("host.updated", data={"ip": "x"})
    ip_token = current_client_ip.set("2001:DB8:0:0::1")
    try:
        record("auth.login")
    finally:
        current_client_ip.reset(ip_token)
    assert the_event("auth.login").client_ip == "2001:db8::1"
    assert_chain_ok()


def test_bulk_record_continues_the_chain():
    record("auth.login")
    bulk_record({"action": "host.discovered", "host_id": i % 5, "data": {"i": i}} for i in range(250))
    record("auth.logout")
    result = assert_chain_ok()
    assert result.checked == 252 and result.last_id == 252
