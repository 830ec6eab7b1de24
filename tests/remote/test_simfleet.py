"""remote.client against simfleet (real SSH, simulated hypervisors running the exact agent bytes)."""

from __future__ import annotations

import time

import pytest

from remote import HostTarget, fingerprint, protocol, run_agent_sync, run_many_sync

simfleet = pytest.importorskip("simfleet")
SimFleet = simfleet.SimFleet
PROFILES = list(simfleet.PROFILES)

pytestmark = pytest.mark.timeout(180)

FAULT_HOSTS = {
    "unreachable": "unreachable",
    "auth_rejected": "auth_failed",
    "host_key_rotated": "host_key_mismatch",
    "hang": "timeout",
    "garbage_output": "malformed_response",
    "no_python": "no_python",
}


def target(fleet, host, **overrides) -> HostTarget:
    values = dict(
        name=host.name,
        address=host.address,
        port=host.port,
        username=host.username,
        private_key=fleet.client_private_key_path.read_text(),
        known_host_key=host.original_host_public_key,
        connect_timeout=5.0,
        op_timeout=30.0,
    )
    values.update(overrides)
    return HostTarget(**values)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    specs = [{"profile": p, "name": f"inv-{p}"} for p in PROFILES]
    for name in ("vfs", "limit", "reboot", "persist", "newkey"):
        specs.append({"profile": "dl360g9", "name": name})
    specs += [{"profile": "dl360g9", "name": f"fault-{f}"} for f in FAULT_HOSTS]
    specs += [{"profile": "x710", "name": "sudo", "username": "admin"}]
    fleet = SimFleet(tmp_path_factory.mktemp("simfleet"), hosts=specs, base_port=0,
                     reboot_delay=0.2, down_time=0.5, vf_delay=0.05)
    fleet.start()
    yield fleet
    fleet.stop()


def run(fleet, name, op, args=None, **overrides):
    host = fleet.host(name)
    return run_agent_sync(target(fleet, host, **overrides), op, args)


def wait_back(fleet, name, old_boot_id, timeout=30.0):
    """Poll over SSH until the host answers inventory with a different boot id."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        res = run(fleet, name, "inventory", connect_timeout=2.0)
        seen.append(res.kind)
        if res.ok and res.result["boot_id"] != old_boot_id:
            return res
        time.sleep(0.2)
    raise AssertionError(f"{name} did not come back with a new boot id; saw {seen[-5:]}")


def nic_of(result, name):
    return next(n for n in result["nics"] if n["name"] == name)


def test_inventory_of_every_profile(fleet):
    jobs = [(target(fleet, fleet.host(f"inv-{p}")), "inventory", {}) for p in PROFILES]
    results = run_many_sync(jobs, concurrency=8)
    for profile, res in zip(PROFILES, results, strict=True):
        assert res.kind == "ok", (profile, res.message, res.stderr[-2000:])
        truth = fleet.host(f"inv-{profile}").true_state()
        names = {n["name"] for n in res.result["nics"] if not n["is_vf"]}
        assert names == set(truth["nics"]), profile
        assert res.result["boot_id"] == truth["boot_id"]
        assert res.agent_sha256 == protocol.agent_sha256()
        assert res.host_key_fingerprint == fingerprint(fleet.host(f"inv-{profile}").original_host_public_key)
        for nic in res.result["nics"]:
            if nic["pci_address"] in truth["totalvfs"]:
                assert nic["sriov_totalvfs"] == truth["totalvfs"][nic["pci_address"]], (profile, nic["name"])


def test_non_zero_to_non_zero_vf_change_goes_through_the_reset(fleet):
    pci = "0000:04:00.0"
    # persisted, so the console owns the PF (the agent refuses to touch counts it did not set)
    first = run(fleet, "vfs", "set_vfs", {"pf": "eno49", "pci_address": pci, "count": 2, "persist": True})
    assert first.kind == "ok", (first.message, first.stderr[-2000:])
    res = run(fleet, "vfs", "set_vfs", {"pf": "eno49", "pci_address": pci, "count": 4, "persist": True})
    assert res.kind == "ok", (res.message, res.stderr[-2000:])
    assert any("wrote 0" in a for a in res.result["actions"]), res.result["actions"]
    assert fleet.host("vfs").true_state()["numvfs"][pci] == 4
    again = run(fleet, "vfs", "set_vfs", {"pf": "eno49", "pci_address": pci, "count": 4, "persist": True})
    assert again.kind == "ok" and again.result["actions"] == []


def test_over_limit_count_is_refused_and_nothing_changes(fleet):
    host = fleet.host("limit")
    before = host.true_state()
    res = run(fleet, "limit", "set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 8})
    assert res.kind == "agent_error" and not res.ok
    assert res.error_code == "exceeds_total"
    after = host.true_state()
    assert after["numvfs"] == before["numvfs"] and after["files"] == before["files"]


def test_reboot_brings_back_a_new_boot_id(fleet):
    before = run(fleet, "reboot", "inventory")
    assert before.ok
    res = run(fleet, "reboot", "reboot")
    assert res.kind == "ok", (res.message, res.stderr[-2000:])
    assert res.result["boot_id"] == before.result["boot_id"]
    back = wait_back(fleet, "reboot", before.result["boot_id"])
    assert back.result["boot_id"] == fleet.host("reboot").true_state()["boot_id"]


def test_persisted_vf_counts_survive_reboot_and_unpersisted_do_not(fleet):
    kept = run(fleet, "persist", "set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 3,
                                             "persist": True})
    lost = run(fleet, "persist", "set_vfs", {"pf": "eno50", "pci_address": "0000:04:00.1", "count": 2,
                                             "persist": False})
    assert kept.kind == "ok" and lost.kind == "ok", (kept.message, lost.message)
    assert kept.result["persisted"] is True
    boot_id = run(fleet, "persist", "inventory").result["boot_id"]
    assert run(fleet, "persist", "reboot").ok
    back = wait_back(fleet, "persist", boot_id)
    assert nic_of(back.result, "eno49")["sriov_numvfs"] == 3
    assert nic_of(back.result, "eno50")["sriov_numvfs"] == 0
    truth = fleet.host("persist").true_state()
    assert truth["numvfs"]["0000:04:00.0"] == 3 and truth["numvfs"]["0000:04:00.1"] == 0


@pytest.mark.parametrize("fault, kind", sorted(FAULT_HOSTS.items()))
def test_each_fault_has_its_own_error_kind(fleet, fault, kind):
    name = f"fault-{fault}"
    host = fleet.host(name)
    assert run(fleet, name, "inventory").kind == "ok"
    ran_before = len(host.commands)
    host.inject(fault)
    try:
        res = run(fleet, name, "inventory", op_timeout=1.5, connect_timeout=3.0)
    finally:
        host.clear_faults()
    assert res.kind == kind, (res.message, res.stdout[:300], res.stderr[:300])
    assert not res.ok
    if kind in ("unreachable", "auth_failed", "host_key_mismatch"):
        assert len(host.commands) == ran_before  # nothing was run
    if kind == "host_key_mismatch":
        assert res.details["expected_fingerprint"] == fingerprint(host.original_host_public_key)
        assert res.details["presented_fingerprint"] != res.details["expected_fingerprint"]
    if kind == "timeout":
        assert res.message == "the agent did not finish within 1.5s" and res.response is None
    if kind == "malformed_response":
        assert res.stdout and res.response is None
    # and the host is fine again once the fault is cleared
    assert run(fleet, name, "inventory").kind == "ok"


def test_new_host_key_when_not_pinned(fleet):
    host = fleet.host("newkey")
    ran_before = len(host.commands)
    res = run(fleet, "newkey", "inventory", known_host_key=None)
    assert res.kind == "new_host_key" and not res.ok
    assert res.host_key.split()[:2] == host.host_public_key.split()[:2]
    assert res.host_key_fingerprint == fingerprint(host.host_public_key)
    assert len(host.commands) == ran_before
    tofu = run(fleet, "newkey", "inventory", known_host_key=None, accept_new_host_key=True)
    assert tofu.kind == "ok" and tofu.host_key_was_unknown


def test_non_root_user_runs_through_sudo(fleet):
    res = run(fleet, "sudo", "inventory")
    assert res.kind == "ok", (res.message, res.stderr[-2000:])
    assert res.command.startswith(protocol.SUDO_PREFIX)
    assert fleet.host("sudo").commands[-1]["command"] == "sudo bootstrap"


@pytest.mark.timeout(600)
def test_fan_out_over_200_simulated_hosts(tmp_path):
    with SimFleet(tmp_path / "fleet200", count=200, base_port=0, agent_workers=8) as big:
        key = big.client_private_key_path.read_text()
        jobs = [(HostTarget(name=h.name, address=h.address, port=h.port, username=h.username, private_key=key,
                            known_host_key=h.original_host_public_key, connect_timeout=30, op_timeout=120),
                 "inventory", {}) for h in big.hosts]
        results = run_many_sync(jobs, concurrency=50)
        assert [r.host for r in results] == [h.name for h in big.hosts]
        bad = [(r.host, r.kind, r.message) for r in results if r.kind != "ok"]
        assert not bad, bad[:5]
        assert len({r.result["boot_id"] for r in results}) == 200
        assert len({r.result["machine_id"] for r in results}) == 200
        assert len({r.result["hostname"] for r in results}) == 200
