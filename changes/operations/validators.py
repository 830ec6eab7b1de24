"""Small syntax checks for operation input, shared by the operation modules."""

import re

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
DRIVER_RE = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
VENDOR_DEVICE_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")

SELECT_RULES = {
    "name": (IFNAME_RE, "an interface name such as eno49"),
    "pci": (PCI_RE, "a PCI address such as 0000:04:00.0"),
    "driver": (DRIVER_RE, "a driver name such as igb"),
    "vendor_device": (VENDOR_DEVICE_RE, "vendor:device such as 8086:1521"),
}


def check_select_value(by: str, value: str, where: str) -> None:
    from .base import OperationError

    pattern, example = SELECT_RULES[by]
    if not pattern.match(value):
        raise OperationError(f"{where}: {value!r} is not {example}")


def legacy_kernel(release: str) -> bool:
    """Kernels before 3.8 have no sriov_numvfs: the VF count is the driver's max_vfs parameter."""
    try:
        major, minor = (int(p) for p in (release or "").split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (3, 8)
