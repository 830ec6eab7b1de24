"""The firmware's part of the IOMMU, as discovery read it (hosts.Hypervisor.iommu_firmware).

The BIOS/UEFI publishes the ACPI DMAR table (Intel VT-d) or IVRS table (AMD-Vi) only when the IOMMU
is enabled there (/sys/firmware/acpi/tables/, kernel Documentation/ABI/testing/sysfs-firmware-acpi).
Without it, kernel arguments cannot turn the IOMMU on: the plan says so instead of a reboot that
changes nothing.
"""

from __future__ import annotations

# Arguments that ask the kernel to use the IOMMU (intel_iommu=on, iommu=pt, amd_iommu=..., vfio-pci.ids=...).
IOMMU_KEYS = ("intel_iommu", "amd_iommu", "iommu", "vfio-pci.ids")


def wants_iommu(op: dict, add: list[str]) -> bool:
    return op.get("preset") == "iommu" or any(token.split("=", 1)[0] in IOMMU_KEYS for token in add)


def firmware_iommu_error(host) -> str | None:
    """A sentence when the firmware publishes no IOMMU table (None when it does, or when unknown)."""
    firmware = host.iommu_firmware or {}
    if firmware.get("present") is not False:
        return None
    vendor = (host.cpu_vendor or "").lower()
    what = {"intel": "VT-d (ACPI DMAR table)", "amd": "AMD-Vi (ACPI IVRS table)"}.get(
        vendor, "VT-d / AMD-Vi (ACPI DMAR or IVRS table)")
    return (f"the firmware of {host.name} does not enable the IOMMU: no {what}. Kernel arguments and a reboot "
            "cannot turn it on; enable VT-d / AMD-Vi in the BIOS, then run discovery again")
