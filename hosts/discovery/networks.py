"""Recording a host's libvirt networks (`libvirt_networks` of the inventory), like NICs and VFs:
compared with what is stored, only what differs written, in bulk with the rest of the chunk.

A network is keyed by its name on the host. One the host no longer reports is deleted: a libvirt
network has no hardware identity to keep history for (the audit trail of the change that removed
it does). An inventory without the list (an older agent, virsh missing) leaves the stored rows.
"""

from __future__ import annotations

from ..models import LibvirtNetwork
from .facts import apply_facts, text


def plan_networks(host, inventory: dict, stored: list, writes) -> list:
    """Fills writes.new_networks / writes.networks / writes.gone_networks; returns the host's
    networks as they are after this discovery (for drift)."""
    reported = inventory.get("libvirt_networks")
    if not isinstance(reported, list) or inventory.get("libvirt_networks_error"):
        return list(stored)
    existing = {network.name: network for network in stored}
    current, seen = [], set()
    for item in reported:
        if not isinstance(item, dict) or not item.get("name"):
            continue
        name = text(LibvirtNetwork, "name", item["name"])
        if name in seen:
            continue
        seen.add(name)
        network = existing.get(name)
        is_new = network is None
        network = network or LibvirtNetwork(host=host, name=name)
        changed: set = set()
        apply_facts(network, item, changed)
        if is_new:
            writes.new_networks.append(network)
        elif changed:
            writes.networks[network] = changed
        current.append(network)
    writes.gone_networks += [network.pk for name, network in existing.items() if name not in seen]
    return current
