"""Discovery end to end: simfleet hosts over real SSH, a real Celery worker, the test database.

What is checked: facts/NICs/VFs of every profile, statuses and reasons for each failure kind,
host-key pending / mismatch / TOFU, NICs that disappear and come back, VF counts that change,
drift detected and cleared — and the audit event of each.
"""

import time

import pytest
from django.core.exceptions import PermissionDenied
from django.test import override_settings
from django.utils import timezone

import remote
from audit.models import AuditEvent
from hosts.credentials import create_credential
from hosts.discovery import discover_hosts
from hosts.drift import update_drift
from hosts.intents import record_intent
from hosts.models import Hypervisor, Nic
from hosts.services import request_discovery
from hosts.tasks import discover_fleet, discover_host
from simfleet import SimFleet
from tests.conftest import ensure_role_groups

Status = Hypervisor.Status
PROFILES = ("dl360g9", "x710", "cx5", "epyc", "rhel8", "legacy")
# One host per profile, plus DL360s that get faults.
SPECS = [{"profile": p, "name": p} for p in PROFILES] + [
    {"profile": "dl360g9", "name": name} for name in ("down", "locked", "newkey", "rotated", "scratch")
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = SimFleet(tmp_path_factory.mktemp("simfleet"), hosts=SPECS, base_port=0, vf_delay=0.05).start()
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _roles(transactional_db):
    """transactional_db empties every table after a test, the role groups too: put them back."""
    ensure_role_groups()


@pytest.fixture(autouse=True)
def _clear_faults(fleet):
    yield
    for host in fleet.hosts:
        host.clear_faults()


@pytest.fixture
def credential(transactional_db, fleet):
    return create_credential("simfleet", fleet.client_private_key_path.read_text())


def register(sim_host, credential, *, pin=True) -> Hypervisor:
    key = sim_host.original_host_public_key if pin else ""
    return Hypervisor.objects.create(
        name=sim_host.name,
        address=sim_host.address,
        port=sim_host.port,
        username=sim_host.username,
        credential=credential,
        host_key=key,
        host_key_fingerprint=remote.fingerprint(key) if key else "",
        host_key_accepted_at=timezone.now() if key else None,
    )


def wait_for(predicate, timeout=90, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def discovered_after(host, since):
    def check():
        host.refresh_from_db()
        return host.last_discovery_at is not None and (since is None or host.last_discovery_at > since)

    return check


def events(action, host):
    return list(AuditEvent.objects.filter(action=action, host_id=host.pk).order_by("id"))


def refresh(host, user):
    """The refresh button's path: request_discovery → Celery → wait for the result."""
    before = Hypervisor.objects.get(pk=host.pk).last_discovery_at
    request_discovery(host, user)
    wait_for(discovered_after(host, before), what=f"discovery of {host.name}")
    host.refresh_from_db()
    return host


def test_fleet_discovery_through_celery(celery_worker, fleet, credential, operator):
    hosts = {
        spec["name"]: register(fleet[spec["name"]], credential, pin=spec["name"] != "newkey")
        for spec in SPECS
    }
    fleet["locked"].inject("auth_rejected")
    fleet["rotated"].inject("host_key_rotated")

    discover_fleet.delay()
    for host in hosts.values():
        wait_for(discovered_after(host, None), what=f"discovery of {host.name}")

    # Every profile: reachable, facts stored.
    for name in PROFILES:
        host = hosts[name]
        assert host.status == Status.REACHABLE, (name, host.status_reason)
        assert host.last_discovery_ok is True and host.facts_refreshed_at is not None
        truth = fleet[name].true_state()
        assert host.kernel == truth["kernel"] and host.boot_id == truth["boot_id"]
        assert host.cmdline == truth["cmdline"]
        assert {n.name: n.pci_address for n in host.nics.all()} == truth["nics"]
        for nic in host.nics.filter(sriov_totalvfs__isnull=False):
            assert nic.sriov_numvfs == truth["numvfs"][nic.pci_address]
            assert nic.sriov_totalvfs == truth["totalvfs"][nic.pci_address]
        assert len(events("host.discovered", host)) == 1

    # The DL360 Gen9 in detail.
    dl360 = hosts["dl360g9"]
    nics = {n.name: n for n in dl360.nics.all()}
    assert sorted(nics) == ["eno1", "eno2", "eno3", "eno4", "eno49", "eno50", "eno51", "eno52"]
    for name in ("eno1", "eno2", "eno3", "eno4"):
        assert nics[name].driver == "tg3" and not nics[name].sriov_capable
        assert nics[name].sriov_totalvfs is None and nics[name].vendor_name == "Broadcom"
    for name in ("eno49", "eno50", "eno51", "eno52"):
        nic = nics[name]
        assert nic.driver == "igb" and nic.sriov_totalvfs == 7 and nic.sriov_numvfs == 0
        assert nic.vendor_id == "8086" and nic.device_id == "1521" and nic.device_name.startswith("I350")
        assert nic.driver_version and nic.firmware and nic.mac and nic.mtu == 1500 and nic.present
    assert nics["eno49"].pci_address == "0000:04:00.0"
    assert dl360.os_id == "ubuntu" and dl360.os_version == "22.04" and dl360.cpu_vendor == "intel"
    assert dl360.grub_tool == "update-grub"
    # Ubuntu cloud images: the effective default comes from grub.d, and discovery says which file.
    assert dl360.grub_file == "/etc/default/grub.d/50-cloudimg-settings.cfg"
    assert dl360.grub_cmdline_default == "console=tty1 console=ttyS0"
    assert dl360.iommu_active is False and "intel_iommu=on" not in dl360.cmdline
    assert dl360.hostname and dl360.machine_id and dl360.running_guests == []
    assert hosts["rhel8"].grub_tool in ("grub2-mkconfig", "grubby") and hosts["epyc"].cpu_vendor == "amd"
    assert nics["eno49"].vfs.count() == 0

    # auth rejected → auth failed, with a reason naming user and credential.
    locked = hosts["locked"]
    assert locked.status == Status.AUTH_FAILED and locked.facts_refreshed_at is None
    assert "rejected user 'root'" in locked.status_reason and "simfleet" in locked.status_reason
    assert events("host.discovery_failed", locked)[0].data["kind"] == "auth_failed"

    # Unknown key, TOFU off → pending with the fingerprint; nothing ran, no facts.
    newkey = hosts["newkey"]
    presented = remote.fingerprint(fleet["newkey"].host_public_key)
    assert newkey.status == Status.HOST_KEY_PENDING and newkey.host_key == ""
    assert newkey.pending_host_key_fingerprint == presented and newkey.pending_host_key
    assert newkey.facts_refreshed_at is None and not newkey.nics.exists()
    assert presented in newkey.status_reason
    [first_seen] = events("host.key_first_seen", newkey)
    assert first_seen.data["fingerprint"] == presented and first_seen.actor_name == "worker"

    # Rotated key → mismatch; the pinned key is untouched; the presented one is kept aside.
    rotated = hosts["rotated"]
    original = fleet["rotated"].original_host_public_key
    assert rotated.status == Status.HOST_KEY_MISMATCH
    assert rotated.host_key == original and rotated.host_key_fingerprint == remote.fingerprint(original)
    assert rotated.pending_host_key_fingerprint == remote.fingerprint(fleet["rotated"].host_public_key)
    [mismatch] = events("host.key_mismatch", rotated)
    assert mismatch.data["expected_fingerprint"] == remote.fingerprint(original)
    assert mismatch.data["presented_fingerprint"] == rotated.pending_host_key_fingerprint
    assert rotated.facts_refreshed_at is None

    # A second round: the same pending/mismatched keys are not audited again.
    down = hosts["down"]
    assert down.status == Status.REACHABLE
    facts_at, kernel = down.facts_refreshed_at, down.kernel
    fleet["down"].inject("unreachable")
    before = {h.pk: h.last_discovery_at for h in hosts.values()}
    discover_fleet.delay()
    for host in hosts.values():
        wait_for(discovered_after(host, before[host.pk]), what=f"second discovery of {host.name}")
    assert len(events("host.key_first_seen", newkey)) == 1
    assert len(events("host.key_mismatch", rotated)) == 1
    assert rotated.host_key == original

    # Unreachable → status and reason; the facts of the last good discovery are kept.
    assert down.status == Status.UNREACHABLE and down.last_discovery_ok is False
    assert f"Cannot reach {down.address}:{down.port}" in down.status_reason
    assert "Facts shown are from" in down.status_reason
    assert down.facts_refreshed_at == facts_at and down.kernel == kernel
    assert down.nics.filter(present=True).count() == 8
    assert events("host.discovery_failed", down)[-1].data["kind"] == "unreachable"

    # It comes back on the next refresh (the refresh button's path, for a user).
    fleet["down"].clear_faults()
    refresh(down, operator)
    assert (
        down.status == Status.REACHABLE and down.status_reason == "" and down.discovery_requested_at is None
    )
    assert events("host.discovered", down)[-1].actor == operator


def test_nic_changes_and_drift_through_celery(celery_worker, fleet, credential, operator):
    sim = fleet["scratch"]
    host = refresh(register(sim, credential), operator)
    assert host.status == Status.REACHABLE and not host.drifted
    eno49 = host.nics.get(name="eno49")

    # A NIC the host no longer reports (here: a row the host never had), and one that comes back.
    ghost = Nic.objects.create(
        host=host, name="eno99", pci_address="0000:99:00.0", driver="igb", sriov_totalvfs=7, sriov_numvfs=0
    )
    Nic.objects.filter(host=host, name="eno50").update(present=False, gone_at=timezone.now())
    # Intent the console applied earlier (normally written by the change executor).
    record_intent(host.pk, "set_vfs", eno49.pci_address, 4, "4 VFs on eno49")
    record_intent(host.pk, "kernel_args", "", ["intel_iommu=on", "iommu=pt"], "intel_iommu=on iommu=pt")

    host = refresh(host, operator)
    ghost.refresh_from_db()
    assert ghost.present is False and ghost.gone_at is not None  # kept for history, not deleted
    [gone] = events("nic.gone", host)
    assert gone.data["pci_address"] == "0000:99:00.0" and gone.actor == operator
    eno50 = host.nics.get(name="eno50")
    assert eno50.present and eno50.gone_at is None
    [back] = events("nic.appeared", host)
    assert back.data == {**back.data, "name": "eno50", "returned": True}

    assert host.drifted is True
    assert any("eno49 (0000:04:00.0) has 0 VFs; the console applied 4" in r for r in host.drift_reasons)
    assert any("/proc/cmdline lacks intel_iommu=on iommu=pt" in r for r in host.drift_reasons)
    [detected] = events("host.drift_detected", host)
    assert detected.data["reasons"] == host.drift_reasons

    # The host now gets the 4 VFs (through the real agent over SSH), and the kernel args are
    # no longer managed: discovery sees the VFs, records the change and clears the drift.
    target = remote.HostTarget(
        name=sim.name,
        address=sim.address,
        port=sim.port,
        username=sim.username,
        private_key=credential.get_private_key(),
        known_host_key=host.host_key,
    )
    result = remote.run_agent_sync(
        target, "set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 4, "persist": True}
    )
    assert result.ok, result.message
    record_intent(host.pk, "kernel_args", "", None, "")

    host = refresh(host, operator)
    eno49.refresh_from_db()
    assert eno49.sriov_numvfs == 4 and eno49.persisted and eno49.persisted_numvfs == 4
    vfs = list(eno49.vfs.order_by("index"))
    assert [vf.netdev for vf in vfs] == ["eno49v0", "eno49v1", "eno49v2", "eno49v3"]
    assert all(vf.driver == "igbvf" and vf.present and vf.pci_address for vf in vfs)
    assert host.drifted is False and host.drift_reasons == []
    [cleared] = events("host.drift_cleared", host)
    assert len(cleared.data["previous_reasons"]) == 2
    changed = events("host.state_changed", host)[-1]
    assert changed.data["before"]["sriov_numvfs"] == {"eno49": 0}
    assert changed.data["after"]["sriov_numvfs"] == {"eno49": 4}

    # Fewer VFs: the VFs that went away are marked gone, not deleted.
    result = remote.run_agent_sync(
        target, "set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 2, "persist": True}
    )
    assert result.ok, result.message
    host = refresh(host, operator)
    assert [(vf.index, vf.present) for vf in eno49.vfs.order_by("index")] == [
        (0, True),
        (1, True),
        (2, False),
        (3, False),
    ]
    assert host.drifted and update_drift([host]) == []  # recomputing finds the same reasons
    assert "has 2 VFs; the console applied 4" in host.drift_reasons[0]
    assert len(events("host.drift_detected", host)) == 2

    # Back to 0 on the host, and the intent cleared: in line again.
    remote.run_agent_sync(
        target, "set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 0, "persist": True}
    )
    record_intent(host.pk, "set_vfs", eno49.pci_address, None, "")
    host = refresh(host, operator)
    assert not host.drifted and len(events("host.drift_cleared", host)) == 2


@override_settings(HOST_KEY_TOFU=True)
def test_trust_on_first_use_pins_and_applies(transactional_db, fleet, credential):
    host = register(fleet["epyc"], credential, pin=False)
    [outcome] = discover_hosts([host])
    assert outcome.ok and outcome.status == Status.REACHABLE
    host.refresh_from_db()
    key = fleet["epyc"].host_public_key
    assert host.host_key.split()[:2] == key.split()[:2]
    assert host.host_key_fingerprint == remote.fingerprint(key) and host.pending_host_key == ""
    assert host.host_key_accepted_at is not None and host.host_key_accepted_by is None
    assert host.status == Status.REACHABLE and host.cpu_vendor == "amd" and host.nics.exists()
    [seen] = events("host.key_first_seen", host)
    [accepted] = events("host.key_accepted", host)
    assert accepted.data == {"fingerprint": host.host_key_fingerprint, "tofu": True}
    assert seen.id < accepted.id < events("host.discovered", host)[0].id


def test_first_discovery_has_no_state_change_but_later_ones_do(transactional_db, fleet, credential):
    host = register(fleet["x710"], credential)
    discover_hosts([host])
    assert not events("host.state_changed", host) and not events("nic.appeared", host)
    Hypervisor.objects.filter(pk=host.pk).update(kernel="5.10.0-old", cmdline="ro quiet")
    discover_hosts([host])
    [changed] = events("host.state_changed", host)
    assert changed.data["before"] == {"kernel": "5.10.0-old", "cmdline": "ro quiet"}
    assert changed.data["after"]["kernel"] == fleet["x710"].true_state()["kernel"]


def test_periodic_discovery_that_finds_nothing_new_leaves_no_event(transactional_db, fleet, credential, operator):
    host = register(fleet["x710"], credential)
    discover_hosts([host])
    discover_hosts([host])  # beat's periodic run: same facts, same status
    assert len(events("host.discovered", host)) == 1
    host.refresh_from_db()
    assert host.last_discovery_ok and host.last_discovery_at > host.created_at
    discover_hosts([host], actor=operator)  # a person's refresh is always on record
    assert [e.actor for e in events("host.discovered", host)] == [None, operator]


def test_no_credential_and_garbage(transactional_db, fleet, credential):
    bare = Hypervisor.objects.create(name="bare", address="127.0.0.1", port=1)
    [outcome] = discover_hosts(Hypervisor.objects.filter(pk=bare.pk))
    bare.refresh_from_db()
    assert outcome.kind == "no_credential" and bare.status == Status.ERROR
    assert "No SSH credential" in bare.status_reason

    host = register(fleet["cx5"], credential)
    fleet["cx5"].inject("garbage_output")
    discover_hosts([host])
    host.refresh_from_db()
    assert host.status == Status.ERROR and "could not be read" in host.status_reason
    fleet["cx5"].clear_faults()
    fleet["cx5"].inject("no_python")
    discover_hosts([host])
    host.refresh_from_db()
    assert host.status == Status.ERROR and "python3" in host.status_reason


def test_discovery_needs_operate(transactional_db, fleet, credential, viewer):
    host = register(fleet["legacy"], credential)
    with pytest.raises(PermissionDenied):
        request_discovery(host, viewer)
    with pytest.raises(PermissionDenied):
        discover_host.run(host.pk, viewer.pk)
    host.refresh_from_db()
    assert host.discovery_requested_at is None and host.last_discovery_at is None
