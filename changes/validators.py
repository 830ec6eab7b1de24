"""Small syntax checks for operation input (kept apart so forms and the API share them)."""

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
    from .operations import OperationError

    pattern, example = SELECT_RULES[by]
    if not pattern.match(value):
        raise OperationError(f"{where}: {value!r} is not {example}")
