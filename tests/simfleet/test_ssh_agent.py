"""The real agent bytes over real SSH against simulated hosts: inventory per profile, set_vfs,
kernel_args, reboot and persistence."""

from __future__ import annotations

import asyncio
import hashlib
import json

import asyncssh
import pytest

from remote.protocol import BOOTSTRAP_COMMAND, SUDO_PREFIX

from .conftest import AGENT, acall, agent, call, wait_rebooted

pytestmark = pytest.mark.timeout(90)

EXPECTED = {
    "dl360g9": {
        "eno1": ("tg3", None),
        "eno2": ("tg3", None),
        "eno3": ("tg3", None),
        "eno4": ("tg3", None),
        "eno49": ("igb", 7),
        "eno50": ("igb", 7),
        "eno51": ("igb", 7),
        "eno52": ("igb", 7),
    },
    "x710": {
        "eno1": ("tg3", None),
        "eno2": ("tg3", None),
        "enp59s0f0": ("i40e", 64),
        "enp59s0f1": ("i40e", 64),
    },
    "cx5": {"eno1": ("igb", None), "enp94s0f0np0": ("mlx5_core", 8), "enp94s0f1np1": ("mlx5_core", 8)},
    "epyc": {
        "eno1": ("tg3", None),
        "eno2": ("tg3", None),
        "enp65s0f0": ("igb", 7),
        "enp65s0f1": ("igb", 7),
        "enp129s0f0": ("i40e", 64),
        "enp129s0f1": ("i40e", 64),
    },
    "rhel8": {
        "eno1": ("tg3", None),
        "eno2": ("tg3", None),
        "eno3": ("tg3", None),
        "eno4": ("tg3", None),
        "ens1f0": ("igb", 7),
        "ens1f1": ("igb", 7),
        "ens1f2": ("igb", 7),
        "ens1f3": ("igb", 7),
    },
    "legacy": {"eth0": ("igb", 7), "eth1": ("igb", 7), "eth2": ("igb", 7), "eth3": ("igb", 7)},
}
TOOLS = {
    "dl360g9": "update-grub",
    "x710": "update-grub",
    "cx5": "grubby",
    "epyc": "update-grub",
    "rhel8": "grub2-mkconfig",
    "legacy": "grubby",
}


def test_each_profile_inventory_over_ssh(make_fleet):
    fleet = make_fleet(hosts=list(EXPECTED))
    for host in fleet.hosts:
        doc = agent(fleet, host, "inventory")
        assert doc["ok"], doc
        result = doc["result"]
        nics = {n["name"]: (n["driver"], n["sriov_totalvfs"]) for n in result["nics"]}
        assert nics == EXPECTED[host.profile_name], host.name
        assert result["hostname"] == host.name
        assert result["boot_id"] == host.boot_id
        assert result["grub_tool"] == TOOLS[host.profile_name]
        # AMD-Vi is on by default where the firmware enables it; Intel needs intel_iommu=on
        assert result["iommu"]["active"] is (host.profile_name == "epyc")
        assert result["cpu_vendor"] == ("amd" if host.profile_name == "epyc" else "intel")
        assert result["legacy_kernel"] is (host.profile_name == "legacy")
    dl = fleet.hosts[0]
    eno49 = next(n for n in agent(fleet, dl, "inventory")["result"]["nics"] if n["name"] == "eno49")
    assert (eno49["pci_address"], eno49["vendor_id"], eno49["device_id"]) == ("0000:04:00.0", "8086", "1521")
    assert eno49["driver_version"] == "5.6.0-k"
    assert eno49["firmware_version"] == "1.61, 0x80000daa, 1.949.0"
    # The effective GRUB_CMDLINE_LINUX_DEFAULT comes from the cloud-image drop-in (DESIGN §13).
    grub = agent(fleet, dl, "inventory")["result"]["grub"]
    assert grub["cmdline_linux_default_source"] == "/etc/default/grub.d/50-cloudimg-settings.cfg"


def test_commands_are_recorded_with_sha256(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    agent(fleet, host, "inventory")
    record = host.commands[-1]
    assert record["op"] == "inventory" and record["command"] == "bootstrap"
    assert record["sha256"] == hashlib.sha256(AGENT).hexdigest()
    assert record["exit_status"] == 0


def test_set_vfs_2_to_4_resets_first_and_waits_for_vfs(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"], vf_delay=0.3)
    host = fleet.hosts[0]
    args = {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 2}
    assert agent(fleet, host, "set_vfs", args)["ok"]
    doc = agent(fleet, host, "set_vfs", dict(args, count=4))
    assert doc["ok"], doc
    assert any("wrote 0" in a for a in doc["result"]["actions"])
    assert [vf["netdev"] for vf in doc["result"]["after"]["vfs"]] == [
        "eno49v0",
        "eno49v1",
        "eno49v2",
        "eno49v3",
    ]
    state = host.true_state()
    assert state["numvfs"]["0000:04:00.0"] == 4
    assert all(vf["netdev_present"] for vf in state["vfs"]["0000:04:00.0"])
    # above totalvfs: refused by the agent before the kernel sees it
    doc = agent(fleet, host, "set_vfs", dict(args, count=8))
    assert not doc["ok"] and doc["error"]["code"] == "exceeds_total"


def test_admin_user_goes_through_sudo(make_fleet):
    fleet = make_fleet(hosts=["x710"], users=("admin",))
    host = fleet.hosts[0]
    assert host.username == "admin"
    args = {"pf": "enp59s0f0", "pci_address": "0000:3b:00.0", "count": 4}
    doc = agent(fleet, host, "set_vfs", args)  # conftest uses command_for(user): sudo -n ...
    assert doc["ok"], doc
    assert host.commands[-1]["command"] == "sudo bootstrap"
    # without sudo, a non-root login cannot write sysfs
    doc = agent(fleet, host, "set_vfs", dict(args, count=0), command=BOOTSTRAP_COMMAND)
    assert not doc["ok"] and doc["error"]["code"] == "permission_denied"


def test_other_commands_are_refused(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]

    async def run():
        async with asyncssh.connect(
            host.address,
            host.port,
            username="root",
            client_keys=[str(fleet.client_private_key_path)],
            known_hosts=None,
        ) as conn:
            return await conn.run("cat /etc/shadow"), await conn.run(SUDO_PREFIX + "id")

    for result in asyncio.run(run()):
        assert result.exit_status == 127 and "command not allowed" in result.stderr


def test_reboot_new_boot_id_and_connections_dropped(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"], reboot_delay=0.5, down_time=1.0)
    host = fleet.hosts[0]
    old = host.boot_id

    async def run():
        async with asyncssh.connect(
            host.address,
            host.port,
            username="root",
            client_keys=[str(fleet.client_private_key_path)],
            known_hosts=None,
        ) as idle:
            status, out, _err = await acall(fleet, host, "reboot")
            assert status == 0 and json.loads(out)["result"]["boot_id"] == old
            await asyncio.wait_for(idle.wait_closed(), 10)  # the reboot dropped the open connection
        with pytest.raises(OSError):  # refused while down
            await acall(fleet, host, "inventory")

    asyncio.run(run())
    assert not host.true_state()["reachable"]
    wait_rebooted(host, old)
    assert agent(fleet, host, "inventory")["result"]["boot_id"] == host.boot_id != old


def test_persisted_counts_survive_reboot_unpersisted_do_not(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    assert agent(fleet, host, "set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 3})["ok"]
    assert agent(
        fleet, host, "set_vfs", {"pf": "eno50", "pci_address": "0000:04:00.1", "count": 2, "persist": False}
    )["ok"]
    assert host.true_state()["persisted"] == {"0000:04:00.0": 3}
    old = host.boot_id
    host.reboot()
    wait_rebooted(host, old)
    nics = {n["name"]: n for n in agent(fleet, host, "inventory")["result"]["nics"]}
    assert nics["eno49"]["sriov_numvfs"] == 3 and len(nics["eno49"]["vfs"]) == 3
    assert nics["eno50"]["sriov_numvfs"] == 0 and nics["eno50"]["vfs"] == []


def test_kernel_args_need_regeneration_and_reboot(make_fleet):
    fleet = make_fleet(hosts=["dl360g9", "cx5", "rhel8"])
    for host in fleet.hosts:
        # an admin edits /etc/default/grub by hand and forgets to regenerate: no effect at boot
        system = host.system()
        text = system.read_text("/etc/default/grub")
        system.atomic_write(
            "/etc/default/grub", text + 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX handedit=1"\n'
        )
        old = host.boot_id
        host.reboot()
        wait_rebooted(host, old)
        assert "handedit=1" not in host.true_state()["cmdline"].split()
        system.atomic_write("/etc/default/grub", text)
        # through the agent: edit + regenerate with the host's tool; active after the reboot
        doc = agent(fleet, host, "kernel_args", {"add": ["intel_iommu=on", "iommu=pt"]})
        assert doc["ok"], doc
        assert doc["result"]["reboot_required"] is True
        assert "intel_iommu=on" in host.true_state()["generated_cmdline"].split()
        old = host.boot_id
        assert agent(fleet, host, "reboot")["ok"]
        wait_rebooted(host, old)
        inv = agent(fleet, host, "inventory")["result"]
        assert "intel_iommu=on" in inv["cmdline"].split(), host.name
        assert inv["iommu"]["active"] is True


def test_legacy_host_max_vfs_after_reboot(make_fleet):
    fleet = make_fleet(hosts=["legacy"])
    host = fleet.hosts[0]
    doc = agent(fleet, host, "set_vfs", {"pf": "eth1", "pci_address": "0000:03:00.1", "count": 4})
    assert doc["ok"], doc
    assert doc["result"]["reboot_required"] is True
    assert host.true_state()["numvfs"]["0000:03:00.1"] == 0
    old = host.boot_id
    assert agent(fleet, host, "reboot")["ok"]  # no systemd-run on CentOS 6: sh -c 'sleep 2; reboot'
    wait_rebooted(host, old)
    assert host.true_state()["numvfs"]["0000:03:00.1"] == 4


def test_guest_holding_vfs_blocks_shrink(make_fleet):
    fleet = make_fleet(hosts=["dl360g9"])
    host = fleet.hosts[0]
    args = {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 2}
    assert agent(fleet, host, "set_vfs", args)["ok"]
    host.add_guest("vm-db01", ["0000:04:10.4"])  # VF 1
    doc = agent(fleet, host, "set_vfs", dict(args, count=1))
    assert doc["error"]["code"] == "vfs_in_use" and doc["error"]["details"]["guests"] == ["vm-db01"]
    inv = agent(fleet, host, "inventory")["result"]
    assert [g["name"] for g in inv["guests"]] == ["vm-db01"]


def test_call_helper_direct(make_fleet):
    fleet = make_fleet(hosts=["epyc"])
    status, out, err = call(fleet, fleet.hosts[0], "nonsense")
    assert status == 2 and json.loads(out)["error"]["code"] == "unknown_op"
