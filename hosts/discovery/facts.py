"""What discovery stores, as field lists: one line per model field, per level (host, NIC, VF).

A `Fact` names the model field, where its value is in the agent's inventory (a dotted path, or a
function of the item), and how it is converted (by default from the model field's type: text is
stripped and cut to the column's length, integers parsed, booleans kept only when they are
booleans). The writer (hosts/discovery/recording.py) compares each fact with the stored value and
writes only what differs, in bulk per chunk, so a new inventory field costs one line here (plus
its model field and migration).

Facts never include the console's intent (Intent rows).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import models

from ..models import Hypervisor, LibvirtNetwork, Nic, VirtualFunction

# A source may return KEEP: the stored value stays (e.g. running guests when virsh failed).
KEEP = object()

# A few PCI ids worth naming in the UI (the agent reports ids only; pci.ids is not on every host).
PCI_VENDORS = {"8086": "Intel", "14e4": "Broadcom", "15b3": "Mellanox", "10de": "NVIDIA", "1077": "QLogic"}
PCI_DEVICES = {
    ("8086", "1521"): "I350 Gigabit Network Connection",
    ("8086", "1520"): "I350 Ethernet Controller Virtual Function",
    ("8086", "1572"): "Ethernet Controller X710 for 10GbE SFP+",
    ("8086", "154c"): "Ethernet Virtual Function 700 Series",
    ("8086", "10fb"): "82599ES 10-Gigabit SFI/SFP+ Network Connection",
    ("8086", "1528"): "Ethernet Controller 10-Gigabit X540-AT2",
    ("8086", "159b"): "Ethernet Controller E810-XXV for SFP",
    ("14e4", "1657"): "NetXtreme BCM5719 Gigabit Ethernet PCIe",
    ("15b3", "1017"): "MT27800 Family [ConnectX-5]",
    ("15b3", "1018"): "MT27800 Family [ConnectX-5 Virtual Function]",
    ("15b3", "1015"): "MT27710 Family [ConnectX-4 Lx]",
    ("15b3", "101b"): "MT28908 Family [ConnectX-6]",
}


@dataclass(frozen=True)
class Fact:
    field: str
    source: str | Callable[[dict], Any]  # dotted path in the item, or a function of the item
    convert: Callable[[Any, models.Field], Any] | None = None  # None: by the model field's type

    def reader(self, model) -> Callable[[dict], Any]:
        """item → the value to store (or KEEP), with the source and the conversion resolved once."""
        model_field = model._meta.get_field(self.field)
        convert = self.convert or default_converter(model_field)
        if callable(self.source):
            source = self.source
        elif "." in self.source:
            source = functools.partial(dig, path=tuple(self.source.split(".")))
        else:
            source = operator.methodcaller("get", self.source)

        def read(item):
            value = source(item)
            return KEEP if value is KEEP else convert(value, model_field)

        return read


def dig(item, path: tuple[str, ...]):
    for key in path:
        item = item.get(key) if isinstance(item, dict) else None
    return item


def to_text(value, field) -> str:
    """None → '' and cut to the column's length (agent data is not trusted to fit)."""
    if value is None:
        return ""
    text = str(value).strip()
    return text[: field.max_length] if getattr(field, "max_length", None) else text


def to_lower_text(value, field) -> str:
    return to_text(value, field).lower()


def to_int(value, field=None):
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def to_bool_or_none(value, field=None):
    return value if isinstance(value, bool) else None


def to_bool(value, field=None) -> bool:
    return bool(value)


def as_is(value, field=None):
    return value


def default_converter(field: models.Field):
    if isinstance(field, models.BooleanField):
        return to_bool_or_none if field.null else to_bool
    if isinstance(field, models.IntegerField):
        return to_int
    if isinstance(field, models.CharField | models.TextField):
        return to_text
    return as_is


# -- sources that need more than a path ---------------------------------------------------------


def _grub_file(inv: dict):
    grub = inv.get("grub") or {}
    return grub.get("cmdline_linux_default_source") or (grub.get("files") or [""])[-1]


def _running_guests(inv: dict):
    guests = inv.get("guests")
    if not isinstance(guests, list):  # None: virsh failed, keep what we knew
        return KEEP
    return [
        {"name": str(g.get("name", "")), "hostdev_pci": list(g.get("hostdev_pci") or []),
         "uses": [u for u in g.get("uses") or [] if isinstance(u, dict)]}
        for g in guests
        if isinstance(g, dict)
    ]


def _if_capable(key: str):
    """A PF with the SR-IOV capability keeps its figures even when sriov_totalvfs is 0 (SR-IOV off
    in the firmware: "not capable now", with the reason), an agent without `sriov_capability` only
    when it can have VFs."""
    return lambda nic: nic.get(key) if nic.get("sriov_capability", nic.get("sriov_capable")) else None


def _binding_state(nic: dict):
    return nic.get("state") or ("netdev" if nic.get("name") else "")


def _max_vfs_form(nic: dict):
    param = nic.get("max_vfs_param")
    return param.get("form") if isinstance(param, dict) else None


def _link(nic: dict):
    link = nic.get("link")
    return link if isinstance(link, dict) else None


def _json_list(key: str):
    """A list of objects; an object's `counts` (PF PCI address -> VF count) is always an object."""
    def read(item: dict):
        value = item.get(key)
        entries = [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []
        return [dict(e, counts=e["counts"] if isinstance(e.get("counts"), dict) else {}) for e in entries]

    return read


def _iommu_firmware(inv: dict):
    firmware = (inv.get("iommu") or {}).get("firmware")
    if not isinstance(firmware, dict):
        return {}
    return {"table": firmware.get("table"), "present": to_bool_or_none(firmware.get("present")),
            "acpi_tables_readable": to_bool_or_none(firmware.get("acpi_tables_readable"))}


def _boot_config(inv: dict):
    config = inv.get("boot_config")
    return config if isinstance(config, dict) else {}


def _vf_places(inv: dict) -> dict:
    """VF PCI address -> (its PF's PCI address, its index), over every PF the agent reports."""
    places = {}
    for pf in list(inv.get("nics") or []) + list(inv.get("sriov_pfs") or []):
        if not isinstance(pf, dict) or pf.get("is_vf"):
            continue
        for vf in pf.get("vfs") or []:
            if isinstance(vf, dict) and vf.get("pci_address"):
                places[vf["pci_address"]] = (pf.get("pci_address"), vf.get("index"))
    return places


def _defined_guests(inv: dict):
    """Stopped guests that start at boot, with the VFs they take (KEEP when virsh failed)."""
    guests = inv.get("defined_guests")
    if not isinstance(guests, list):
        return KEEP
    places = _vf_places(inv)
    out = []
    for guest in guests:
        if not isinstance(guest, dict):
            continue
        vfs = []
        for use in guest.get("uses") or []:
            if not isinstance(use, dict):
                continue
            pf, index = places.get(use.get("pci"), (None, None))
            vfs.append({"pci": use.get("pci"), "via": use.get("via"), "pf": pf, "index": index})
        out.append({"name": str(guest.get("name", "")), "vfs": vfs, "networks": list(guest.get("networks") or [])})
    return out


def _vendor_name(nic: dict):
    return PCI_VENDORS.get(str(nic.get("vendor_id") or "").strip().lower(), KEEP)


def _device_name(nic: dict):
    ids = (str(nic.get("vendor_id") or "").strip().lower(), str(nic.get("device_id") or "").strip().lower())
    return PCI_DEVICES.get(ids, KEEP)


def _guest(vf: dict):
    return ", ".join(str(g) for g in vf.get("used_by") or [])


def _used_via(vf: dict):
    uses = [u for u in vf.get("used_via") or [] if isinstance(u, dict)]
    return "; ".join(f"{u.get('guest')}: {u.get('via')}" for u in uses)


def nic_items(inv: dict) -> list:
    """The inventory's PFs and NICs: every network interface with a PCI device, plus the SR-IOV
    capable PCI functions that have no network interface (driver unbound, vfio-pci), shaped like
    a NIC with an empty name."""
    items = [n for n in inv.get("nics") or [] if isinstance(n, dict)]
    listed = {n.get("pci_address") for n in items}
    for pf in inv.get("sriov_pfs") or []:
        if not isinstance(pf, dict) or pf.get("netdev") or pf.get("pci_address") in listed:
            continue
        items.append(dict(pf, name="", sriov_capability=True, sriov_capable=bool(pf.get("capable_now")),
                          sriov_not_capable_reason=pf.get("not_capable_reason"), link=None))
    return items
def _persisted_settings(vf: dict):
    value = vf.get("persisted_settings")
    return value if isinstance(value, dict) else None


# -- the field lists ---------------------------------------------------------------------------

HOST_FACTS = (
    Fact("hostname", "hostname"),
    Fact("machine_id", "machine_id"),
    Fact("boot_id", "boot_id"),
    Fact("kernel", "kernel_release"),
    Fact("os_id", "os.id"),
    Fact("os_version", "os.version_id"),
    Fact("os_name", "os.pretty_name"),
    Fact("cpu_vendor", "cpu_vendor"),
    Fact("cmdline", "cmdline"),
    Fact("grub_cmdline_linux", "grub.cmdline_linux"),
    Fact("grub_cmdline_default", "grub.cmdline_linux_default"),
    Fact("grub_file", _grub_file),
    Fact("grub_tool", "grub_tool"),
    Fact("iommu_active", "iommu.active"),
    Fact("running_guests", _running_guests),
    Fact("iommu_firmware", _iommu_firmware),
    Fact("boot_config", _boot_config),
    Fact("defined_guests", _defined_guests),
    Fact("other_vf_config", _json_list("other_vf_config")),
)

NIC_FACTS = (
    Fact("name", "name"),
    Fact("vendor_id", "vendor_id", to_lower_text),
    Fact("device_id", "device_id", to_lower_text),
    Fact("vendor_name", _vendor_name),
    Fact("device_name", _device_name),
    Fact("driver", "driver"),
    Fact("driver_version", "driver_version"),
    Fact("firmware", "firmware_version"),
    Fact("mac", "mac"),
    Fact("operstate", "operstate"),
    Fact("speed", "speed"),
    Fact("mtu", "mtu"),
    Fact("sriov_totalvfs", _if_capable("sriov_totalvfs")),
    Fact("sriov_numvfs", _if_capable("sriov_numvfs")),
    Fact("persisted", "managed", to_bool),
    Fact("persisted_numvfs", "persisted_count"),
    Fact("persisted_conflict", "persisted_conflict", to_bool),
    Fact("binding_state", _binding_state),
    Fact("not_capable_reason", "sriov_not_capable_reason"),
    Fact("max_vfs_form", _max_vfs_form),
    Fact("device_busy", "device_busy", to_bool),
    Fact("link", _link),
    Fact("other_config", _json_list("other_config")),
    # -- VF configuration facts of the PF --
    Fact("numa_node", "numa_node"),
    Fact("local_cpulist", "local_cpulist"),
    Fact("persisted_mtu", "persisted_mtu"),
    Fact("sriov_drivers_autoprobe", "sriov_drivers_autoprobe"),
    Fact("vf_settings_known", "vf_settings_known"),
)

VF_FACTS = (
    Fact("pci_address", "pci_address"),
    Fact("netdev", "netdev"),
    Fact("mac", "mac"),
    Fact("driver", "driver"),
    Fact("guest", _guest),
    Fact("used_via", _used_via),
    # -- what the PF assigns to the VF (vf_config, vf_driver) --
    Fact("admin_mac", "admin_mac", to_lower_text),
    Fact("vlan", "vlan"),
    Fact("qos", "qos"),
    Fact("spoofchk", "spoofchk"),
    Fact("trust", "trust"),
    Fact("link_state", "link_state"),
    Fact("max_tx_rate", "max_tx_rate"),
    Fact("min_tx_rate", "min_tx_rate"),
    Fact("driver_override", "driver_override"),
    Fact("persisted_settings", _persisted_settings),
    Fact("persisted_driver", "persisted_driver"),
)

# Observed facts whose change is worth a `host.state_changed` event (besides per-NIC VF counts).
WATCHED_FACTS = ("kernel", "boot_id", "cmdline", "iommu_active")


def _bound(model, facts):
    return tuple((fact.field, fact.reader(model)) for fact in facts)


BOUND = {
    Hypervisor: _bound(Hypervisor, HOST_FACTS),
    Nic: _bound(Nic, NIC_FACTS),
    VirtualFunction: _bound(VirtualFunction, VF_FACTS),
}


def apply_facts(obj, item: dict, changed: set[str]) -> None:
    """Set every fact of `item` on `obj` that differs from what it holds; add their names to
    `changed` (nothing is set, nothing added, when the stored value is already right)."""
    for name, read in BOUND[type(obj)]:
        value = read(item)
        if value is KEEP or getattr(obj, name) == value:
            continue
        setattr(obj, name, value)
        changed.add(name)


def text(model, field_name: str, value) -> str:
    """A key (PCI address) cut to its column like every other text fact."""
    return to_text(value, model._meta.get_field(field_name))


# -- libvirt networks (hosts/discovery/networks.py writes them) ----------------------------------


def _names(key: str):
    def read(network: dict):
        value = network.get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    return read


def _in_use(network: dict):
    value = network.get("in_use_pci")
    return [str(v) for v in value] if isinstance(value, list) else None


NETWORK_FACTS = (
    Fact("active", "active"),
    Fact("autostart", "autostart"),
    Fact("persistent", "persistent"),
    Fact("mode", "mode"),
    Fact("vf_pool", "vf_pool", to_bool),
    Fact("managed", "managed", to_bool),
    Fact("pfs", _names("pfs")),
    Fact("vf_pci", _names("vf_pci")),
    Fact("in_use_pci", _in_use),
    Fact("connections", "connections"),
    Fact("guests", _names("guests")),
)
BOUND[LibvirtNetwork] = _bound(LibvirtNetwork, NETWORK_FACTS)
