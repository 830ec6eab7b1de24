"""The host as it is, in words for the host and NIC pages: how a PF carries the host's own traffic,
other boot configuration of a VF count, guests that start at boot, PFs without a network interface,
the firmware's IOMMU. Reads only what discovery stored (hosts.models)."""

from __future__ import annotations

BINDING_WORDS = {
    "vfio": "bound to vfio-pci (handed to a guest or to DPDK): no network interface",
    "pci-stub": "bound to pci-stub (reserved for passthrough): no network interface",
    "no_driver": "no driver bound: no network interface",
    "other_driver": "bound to a driver without a network interface",
}
DISABLE_WORDS = {"comment": "comments its line out", "nm_section": "comments its [sriov] section out"}
IOMMU_TABLES = {"intel": "VT-d (DMAR)", "amd": "AMD-Vi (IVRS)"}


def binding_words(nic) -> str:
    """'' for a PF its network driver holds, else why it has no network interface."""
    return BINDING_WORDS.get(nic.binding_state, "")


def iommu_firmware(host) -> dict:
    """{"label": "VT-d (DMAR) in firmware", "state": "yes"|"no"|"unknown", "advice": str}."""
    firmware = host.iommu_firmware or {}
    what = IOMMU_TABLES.get((host.cpu_vendor or "").lower(), "VT-d / AMD-Vi (DMAR / IVRS)")
    present = firmware.get("present")
    state = "unknown" if present is None else ("yes" if present else "no")
    advice = ""
    if present is False:
        advice = "enable VT-d / AMD-Vi in the BIOS: kernel arguments cannot turn the IOMMU on without it"
    elif present is None and firmware.get("acpi_tables_readable") is False:
        advice = "the ACPI tables were not readable (the agent needs root)"
    return {"label": f"{what} in firmware", "state": state, "advice": advice, "table": firmware.get("table")}


def link_uses(nic) -> list[str]:
    """What of the host's own traffic goes through this PF, in short phrases."""
    link = nic.link or {}
    uses = []
    if link.get("management"):
        uses.append("carries the management SSH connection")
    for stacked in link.get("stacked") or []:
        if isinstance(stacked, dict):
            uses.append(f"in {stacked.get('kind') or 'device'} {stacked.get('name')}")
    addresses = [f"{a.get('address')} ({a.get('dev')})" for a in link.get("addresses") or [] if isinstance(a, dict)]
    if addresses:
        uses.append("addresses " + ", ".join(addresses))
    if link.get("default_route"):
        uses.append("default route")
    return uses


def link_drop(nic) -> str:
    link = nic.link or {}
    drops = link.get("link_drops_on_vf_change")
    if drops is None:
        return "unknown for this driver"
    if not drops:
        return "no"
    seconds = link.get("link_drop_seconds")
    return "yes" + (f", for about {seconds} s (twice when the count goes through 0)" if seconds else "")


def other_config_rows(items, labels: dict) -> list[dict]:
    """Other boot sources of a VF count: where, what, which PFs and counts, and what take_over does."""
    rows = []
    for item in items or []:
        if not isinstance(item, dict):
            continue
        counts = item.get("counts") or {}
        disable = item.get("disable") or {}
        if item.get("disable_blocker"):
            take_over = f"cannot disable it: {item['disable_blocker']}"
        elif disable:
            method = DISABLE_WORDS.get(disable.get("method"), disable.get("method") or "disables it")
            take_over = f"{method} in {disable.get('target') or item.get('path')} (backed up)"
        else:
            take_over = "cannot disable it"
        rows.append({
            "where": f"{item.get('path')}:{item['line']}" if item.get("line") else str(item.get("path") or ""),
            "how": item.get("how") or item.get("kind") or "",
            "text": item.get("text") or "",
            "counts": ", ".join(f"{labels.get(p, p)}: {'?' if c is None else c}" for p, c in sorted(counts.items())),
            "active": item.get("active"),
            "certain": item.get("certain"),
            "take_over": take_over,
        })
    return rows


def autostart_rows(guests, labels: dict) -> list[dict]:
    """Stopped guests that start at boot, with the VFs they take ("eno49 VF 2, hostdev")."""
    rows = []
    for guest in guests or []:
        if not isinstance(guest, dict):
            continue
        vfs = []
        for vf in guest.get("vfs") or []:
            where = f"{labels.get(vf.get('pf'), vf.get('pf'))} VF {vf.get('index')}" if vf.get("pf") else vf.get("pci")
            vfs.append(f"{where}, {vf.get('via') or 'hostdev'}")
        rows.append({"name": guest.get("name") or "?", "vfs": vfs})
    return rows


def running_rows(guests) -> list[dict]:
    rows = []
    for guest in guests or []:
        if isinstance(guest, dict):
            uses = [f"{u.get('pci')} ({u.get('via')})" for u in guest.get("uses") or [] if isinstance(u, dict)]
            rows.append({"name": guest.get("name") or "?", "uses": uses})
        else:
            rows.append({"name": str(guest), "uses": []})
    return rows


def host_truth(host, nics) -> dict:
    """The host page's context for all of the above."""
    labels = {nic.pci_address: nic.label for nic in nics}
    for nic in nics:
        nic.binding_words = binding_words(nic)
        nic.link_uses = link_uses(nic)
    return {
        "iommu_firmware": iommu_firmware(host),
        "other_config": other_config_rows(host.other_vf_config, labels),
        "autostart_guests": autostart_rows(host.defined_guests, labels),
        "running_guests": running_rows(host.running_guests),
        "boot_config": host.boot_config or {},
    }


def nic_truth(nic) -> dict:
    labels = {nic.pci_address: nic.label}
    nic.binding_words = binding_words(nic)
    nic.link_uses = link_uses(nic)
    return {"other_config": other_config_rows(nic.other_config, labels), "link_drop": link_drop(nic)}
