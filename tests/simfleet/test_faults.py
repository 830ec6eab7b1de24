"""Each injected fault gives its observable behaviour, and clearing it restores the host."""

from __future__ import annotations

import asyncio
import json
import time

import asyncssh
import pytest

from .conftest import acall, agent, call, wait_rebooted

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def fleet(make_fleet):
    return make_fleet(hosts=["dl360g9", "x710"])


def test_unreachable(fleet):
    host = fleet.hosts[0]
    host.inject("unreachable")
    assert not host.true_state()["reachable"]
    with pytest.raises(ConnectionRefusedError):
        call(fleet, host, "inventory")
    assert agent(fleet, fleet.hosts[1], "inventory")["ok"]  # the others are fine
    host.clear_faults()
    assert agent(fleet, host, "inventory")["ok"]


def test_auth_rejected(fleet):
    host = fleet.hosts[0]
    host.inject("auth_rejected")
    with pytest.raises(asyncssh.PermissionDenied):
        call(fleet, host, "inventory")
    host.clear_faults("auth_rejected")
    assert agent(fleet, host, "inventory")["ok"]


def test_unknown_user_and_key_are_rejected(fleet, tmp_path):
    host = fleet.hosts[0]
    with pytest.raises(asyncssh.PermissionDenied):
        call(fleet, host, "inventory", user="mallory")
    other = asyncssh.generate_private_key("ssh-ed25519")

    async def run():
        async with asyncssh.connect(
            host.address, host.port, username="root", client_keys=[other], known_hosts=None
        ):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(run())


def test_host_key_rotated(fleet):
    host = fleet.hosts[0]
    original = host.host_public_key
    pinned = asyncssh.import_known_hosts(f"[{host.address}]:{host.port} {original}\n")
    assert agent(fleet, host, "inventory", known_hosts=pinned)["ok"]
    host.inject("host_key_rotated")
    assert host.host_public_key != original
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        call(fleet, host, "inventory", known_hosts=pinned)
    seen = asyncio.run(asyncssh.get_server_host_key(host.address, host.port))
    assert seen.export_public_key("openssh").decode().strip() == host.host_public_key
    host.clear_faults()
    assert host.host_public_key == original
    assert agent(fleet, host, "inventory", known_hosts=pinned)["ok"]


def test_latency(fleet):
    host = fleet.hosts[0]
    host.inject("latency", seconds=0.5)
    started = time.monotonic()
    assert agent(fleet, host, "inventory")["ok"]
    assert time.monotonic() - started >= 0.5  # behaviour (the delay exists), not a speed claim
    host.clear_faults()


def test_hang(fleet):
    host = fleet.hosts[0]
    host.inject("hang")
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        call(fleet, host, "inventory", timeout=1.0)
    host.clear_faults()
    assert agent(fleet, host, "inventory")["ok"]


def test_reboot_never_returns(fleet):
    host = fleet.hosts[0]
    host.inject("reboot_never_returns")
    old = host.boot_id
    assert agent(fleet, host, "reboot")["ok"]
    assert host.wait_until(lambda s: s["state"] == "down", 10)
    time.sleep(host.down_time + 0.5)
    assert not host.true_state()["reachable"]
    with pytest.raises(OSError):
        call(fleet, host, "inventory")
    host.clear_faults()  # the machine finally comes back
    wait_rebooted(host, old)


def test_update_grub_fails(fleet):
    host = fleet.hosts[0]
    before = host.true_state()
    host.inject("update_grub_fails")
    doc = agent(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})
    assert not doc["ok"] and doc["error"]["code"] == "grub_tool_failed"
    assert "grub-probe" in doc["error"]["details"]["stderr"]
    after = host.true_state()
    assert after["generated_cmdline"] == before["generated_cmdline"]
    assert after["grub_effective"] == before["grub_effective"]  # the agent restored its backup


def test_readonly_etc(fleet):
    host = fleet.hosts[1]
    host.inject("readonly_etc")
    doc = agent(fleet, host, "kernel_args", {"add": ["intel_iommu=on"]})
    assert not doc["ok"] and doc["error"]["code"] == "readonly_fs"
    doc = agent(fleet, host, "set_vfs", {"pf": "enp59s0f0", "pci_address": "0000:3b:00.0", "count": 2})
    assert not doc["ok"] and doc["error"]["code"] == "readonly_fs"
    # the ownership record is written before sysfs: it failed, so no VF was created
    assert host.true_state()["numvfs"]["0000:3b:00.0"] == 0
    assert host.true_state()["persisted"] == {}


def test_no_python(fleet):
    host = fleet.hosts[0]
    host.inject("no_python")
    status, out, err = call(fleet, host, "inventory")
    assert status == 127 and out == b"" and b"python3: command not found" in err
    status, _out, err = call(fleet, host, "inventory", user="admin")
    assert status == 127 and err.startswith(b"sudo: python3")


def test_garbage_output(fleet):
    host = fleet.hosts[0]
    host.inject("garbage_output")
    _status, out, _err = call(fleet, host, "inventory")
    with pytest.raises(ValueError):
        json.loads(out)
    host.clear_faults("garbage_output")
    assert agent(fleet, host, "inventory")["ok"]


def test_unknown_fault_is_an_error(fleet):
    with pytest.raises(ValueError):
        fleet.hosts[0].inject("cosmic_rays")


def test_faults_in_async_use(tmp_path):
    """astart/astop on the caller's loop, ainject/aclear_faults from it."""
    from simfleet import SimFleet

    async def run():
        async with SimFleet(tmp_path / "a", hosts=["cx5"], base_port=0) as fleet:
            host = fleet.hosts[0]
            await host.ainject("unreachable")
            with pytest.raises(OSError):
                await acall(fleet, host, "inventory")
            await host.aclear_faults()
            status, out, _ = await acall(fleet, host, "inventory")
            assert status == 0 and json.loads(out)["ok"]

    asyncio.run(run())
