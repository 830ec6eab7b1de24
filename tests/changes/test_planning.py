"""Planning from the inventory: sentences, before/after, blocking errors, warnings, the hash."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from changes import services
from changes.models import ChangeRequest
from changes.operations import OperationError, validate_operations

from .conftest import change_data, make_host

pytestmark = pytest.mark.django_db


def op(value, count, by="name", **extra):
    return {"op": "set_vfs", "select": {"by": by, "value": value}, "count": count, **extra}


def preview(hosts, ops, **policy):
    _clean, plan = services.preview_plan(change_data([h.pk for h in hosts], ops=ops, **policy))
    return plan


def test_sentences_reset_and_nothing_to_do(credential):
    host = make_host(
        "hv1",
        credential=credential,
        nics=[
            ("eno49", "0000:04:00.0", 2, {"persisted": True, "persisted_numvfs": 2}),
            ("eno50", "0000:04:00.1", 4, {"persisted": True, "persisted_numvfs": 4}),
            ("eno51", "0000:04:00.2", 0),
        ],
    )
    plan = preview([host], [op("eno49", 4), op("eno50", 4), op("eno51", 3)])
    item = plan.hosts[0].plan
    texts = [a["text"] for a in item.actions]
    assert texts == [
        "eno49: 2 → 4 VFs (reset to 0 first, the kernel refuses a direct change)",
        "eno50: already 4 VFs, nothing to do",
        "eno51: 0 → 3 VFs",
    ]
    assert item.before == {"numvfs": {"0000:04:00.0": 2, "0000:04:00.1": 4, "0000:04:00.2": 0}}
    assert item.after == {"numvfs": {"0000:04:00.0": 4, "0000:04:00.1": 4, "0000:04:00.2": 3}}
    steps = [a["step"] for a in item.actions]
    assert steps[1] is None
    assert steps[0] == {
        "op": "set_vfs",
        "args": {
            "pf": "eno49",
            "pci_address": "0000:04:00.0",
            "count": 4,
            "persist": True,
            "take_over": False,
            "allow_guest_impact": False,
        },
    }
    assert not plan.blocked and item.errors == []


def test_over_limit_is_blocking_and_cannot_be_submitted(credential, operator):
    host = make_host("hv1", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])
    plan = preview([host], [op("eno49", 8)])
    assert plan.blocked
    assert plan.hosts[0].plan.errors == ["eno49: 8 VFs requested, the NIC supports at most 7"]
    change = services.create_change(change_data([host.pk], ops=[op("eno49", 8)]), operator)
    assert change.plan_blocked
    with pytest.raises(services.ChangeError, match="blocking errors"):
        services.submit_change(change.pk, operator)
    assert ChangeRequest.objects.get(pk=change.pk).state == "draft"


def test_host_errors_missing_pf_and_not_capable(credential):
    ok = make_host(
        "hv-ok",
        credential=credential,
        nics=[("eno1", "0000:02:00.0", None, {"driver": "tg3", "sriov_totalvfs": None})],
    )
    down = make_host(
        "hv-down", credential=credential, status="unreachable", nics=[("eno49", "0000:04:00.0", 0)]
    )
    pending = make_host("hv-new", credential=credential, status="host_key_pending", host_key="")
    never = make_host("hv-never", credential=credential, status="unknown", refreshed=None)
    never.facts_refreshed_at = None
    never.save()
    nokey = make_host("hv-nokey", credential=None, host_key="", nics=[("eno49", "0000:04:00.0", 0)])
    plan = preview([ok, down, pending, never, nokey], [op("eno49", 2), op("eno1", 2)])
    errors = {p.host.name: p.plan.errors for p in plan.hosts}
    assert "operation 1: PF missing: no NIC named eno49 on hv-ok" in errors["hv-ok"]
    assert "eno1 (0000:02:00.0) is not SR-IOV capable (no sriov_totalvfs)" in errors["hv-ok"]
    assert errors["hv-down"][0].startswith("host unreachable")
    assert errors["hv-new"][0].startswith("host key not trusted: a new key is pending")
    assert errors["hv-never"][0].startswith("never discovered")
    assert "host key not trusted: no key is pinned for this host" in errors["hv-nokey"]
    assert "no SSH credential is assigned to this host" in errors["hv-nokey"]


def test_guests_block_unless_policy_allows_and_force_follows(credential):
    host = make_host(
        "hv1",
        credential=credential,
        nics=[("eno49", "0000:04:00.0", 4, {"persisted": True, "guests": {3: "web-1"}})],
    )
    plan = preview([host], [op("eno49", 2)])
    assert plan.hosts[0].plan.errors == [
        "eno49: VFs in use by running guests would be removed (web-1); stop or migrate them, or allow guest "
        "impact in the policy"
    ]
    plan = preview([host], [op("eno49", 2)], allow_guest_impact=True)
    item = plan.hosts[0].plan
    assert not item.errors
    assert item.warnings == [
        "eno49: VFs in use by running guests would be removed (web-1); allowed by the rollout policy"
    ]
    args = item.actions[0]["step"]["args"]
    # The policy allows guest impact: only that check is skipped, never the take-over one ("force").
    assert args["allow_guest_impact"] is True and args["take_over"] is False and "force" not in args
    # Growing 4 → 6 resets to 0 first, so the guest's VF is affected too.
    plan = preview([host], [op("eno49", 6)])
    assert plan.blocked


def test_externally_managed_needs_take_over(credential):
    host = make_host("hv1", credential=credential, nics=[("eno49", "0000:04:00.0", 2)])
    plan = preview([host], [op("eno49", 4)])
    assert "externally managed" in plan.hosts[0].plan.errors[0]
    plan = preview([host], [op("eno49", 4, take_over=True)])
    assert not plan.blocked
    assert "takes it over" in plan.hosts[0].plan.warnings[0]
    args = plan.hosts[0].plan.actions[0]["step"]["args"]
    assert args["take_over"] is True and args["allow_guest_impact"] is False and "force" not in args


def test_stale_inventory_warns_and_selection_by_driver(credential):
    old = timezone.now() - timedelta(hours=3)
    host = make_host(
        "hv1",
        credential=credential,
        refreshed=old,
        nics=[
            ("eno49", "0000:04:00.0", 0),
            ("eno50", "0000:04:00.1", 0),
            ("eno1", "0000:02:00.0", None, {"driver": "tg3", "sriov_totalvfs": None}),
        ],
    )
    plan = preview([host], [op("igb", 2, by="driver")])
    item = plan.hosts[0].plan
    assert [a["label"] for a in item.actions] == ["eno49", "eno50"]
    assert item.warnings[0].startswith("inventory is 180 minutes old")
    plan = preview([host], [op("0000:04:00.1", 1, by="pci"), op("8086:1521", 2, by="vendor_device")])
    errors = plan.hosts[0].plan.errors
    assert errors == ["eno50 (0000:04:00.1) is selected by operations 1 and 2"]


def test_plan_hash_is_stable_and_changes_with_the_inventory(credential):
    host = make_host("hv1", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])
    first = preview([host], [op("eno49", 4)]).hash
    assert preview([host], [op("eno49", 4)]).hash == first
    assert preview([host], [op("eno49", 5)]).hash != first
    host.nics.update(sriov_numvfs=1)
    assert preview([host], [op("eno49", 4)]).hash != first


def test_operation_validation_messages():
    with pytest.raises(OperationError, match="give at least one operation"):
        validate_operations([])
    known = "set_vfs, vf_driver, vf_config, libvirt_network, kernel_args, reboot"
    with pytest.raises(OperationError, match=f"unknown op 'format_disk'; known: {known}"):
        validate_operations([{"op": "format_disk"}])
    with pytest.raises(OperationError, match="count must be a whole number"):
        validate_operations([op("eno49", -1)])
    with pytest.raises(OperationError, match="is not a PCI address"):
        validate_operations([op("04:00.0", 1, by="pci")])
    with pytest.raises(OperationError, match="unknown fields"):
        validate_operations([op("eno49", 1, colour="red")])
    assert validate_operations([op("eno49", 1)])[0]["persist"] is True


def test_missing_reason_is_a_field_error(operator):
    data = change_data([1])
    data["reason"] = "  "
    with pytest.raises(ValidationError) as info:
        services.create_change(data, operator)
    assert "reason" in info.value.message_dict
    assert ChangeRequest.objects.count() == 0
