"""Discovery records the VF configuration facts through the real agent's inventory of simulated
hosts: per-VF settings, NUMA facts of the PF, and every libvirt network (created, updated,
deleted, with the guests that use it), only what changed written."""

import json

import pytest

from hosts.models import LibvirtNetwork, Nic, VirtualFunction
from remote import protocol
from simfleet.host import SimHost

from .pages_fleet import _agent
from .test_discovery_writes import counted, register, writes_to

pytestmark = pytest.mark.django_db
ENO49 = "0000:04:00.0"


def agent(sim, op, args):
    """The agent in-process, given its own bytes as simfleet's SSH server does (persist installs a
    copy of the agent for udev)."""
    request = {"op": op, "args": args, "request_id": f"t-{sim.name}"}
    system = sim.system(agent_source=protocol.agent_source())
    status, out, err = _agent()["run_payload"](json.dumps(request).encode(), system)
    assert status == 0, (out, err)
    return json.loads(out)["result"]


def test_vf_settings_numa_and_libvirt_networks_are_recorded_and_only_changes_written():
    sim = SimHost("vfd-1", "dl360g9", index=0, vf_delay=0)
    agent(sim, "set_vfs", {"pf": "eno49", "pci_address": ENO49, "count": 3, "persist": True})
    agent(sim, "vf_config", {"pf": "eno49", "pci_address": ENO49, "persist": True,
                             "vfs": [{"index": 1, "vlan": 100, "trust": True}]})
    sim.add_network("admin-pool", "hostdev", "eno49")
    sim.add_guest("web-1", interfaces=[{"type": "network", "network": "admin-pool"}])
    [host] = register([sim.name])
    counted([host], [sim])

    vf1 = VirtualFunction.objects.get(nic__host=host, nic__pci_address=ENO49, index=1)
    assert (vf1.vlan, vf1.trust, vf1.persisted_settings["vlan"]) == (100, True, 100)
    assert VirtualFunction.objects.get(nic__host=host, nic__pci_address=ENO49, index=0).vlan == 0
    nic = Nic.objects.get(host=host, pci_address=ENO49)
    assert nic.numa_node is not None and nic.vf_settings_known is True
    pool = LibvirtNetwork.objects.get(host=host, name="admin-pool")
    assert (pool.mode, pool.vf_pool, pool.managed, pool.pfs, pool.guests) == ("hostdev", True, False, ["eno49"],
                                                                             ["web-1"])

    repeat = counted([host], [sim])
    assert not writes_to(repeat, "hosts_libvirtnetwork") and not writes_to(repeat, "hosts_virtualfunction")

    sim.remove_guest("web-1")
    agent(sim, "vf_config", {"pf": "eno49", "pci_address": ENO49, "persist": True, "vfs": [{"index": 1, "vlan": 5}]})
    changed = counted([host], [sim])
    assert writes_to(changed, "hosts_libvirtnetwork") and writes_to(changed, "hosts_virtualfunction")
    assert LibvirtNetwork.objects.get(pk=pool.pk).guests == []
    assert VirtualFunction.objects.get(pk=vf1.pk).vlan == 5

    with sim.lock:
        del sim.networks["admin-pool"]
    counted([host], [sim])
    assert not LibvirtNetwork.objects.filter(host=host, name="admin-pool").exists()
